"""The engine's rules (docs/records.md, docs/margin.md, docs/alerts.md), one minimal scenario
each.

Most scenarios use ``TOYUSDT`` / ``BBBUSDT``: single-tier linear contracts (``mmr = 0.05``,
``cum = 0``), so a long of 1 at entry 100 with 10 of margin has ``MM = 0.05·P`` and
``MB = 10 + (P − 100)``: ratio 0.5 at 100, exactly 0.8 at 96, liquidated at 90 (``MB = 0``).
The hedge-mode scenario uses Binance's real BTCUSDT / ETHUSDT tier tables (tests/data).

A refused record must leave the engine exactly as it was: that is checked by replaying the same
suffix of records into an engine that never saw the refused one and comparing every event
(the suffix includes a contract re-tier, whose events carry the latest ``ts`` seen, so even the
engine's clock is compared).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from feeds.brackets import load_brackets
from feeds.normalized import parse_line
from monitor import (
    ContractRecord,
    Engine,
    EngineConfig,
    EngineEvent,
    EntityRef,
    Record,
    RecordRefused,
    RecordRejected,
    TickDropped,
    to_payload,
)
from tests.conftest import DATA

# -- record builders ---------------------------------------------------------------------------


def record(**fields: Any) -> Record:
    """A record exactly as a replay file would carry it."""
    return parse_line(json.dumps(fields))


def linear(symbol: str, mmr: str = "0.05", asset: str = "USDT") -> Record:
    return record(
        type="contract",
        symbol=symbol,
        kind="linear",
        margin_asset=asset,
        contract_size="1",
        brackets=[{"floor": "0", "cap": "1000000000000", "mmr": mmr, "cum": "0"}],
    )


def tick(symbol: str, mark: str, ts: int) -> Record:
    return record(type="tick", ts=ts, symbol=symbol, mark=mark)


def balance(account: str, wallet: str, ts: int, asset: str = "USDT") -> Record:
    return record(type="balance", ts=ts, account=account, asset=asset, wallet=wallet)


def position(
    account: str,
    symbol: str,
    qty: str,
    entry: str,
    ts: int,
    *,
    side: str = "both",
    mode: str = "isolated",
    wallet: str | None = "10",
) -> Record:
    fields: dict[str, Any] = {
        "type": "position",
        "ts": ts,
        "account": account,
        "symbol": symbol,
        "side": side,
        "mode": mode,
        "qty": qty,
        "entry": entry,
        "leverage": "10",
    }
    if mode == "isolated":
        fields["isolated_wallet"] = wallet
    return record(**fields)


def margin(account: str, symbol: str, delta: str, ts: int, side: str = "both") -> Record:
    return record(type="margin", ts=ts, account=account, symbol=symbol, side=side, delta=delta)


# -- helpers -----------------------------------------------------------------------------------


def feed(engine: Engine, records: Iterable[Record]) -> list[Any]:
    """Apply records; return every event payload and every refusal, in order."""
    out: list[Any] = []
    for item in records:
        try:
            out.extend(to_payload(e) for e in engine.apply(item))
        except RecordRefused as exc:
            out.append(("refused", type(exc).__name__, exc.reason))
    return out


def summary(events: Sequence[EngineEvent]) -> list[tuple[str, ...]]:
    """``(kind, account, symbol or asset[, level])`` per event."""
    out: list[tuple[str, ...]] = []
    for event in events:
        p = to_payload(event)
        where = p.get("symbol") or p["asset"]
        extra = (str(p["level"]),) if "level" in p else ()
        out.append((p["event"], p["account"], where, *extra))
    return out


def assert_refusal_changes_nothing(
    prefix: Sequence[Record],
    refused: Record,
    suffix: Sequence[Record],
    error: type[RecordRefused],
    reason: str,
) -> None:
    """``refused`` raises ``error`` with ``reason``, and the engine then behaves exactly like
    one that never saw it."""
    engine = Engine()
    feed(engine, prefix)
    counts = (engine.position_count, engine.entity_count)
    with pytest.raises(error) as caught:
        engine.apply(refused)
    assert caught.value.reason == reason
    assert (engine.position_count, engine.entity_count) == counts
    control = Engine()
    feed(control, prefix)
    expected = feed(control, suffix)
    assert any(isinstance(e, dict) for e in expected), "the suffix must produce events"
    assert feed(engine, suffix) == expected


def toy_engine(config: EngineConfig | None = None) -> Engine:
    """TOYUSDT and BBBUSDT defined, TOYUSDT marked at 100 (ts 1), BBBUSDT at 1000 (ts 1)."""
    engine = Engine(config)
    feed(
        engine,
        [
            linear("TOYUSDT"),
            linear("BBBUSDT"),
            tick("TOYUSDT", "100", 1),
            tick("BBBUSDT", "1000", 1),
        ],
    )
    return engine


ISO = EntityRef("alice", "isolated", "USDT", "TOYUSDT", "both")
CROSS = EntityRef("alice", "cross", "USDT")


# -- ticks -------------------------------------------------------------------------------------


def test_stale_tick_is_dropped_and_changes_nothing() -> None:
    """A tick older than the symbol's last accepted tick raises ``TickDropped('stale_tick')``,
    is not applied (its mark would liquidate the position) and leaves the engine unchanged."""
    prefix = [
        linear("TOYUSDT"),
        tick("TOYUSDT", "100", 10),
        position("alice", "TOYUSDT", "1", "100", 10),
    ]
    assert_refusal_changes_nothing(
        prefix,
        tick("TOYUSDT", "90", 9),
        [tick("TOYUSDT", "96", 11), linear("TOYUSDT", mmr="0.06")],
        TickDropped,
        "stale_tick",
    )


def test_tick_with_equal_ts_is_applied() -> None:
    """A tick with the same ``ts`` as the last accepted one is applied (and can liquidate)."""
    engine = toy_engine()
    feed(engine, [tick("TOYUSDT", "100", 10), position("alice", "TOYUSDT", "1", "100", 10)])
    assert summary(engine.apply(tick("TOYUSDT", "90", 10))) == [("liquidation", "alice", "TOYUSDT")]
    assert engine.exact_mark("TOYUSDT") == Decimal(90)


def test_staleness_is_per_symbol() -> None:
    """A tick older than another symbol's last tick is not stale: only its own symbol's last
    accepted ``ts`` counts."""
    engine = toy_engine()
    feed(engine, [tick("BBBUSDT", "1000", 100), position("alice", "TOYUSDT", "1", "100", 100)])
    assert summary(engine.apply(tick("TOYUSDT", "96", 50))) == [
        ("margin_warning", "alice", "TOYUSDT", "0.8")
    ]
    with pytest.raises(TickDropped) as caught:
        engine.apply(tick("TOYUSDT", "90", 49))
    assert caught.value.reason == "stale_tick"


def test_tick_for_unknown_symbol_is_dropped() -> None:
    """A tick for a symbol without a contract raises ``TickDropped('unknown_symbol')`` and is not
    remembered: once the contract exists, an *older* tick for it is accepted."""
    engine = Engine()
    with pytest.raises(TickDropped) as caught:
        engine.apply(tick("NOPEUSDT", "5", 50))
    assert caught.value.reason == "unknown_symbol"
    assert engine.exact_mark("NOPEUSDT") is None
    engine.apply(linear("NOPEUSDT"))
    assert list(engine.apply(tick("NOPEUSDT", "4", 10))) == []
    assert engine.exact_mark("NOPEUSDT") == Decimal(4)


# -- valuation before the first tick -----------------------------------------------------------


def test_unmarked_symbol_is_valued_at_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until a symbol's first tick its positions are valued at their entry price, and that first
    tick re-evaluates every entity holding the symbol.

    Cross ``carol``: wallet 312.5, long 10 TOYUSDT @ 100 (marked) and long 1 QQQUSDT @ 1000 (never
    ticked). At TOYUSDT 80: MB = 312.5 − 200 = 112.5, MM = 40 + 50 = 90: ratio exactly 0.8 only
    if QQQUSDT is valued at 1000. Its first tick (950) then reaches all four holders.
    """
    engine = toy_engine()
    feed(
        engine,
        [
            linear("QQQUSDT"),
            balance("carol", "312.5", 2),
            position("carol", "TOYUSDT", "10", "100", 2, mode="cross"),
            position("carol", "QQQUSDT", "1", "1000", 2, mode="cross"),
            position("dave", "QQQUSDT", "1", "1000", 2, wallet="100"),  # ratio 0.5 at entry
            position("erin", "QQQUSDT", "-1", "1000", 2, wallet="500"),
            position("fred", "QQQUSDT", "1", "1000", 2, wallet="1000"),
        ],
    )
    events = engine.apply(tick("TOYUSDT", "80", 3))
    assert summary(events) == [("margin_warning", "carol", "USDT", "0.8")]
    payload = to_payload(events[0])
    assert (payload["margin_ratio"], payload["margin_balance"], payload["maintenance_margin"]) == (
        0.8,
        112.5,
        90.0,
    )
    unmarked = next(p for p in payload["positions"] if p["symbol"] == "QQQUSDT")
    assert unmarked["mark"] == 1000.0

    before = engine.evaluations  # entities run through the state machine
    events = engine.apply(tick("QQQUSDT", "950", 4))
    assert engine.evaluations - before == 4
    # carol: MB = 112.5 − 50 = 62.5 <= MM = 40 + 47.5; dave: 47.5 / 50 = 0.95.
    assert summary(events) == [
        ("liquidation", "carol", "USDT"),
        ("margin_warning", "dave", "QQQUSDT", "0.9"),
    ]
    assert {e.ts for e in events} == {4}


