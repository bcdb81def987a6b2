"""State events (``MarginStateChanged`` / ``MarginStateCleared``): what triggers them, and that the
trigger index routes them exactly like a full re-evaluation."""

from __future__ import annotations

import argparse
from contextlib import suppress
from decimal import Decimal

import orjson
import pytest

from bench.generate import Workload
from bench.naive import NaiveEngine
from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, RecordRefused
from monitor.contracts import Tier, make_contract
from monitor.events import (
    AlertEvent,
    EngineEvent,
    MarginStateChanged,
    MarginStateCleared,
    StateEvent,
    to_payload,
)
from monitor.records import ContractRecord, PositionRecord, TickRecord

D = Decimal
TOY_CONTRACT = make_contract(
    "TOYUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.05"), D(0))]
)
"""One tier at 5 %: a long of 1 at 100 with 10 of margin has ratio ``0.05·P / (P − 90)``: 0.5
at 100, exactly 0.8 at 96, liquidation below ``90/0.95``."""


def _workload(seed: int, accounts: int = 300, ticks: int = 6_000) -> list[bytes]:
    args = argparse.Namespace(
        accounts=accounts,
        far_accounts=50,
        ticks=ticks,
        symbols=12,
        inverse_share=0.25,
        record_every=40,
        jump_probability=0.003,
        seed=seed,
    )
    return [orjson.dumps(record) for record in Workload(args).records()]


def _run(engine: Engine, lines: list[bytes]) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    for line in lines:
        with suppress(RecordRefused):
            events.extend(engine.apply(parse_line(line)))
    return events


@pytest.mark.parametrize("policy", ["close", "hold"])
@pytest.mark.parametrize("seed", [1, 2])
def test_indexed_and_naive_engines_emit_the_same_state_events(seed: int, policy: str) -> None:
    """With state tracking on, the index must also route every ratio move that is worth a
    state update: the indexed engine's events (alerts and states) equal the naive engine's."""
    config = EngineConfig.from_values(policy=policy, state_move="0.05")
    lines = _workload(seed)
    indexed = _run(Engine(config), lines)
    naive = _run(NaiveEngine(config), lines)
    assert indexed == naive
    assert sum(isinstance(e, MarginStateChanged) for e in indexed) > 100
    assert any(isinstance(e, MarginStateCleared) for e in indexed)


def test_state_tracking_does_not_change_the_alerts() -> None:
    """Turning state tracking on adds state events and changes no alert, not even its id."""
    lines = _workload(3)
    plain = _run(Engine(), lines)
    tracked = _run(Engine(EngineConfig.from_values(state_move="0.05")), lines)
    assert plain == [e for e in tracked if not isinstance(e, StateEvent)]
    assert not any(isinstance(e, StateEvent) for e in plain)


def _toy_engine(policy: str = "close") -> Engine:
    engine = Engine(EngineConfig.from_values(policy=policy, state_move="0.10"))
    engine.apply(ContractRecord(TOY_CONTRACT))
    engine.apply(TickRecord(1, TOY_CONTRACT.symbol, 100.0, "100"))
    return engine


def _open(engine: Engine, wallet: str = "10") -> list[EngineEvent]:
    return list(
        engine.apply(
            PositionRecord(
                2, "a", TOY_CONTRACT.symbol, "both", "isolated", D(1), D(100), D(10), D(wallet)
            )
        )
    )


def _tick(engine: Engine, ts: int, mark: str) -> list[EngineEvent]:
    return list(engine.apply(TickRecord(ts, TOY_CONTRACT.symbol, float(mark), mark)))


def test_a_new_entity_publishes_its_state_at_once() -> None:
    """The first valuation of an entity is news: one state event, no alert (ratio 0.5)."""
    (state,) = _open(_toy_engine())
    assert isinstance(state, MarginStateChanged)
    assert state.margin_ratio == pytest.approx(0.5)
    assert state.level is None
    assert state.positions[0].liquidation_price == pytest.approx(90 / 0.95)


