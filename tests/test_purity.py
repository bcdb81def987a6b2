"""The engine package is sans-I/O: no module of ``monitor/`` imports anything that does I/O,
reads a clock, draws randomness or runs concurrently (the sans-I/O core of docs/choices.md).

The check walks the AST of every module, so it sees imports the interpreter would only run
later: inside functions, under ``if TYPE_CHECKING:``, in ``try`` blocks — and dynamic ones
through ``importlib`` or ``__import__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

MONITOR = ROOT / "monitor"

FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "os",
        "datetime",
        "random",
        "threading",
        "websockets",
        "aiomqtt",
        "structlog",
        "io",
        # the same concerns under other names
        "multiprocessing",
        "concurrent",
        "subprocess",
        "selectors",
        "select",
        "signal",
        "ssl",
        "http",
        "urllib",
        "pathlib",
        "shutil",
        "tempfile",
        "logging",
        "secrets",
        "uuid",
        "importlib",
    }
)
"""Top-level packages the engine must not import (``os`` also rules out ``os.path``)."""

FORBIDDEN_CALLS = frozenset({"open", "print", "input", "__import__", "exec", "eval", "breakpoint"})
"""Built-ins that do I/O or import behind the AST's back."""


def imported_roots(tree: ast.AST) -> set[str]:
    """The top-level package of every absolute import anywhere in ``tree``."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def called_builtins(tree: ast.AST) -> set[str]:
    """Names of forbidden built-ins called anywhere in ``tree``."""
    return {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FORBIDDEN_CALLS
    }


def relative_imports(tree: ast.AST) -> set[str]:
    """Relative imports (``from . import x``), which would escape the root check."""
    return {
        "." * node.level + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }


MODULES = sorted(MONITOR.rglob("*.py"))


def test_the_engine_package_is_found() -> None:
    """The walk sees the engine's modules (an empty glob would make the checks vacuous)."""
    names = {path.name for path in MODULES}
    assert {"engine.py", "book.py", "valuation.py", "bands.py", "triggers.py", "margin.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_imports_no_io(path: Path) -> None:
    """The module imports none of the I/O, clock, randomness or concurrency packages, calls no
    I/O built-in and imports nothing relatively (so every import is checked by name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_roots(tree) & FORBIDDEN == set()
    assert called_builtins(tree) == set()
    assert relative_imports(tree) == set()


RUNTIME_MODULES = sorted((ROOT / "liqmon" / "runtime").rglob("*.py"))


@pytest.mark.parametrize("path", RUNTIME_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_runtime_imports_no_io_but_a_logger(path: Path) -> None:
    """The runtime (``liqmon/runtime/``) is sans-I/O too: the time is passed in, effects are
    returned. Its one allowance is the structured logger, which never changes a decision."""
    assert {p.name for p in RUNTIME_MODULES} >= {"core.py", "restart.py", "effects.py"}
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_roots(tree) & (FORBIDDEN - {"structlog"}) == set()
    assert called_builtins(tree) == set()
    assert relative_imports(tree) == set()


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as clock",
        "from datetime import datetime",
        "from asyncio import Queue",
        "def f():\n    import socket\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import structlog\n",
        "try:\n    import websockets\nexcept ImportError:\n    pass\n",
        "import json, random",
        "import io",
        "import aiomqtt",
        "import threading",
    ],
)
def test_the_check_catches_forbidden_imports(source: str) -> None:
    """The walker finds a forbidden import however it is written."""
    assert imported_roots(ast.parse(source)) & FORBIDDEN


@pytest.mark.parametrize(
    "source", ["open('x')", "print(1)", "__import__('os')", "def f():\n    eval('1')\n"]
)
def test_the_check_catches_io_builtins(source: str) -> None:
    """The walker finds calls of I/O built-ins and of ``__import__``/``eval``."""
    assert called_builtins(ast.parse(source))


def test_the_check_allows_the_engine_s_own_imports() -> None:
    """Pure standard-library modules and the package's own modules pass (no false alarm on
    names that merely start like a forbidden one)."""
    source = (
        "import hashlib\nimport heapq\nimport timeit_like\nfrom decimal import Decimal\n"
        "from monitor.margin import EXACT\nfrom iomodule import x\n"
    )
    assert imported_roots(ast.parse(source)) & FORBIDDEN == set()


LIQMON_SANS_IO = sorted(
    [
        ROOT / "liqmon" / "shock.py",
        *(ROOT / "liqmon" / "dashboard" / f"{name}.py" for name in ("book", "ladder", "throttle")),
        ROOT / "liqmon" / "dashboard" / "access.py",
        ROOT / "alerts" / "encoding.py",
        ROOT / "alerts" / "topics.py",
        ROOT / "feeds" / "backoff.py",
        ROOT / "feeds" / "input_messages.py",
    ]
)
"""The pure parts of the shell: the what-if protocol, the dashboard's book model, ladders,
coalescing and access policy (their drivers are liqmon/shock_mqtt.py and the dashboard's
bridge and server), the MQTT wire encoding and topic names (driven by alerts/publisher.py), the
reconnect backoff, and the reading of an MQTT input message (driven by the service)."""


def _urllib_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == "urllib")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "urllib":
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("path", LIQMON_SANS_IO, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_parts_of_the_shell_import_no_io(path: Path) -> None:
    """The same check for the sans-I/O modules outside the engine, which may use
    ``urllib.parse`` (string functions) and nothing else of urllib."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_roots(tree) & (FORBIDDEN - {"urllib"}) == set()
    assert _urllib_modules(tree) <= {"urllib.parse"}
    assert called_builtins(tree) == set()
    assert relative_imports(tree) == set()