# -- margin records ----------------------------------------------------------------------------

MARGIN_PREFIX = [
    linear("TOYUSDT"),
    tick("TOYUSDT", "100", 1),
    balance("carol", "10", 2),
    position("alice", "TOYUSDT", "1", "100", 2),
    position("carol", "TOYUSDT", "1", "100", 2, mode="cross"),
    position("gone", "TOYUSDT", "1", "100", 2),
    position("gone", "TOYUSDT", "0", "100", 3),
]
# Ratio 0.8 for alice and carol, then a re-tier stamped with the latest ts seen (20).
MARGIN_SUFFIX = [
    tick("TOYUSDT", "96", 20),
    position("gone", "TOYUSDT", "1", "100", 20),
    linear("TOYUSDT", mmr="0.06"),
]


@pytest.mark.parametrize(
    "refused",
    [
        margin("nobody", "TOYUSDT", "5", 500),
        margin("gone", "TOYUSDT", "5", 500),
        margin("carol", "TOYUSDT", "5", 500),
        margin("alice", "TOYUSDT", "5", 500, side="long"),
        margin("alice", "NOPEUSDT", "5", 500),
    ],
    ids=["missing", "closed", "cross", "other-slot", "unknown-symbol"],
)
def test_margin_record_for_a_position_not_open_and_isolated_is_rejected(refused: Record) -> None:
    """A ``margin`` record for a missing, closed or cross position (or another slot) raises
    ``RecordRejected('margin_not_open_isolated')`` and changes nothing — not the wallets, not
    the positions, not even the clock."""
    assert_refusal_changes_nothing(
        MARGIN_PREFIX, refused, MARGIN_SUFFIX, RecordRejected, "margin_not_open_isolated"
    )