def test_small_moves_are_silent_and_a_relative_move_publishes() -> None:
    """Moves under 10 % of the published ratio (0.5) stay silent; the first tick beyond
    publishes the new ratio, which becomes the new reference."""
    engine = _toy_engine()
    _open(engine)
    assert _tick(engine, 3, "99.9") == []  # ratio 0.5045: +0.9 %
    assert _tick(engine, 4, "99.2") == []  # 0.5391: +7.8 %
    (state,) = _tick(engine, 5, "98.9")  # 0.5556: +11 %
    assert isinstance(state, MarginStateChanged)
    assert state.margin_ratio == pytest.approx(4.945 / 8.9)
    assert _tick(engine, 6, "99.5") == []  # 0.5237: −5.7 % of the new reference


def test_a_level_change_publishes_with_the_alert() -> None:
    """A warning changes the active level: the state follows it, after the alert."""
    engine = _toy_engine()
    _open(engine)
    warning, state = _tick(engine, 3, "96")  # ratio 0.8 exactly
    assert warning.kind == "margin_warning"
    assert isinstance(state, MarginStateChanged)
    assert state.level == 0.8


def test_closing_the_position_clears_the_state() -> None:
    """An entity whose positions all close is gone: its state is cleared."""
    engine = _toy_engine()
    _open(engine)
    (cleared,) = engine.apply(
        PositionRecord(3, "a", TOY_CONTRACT.symbol, "both", "isolated", D(0), D(100), D(10), None)
    )
    assert isinstance(cleared, MarginStateCleared)
    assert cleared.entity.account == "a"


def test_liquidation_clears_under_close_and_marks_liquidating_under_hold() -> None:
    """After a liquidation the state is cleared (close) or shows the entity liquidating
    (hold), and a held entity's next record-driven valuation publishes again."""
    closed = _toy_engine("close")
    _open(closed)
    liquidation, cleared = _tick(closed, 3, "90")
    assert liquidation.kind == "liquidation"
    assert isinstance(cleared, MarginStateCleared)

    held = _toy_engine("hold")
    _open(held)
    liquidation, state = _tick(held, 3, "90")
    assert liquidation.kind == "liquidation"
    assert isinstance(state, MarginStateChanged)
    assert state.liquidating
    assert _tick(held, 4, "80") == []  # silent while liquidating
    events = _open(held, wallet="50")  # a record touches it: re-evaluated, published
    assert [type(e) for e in events] == [MarginStateChanged]
    assert not events[0].liquidating


def test_a_stale_feed_is_said_in_the_state_of_every_holder_and_cleared_on_recovery() -> None:
    """``set_stale`` republishes the state of each entity holding the symbol, valued at its
    last mark with that mark's time and ``mark_stale``; repeating the same flag is silent;
    recovery republishes with ``mark_stale`` false. Symbols nobody holds emit nothing."""
    engine = _toy_engine()
    _open(engine)
    engine.apply(TickRecord(5, TOY_CONTRACT.symbol, 99.0, "99"))
    stale = engine.set_stale(TOY_CONTRACT.symbol, True)
    assert len(stale) == 1
    state = stale[0]
    assert isinstance(state, MarginStateChanged)
    (position,) = state.positions
    assert (position.mark, position.mark_ts, position.mark_stale) == (99.0, 5, True)
    assert engine.stale_symbols == {TOY_CONTRACT.symbol}
    assert engine.set_stale(TOY_CONTRACT.symbol, True) == ()
    recovered = engine.set_stale(TOY_CONTRACT.symbol, False)
    assert len(recovered) == 1
    assert isinstance(recovered[0], MarginStateChanged)
    assert recovered[0].positions[0].mark_stale is False
    assert engine.set_stale("NOBODYUSDT", True) == ()


