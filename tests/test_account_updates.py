"""Account snapshots (replace) and Binance ACCOUNT_UPDATE (merge): atomic, validated first."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from feeds.accounts import parse_account_update
from feeds.normalized import parse_line
from monitor import Engine, MalformedRecord, RecordRejected
from monitor.contracts import Tier, make_contract
from monitor.records import BalanceRecord, ContractRecord, PositionRecord, TickRecord

D = Decimal
X = make_contract("XUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.05"), D(0))])
Y = make_contract("YUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.05"), D(0))])
"""One tier at 5 %: a long of 1 at 100 with 10 of margin has ratio 0.05·P / (P − 90)."""


def _engine() -> Engine:
    engine = Engine()
    for contract in (X, Y):
        engine.apply(ContractRecord(contract))
        engine.apply(TickRecord(1, contract.symbol, 100.0, "100"))
    return engine


def _snapshot(ts: int, balances: list[dict[str, str]], positions: list[dict[str, str]]) -> bytes:
    return orjson.dumps(
        {
            "type": "account_snapshot",
            "ts": ts,
            "account": "a",
            "balances": balances,
            "positions": positions,
        }
    )


def _cross(symbol: str, qty: str, entry: str = "100") -> dict[str, str]:
    return {
        "symbol": symbol,
        "side": "both",
        "mode": "cross",
        "qty": qty,
        "entry": entry,
        "leverage": "10",
    }


def test_a_snapshot_replaces_the_account() -> None:
    """Positions it does not list are closed and balances it does not list become 0; the rest
    is set, and the cross entity is evaluated once with the snapshot's ts."""
    engine = _engine()
    engine.apply(BalanceRecord(2, "a", "USDT", D(1000)))
    engine.apply(BalanceRecord(2, "a", "BTC", D(1)))
    engine.apply(PositionRecord(2, "a", "XUSDT", "both", "cross", D(1), D(100), D(10), None))
    engine.apply(PositionRecord(2, "a", "YUSDT", "both", "cross", D(1), D(100), D(10), None))
    events = engine.apply(
        parse_line(_snapshot(3, [{"asset": "USDT", "wallet": "6.25"}], [_cross("YUSDT", "1")]))
    )
    assert engine.balance("a", "USDT") == D("6.25")
    assert engine.balance("a", "BTC") == 0
    assert engine.position_count == 1
    (warning,) = events  # MM 5 on a wallet of 6.25 at the entry: ratio exactly 0.8
    assert (warning.kind, warning.level, warning.ts) == ("margin_warning", 0.8, 3)


def test_an_older_snapshot_than_the_last_applied_is_rejected() -> None:
    """Snapshots can arrive out of order: an older one never overwrites a newer one."""
    engine = _engine()
    engine.apply(parse_line(_snapshot(10, [{"asset": "USDT", "wallet": "500"}], [])))
    with pytest.raises(RecordRejected, match="older") as caught:
        engine.apply(parse_line(_snapshot(9, [{"asset": "USDT", "wallet": "1"}], [])))
    assert caught.value.reason == "stale_snapshot"
    assert engine.balance("a", "USDT") == 500


def test_a_snapshot_with_one_bad_position_changes_nothing() -> None:
    """Validated as a whole: an unknown symbol rejects the snapshot before anything applies."""
    engine = _engine()
    engine.apply(BalanceRecord(2, "a", "USDT", D(1000)))
    bad = _snapshot(
        3, [{"asset": "USDT", "wallet": "1"}], [_cross("XUSDT", "1"), _cross("NOPE", "1")]
    )
    with pytest.raises(RecordRejected):
        engine.apply(parse_line(bad))
    assert engine.balance("a", "USDT") == 1000
    assert engine.position_count == 0


def test_a_snapshot_listing_a_slot_twice_is_malformed() -> None:
    """Two positions in one slot cannot both be the truth."""
    with pytest.raises(MalformedRecord, match="twice"):
        parse_line(_snapshot(3, [], [_cross("XUSDT", "1"), _cross("XUSDT", "2")]))


def _update(balances: list[dict[str, str]], positions: list[dict[str, str]]) -> dict[str, object]:
    return {
        "e": "ACCOUNT_UPDATE",
        "E": 7,
        "T": 6,
        "a": {"m": "ORDER", "B": balances, "P": positions},
    }