# -- account records re-evaluate at once -------------------------------------------------------


def test_balance_drop_liquidates_at_once_with_the_balance_ts() -> None:
    """A ``balance`` record re-evaluates the cross entity at once: a drop below maintenance
    liquidates it, stamped with the balance's ``ts``; the loss is the whole new wallet."""
    engine = toy_engine()
    feed(
        engine,
        [balance("alice", "100", 2), position("alice", "TOYUSDT", "1", "100", 2, mode="cross")],
    )
    events = engine.apply(balance("alice", "4", 77))  # MB 4 <= MM 5
    assert summary(events) == [("liquidation", "alice", "USDT")]
    payload = to_payload(events[0])
    assert (payload["ts"], payload["scope"], payload["loss"], payload["shortfall"]) == (
        77,
        "cross",
        4.0,
        0.0,
    )


def test_margin_add_recovers_at_once_and_margin_removal_warns_at_once() -> None:
    """``margin`` records re-evaluate the isolated entity at once with their ``ts``."""
    engine = toy_engine()
    feed(engine, [position("alice", "TOYUSDT", "1", "100", 2)])
    assert summary(engine.apply(tick("TOYUSDT", "96", 3))) == [
        ("margin_warning", "alice", "TOYUSDT", "0.8")
    ]
    recovered = engine.apply(margin("alice", "TOYUSDT", "10", 60))  # 4.8 / 16 = 0.3
    assert summary(recovered) == [("margin_recovered", "alice", "TOYUSDT")]
    assert recovered[0].ts == 60
    warned = engine.apply(margin("alice", "TOYUSDT", "-10.6", 61))  # 4.8 / 5.4 = 0.888…
    assert summary(warned) == [("margin_warning", "alice", "TOYUSDT", "0.8")]
    assert warned[0].ts == 61


