"""The test helper that forks ``liqmon`` command lines from a pre-imported interpreter
(``tests/cli_support.py``) gives what a fresh process gives: exit status, stdout, stderr and
the files written, for a success, a usage error and a failure; a timeout kills the command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import cli_support
from tests.conftest import ROOT

CRASH = ROOT / "examples" / "crash.jsonl"


def _both(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    forked = cli_support.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
    with monkeypatch.context() as patch:
        patch.setenv("LIQMON_TEST_FRESH_CLI", "1")
        fresh = cli_support.run(args, capture_output=True, text=True, cwd=ROOT, timeout=60)
    return forked, fresh


@pytest.mark.parametrize(
    ("entry", "args"),
    [
        pytest.param("module", ["--help"], id="module-help"),
        pytest.param("module", ["replay", str(CRASH), "--shock", "XRPUSDT="], id="usage-error"),
        pytest.param("script", ["replay", "/nonexistent/file.jsonl"], id="script-unreadable"),
    ],
)
def test_a_forked_command_is_a_fresh_one(
    entry: str, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m liqmon.cli`` and the console script, forked or fresh: the same exit status
    (0, 2, 1 here) and byte-identical stdout and stderr."""
    prefix = cli_support.CLI_MODULE if entry == "module" else [cli_support.CONSOLE_SCRIPT]
    if entry == "script" and not Path(cli_support.CONSOLE_SCRIPT).exists():
        pytest.skip("no liqmon console script next to this interpreter")
    forked, fresh = _both([*prefix, *args], monkeypatch)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )


def test_a_forked_replay_writes_what_a_fresh_one_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events of the crash, on stdout and in ``--out``, are the same either way (the
    summary on stderr differs only in its throughput figures)."""
    outputs = []
    for fresh in (False, True):
        out = tmp_path / f"events-{fresh}.jsonl"
        args = [*cli_support.CLI_MODULE, "replay", str(CRASH), "--out", str(out)]
        with monkeypatch.context() as patch:
            if fresh:
                patch.setenv("LIQMON_TEST_FRESH_CLI", "1")
            to_file = cli_support.run(args, capture_output=True, text=True, check=True)
            args[-1] = "-"
            to_stdout = cli_support.run(args, capture_output=True, text=True, check=True)
        summary = [x for x in to_file.stderr.splitlines() if "throughput" not in x]
        outputs.append((out.read_bytes(), to_stdout.stdout, summary))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"\n") == 13


def test_a_forked_command_past_its_timeout_is_killed() -> None:
    """``timeout`` works as with :func:`subprocess.run`: ``TimeoutExpired``, the command gone
    (the next one runs at once)."""
    paced = [*cli_support.CLI_MODULE, "replay", str(CRASH), "--speed", "10", "--out", "-"]
    with pytest.raises(subprocess.TimeoutExpired):
        cli_support.run(paced, capture_output=True, timeout=0.5)
    after = cli_support.run([*cli_support.CLI_MODULE, "--help"], capture_output=True, timeout=10)
    assert after.returncode == 0
