"""The human rendering of events (``alerts.console``): what a person watching a terminal reads.

Real events come from the bundled scenario (``examples/crash.jsonl``); a few hand-made ones
cover what the scenario does not (large prices, small coin amounts, unknown prices).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest

from alerts.console import ConsoleSink, format_time, render, render_payload
from feeds.health import FeedRecovered, FeedStalled
from feeds.normalized import parse_line
from monitor.engine import Engine
from monitor.events import (
    EngineEvent,
    EntityRef,
    LiquidationTriggered,
    MarginWarningRaised,
    PositionView,
)
from tests.conftest import ROOT

HEADWORDS = {
    "margin_warning": "WARNING",
    "margin_recovered": "RECOVERED",
    "liquidation": "LIQUIDATED",
}


def _scenario_events() -> list[EngineEvent]:
    engine = Engine()
    events: list[EngineEvent] = []
    for line in (ROOT / "examples" / "crash.jsonl").read_text().splitlines():
        events.extend(engine.apply(parse_line(line)))  # the scenario has no refused line
    return events


EVENTS = _scenario_events()


def _event(kind: str, account: str) -> EngineEvent:
    return next(e for e in EVENTS if e.kind == kind and e.entity.account == account)


@pytest.fixture
def tokyo_local_time() -> Iterator[None]:
    """Local time far from UTC, to show it does not leak into the rendering."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


def test_format_time_is_utc_with_milliseconds(tokyo_local_time: None) -> None:
    """Exchange ms timestamps print as UTC date and time with milliseconds, whatever the
    local time zone."""
    assert format_time(1_636_956_000_000) == "2021-11-15 06:00:00.000Z"
    assert format_time(1_636_956_000_123) == "2021-11-15 06:00:00.123Z"
    assert format_time(0) == "1970-01-01 00:00:00.000Z"


@pytest.mark.parametrize("event", EVENTS, ids=[f"{e.kind}-{e.entity.account}" for e in EVENTS])
def test_headline_names_time_entity_and_kind(event: EngineEvent) -> None:
    """Every event's first line starts with its UTC time and the entity (account, scope, asset
    or symbol/side), then says what happened."""
    headline = render(event).splitlines()[0]
    entity = event.entity
    scope = f"{entity.asset}" if entity.scope == "cross" else f"{entity.symbol} {entity.side}"
    assert headline.startswith(f"{format_time(event.ts)}  {entity.account} ")
    assert entity.scope in headline
    assert scope in headline
    assert f"  {HEADWORDS[event.kind]}  " in headline


def test_warning_headline_shows_level_ratio_and_margins() -> None:
    """alice's warning: level, ratio as a percentage, margin balance and maintenance margin."""
    assert render(_event("margin_warning", "alice")).splitlines()[0] == (
        "2021-11-15 20:30:00.000Z  alice XRPUSDT both isolated  WARNING  level 0.7  "
        "ratio 78.3%  MB 255.04 MM 199.74 USDT"
    )


def test_recovered_is_a_single_line() -> None:
    """A recovery is one line: ratio, margin balance and maintenance margin."""
    assert render(_event("margin_recovered", "bob")) == (
        "2021-11-16 00:35:00.000Z  bob cross USDT  RECOVERED  "
        "ratio 6.9%  MB 6,011.20 MM 416.83 USDT"
    )


def test_isolated_liquidation_shows_loss_and_shortfall() -> None:
    """alice loses her isolated wallet, 967.44 USDT, and leaves no shortfall."""
    assert render(_event("liquidation", "alice")).splitlines()[0] == (
        "2021-11-15 21:15:00.000Z  alice XRPUSDT both isolated  LIQUIDATED  "
        "loss 967.44 USDT  shortfall 0.00 USDT  ratio 213.4%"
    )


def test_cross_liquidation_below_zero_shows_shortfall_and_no_ratio() -> None:
    """carol's cross XRP account ends below zero: the loss is her wallet, the shortfall the
    deficit, and the ratio is not a number (margin balance ≤ 0)."""
    assert render(_event("liquidation", "carol")).splitlines()[0] == (
        "2021-11-16 01:30:00.000Z  carol cross XRP  LIQUIDATED  loss 1,980.00 XRP  "
        "shortfall 255.61 XRP  ratio n/a (MB≤0)"
    )


def test_positions_follow_warnings_and_liquidations() -> None:
    """Warnings and liquidations list the positions with entry, mark, liquidation and
    bankruptcy prices; hedge legs each get their own entry."""
    lines = render(_event("margin_warning", "alice")).splitlines()
    assert lines[1] == "    XRPUSDT both 20000 @ 1.2093 mark 1.17368 liq 1.17089 bkr 1.16093"
    dave = render(_event("liquidation", "dave")).splitlines()[1]
    assert "XRPUSDT long 60000 @ 1.2093 mark 1.12958" in dave
    assert "XRPUSDT short -35000 @ 1.205 mark 1.12958" in dave