@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_position_opened_underwater_liquidates_at_once(mode: str) -> None:
    """A ``position`` record re-evaluates at once: a long entered at 120 with 10 of margin while
    the mark is 100 has ``MB = −10`` and is liquidated by the record itself, at its ``ts``, with
    a null ratio and a shortfall of 10."""
    engine = toy_engine()
    feed(engine, [balance("alice", "10", 2)])
    events = engine.apply(position("alice", "TOYUSDT", "1", "120", 33, mode=mode))
    assert [to_payload(e)["event"] for e in events] == ["liquidation"]
    payload = to_payload(events[0])
    assert (payload["ts"], payload["scope"], payload["margin_ratio"], payload["shortfall"]) == (
        33,
        mode,
        None,
        10.0,
    )
    assert engine.position_count == 0


# -- position records --------------------------------------------------------------------------


@pytest.mark.parametrize(("side", "qty"), [("long", "-1"), ("short", "1")])
def test_qty_contradicting_side_is_rejected(side: str, qty: str) -> None:
    """A hedge-mode leg whose signed ``qty`` contradicts its side raises
    ``RecordRejected('qty_side_mismatch')`` and changes nothing."""
    assert_refusal_changes_nothing(
        [linear("TOYUSDT"), tick("TOYUSDT", "100", 1), position("alice", "TOYUSDT", "1", "100", 2)],
        position("alice", "TOYUSDT", qty, "100", 3, side=side, wallet="1"),
        [tick("TOYUSDT", "96", 4), linear("TOYUSDT", mmr="0.06")],
        RecordRejected,
        "qty_side_mismatch",
    )


def test_one_way_short_has_negative_qty_on_side_both() -> None:
    """On side ``both`` the sign of ``qty`` is the direction: −1 is a short, not a mismatch."""
    engine = toy_engine()
    feed(engine, [position("alice", "TOYUSDT", "-1", "100", 2)])
    # Short: MB = 10 − (104 − 100) = 6, MM = 5.2: ratio 0.8666…
    assert summary(engine.apply(tick("TOYUSDT", "104", 3))) == [
        ("margin_warning", "alice", "TOYUSDT", "0.8")
    ]


def test_position_for_unknown_symbol_is_rejected() -> None:
    """A position in a symbol without a contract raises ``RecordRejected('unknown_symbol')``."""
    assert_refusal_changes_nothing(
        [linear("TOYUSDT"), tick("TOYUSDT", "100", 1), position("alice", "TOYUSDT", "1", "100", 2)],
        position("alice", "NOPEUSDT", "1", "100", 3),
        [tick("TOYUSDT", "96", 4), linear("TOYUSDT", mmr="0.06")],
        RecordRejected,
        "unknown_symbol",
    )


