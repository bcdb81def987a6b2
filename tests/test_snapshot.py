"""Snapshots: an engine restored from its exported state (the book's arrays, through the file
format the service writes) continues exactly like the original."""

from __future__ import annotations

import argparse
from contextlib import suppress
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from bench.generate import Workload
from feeds.normalized import parse_line
from liqmon.persistence import load_snapshot, save_snapshot
from monitor import Engine, EngineConfig, RecordRefused
from monitor.events import EngineEvent
from monitor.snapshot import EngineSnapshot, SnapshotError, export_state, restore_state


def _round_trip(snapshot: EngineSnapshot, tmp_path: Path) -> EngineSnapshot:
    """Through the bytes of the snapshot file and back."""
    path = tmp_path / "snapshot.npz"
    path.write_bytes(save_snapshot(snapshot))
    return load_snapshot(path)


def _lines(seed: int) -> list[bytes]:
    args = argparse.Namespace(
        accounts=400,
        far_accounts=40,
        ticks=8_000,
        symbols=12,
        inverse_share=0.25,
        record_every=40,
        jump_probability=0.003,
        seed=seed,
    )
    return [orjson.dumps(record) for record in Workload(args).records()]


def _feed(engine: Engine, lines: list[bytes]) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for line in lines:
        with suppress(RecordRefused):
            events.extend(engine.apply(parse_line(line)))
    return events


@pytest.mark.parametrize(
    ("seed", "policy", "state_move"), [(1, "close", None), (2, "hold", "0.05"), (3, "close", "0.1")]
)
def test_a_restored_engine_continues_exactly_like_the_original(
    seed: int, policy: str, state_move: str | None, tmp_path: Path
) -> None:
    """Cut a workload anywhere, export, round-trip through the snapshot file, restore: the rest
    of the workload gives the same events (ids included) and the same final state on both
    engines."""
    config = EngineConfig.from_values(policy=policy, state_move=state_move)
    lines = _lines(seed)
    for cut in (len(lines) // 3, 2 * len(lines) // 3):
        original = Engine(config)
        _feed(original, lines[:cut])
        data = _round_trip(export_state(original), tmp_path)
        restored = restore_state(data, config)
        # restoring changes nothing and emits nothing; the bands come back as they were
        assert export_state(restored) == data
        rest = lines[cut:]
        assert _feed(restored, rest) == _feed(original, rest)
        # the same book (bands may differ: the original's heaps held stale entries, which
        # made it re-evaluate a few entities the restored engine did not need to)
        assert export_state(restored).without_bands() == export_state(original).without_bands()


def test_json_number_marks_are_kept_exactly() -> None:
    """A mark that arrived as a JSON number is stored as its exact text."""
    engine = Engine()
    engine.apply(
        parse_line(
            b'{"type":"contract","symbol":"X","kind":"linear","margin_asset":"USDT",'
            b'"contract_size":"1","brackets":[{"floor":"0","cap":"1e9","mmr":"0.01","cum":"0"}]}'
        )
    )
    engine.apply(parse_line(b'{"type":"tick","ts":5,"symbol":"X","mark":61800.123456789012345}'))
    snapshot = export_state(engine)
    assert snapshot.meta["marks"] == ["61800.123456789012345"]
    assert snapshot.arrays["symbols.mark_ts"].tolist() == [5]


def test_levels_are_stored_by_value_and_dropped_when_no_longer_configured() -> None:
    """Restoring under other levels keeps an active level that still exists, forgets one that
    does not."""
    lines = _lines(4)
    engine = Engine()
    _feed(engine, lines)
    data = export_state(engine)
    levels = ["0.7", "0.8", "0.9"]
    before = [levels[i] if i >= 0 else None for i in data.arrays["entities.level"].tolist()]
    assert set(before) - {None}  # the workload leaves some entities warned
    narrower = EngineConfig(levels=(Decimal("0.7"),))
    restored = export_state(restore_state(data, narrower))
    after = ["0.7" if i == 0 else None for i in restored.arrays["entities.level"].tolist()]
    assert after == [level if level == "0.7" else None for level in before]


def test_an_unknown_version_is_refused_with_a_clear_error() -> None:
    """A snapshot from another format version is not guessed at."""
    with pytest.raises(SnapshotError, match="version"):
        restore_state(EngineSnapshot({}, {"version": 99}))