def test_alert_payloads_keep_the_interface_position_fields() -> None:
    """mark_ts and mark_stale belong to the retained state only: the alert payloads of
    docs/alerts.md keep exactly {symbol, side, qty, entry, mark, liquidation_price,
    bankruptcy_price} per position."""
    engine = _toy_engine()
    _open(engine)
    events = engine.apply(TickRecord(5, TOY_CONTRACT.symbol, 96.0, "96"))
    alerts = [e for e in events if not isinstance(e, StateEvent)]
    assert alerts
    alert: AlertEvent = alerts[0]
    assert set(to_payload(alert)["positions"][0]) == {
        "symbol",
        "side",
        "qty",
        "entry",
        "mark",
        "liquidation_price",
        "bankruptcy_price",
    }


# -- states found by sweeps (the service's engine) -------------------------------------------


def _sweep_all(engine: Engine) -> list[EngineEvent]:
    """Sweep until a whole pass over the book starting at id 0 has been made."""
    events, cursor = engine.sweep_states(0, 64, 8)
    while cursor != 0:
        more, cursor = engine.sweep_states(cursor, 64, 8)
        events.extend(more)
    return events


@pytest.mark.parametrize("policy", ["close", "hold"])
def test_sweeps_change_no_alert_and_leave_every_published_state_current(policy: str) -> None:
    """An engine that finds states by sweeps (``state_sweep``) emits exactly the alerts of one
    that tracks them tick by tick, and builds no state on a tick; sweeping now and then, the
    last state it published for each live entity, after a final sweep, is the entity as the
    book holds it (what a reader of the whole book would see), and a gone entity's last word
    is its clear."""
    lines = _workload(3, accounts=150, ticks=3_000)
    ticking = Engine(EngineConfig.from_values(policy=policy, state_move="0.05"))
    sweeping = Engine(EngineConfig.from_values(policy=policy, state_move="0.05", state_sweep=True))
    ticked = _run(ticking, lines)
    swept: list[EngineEvent] = []
    for start in range(0, len(lines), 500):
        swept.extend(_run(sweeping, lines[start : start + 500]))
        swept.extend(_sweep_all(sweeping))
    assert [e for e in swept if isinstance(e, AlertEvent)] == [
        e for e in ticked if isinstance(e, AlertEvent)
    ]
    assert any(isinstance(e, MarginStateChanged) for e in swept)
    latest: dict[object, EngineEvent] = {}
    for event in [*swept, *_sweep_all(sweeping)]:
        if isinstance(event, StateEvent):
            latest[event.entity] = event
    book = {state.entity: state for state in sweeping.book_states()}
    for entity, state in book.items():
        published = latest[entity]
        assert isinstance(published, MarginStateChanged)
        assert published.level == state.level
        assert published.liquidating == state.liquidating
        if state.margin_ratio is not None and not state.liquidating:
            assert published.margin_ratio is not None
            assert abs(published.margin_ratio - state.margin_ratio) < 0.05 * max(
                state.margin_ratio, 0.1
            )
    gone = [entity for entity in latest if entity not in book]
    assert all(isinstance(latest[entity], MarginStateCleared) for entity in gone)


def test_a_tick_builds_no_state_with_sweeps_and_a_restart_republishes_everything() -> None:
    """With sweeps, a move that changes the ratio a lot emits nothing by itself; the next
    sweep publishes it. After :meth:`Engine.forget_published_states` (a restart) a sweep
    publishes every live entity once more, and the one after that nothing."""
    engine = Engine(EngineConfig.from_values(state_move="0.05", state_sweep=True))
    engine.apply(ContractRecord(TOY_CONTRACT))
    engine.apply(TickRecord(1, TOY_CONTRACT.symbol, 100.0, "100"))
    assert _open(engine) == []
    assert [type(e) for e in _sweep_all(engine)] == [MarginStateChanged]
    assert _tick(engine, 2, "98") == []  # ratio 0.5 -> about 0.6: moved, but no event yet
    (moved,) = _sweep_all(engine)
    assert isinstance(moved, MarginStateChanged)
    assert moved.margin_ratio is not None
    assert moved.margin_ratio == pytest.approx(0.05 * 98 / 8)
    assert _sweep_all(engine) == []
    engine.forget_published_states()
    assert [type(e) for e in _sweep_all(engine)] == [MarginStateChanged]
    assert _sweep_all(engine) == []