def test_switching_a_slot_between_isolated_and_cross_moves_it_between_entities() -> None:
    """Re-sending a slot with another ``mode`` moves the position: out of its isolated entity
    (which is forgotten) into the account's cross entity, and back."""
    engine = toy_engine()
    feed(
        engine,
        [
            balance("alice", "1000", 2),
            position("alice", "BBBUSDT", "1", "1000", 2, mode="cross"),
            position("alice", "TOYUSDT", "1", "100", 2),
        ],
    )
    assert engine.entity(ISO) is not None
    feed(engine, [position("alice", "TOYUSDT", "1", "100", 3, mode="cross")])
    assert engine.entity(ISO) is None
    cross = engine.entity(CROSS)
    assert cross is not None
    assert sorted(cross.exposures) == ["BBBUSDT", "TOYUSDT"]
    # Isolated, a mark of 50 would liquidate it; inside 1000 of cross wallet it is harmless.
    assert list(engine.apply(tick("TOYUSDT", "50", 4))) == []
    # The cross entity now answers for it: 60 of wallet − 50 of loss < MM 2.5 + 50.
    events = engine.apply(balance("alice", "60", 5))
    assert summary(events) == [("liquidation", "alice", "USDT")]
    assert {p["symbol"] for p in to_payload(events[0])["positions"]} == {"BBBUSDT", "TOYUSDT"}

    engine = toy_engine()
    feed(
        engine,
        [
            balance("alice", "1000", 2),
            position("alice", "BBBUSDT", "1", "1000", 2, mode="cross"),
            position("alice", "TOYUSDT", "1", "100", 2, mode="cross"),
            position("alice", "TOYUSDT", "1", "100", 3, wallet="10"),
        ],
    )
    cross = engine.entity(CROSS)
    assert cross is not None
    assert sorted(cross.exposures) == ["BBBUSDT"]
    assert summary(engine.apply(tick("TOYUSDT", "90", 4))) == [("liquidation", "alice", "TOYUSDT")]


# -- hedge mode --------------------------------------------------------------------------------


def _tier(contract: Any, notional: Decimal) -> Any:
    chosen = contract.tiers[0]
    for tier in contract.tiers:
        if tier.floor <= notional:
            chosen = tier
    return chosen


def _mb_mm(
    wallet: Decimal, legs: Sequence[tuple[Any, Decimal, Decimal, Decimal]]
) -> tuple[Decimal, Decimal]:
    """MB and MM of a linear cross entity, straight from docs/margin.md: legs are
    ``(contract, signed qty, entry, mark)``."""
    mb, mm = wallet, Decimal(0)
    for contract, qty, entry, mark in legs:
        mb += qty * (mark - entry)
        n = abs(qty) * mark
        tier = _tier(contract, n)
        mm += n * tier.mmr - tier.cum
    return mb, mm


def test_hedge_legs_share_one_liquidation_price_where_mb_equals_mm() -> None:
    """Hedge mode under cross: the LONG (80 @ 60,000, tier 4) and SHORT (30 @ 61,000, tier 3)
    BTCUSDT legs sit in one entity with an ETHUSDT position; both legs report the same
    liquidation price, at which — with both legs at that mark and ETHUSDT at its mark —
    MB = MM (Binance's real tier tables)."""
    tables = {
        c.symbol: c
        for c in load_brackets(
            DATA / "binance_leverage_brackets_major_symbols_2024-10.json"
        ).contracts
    }
    btc, eth = tables["BTCUSDT"], tables["ETHUSDT"]
    engine = Engine()
    feed(
        engine,
        [
            ContractRecord(btc),
            ContractRecord(eth),
            tick("BTCUSDT", "60000", 1),
            tick("ETHUSDT", "3000", 1),
            balance("hedger", "1000000", 2),
            position("hedger", "BTCUSDT", "80", "60000", 2, side="long", mode="cross"),
            position("hedger", "BTCUSDT", "-30", "61000", 2, side="short", mode="cross"),
            position("hedger", "ETHUSDT", "100", "3100", 2, mode="cross"),
        ],
    )
    legs = [
        (btc, Decimal(80), Decimal(60000)),
        (btc, Decimal(-30), Decimal(61000)),
    ]
    eth_leg = (eth, Decimal(100), Decimal(3100), Decimal(3000))
    upnl, mm = _mb_mm(Decimal(0), [*((*leg, Decimal(60000)) for leg in legs), eth_leg])
    wallet = (mm / Decimal("0.75") - upnl).quantize(Decimal(1))
    events = engine.apply(balance("hedger", str(wallet), 3))
    assert summary(events) == [("margin_warning", "hedger", "USDT", "0.7")]
    views = {(p["symbol"], p["side"]): p for p in to_payload(events[0])["positions"]}
    lp_long = views[("BTCUSDT", "long")]["liquidation_price"]
    lp_short = views[("BTCUSDT", "short")]["liquidation_price"]
    assert lp_long == lp_short
    assert 50_000 < lp_long < 60_000
    lp = Decimal(repr(lp_long))
    mb, mm = _mb_mm(wallet, [*((*leg, lp) for leg in legs), eth_leg])
    assert abs(mb - mm) <= Decimal("1e-9") * mm
    # the legs really are in different tiers at LP
    assert _tier(btc, 80 * lp).mmr != _tier(btc, 30 * lp).mmr
    # and the engine agrees: just above LP no liquidation, just below it one
    above = engine.apply(tick("BTCUSDT", repr(lp_long * (1 + 1e-7)), 4))
    assert "liquidation" not in [to_payload(e)["event"] for e in above]
    below = engine.apply(tick("BTCUSDT", repr(lp_long * (1 - 1e-7)), 5))
    assert summary(below) == [("liquidation", "hedger", "USDT")]


