"""The error tree (``monitor/errors.py``): complete, as drawn in its docstring, and what the
command line makes of it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import monitor.errors
from liqmon.cli import failure
from monitor.errors import (
    BadRequest,
    ConfigError,
    LiqmonError,
    RecordRefused,
)
from tests import cli_support
from tests.conftest import ROOT

PACKAGES = ("monitor", "feeds", "alerts", "liqmon")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        root = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(root.__path__, f"{package}.")]
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined (not imported) in a module of the four packages, by
    qualified name."""
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{attr}"] = value
    return found


def _drawn_tree() -> dict[str, str | None]:
    """``{class: parent}`` as the docstring of monitor/errors.py draws it."""
    doc = monitor.errors.__doc__ or ""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^ {4}([│ ]*(?:[├└]── )?)(\w+)\s", line + " ")
        if match is None or not match[2][0].isupper():
            continue
        depth = len(match[1]) // 4
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match[2]] = stack[-1][1] if stack else None
        stack.append((depth, match[2]))
    return parents


def test_the_walk_finds_the_modules_and_their_errors() -> None:
    """The walk sees the packages' modules and errors (an empty walk would make the checks
    below vacuous): the tree's root, and a module's private control-flow exception."""
    modules = _modules()
    assert {"feeds.live", "alerts.publisher", "feeds.mqtt_input", "liqmon.cli"} <= set(modules)
    found = _defined_exceptions()
    assert "monitor.errors.LiqmonError" in found
    assert "feeds.live._Drop" in found


def test_every_public_error_is_defined_in_the_tree() -> None:
    """An exception class with a public name exists only in monitor/errors.py, under
    LiqmonError; modules keep only private control-flow exceptions of their own (``_Drop``,
    ``_Rotate``), which never leave them."""
    public = {
        name: cls
        for name, cls in _defined_exceptions().items()
        if not name.rsplit(".", 1)[1].startswith("_")
    }
    outside = sorted(name for name in public if not name.startswith("monitor.errors."))
    assert outside == []
    assert all(issubclass(cls, LiqmonError) for cls in public.values())


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    """Every error class of monitor/errors.py is in the drawing, under its real parent, and
    the drawing names no class that does not exist."""
    drawn = _drawn_tree()
    actual = {
        name: (None if cls is LiqmonError else cls.__bases__[0].__name__)
        for name, cls in vars(monitor.errors).items()
        if inspect.isclass(cls) and issubclass(cls, LiqmonError)
    }
    assert drawn == actual


def test_the_drawing_parser_reads_nesting() -> None:
    """The parser of the drawing gives each name the parent it is drawn under (so the check
    above compares real structure)."""
    assert _drawn_tree()["LinkDown"] == "BrokerError"
    assert _drawn_tree()["UnknownFormat"] == "UnreadableFile"
    assert _drawn_tree()["ConfigError"] == "LiqmonError"
    assert _drawn_tree()["LiqmonError"] is None


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("feeds.live", "FeedFailed"),
        ("feeds.files", "UnreadableFile"),
        ("feeds.captures", "UnknownFormat"),
        ("feeds.brackets", "BracketFileError"),
        ("feeds.recorder", "RecordingFailed"),
        ("monitor.snapshot", "SnapshotError"),
        ("alerts.link", "LinkDown"),
        ("liqmon.shock", "BadRequest"),
    ],
)
def test_errors_are_still_importable_where_they_were(old: str, name: str) -> None:
    """The modules that used to define an error re-export the tree's class (the same object)."""
    assert getattr(importlib.import_module(old), name) is getattr(monitor.errors, name)


def _instances() -> list[LiqmonError]:
    out: list[LiqmonError] = []
    pending: list[type[LiqmonError]] = [LiqmonError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ != "monitor.errors":
            continue
        if issubclass(cls, RecordRefused | BadRequest):
            out.append(cls("some_reason", "first line\n  second line"))
        else:
            out.append(cls("first line\n  second line"))
    return out


@pytest.mark.parametrize("error", _instances(), ids=lambda e: type(e).__name__)
def test_the_command_line_says_every_error_in_one_line(error: LiqmonError) -> None:
    """Whatever error of the tree ends a command, liqmon prints one line naming it and exits
    non-zero: 2 for a setting or option, 1 for the rest."""
    line, status = failure(error)
    assert "\n" not in line
    assert line.startswith("liqmon: ")
    assert "first line" in line
    assert "second line" in line
    assert status == (2 if isinstance(error, ConfigError) else 1)


def test_a_corrupt_snapshot_stops_liqmon_run_with_one_line(tmp_path: Path) -> None:
    """``liqmon run`` on a state directory whose snapshot is garbage: the error comes out of
    the service's task group, and the command line still prints one line (no traceback),
    exit status 1. numpy's ``BadZipFile`` is translated into a SnapshotError on the way."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "snapshot.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    result = cli_support.run(
        [
            sys.executable,
            "-m",
            "liqmon.cli",
            "run",
            "--replay",
            str(ROOT / "examples" / "crash.jsonl"),
            "--exit-at-end",
            "--state-dir",
            str(state),
            "--http-port",
            "0",
            "--resume",  # the directory has no record of its inputs: continue from it anyway
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("liqmon: ")]
    assert lines == [
        f"liqmon: unreadable snapshot {state / 'snapshot.npz'}: File is not a zip file"
    ]
    assert "Traceback" not in result.stderr
