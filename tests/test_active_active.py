"""Active-active without a cluster: two plain ``liqmon run`` instances fed the same input, each
with its own name, state directory and output, give the same alerts with the same ids, so a
consumer of both de-duplicates by id; also when one of them is killed -9 mid-run and restarted
from its state directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alerts.topics import ALERT_KINDS
from tests.conftest import ROOT

CRASH = ROOT / "examples" / "crash.jsonl"
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _env(instance: str) -> dict[str, str]:
    return {**os.environ, "LIQMON_LOG__LEVEL": "warning", "LIQMON_MQTT__INSTANCE": instance}


def _start(directory: Path, instance: str, *extra: str) -> subprocess.Popen[bytes]:
    """``liqmon run`` replaying examples/crash.jsonl to its end, with ``instance``'s own state
    directory and output file under ``directory``."""
    args = [
        *LIQMON,
        "run",
        "--replay",
        str(CRASH),
        "--exit-at-end",
        "--out",
        str(directory / f"{instance}.jsonl"),
        "--state-dir",
        str(directory / f"{instance}-state"),
        "--http-port",
        "0",
        *extra,
    ]
    return subprocess.Popen(
        args,
        env=_env(instance),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _alerts(path: Path) -> list[dict[str, Any]]:
    """The alert events of a JSON Lines output (its complete lines: one may be being written)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()[: text.count("\n")]
    events = (json.loads(line) for line in lines if line.strip())
    return [e for e in events if e["event"] in ALERT_KINDS]


def _by_id(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each id's first copy, in the order first seen."""
    seen: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        seen.setdefault(alert["id"], alert)
    return list(seen.values())


def test_two_instances_fed_the_same_input_give_the_same_alert_ids(tmp_path: Path) -> None:
    """Two instances running at once on the same replay, one as fast as it can and one paced,
    with different names and state directories, write the same alerts: same ids, same
    payloads, same order, none missing."""
    fast = _start(tmp_path, "a")
    paced = _start(tmp_path, "b", "--speed", "100000")
    assert fast.wait(timeout=60) == 0
    assert paced.wait(timeout=60) == 0
    a, b = _alerts(tmp_path / "a.jsonl"), _alerts(tmp_path / "b.jsonl")
    assert len(a) >= 10
    assert len({e["id"] for e in a}) == len(a)
    assert [e["id"] for e in a] == [e["id"] for e in b]
    assert a == b


def test_ids_still_agree_when_one_instance_is_killed_and_restarted_mid_run(
    tmp_path: Path,
) -> None:
    """One of two paced instances is killed with SIGKILL after it wrote its first alerts and
    started again on its state directory: what it wrote before and after the kill, de-duplicated
    by id, is exactly what the other instance wrote, payloads included."""
    steady = _start(tmp_path, "a", "--speed", "40000")
    victim = _start(tmp_path, "b", "--speed", "40000")
    out = tmp_path / "b.jsonl"
    try:
        deadline = time.monotonic() + 30
        while not _alerts(out):
            assert victim.poll() is None, "it ended before its first alert"
            assert time.monotonic() < deadline, "no alert within 30 s"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        before = len(_alerts(out))
        restarted = _start(tmp_path, "b", "--speed", "40000")
        assert restarted.wait(timeout=60) == 0
        assert steady.wait(timeout=60) == 0
    finally:
        for process in (steady, victim):
            if process.poll() is None:
                process.kill()
                process.wait()
    expected = _alerts(tmp_path / "a.jsonl")
    assert 0 < before < len(expected), "the kill came mid-run"
    assert _by_id(_alerts(out)) == expected