# -- policies ----------------------------------------------------------------------------------


def test_close_policy_removes_positions_and_zeroes_the_cross_wallet() -> None:
    """Under ``close`` a cross liquidation removes the entity's positions and sets the wallet
    to 0: a later position in the same asset with no new balance starts from wallet 0 (long 1
    entered at 93.75 at mark 100: MB = 0 + 6.25, MM = 5, ratio exactly 0.8)."""
    engine = toy_engine()
    feed(
        engine,
        [
            balance("alice", "100", 2),
            position("alice", "TOYUSDT", "1", "100", 2, mode="cross"),
            position("alice", "BBBUSDT", "-1", "1000", 2, mode="cross"),
        ],
    )
    events = engine.apply(balance("alice", "50", 3))  # MB 50 <= MM 5 + 50
    assert summary(events) == [("liquidation", "alice", "USDT")]
    assert to_payload(events[0])["loss"] == 50.0
    assert engine.position_count == 0
    assert engine.entity(CROSS) is None
    assert engine.balance("alice", "USDT") == 0
    reopened = engine.apply(position("alice", "TOYUSDT", "1", "93.75", 4, mode="cross"))
    assert summary(reopened) == [("margin_warning", "alice", "USDT", "0.8")]
    payload = to_payload(reopened[0])
    assert (payload["margin_balance"], payload["maintenance_margin"]) == (6.25, 5.0)


def test_isolated_liquidation_leaves_the_cross_wallet_alone() -> None:
    """An isolated liquidation removes only that position; the account's cross wallet and
    cross positions are untouched; the loss is the isolated wallet."""
    engine = toy_engine()
    feed(
        engine,
        [
            balance("alice", "1000", 2),
            position("alice", "BBBUSDT", "1", "1000", 2, mode="cross"),
            position("alice", "TOYUSDT", "1", "100", 2),
        ],
    )
    events = engine.apply(tick("TOYUSDT", "89", 3))
    assert summary(events) == [("liquidation", "alice", "TOYUSDT")]
    assert (to_payload(events[0])["loss"], to_payload(events[0])["shortfall"]) == (10.0, 1.0)
    assert engine.balance("alice", "USDT") == 1000
    assert engine.position_count == 1
    assert engine.entity(CROSS) is not None


def test_hold_policy_liquidates_once_then_waits_for_a_record() -> None:
    """Under ``hold`` the liquidated entity keeps its positions and stays silent on every tick
    (deeper or healthier) until a record touches it; that record re-evaluates it at once."""
    engine = toy_engine(EngineConfig.from_values(policy="hold"))
    feed(
        engine,
        [
            position("alice", "TOYUSDT", "1", "100", 2),
            position("bob", "TOYUSDT", "1", "100", 2, wallet="50"),
        ],
    )
    assert summary(engine.apply(tick("TOYUSDT", "90", 3))) == [("liquidation", "alice", "TOYUSDT")]
    assert engine.position_count == 2
    for ts, mark in enumerate(["80", "100", "120", "85"], start=4):
        assert list(engine.apply(tick("TOYUSDT", mark, ts))) == []
    # a record for someone else does not wake it
    assert list(engine.apply(margin("bob", "TOYUSDT", "1", 10))) == []
    # a record touching it does, at once: wallet 11, mark 85: MB −4, still liquidated
    again = engine.apply(margin("alice", "TOYUSDT", "1", 11))
    assert summary(again) == [("liquidation", "alice", "TOYUSDT")]
    assert again[0].ts == 11
    # healthy after more margin (31 − 15 = 16 vs MM 4.25): silent, and ticks are watched again
    assert list(engine.apply(margin("alice", "TOYUSDT", "20", 12))) == []
    assert summary(engine.apply(tick("TOYUSDT", "70", 13))) == [("liquidation", "alice", "TOYUSDT")]


