"""What ``pip install .`` installs: every package of the source tree, so that the README's first
command (a non-editable install, then ``liqmon demo``) finds every module it imports."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT

TOP_LEVEL = ("monitor", "feeds", "alerts", "liqmon")


def test_every_package_of_the_source_tree_is_installed() -> None:
    """Each directory holding an ``__init__.py`` under the top-level packages is listed in
    ``[tool.setuptools] packages`` (a missing one installs nothing of it: an ImportError at
    run time, which editable installs hide)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set()