def _btc_view(liquidation: float | None) -> PositionView:
    return PositionView(
        symbol="BTCUSD_PERP",
        side="both",
        qty=1000.0,
        entry=61800.3,
        mark=123456.789,
        liquidation_price=liquidation,
        bankruptcy_price=None,
    )


def test_large_prices_small_amounts_and_unknown_prices() -> None:
    """Prices of 100,000 and more keep two decimals, coin amounts below 1 keep their
    significant digits, and a price that does not exist prints as a dash."""
    event = LiquidationTriggered(
        id="x",
        ts=1_700_000_000_000,
        entity=EntityRef("carol", "cross", "BTC"),
        margin_ratio=None,
        margin_balance=-0.0123,
        maintenance_margin=0.004,
        loss=0.1,
        shortfall=0.0123,
        positions=(_btc_view(None),),
    )
    head, detail = render(event).splitlines()
    assert "loss 0.1 BTC  shortfall 0.0123" in head
    assert detail == "    BTCUSD_PERP both 1000 @ 61,800.3 mark 123,456.79 liq — bkr —"


def test_warning_without_ratio_says_why() -> None:
    """A ratio of None reads as not applicable because the margin balance is not positive."""
    event = MarginWarningRaised(
        id="x",
        ts=0,
        entity=EntityRef("zed", "isolated", "USDT", "BTCUSDT", "long"),
        level=0.9,
        margin_ratio=None,
        margin_balance=0.0,
        maintenance_margin=1.0,
        liquidation_price=None,
        positions=(),
    )
    assert render(event) == (
        "1970-01-01 00:00:00.000Z  zed BTCUSDT long isolated  WARNING  level 0.9  "
        "ratio n/a (MB≤0)  MB 0.00 MM 1.00 USDT"
    )


@pytest.mark.parametrize("kind", ["margin_warning", "liquidation"])
def test_render_is_a_headline_and_one_positions_line(kind: str) -> None:
    """Warnings and liquidations render as the documented headline plus exactly one indented
    line listing the positions with their liquidation and bankruptcy prices."""
    headline, positions, *rest = render(_event(kind, "alice")).split("\n")
    assert rest == []
    assert "alice" in headline
    assert positions.startswith("    ")
    assert " liq " in positions
    assert " bkr " in positions


async def test_console_sink_writes_each_event_once_without_colour_by_default() -> None:
    """On a non-terminal stream the sink writes the plain rendering, newline-terminated."""
    stream = io.StringIO()
    sink = ConsoleSink(stream)
    for event in EVENTS:
        await sink.publish(event)
    await sink.close()
    assert stream.getvalue() == "".join(render(e) + "\n" for e in EVENTS)
    assert "\033[" not in stream.getvalue()


async def test_console_sink_colours_by_kind_when_asked() -> None:
    """With colour on, each event is wrapped in its kind's colour and reset."""
    stream = io.StringIO()
    sink = ConsoleSink(stream, colour=True)
    await sink.publish(_event("liquidation", "carol"))
    await sink.publish(_event("margin_recovered", "bob"))
    first, second = stream.getvalue().split("\033[0m\n")[:2]
    assert first.startswith("\033[1;31m")
    assert "LIQUIDATED" in first
    assert second.startswith("\033[32m")
    assert "RECOVERED" in second


STALL = FeedStalled(
    id="s1",
    ts=1_637_000_012_000,
    venue="binance-usdm",
    symbol="XRPUSDT",
    since_ns=1_637_000_000_000_000_000,
    last_mark_ns=1_637_000_000_000_000_000,
    last_mark=1.20932,
    stale_ns=12_000_000_000,
    stale_after_ns=5_000_000_000,
)
BACK = FeedRecovered(
    id="r1",
    ts=1_637_000_015_500,
    venue="binance-usdm",
    symbol="XRPUSDT",
    since_ns=1_637_000_000_000_000_000,
    recovered_ns=1_637_000_015_500_000_000,
    stale_ns=15_500_000_000,
    mark=1.1655,
)


def test_feed_events_render_as_one_line_naming_venue_and_symbol() -> None:
    """``feed_stale`` and ``feed_recovered`` payloads have no entity (no ``scope``): they render
    as one line with the venue, the symbol, how long the silence lasted and the mark, instead
    of failing on the missing entity fields (``liqmon tail`` used to stop with KeyError)."""
    assert render_payload(STALL.to_payload()) == (
        "2021-11-15 18:13:32.000Z  FEED STALE  binance-usdm XRPUSDT: no mark for 12 s "
        "(last 1.20932)"
    )
    assert render_payload(BACK.to_payload()) == (
        "2021-11-15 18:13:35.500Z  FEED RECOVERED  binance-usdm XRPUSDT after 15.5 s at 1.1655"
    )
    never = render_payload({**STALL.to_payload(), "last_mark": None, "last_mark_ts": None})
    assert never.endswith("no mark for 12 s (last —)")