def test_hold_policy_cross_entity_is_woken_by_balance_and_position_records() -> None:
    """A held cross entity is re-evaluated by a balance record or by a position record in
    another symbol of the same entity; not by ticks."""
    engine = toy_engine(EngineConfig.from_values(policy="hold"))
    feed(
        engine,
        [balance("alice", "10", 2), position("alice", "TOYUSDT", "1", "100", 2, mode="cross")],
    )
    assert summary(engine.apply(tick("TOYUSDT", "90", 3))) == [("liquidation", "alice", "USDT")]
    assert list(engine.apply(tick("TOYUSDT", "80", 4))) == []
    woken = engine.apply(balance("alice", "15", 5))  # MB −5: still liquidated
    assert summary(woken) == [("liquidation", "alice", "USDT")]
    assert list(engine.apply(tick("TOYUSDT", "79", 6))) == []
    woken = engine.apply(position("alice", "BBBUSDT", "1", "900", 7, mode="cross"))
    # MB = 15 − 21 + 100 = 94, MM = 3.95 + 50: ratio 0.57; healthy, silent, watched again
    assert list(woken) == []
    # MB = 15 + (P − 100) + 100, MM = 0.05·P + 50: liquidated again once TOYUSDT <= 36.84
    assert summary(engine.apply(tick("TOYUSDT", "37", 8))) == [
        ("margin_warning", "alice", "USDT", "0.9")
    ]
    assert summary(engine.apply(tick("TOYUSDT", "36", 9))) == [("liquidation", "alice", "USDT")]


# -- entities come and go ----------------------------------------------------------------------


def test_entity_whose_positions_all_close_is_forgotten() -> None:
    """Closing the only position forgets the entity and its ``h``: re-opening the same position
    at the same mark warns again at once, whereas re-sending an open position does not."""
    engine = toy_engine()
    feed(engine, [position("alice", "TOYUSDT", "1", "100", 2)])
    assert summary(engine.apply(tick("TOYUSDT", "96", 3))) == [
        ("margin_warning", "alice", "TOYUSDT", "0.8")
    ]
    assert list(engine.apply(position("alice", "TOYUSDT", "1", "100", 4))) == []  # h kept
    assert list(engine.apply(position("alice", "TOYUSDT", "0", "100", 5))) == []
    assert engine.entity(ISO) is None
    assert engine.entity_count == 0
    reopened = engine.apply(position("alice", "TOYUSDT", "1", "100", 6))
    assert summary(reopened) == [("margin_warning", "alice", "TOYUSDT", "0.8")]


def test_cross_entity_is_forgotten_only_when_its_last_position_closes() -> None:
    """A cross entity keeps ``h`` while any position remains and forgets it with the last one."""
    engine = toy_engine()
    feed(
        engine,
        [
            balance("alice", "1000", 2),
            position("alice", "TOYUSDT", "1", "100", 2, mode="cross"),
            position("alice", "BBBUSDT", "1", "1000", 2, mode="cross"),
        ],
    )
    # MM = 5 + 50 = 55; a balance of 73 puts MB at 73: ratio 0.7534…
    assert summary(engine.apply(balance("alice", "73", 3))) == [
        ("margin_warning", "alice", "USDT", "0.7")
    ]
    # closing TOYUSDT: MM 50 / MB 73 = 0.68, within hysteresis of 0.7: h kept, silent
    assert list(engine.apply(position("alice", "TOYUSDT", "0", "100", 4, mode="cross"))) == []
    assert list(engine.apply(position("alice", "BBBUSDT", "0", "1000", 5, mode="cross"))) == []
    assert engine.entity(CROSS) is None
    assert engine.balance("alice", "USDT") == 73
    reopened = engine.apply(position("alice", "BBBUSDT", "1", "1000", 6, mode="cross"))
    assert list(reopened) == []  # 50 / 73 = 0.68 < 0.7: a fresh entity has nothing to warn
    assert summary(engine.apply(balance("alice", "71", 7))) == [
        ("margin_warning", "alice", "USDT", "0.7")
    ]


