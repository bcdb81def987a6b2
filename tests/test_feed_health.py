"""The feed-health detector (``feeds.health``): table tests on explicit times, no clock.

Each scenario is a list of steps — ``("mark", symbol, seconds[, price])``, ``("watch", symbols,
seconds)`` or ``("check", seconds)`` — and the events it must produce, summarised as
``(kind, symbol, ts_ms, stale_ms)``. The detector here has ``stale_after`` = 3 × 1 s.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from feeds.health import FeedHealth, FeedRecovered, FeedStalled, SymbolHealth
from monitor.errors import ConfigError
from tests.conftest import ROOT

T0 = 1_786_310_000_000_000_000  # ns: every step's seconds are counted from here
S = 1_000_000_000


def at(seconds: float) -> int:
    return T0 + round(seconds * S)


def run(health: FeedHealth, steps: list[tuple[Any, ...]]) -> list[tuple[str, str, int, int]]:
    events: list[FeedStalled | FeedRecovered] = []
    for step in steps:
        if step[0] == "mark":
            _, symbol, seconds, *price = step
            recovered = health.observe(symbol, at(seconds), price[0] if price else None)
            if recovered is not None:
                events.append(recovered)
        elif step[0] == "watch":
            health.watch(step[1], at(step[2]))
        else:
            events.extend(health.check(at(step[1])))
    return [
        (event.kind, event.symbol, event.ts - T0 // 1_000_000, event.stale_ns // 1_000_000)
        for event in events
    ]


SCENARIOS = {
    "fresh marks: nothing": (
        [("mark", "BTC", 0), ("check", 1), ("mark", "BTC", 2), ("check", 4.9)],
        [],
    ),
    "stale exactly at stale_after": (
        [("mark", "BTC", 0), ("check", 2.999), ("check", 3)],
        [("feed_stale", "BTC", 3000, 3000)],
    ),
    "reported once per episode": (
        [("mark", "BTC", 0), ("check", 3.5), ("check", 4), ("check", 60)],
        [("feed_stale", "BTC", 3000, 3000)],  # stamped when the limit passed, not when seen
    ),
    "recovered on the next mark, with the whole gap": (
        [("mark", "BTC", 0), ("check", 4), ("mark", "BTC", 7.25)],
        [("feed_stale", "BTC", 3000, 3000), ("feed_recovered", "BTC", 7250, 7250)],
    ),
    "a new episode counts from the resuming mark": (
        [
            ("mark", "BTC", 0),
            ("check", 3),
            ("mark", "BTC", 5),
            ("check", 7.9),
            ("check", 8),
            ("mark", "BTC", 9),
        ],
        [
            ("feed_stale", "BTC", 3000, 3000),
            ("feed_recovered", "BTC", 5000, 5000),
            ("feed_stale", "BTC", 8000, 3000),
            ("feed_recovered", "BTC", 9000, 4000),
        ],
    ),
    "a gap no check saw is not reported": (
        [("mark", "BTC", 0), ("check", 1), ("mark", "BTC", 10), ("check", 11)],
        [],
    ),
    "only the silent symbol stalls, events by symbol": (
        [
            ("mark", "ETH", 0),
            ("mark", "BTC", 0),
            ("mark", "SOL", 0),
            ("mark", "ETH", 2),
            ("check", 3.5),
        ],
        [("feed_stale", "BTC", 3000, 3000), ("feed_stale", "SOL", 3000, 3000)],
    ),
    "a watched symbol that never ticks stalls from when it was watched": (
        [("watch", ["BTC", "XRP"], 1), ("mark", "BTC", 2), ("check", 4), ("mark", "XRP", 6)],
        [("feed_stale", "XRP", 4000, 3000), ("feed_recovered", "XRP", 6000, 5000)],
    ),
    "watching a known symbol does not reset it": (
        [("mark", "BTC", 0), ("watch", ["BTC"], 2), ("check", 3)],
        [("feed_stale", "BTC", 3000, 3000)],
    ),
    "a receive time that goes backwards does not refresh the symbol": (
        [("mark", "BTC", 10), ("mark", "BTC", 9), ("check", 13)],
        [("feed_stale", "BTC", 13000, 3000)],
    ),
    "a late old mark does not end a stall": (
        [("mark", "BTC", 10), ("check", 13), ("mark", "BTC", 9), ("mark", "BTC", 14)],
        [("feed_stale", "BTC", 13000, 3000), ("feed_recovered", "BTC", 14000, 4000)],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_stale_and_recovered_events(
    steps: list[tuple[Any, ...]], expected: list[tuple[str, str, int, int]]
) -> None:
    """Each scenario gives exactly its events: stale at >= stale_after without a mark, once
    per episode, stamped with the moment the limit passed (however late the check); recovered
    on the next mark with the gap measured from the last one."""
    assert run(FeedHealth("binance-usdm", expected_interval_s=1.0, multiple=3.0), steps) == expected


def test_stalled_event_says_at_what_mark_and_age_the_symbol_was_left() -> None:
    """FeedStalled carries the last mark, its receive time, the stale duration and the limit;
    its payload is JSON-ready with times in ms."""
    health = FeedHealth("okx", expected_interval_s=10.0, multiple=3.0)
    health.observe("BTC-USDT-SWAP", at(0), 28479.1)
    (event,) = health.check(at(31.5))
    assert event == FeedStalled(
        id=event.id,
        ts=at(30) // 1_000_000,  # when the limit passed: the same for any later check
        venue="okx",
        symbol="BTC-USDT-SWAP",
        since_ns=at(0),
        last_mark_ns=at(0),
        last_mark=28479.1,
        stale_ns=30 * S,
        stale_after_ns=30 * S,
    )
    assert event.to_payload() == {
        "event": "feed_stale",
        "id": event.id,
        "ts": at(30) // 1_000_000,
        "venue": "okx",
        "symbol": "BTC-USDT-SWAP",
        "since_ts": at(0) // 1_000_000,
        "last_mark_ts": at(0) // 1_000_000,
        "last_mark": 28479.1,
        "stale_ms": 30_000,
        "stale_after_ms": 30_000,
    }

    recovered = health.observe("BTC-USDT-SWAP", at(40), 28480.0)
    assert recovered is not None
    assert recovered.to_payload() == {
        "event": "feed_recovered",
        "id": recovered.id,
        "ts": at(40) // 1_000_000,
        "venue": "okx",
        "symbol": "BTC-USDT-SWAP",
        "since_ts": at(0) // 1_000_000,
        "recovered_ts": at(40) // 1_000_000,
        "stale_ms": 40_000,
        "mark": 28480.0,
    }


def test_a_symbol_that_never_ticked_is_reported_without_a_mark() -> None:
    """A watched symbol with no mark at all stalls with last mark and its time null."""
    health = FeedHealth("bybit", expected_interval_s=20.0, multiple=3.0)
    health.watch(["DOGEUSDT"], at(0))
    (event,) = health.check(at(60))
    assert (event.last_mark, event.last_mark_ns, event.since_ns) == (None, None, at(0))
    assert event.to_payload()["last_mark_ts"] is None


def test_status_gives_last_mark_age_and_staleness_per_symbol() -> None:
    """While stale, status() says at what mark and age each symbol was last valued."""
    health = FeedHealth("binance-usdm", expected_interval_s=1.0, multiple=3.0)
    health.observe("ETHUSDT", at(0), 1981.5)
    health.observe("BTCUSDT", at(1), 61800.2)
    health.check(at(3.5))
    assert health.status(at(4)) == [
        SymbolHealth("BTCUSDT", at(1), 61800.2, 3 * S, stale=False, stale_since_ns=None),
        SymbolHealth("ETHUSDT", at(0), 1981.5, 4 * S, stale=True, stale_since_ns=at(0)),
    ]
    assert health.stale_symbols() == ["ETHUSDT"]


def test_ids_are_stable_and_distinct() -> None:
    """The same facts give the same ids in another detector (a replay); different episodes
    and kinds give different ids."""

    def episode() -> list[str]:
        health = FeedHealth("bybit", expected_interval_s=1.0, multiple=3.0)
        health.observe("BTCUSDT", at(0))
        ids = [event.id for event in health.check(at(5))]
        recovered = health.observe("BTCUSDT", at(6))
        assert recovered is not None
        ids.append(recovered.id)
        ids.extend(event.id for event in health.check(at(10)))
        return ids

    first, second = episode(), episode()
    assert first == second
    assert len(set(first)) == 3


@pytest.mark.parametrize(
    ("interval", "multiple"),
    [(0.0, 3.0), (-1.0, 3.0), (1.0, 0.5), (float("inf"), 3.0), (float("nan"), 3.0)],
)
def test_nonsense_settings_are_refused(interval: float, multiple: float) -> None:
    """A non-positive or non-finite interval, or a multiple below 1, is a ConfigError."""
    with pytest.raises(ConfigError, match="expected_interval_s"):
        FeedHealth("okx", expected_interval_s=interval, multiple=multiple)


def test_the_detector_is_pure() -> None:
    """feeds/health.py imports nothing that reads a clock, does I/O or runs concurrently."""
    tree = ast.parse(Path(ROOT / "feeds" / "health.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {
        "__future__",
        "hashlib",
        "math",
        "collections",
        "dataclasses",
        "typing",
        "monitor",
    }
