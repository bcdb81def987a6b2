"""Snapshots: an engine restored from its exported state continues exactly like the original."""

from __future__ import annotations

import argparse
from contextlib import suppress
from decimal import Decimal

import orjson
import pytest

from bench.generate import Workload
from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, RecordRefused
from monitor.events import EngineEvent
from monitor.snapshot import SnapshotError, export_state, restore_state


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
    seed: int, policy: str, state_move: str | None
) -> None:
    """Cut a workload anywhere, export, round-trip through JSON, restore: the rest of the
    workload gives the same events (ids included) and the same final state on both engines."""
    config = EngineConfig.from_values(policy=policy, state_move=state_move)
    lines = _lines(seed)
    for cut in (len(lines) // 3, 2 * len(lines) // 3):
        original = Engine(config)
        _feed(original, lines[:cut])
        data = orjson.loads(orjson.dumps(export_state(original)))
        restored = restore_state(data, config)
        assert export_state(restored) == data  # restoring changes nothing, emits nothing
        rest = lines[cut:]
        assert _feed(restored, rest) == _feed(original, rest)
        assert export_state(restored) == export_state(original)


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
    (mark,) = export_state(engine)["marks"]
    assert mark == {"symbol": "X", "mark": "61800.123456789012345", "ts": 5}


def test_levels_are_stored_by_value_and_dropped_when_no_longer_configured() -> None:
    """Restoring under other levels keeps an active level that still exists, forgets one that
    does not."""
    lines = _lines(4)
    engine = Engine()
    _feed(engine, lines)
    data = export_state(engine)
    active = {e["level"] for e in data["entities"]} - {None}
    assert active  # the workload leaves some entities warned
    narrower = EngineConfig(levels=(Decimal("0.7"),))
    restored = export_state(restore_state(data, narrower))
    for before, after in zip(data["entities"], restored["entities"], strict=True):
        assert after["level"] == (before["level"] if before["level"] == "0.7" else None)


def test_an_unknown_version_is_refused_with_a_clear_error() -> None:
    """A snapshot from another format version is not guessed at."""
    with pytest.raises(SnapshotError, match="version"):
        restore_state({"version": 99})