# -- contract records --------------------------------------------------------------------------


def test_contract_record_retiering_a_held_symbol_reevaluates_its_holders() -> None:
    """A contract record that re-tiers a held symbol re-evaluates every holder at once, stamped
    with the latest ``ts`` seen (contract records carry none)."""
    engine = toy_engine()
    feed(
        engine,
        [
            position("alice", "TOYUSDT", "1", "100", 5),  # MM 5 / MB 10
            position("bob", "TOYUSDT", "-1", "100", 6, wallet="20"),  # MM 5 / MB 20
            balance("zed", "1", 9),
        ],
    )
    events = engine.apply(linear("TOYUSDT", mmr="0.08"))  # alice 0.8, bob 0.4
    assert summary(events) == [("margin_warning", "alice", "TOYUSDT", "0.8")]
    assert events[0].ts == 9
    assert list(engine.apply(linear("BBBUSDT", mmr="0.2"))) == []  # nobody holds it
    events = engine.apply(linear("TOYUSDT", mmr="0.15"))  # alice MM 15 > MB 10; bob 0.75
    assert summary(events) == [
        ("liquidation", "alice", "TOYUSDT"),
        ("margin_warning", "bob", "TOYUSDT", "0.7"),
    ]


def test_contract_record_cannot_change_the_instrument_of_a_held_symbol() -> None:
    """Changing kind, margin asset or contract size under open positions is rejected."""
    engine = toy_engine()
    feed(engine, [position("alice", "TOYUSDT", "1", "100", 2)])
    with pytest.raises(RecordRejected) as caught:
        engine.apply(linear("TOYUSDT", asset="USDC"))
    assert caught.value.reason == "contract_redefined"


# -- event ids ---------------------------------------------------------------------------------


def _busy_replay() -> list[Record]:
    records: list[Record] = [linear("TOYUSDT"), tick("TOYUSDT", "100", 1)]
    records.extend(
        position(f"acct{n:02}", "TOYUSDT", "1", "100", 2, wallet=str(8 + n % 7)) for n in range(40)
    )
    records.append(balance("x", "3", 2))
    records.append(position("x", "TOYUSDT", "-1", "100", 2, mode="cross"))
    for ts, mark in enumerate(["99", "97", "95", "99", "101", "103", "94", "91", "100"], start=3):
        records.append(tick("TOYUSDT", mark, ts))
    # under hold, the same entity is liquidated twice with the same ts
    records.append(tick("TOYUSDT", "80", 20))
    records.append(margin("acct01", "TOYUSDT", "1", 20))
    records.append(margin("acct01", "TOYUSDT", "1", 20))
    return records


@pytest.mark.parametrize("policy", ["close", "hold"])
def test_event_ids_are_unique_and_stable_across_identical_runs(policy: str) -> None:
    """Two runs of the same records give the same events with the same ids, and no two events
    share an id — not even two liquidations of one entity at one ``ts``."""
    runs: list[list[Any]] = []
    for _ in range(2):
        engine = Engine(EngineConfig.from_values(policy=policy))
        runs.append(feed(engine, _busy_replay()))
    assert runs[0] == runs[1]
    ids = [e["id"] for e in runs[0] if isinstance(e, dict)]
    assert len(ids) > 40
    assert len(set(ids)) == len(ids)
    if policy == "hold":
        last = [e for e in runs[0] if isinstance(e, dict) and e["ts"] == 20][-2:]
        assert [(e["event"], e["account"]) for e in last] == [("liquidation", "acct01")] * 2