def test_account_update_merges_what_changed_and_keeps_the_rest() -> None:
    """Only listed balances and positions change; the cross wallet is ``cw``; the leverage of
    an updated position is kept; ``pa`` 0 closes; evaluated once at ``E``."""
    engine = _engine()
    engine.apply(BalanceRecord(2, "a", "USDT", D(1000)))
    engine.apply(PositionRecord(2, "a", "XUSDT", "both", "cross", D(1), D(100), D(7), None))
    engine.apply(PositionRecord(2, "a", "YUSDT", "both", "cross", D(1), D(100), D(7), None))
    record = parse_account_update(
        _update(
            [{"a": "USDT", "wb": "999", "cw": "20", "bc": "0"}],
            [
                {"s": "XUSDT", "pa": "2", "ep": "100", "mt": "cross", "iw": "0", "ps": "BOTH"},
                {"s": "YUSDT", "pa": "0", "ep": "0", "mt": "cross", "iw": "0", "ps": "BOTH"},
            ],
        ),
        "a",
    )
    events = engine.apply(record)
    assert engine.balance("a", "USDT") == 20
    (position,) = [p for e in engine.entities() for p in e.positions()]
    assert (position.symbol, position.leg.qty, position.leverage) == ("XUSDT", 2, 7)
    assert [e.ts for e in events] == [7] * len(events)


def test_account_update_applies_atomically() -> None:
    """A wallet drop and a bigger position arriving together are judged together: applied one
    after the other, the intermediate state (small wallet, old position) would alert."""
    engine = _engine()
    engine.apply(BalanceRecord(2, "a", "USDT", D(1000)))
    engine.apply(PositionRecord(2, "a", "XUSDT", "both", "cross", D(100), D(100), D(10), None))
    # wallet 1000 -> 600, position 100 -> 1 (the trading system closed most of it)
    record = parse_account_update(
        _update(
            [{"a": "USDT", "wb": "600", "cw": "600", "bc": "0"}],
            [{"s": "XUSDT", "pa": "1", "ep": "100", "mt": "cross", "iw": "0", "ps": "BOTH"}],
        ),
        "a",
    )
    assert engine.apply(record) == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"e": "ORDER_TRADE_UPDATE", "E": 1, "a": {}}, "invalid_field"),
        ({"e": "ACCOUNT_UPDATE", "a": {}}, "missing_field"),
        (
            _update([], [{"s": "X", "pa": "1", "ep": "0", "mt": "cross", "ps": "BOTH"}]),
            "invalid_field",
        ),
        (_update([{"a": "USDT", "cw": "NaN"}], []), "non_finite_number"),
        (_update([{"a": "USDT", "cw": "\u0661\u0662"}], []), "non_ascii_digits"),
        (_update([{"a": "USDT", "cw": "1e31"}], []), "number_out_of_range"),
        (_update([{"a": "USDT", "cw": "1"}, {"a": "USDT", "cw": "2"}], []), "invalid_field"),
        (
            _update(
                [],
                [
                    {"s": "X", "pa": "1", "ep": "1", "mt": "cross", "ps": "BOTH"},
                    {"s": "X", "pa": "2", "ep": "1", "mt": "cross", "ps": "BOTH"},
                ],
            ),
            "invalid_field",
        ),
        (
            _update([], [{"s": "X", "pa": "1", "ep": "1", "mt": "margin", "ps": "BOTH"}]),
            "invalid_field",
        ),
    ],
)
def test_malformed_account_updates_are_refused_with_a_reason(
    message: dict[str, object], reason: str
) -> None:
    """Wrong event, missing time, a zero entry for an open position, NaN, digits of another
    script, a number out of range, an asset or a slot listed twice (one message, two truths),
    an unknown margin type: each is a MalformedRecord with a stable reason."""
    with pytest.raises(MalformedRecord) as caught:
        parse_account_update(message, "a")
    assert caught.value.reason == reason


def test_the_combined_stream_wrapper_is_accepted() -> None:
    """``{"stream": ..., "data": ACCOUNT_UPDATE}`` is unwrapped."""
    wrapped = {"stream": "listenKey", "data": _update([{"a": "USDT", "cw": "5"}], [])}
    assert parse_account_update(wrapped, "a").balances == (("USDT", D(5)),)
