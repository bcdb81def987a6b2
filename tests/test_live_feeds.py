"""The live feeds (``feeds.live``): pure policy functions, then every venue end to end against
the local fake exchange (``tests/fake_exchange.py``) through the real frame parser.

Network tests wait on conditions with timeouts (:meth:`FakeExchange.wait_until`), never on
sleeps; staleness is decided with a fake clock; backoff delays are made deterministic by
injecting the jitter's random source.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import orjson
import pytest
import structlog
from pydantic import ValidationError
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.http11 import Response

from feeds.backoff import ReconnectPolicy
from feeds.frames import FrameParser
from feeds.health import FeedHealth, FeedRecovered
from feeds.live import (
    BINANCE_MAX_STREAMS,
    BYBIT_BATCH,
    VENUES,
    FeedFailed,
    FeedSpec,
    FeedStats,
    Frame,
    classify,
    frames,
    retryable,
    subscription,
)
from feeds.ticks import MAX_FRAME_BYTES, MarkTick
from tests.fake_exchange import (
    BINANCE_ALL,
    FakeExchange,
    Start,
    fake_exchange_fixture,  # noqa: F401  # registers the fake_exchange fixture
)

pytestmark = pytest.mark.integration

SYMBOLS = {
    "binance-usdm": ("BTCUSDT", "ETHUSDT"),
    "binance-coinm": ("BTCUSD_PERP", "ETHUSD_PERP"),
    "bybit": ("BTCUSDT", "SOLUSDT"),
    "okx": ("BTC-USDT-SWAP", "ETH-USDT-SWAP"),
}
ALL_VENUES = tuple(SYMBOLS)
FLOOR_S = 0.2
POLICY = ReconnectPolicy(base_s=0.05, cap_s=0.4, minimum_s=FLOOR_S)
NO_JITTER: Callable[[], float] = lambda: 0.0  # noqa: E731  # every delay is the floor


class Clock:
    """A fake receive clock: each reading is ``step`` ns after the previous one."""

    def __init__(self, start: int = 1_786_310_000_000_000_000, step: int = 1_000_000) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)


class Consumer:
    """Runs a feed, parses every frame with the real parser, tells the exchange it changed."""

    def __init__(self, exchange: FakeExchange, health: FeedHealth | None = None) -> None:
        self.exchange = exchange
        self.parser = FrameParser(exchange.venue)
        self.health = health
        self.frames: list[Frame] = []
        self.ticks: list[MarkTick] = []
        self.rejects: list[tuple[str, str]] = []
        self.recovered: list[FeedRecovered] = []
        self.stats = FeedStats(exchange.venue)

    @property
    def raws(self) -> list[str]:
        return [frame.raw for frame in self.frames]

    async def run(self, spec: FeedSpec, **options: Any) -> None:
        async with aclosing(frames(spec, stats=self.stats, **options)) as stream:
            async for frame in stream:
                self.frames.append(frame)
                parsed = self.parser.parse(frame.raw, frame.receive_ts_ns)
                self.rejects.extend(parsed.rejects)
                for tick in parsed.ticks:
                    self.ticks.append(tick)
                    self.stats.observe_skew(tick.exchange_ts_ms, frame.receive_ts_ns)
                    if self.health is not None:
                        event = self.health.observe(tick.symbol, frame.receive_ts_ns, tick.mark)
                        if event is not None:
                            self.recovered.append(event)
                self.exchange.notify()


@asynccontextmanager
async def consuming(
    exchange: FakeExchange, spec: FeedSpec, health: FeedHealth | None = None, **options: Any
) -> AsyncIterator[Consumer]:
    """The feed running in a task of a TaskGroup for the duration of the block."""
    consumer = Consumer(exchange, health)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(spec, **options))
        try:
            yield consumer
        finally:
            task.cancel()


async def run_to_end(spec: FeedSpec, stats: FeedStats) -> None:
    """Iterate the feed until it ends (it only ends by raising)."""
    async with aclosing(frames(spec, stats=stats)) as stream:
        async for _ in stream:
            pass


def spec_for(exchange: FakeExchange, symbols: Any = None, **settings: Any) -> FeedSpec:
    symbols = SYMBOLS[exchange.venue] if symbols is None else symbols
    settings.setdefault("reconnect", POLICY)
    return FeedSpec(venue=exchange.venue, symbols=symbols, url=exchange.url, **settings)


def server_topics(venue: str, symbols: tuple[str, ...]) -> list[str]:
    if venue.startswith("binance"):
        return [f"{symbol.lower()}@markPrice@1s" for symbol in symbols]
    if venue == "bybit":
        return [f"tickers.{symbol}" for symbol in symbols]
    return list(symbols)


# --- pure policy --------------------------------------------------------------------------


def _status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "", Headers()))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ConnectionClosedError(None, None), True),
        (_status(503), True),
        (_status(429), True),  # rate limited: back off and retry
        (_status(418), True),  # Binance's temporary IP ban
        (_status(404), False),  # a wrong path does not heal
        (_status(400), False),
        (InvalidURI("wss//x", "bad"), False),
        (ValueError("bug"), False),
    ],
)
def test_which_failures_are_retried(exc: BaseException, expected: bool) -> None:
    """Network trouble, 5xx, 408/418/429 are retried; other HTTP statuses and bad URIs are not."""
    assert retryable(exc) is expected


def test_subscriptions_follow_each_venues_documented_shape() -> None:
    """Binance: combined streams in the URL (lowercase, @1s, or the all-market array); Bybit:
    tickers topics in batches; OKX: mark-price channel args. Default endpoints per venue."""
    usdm = subscription(FeedSpec(venue="binance-usdm", symbols=["BTCUSDT", "ETHUSDT"]))
    assert usdm.url == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    )
    assert usdm.messages == ()
    coinm = subscription(FeedSpec(venue="binance-coinm", symbols="all"))
    assert coinm.url == "wss://dstream.binance.com/stream?streams=!markPrice@arr@1s"

    symbols = [f"S{n}USDT" for n in range(BYBIT_BATCH + 3)]
    bybit = subscription(FeedSpec(venue="bybit", symbols=symbols))
    assert bybit.url == "wss://stream.bybit.com/v5/public/linear"
    requests = [orjson.loads(message) for message in bybit.messages]
    assert [request["op"] for request in requests] == ["subscribe", "subscribe"]
    assert [arg for request in requests for arg in request["args"]] == [
        f"tickers.{symbol}" for symbol in symbols
    ]
    assert len(requests[0]["args"]) == BYBIT_BATCH

    okx = subscription(FeedSpec(venue="okx", symbols="BTC-USDT-SWAP, ETH-USDT-SWAP"))
    assert okx.url == "wss://ws.okx.com:8443/ws/v5/public"
    (request,) = (orjson.loads(message) for message in okx.messages)
    assert request["op"] == "subscribe"
    assert request["args"] == [
        {"channel": "mark-price", "instId": "BTC-USDT-SWAP"},
        {"channel": "mark-price", "instId": "ETH-USDT-SWAP"},
    ]


def test_feed_spec_takes_venue_defaults_and_refuses_what_a_venue_cannot_do() -> None:
    """Omitted settings come from the venue profile and None turns one off; 'all' off Binance,
    too many Binance streams, malformed symbols and non-websocket URLs are refused."""
    binance = FeedSpec(venue="binance-usdm", symbols="all")
    assert binance.max_age_s == 23 * 3600
    assert binance.heartbeat_s is None
    assert binance.protocol_ping_s == VENUES["binance-usdm"].protocol_ping_s
    okx = FeedSpec(venue="okx", symbols=["BTC-USDT-SWAP"])
    assert okx.heartbeat_s == 20.0
    assert okx.expected_interval_s == 10.0
    assert okx.max_age_s is None
    assert FeedSpec(venue="binance-usdm", symbols="all", max_age_s=None).max_age_s is None
    assert FeedSpec(venue="bybit", symbols=["A", "A", "B"]).symbols == ("A", "B")

    with pytest.raises(ValidationError, match="only available on Binance"):
        FeedSpec(venue="bybit", symbols="all")
    with pytest.raises(ValidationError, match="use symbols 'all'"):
        FeedSpec(venue="binance-usdm", symbols=[f"S{n}" for n in range(BINANCE_MAX_STREAMS + 1)])
    with pytest.raises(ValidationError, match="not a symbol"):
        FeedSpec(venue="okx", symbols=["BTC/USDT"])
    with pytest.raises(ValidationError, match="N < 30"):
        FeedSpec(venue="okx", symbols=["BTC-USDT-SWAP"], heartbeat_s=30)
    with pytest.raises(ValidationError, match="ws:// or wss://"):
        FeedSpec(venue="okx", symbols=["BTC-USDT-SWAP"], url="https://www.okx.com")


@pytest.mark.parametrize(
    ("venue", "raw", "expected"),
    [
        ("okx", "pong", ("pong", "")),
        (
            "okx",
            '{"id":"sub0","event":"subscribe","arg":{"channel":"mark-price"},"connId":"a"}',
            ("ack", ""),
        ),
        (
            "okx",
            '{"event":"error","code":"60012","msg":"Invalid request","connId":"a"}',
            ("error", "60012 Invalid request"),
        ),
        (
            "okx",
            '{"event":"notice","code":"64008","msg":"will close","connId":"a"}',
            ("notice", "64008 will close"),
        ),
        ("okx", '{"arg":{"channel":"mark-price"},"data":[]}', None),
        ("bybit", '{"success":true,"ret_msg":"pong","conn_id":"c","op":"ping"}', ("pong", "")),
        ("bybit", '{"success":true,"ret_msg":"","conn_id":"c","op":"subscribe"}', ("ack", "")),
        (
            "bybit",
            '{"success":false,"ret_msg":"bad topic","conn_id":"c","op":"subscribe"}',
            ("error", "bad topic"),
        ),
        ("bybit", '{"topic":"tickers.BTCUSDT","type":"delta","data":{}}', None),
        ("binance-usdm", '{"result":null,"id":1}', ("ack", "")),
        ("binance-usdm", '{"stream":"btcusdt@markPrice@1s","data":{}}', None),
        ("bybit", "not json at all", None),  # garbage is data: the parser counts it
        ("okx", "[1, 2]", None),
    ],
)
def test_transport_chatter_is_told_apart_from_data(
    venue: str, raw: str, expected: tuple[str, str] | None
) -> None:
    """Heartbeat replies, acks, errors and notices are recognised per venue; data frames and
    garbage are not (they go to the parser)."""
    control = classify(venue, raw)
    assert (None if control is None else tuple(control)) == expected


# --- end to end against the fake exchange -------------------------------------------------


@pytest.mark.parametrize(
    ("venue", "symbols"),
    [(venue, None) for venue in ALL_VENUES] + [("binance-usdm", "all"), ("binance-coinm", "all")],
)
async def test_feed_subscribes_and_delivers_every_frame_in_order(
    fake_exchange: Start, venue: str, symbols: Any
) -> None:
    """Each venue: the exchange receives the documented subscription, and the client yields
    exactly the frames sent, in order, with increasing receive times from the injected clock;
    the parser turns them into the venue's ticks and the skew is recorded."""
    exchange = await fake_exchange(venue)
    spec = spec_for(exchange, symbols)
    clock = Clock()
    async with consuming(exchange, spec, clock=clock) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 12)
        exchange.pause()
        await exchange.wait_until(lambda: consumer.raws == exchange.sent_on(0))

    (conn,) = exchange.connections
    expected_topics = [BINANCE_ALL] if symbols == "all" else server_topics(venue, SYMBOLS[venue])
    assert conn.topics == expected_topics
    assert conn.requests == list(subscription(spec).messages)
    receive_times = [frame.receive_ts_ns for frame in consumer.frames]
    assert receive_times == sorted(receive_times)
    assert len(set(receive_times)) == len(receive_times)
    assert consumer.rejects == []
    ticked = {tick.symbol for tick in consumer.ticks}
    if symbols == "all":
        assert len(ticked) == 2
    else:
        assert ticked == set(SYMBOLS[venue])
    assert all(tick.receive_ts_ns in receive_times for tick in consumer.ticks)
    last = consumer.ticks[-1]
    assert consumer.stats.clock_skew_ms == last.receive_ts_ns / 1e6 - last.exchange_ts_ms
    assert consumer.stats.frames == len(consumer.frames)
    assert consumer.stats.reconnects == 0
    assert consumer.stats.state == "closed"


@pytest.mark.parametrize("venue", ALL_VENUES)
async def test_a_dropped_connection_is_resubscribed_after_the_floor_and_loses_nothing(
    fake_exchange: Start, venue: str
) -> None:
    """After a connection is cut mid-stream, the client waits at least the minimum interval,
    reconnects, subscribes again, and yields every frame sent on the new connection; what it
    got from the old one is an in-order prefix of what was sent there."""
    exchange = await fake_exchange(venue)
    spec = spec_for(exchange)
    with structlog.testing.capture_logs() as logs:
        async with consuming(exchange, spec, rand=NO_JITTER) as consumer:
            await exchange.wait_until(lambda: len(consumer.frames) >= 6)
            dropped_at = time.monotonic()
            exchange.drop()
            await exchange.wait_until(
                lambda: len(exchange.connections) == 2 and len(exchange.connections[1].sent) >= 6
            )
            exchange.pause()
            await exchange.wait_until(lambda: consumer.raws[-1:] == exchange.sent_on(1)[-1:])

    first, second = exchange.connections
    assert second.opened_at - dropped_at >= FLOOR_S
    assert second.topics == first.topics
    assert second.requests == list(subscription(spec).messages)  # subscribed again
    before = exchange.sent_on(0)
    got_before = consumer.raws[: len(consumer.raws) - len(exchange.sent_on(1))]
    assert got_before == before[: len(got_before)]
    assert consumer.raws[len(got_before) :] == exchange.sent_on(1)
    assert consumer.rejects == []
    assert consumer.stats.reconnects == 1
    assert consumer.stats.reconnect_reasons == {"connection_lost": 1}
    assert consumer.stats.last_delay_s == FLOOR_S

    transitions = [entry["event"] for entry in logs if entry["event"].startswith("feed_")]
    assert transitions == [
        "feed_connecting",
        "feed_connected",
        "feed_reconnecting",
        "feed_connecting",
        "feed_connected",
        "feed_closed",
    ]  # one line per transition, none per frame
    reconnecting = next(entry for entry in logs if entry["event"] == "feed_reconnecting")
    assert reconnecting["reason"] == "connection_lost"
    assert reconnecting["delay_s"] == FLOOR_S


async def test_repeated_drops_and_a_clean_close_all_respect_the_floor(
    fake_exchange: Start,
) -> None:
    """Two abrupt drops and one clean close (after which the websockets library itself would
    reconnect at once) each lead to a reconnect no sooner than the floor, subscribed again."""
    exchange = await fake_exchange("bybit")
    spec = spec_for(exchange)
    marks: list[float] = []
    async with consuming(exchange, spec, rand=NO_JITTER) as consumer:
        for number, cut in enumerate(["drop", "close", "drop"]):
            await exchange.wait_until(
                lambda n=number: (
                    len(exchange.connections) == n + 1 and len(exchange.connections[n].sent) >= 3
                )
            )
            marks.append(time.monotonic())
            if cut == "drop":
                exchange.drop()
            else:
                await exchange.close_all(1000, "bye")
        await exchange.wait_until(
            lambda: len(exchange.connections) == 4 and len(exchange.connections[3].sent) >= 3
        )

    for mark, connection in zip(marks, exchange.connections[1:], strict=True):
        assert connection.opened_at - mark >= FLOOR_S
        assert connection.topics == ["tickers.BTCUSDT", "tickers.SOLUSDT"]
    assert consumer.stats.reconnects == 3
    assert consumer.stats.reconnect_reasons == {"connection_lost": 2, "closed_by_venue": 1}


async def test_backoff_grows_while_the_venue_refuses_and_resets_after_data(
    fake_exchange: Start,
) -> None:
    """While handshakes are refused with HTTP 503 the delays follow the exponential window;
    once a connection delivers data the attempt count starts again from zero."""
    exchange = await fake_exchange("okx")
    policy = ReconnectPolicy(base_s=1.0, cap_s=4.0, minimum_s=0.6)
    delays: list[float] = []

    async def no_wait(delay: float) -> None:  # the backoff timer, without the waiting
        delays.append(delay)
        await asyncio.sleep(0)

    exchange.refuse_with = 503
    spec = spec_for(exchange, reconnect=policy)
    async with consuming(exchange, spec, rand=lambda: 0.5, sleep=no_wait) as consumer:
        await exchange.wait_until(lambda: exchange.refused >= 5)
        exchange.refuse_with = None
        await exchange.wait_until(lambda: len(consumer.frames) >= 3)
        exchange.drop()
        await exchange.wait_until(lambda: len(exchange.connections) == 2)

    # windows 1, 2, 4, 4 (cap), 4 → half of each, floored at 0.6; then attempt 0 again
    assert delays[:5] == [0.6, 1.0, 2.0, 2.0, 2.0]
    assert delays[-1] == 0.6
    assert consumer.stats.reconnect_reasons["http_503"] >= 5


async def test_a_rejected_handshake_is_fatal(fake_exchange: Start) -> None:
    """An HTTP 404 (a wrong endpoint) is not retried: the feed raises FeedFailed."""
    exchange = await fake_exchange("bybit")
    spec = FeedSpec(venue="bybit", symbols=["BTCUSDT"], url=f"ws://127.0.0.1:{exchange.port}/v3")
    stats = FeedStats("bybit")
    with pytest.raises(FeedFailed, match="404"):
        await run_to_end(spec, stats)
    assert stats.state == "failed"
    assert stats.reconnects == 0


async def test_a_silent_feed_goes_stale_then_recovers_on_a_fake_clock(
    fake_exchange: Start,
) -> None:
    """The server stops sending: once the fake clock passes stale_after, the detector reports
    every symbol stale with its last mark; when frames resume it reports each one recovered,
    with the gap measured on the same clock."""
    exchange = await fake_exchange("okx")
    clock = Clock()
    health = FeedHealth("okx", expected_interval_s=1.0, multiple=3.0)
    spec = spec_for(exchange, idle_timeout_s=None)
    async with consuming(exchange, spec, health, clock=clock) as consumer:
        health.watch(SYMBOLS["okx"], clock.now)
        await exchange.wait_until(lambda: len(consumer.frames) >= 6)
        exchange.pause()
        await exchange.wait_until(lambda: consumer.raws == exchange.sent_on(0))
        assert health.check(clock.now) == []
        last = {tick.symbol: tick for tick in consumer.ticks}

        clock.advance(3.0)
        stalled = health.check(clock.now)
        assert [event.symbol for event in stalled] == sorted(SYMBOLS["okx"])
        for event in stalled:
            assert event.last_mark == last[event.symbol].mark
            assert event.last_mark_ns == last[event.symbol].receive_ts_ns
            assert event.stale_ns >= health.stale_after_ns
        assert health.check(clock.now + 10**9) == []  # reported once per episode
        assert health.stale_symbols() == sorted(SYMBOLS["okx"])

        exchange.resume()
        await exchange.wait_until(lambda: len(consumer.recovered) == 2)

    for event in consumer.recovered:
        assert event.since_ns == last[event.symbol].receive_ts_ns
        assert event.stale_ns == event.recovered_ns - event.since_ns
        assert event.stale_ns > 3 * 10**9
    assert health.stale_symbols() == []
    assert consumer.stats.reconnects == 0


async def test_garbage_and_venue_errors_are_counted_not_raised(fake_exchange: Start) -> None:
    """Garbage frames reach the parser, which counts them as invalid; a venue error message is
    logged and counted as transport chatter; the stream carries on on the same connection."""
    exchange = await fake_exchange("bybit")
    async with consuming(exchange, spec_for(exchange)) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 3)
        await exchange.send_raw("this is not json {")
        await exchange.send_raw(
            '{"success":false,"ret_msg":"error:handler not found","op":"subscribe"}'
        )
        seen = len(consumer.frames)
        await exchange.wait_until(lambda: len(consumer.frames) >= seen + 5)

    assert "this is not json {" in consumer.raws
    assert [reason for reason, _ in consumer.rejects] == ["invalid_json"]
    assert consumer.stats.subscribe_errors == 1
    assert not any("handler not found" in raw for raw in consumer.raws)
    assert consumer.stats.reconnects == 0
    assert len(exchange.connections) == 1


async def test_an_oversized_frame_fails_the_connection_and_the_feed_reconnects(
    fake_exchange: Start,
) -> None:
    """A frame over MAX_FRAME_BYTES is refused by the library (close 1009), never buffered
    whole; the feed reconnects and goes on."""
    exchange = await fake_exchange("bybit")
    async with consuming(exchange, spec_for(exchange), rand=NO_JITTER) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 2)
        await exchange.send_raw("x" * (MAX_FRAME_BYTES + 1))
        await exchange.wait_until(
            lambda: len(exchange.connections) == 2 and len(exchange.connections[1].sent) >= 2
        )
    assert consumer.stats.reconnect_reasons == {"message_too_big": 1}
    assert all(len(raw) <= MAX_FRAME_BYTES for raw in consumer.raws)


async def test_connections_are_replaced_before_their_age_limit_without_a_gap(
    fake_exchange: Start,
) -> None:
    """With max_age_s, the feed opens and subscribes a new connection and switches once it
    delivers, before closing the old one: every frame the old connection sent before the new
    one's first frame is yielded, then the new connection's, in order; no reconnect is counted."""
    exchange = await fake_exchange("binance-usdm")
    spec = spec_for(exchange, max_age_s=0.4, buffer_frames=1024)
    async with consuming(exchange, spec) as consumer:
        await exchange.wait_until(
            lambda: len(exchange.connections) >= 2 and len(exchange.connections[1].sent) >= 6
        )
        exchange.pause()
        final = max(index for index, c in enumerate(exchange.connections) if c.sent)
        await exchange.wait_until(
            lambda: (
                consumer.raws[-1:] == exchange.sent_on(final)[-1:]
                and all(c.closed_at is not None for c in exchange.connections[:final])
            )
        )

    assert consumer.stats.rotations == final
    assert consumer.stats.reconnects == 0
    position = 0
    for index, connection in enumerate(exchange.connections[: final + 1]):
        assert connection.topics == exchange.connections[0].topics
        sent = exchange.sent_on(index)
        got = []
        while position < len(consumer.raws) and consumer.raws[position] in sent:
            got.append(consumer.raws[position])
            position += 1
        assert got == sent[: len(got)], f"connection {index}: not an in-order prefix"
        if index < final:
            switch = exchange.connections[index + 1].sent[0].seq
            must_have = [s.text for s in connection.sent if s.seq < switch]
            assert got[: len(must_have)] == must_have, f"lost frames of connection {index}"
        else:
            assert got == sent
    assert position == len(consumer.raws)


async def test_an_okx_service_notice_starts_an_early_replacement(fake_exchange: Start) -> None:
    """OKX's 64008 notice (the connection will close for an upgrade) makes the feed replace the
    connection at once, make-before-break, instead of waiting to be cut."""
    exchange = await fake_exchange("okx")
    async with consuming(exchange, spec_for(exchange)) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 2)
        await exchange.send_raw(
            '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a '
            'service upgrade. Please reconnect.","connId":"a4d3ae55"}'
        )
        await exchange.wait_until(
            lambda: (
                len(exchange.connections) == 2
                and exchange.connections[0].closed_at is not None
                and len(exchange.connections[1].sent) >= 2
            )
        )
    assert consumer.stats.rotations == 1
    assert consumer.stats.reconnects == 0
    assert exchange.connections[1].requests == list(subscription(spec_for(exchange)).messages)


async def test_okx_heartbeat_pings_when_idle_and_reconnects_without_pong(
    fake_exchange: Start,
) -> None:
    """OKX: after heartbeat_s without a message the client sends 'ping'; a 'pong' keeps the
    connection; when pongs stop coming, the client reconnects after pong_timeout_s."""
    exchange = await fake_exchange("okx")
    spec = spec_for(exchange, heartbeat_s=0.15, pong_timeout_s=0.3)
    async with consuming(exchange, spec, rand=NO_JITTER) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 2)
        exchange.pause()
        await exchange.wait_until(lambda: exchange.connections[0].heartbeats >= 2)
        assert consumer.stats.reconnects == 0
        exchange.answer_heartbeats = False
        await exchange.wait_until(lambda: len(exchange.connections) == 2)
    assert "ping" in exchange.connections[0].requests
    assert consumer.stats.reconnect_reasons == {"heartbeat_timeout": 1}
    assert "pong" not in consumer.raws  # heartbeat replies are not yielded


async def test_bybit_heartbeat_runs_on_its_period_even_while_data_flows(
    fake_exchange: Start,
) -> None:
    """Bybit: {"op":"ping"} is sent every heartbeat_s regardless of traffic; the pongs are
    consumed by the transport, so every yielded frame is a ticker."""
    exchange = await fake_exchange("bybit")
    spec = spec_for(exchange, heartbeat_s=0.1)
    async with consuming(exchange, spec) as consumer:
        await exchange.wait_until(
            lambda: bool(exchange.connections) and exchange.connections[0].heartbeats >= 3
        )
    assert '{"op":"ping"}' in exchange.connections[0].requests
    assert all(raw.startswith('{"topic":"tickers.') for raw in consumer.raws)
    assert consumer.stats.control_frames >= 3  # the subscribe ack and the pongs
    assert consumer.stats.reconnects == 0


async def test_binance_server_pings_are_answered_by_the_library(fake_exchange: Start) -> None:
    """Binance pings the client (RFC 6455); the websockets library answers with pongs, so the
    connection stays up without any application-level heartbeat."""
    exchange = await fake_exchange("binance-coinm", server_ping_s=0.05)
    async with consuming(exchange, spec_for(exchange)) as consumer:
        await exchange.wait_until(
            lambda: bool(exchange.connections) and exchange.connections[0].pongs >= 3
        )
    assert consumer.stats.reconnects == 0
    assert len(exchange.connections) == 1


async def test_a_connection_without_data_is_replaced_after_the_idle_timeout(
    fake_exchange: Start,
) -> None:
    """A connection that stays open but delivers no data for idle_timeout_s is reconnected
    (a subscription the venue silently lost)."""
    exchange = await fake_exchange("binance-usdm")
    spec = spec_for(exchange, idle_timeout_s=0.3)
    async with consuming(exchange, spec, rand=NO_JITTER) as consumer:
        await exchange.wait_until(lambda: len(consumer.frames) >= 2)
        exchange.pause()
        await exchange.wait_until(lambda: len(exchange.connections) == 2)
        exchange.resume()
        await exchange.wait_until(lambda: len(exchange.connections[1].sent) >= 2)
    assert consumer.stats.reconnect_reasons == {"idle": 1}


async def test_an_unreachable_venue_is_retried_not_fatal() -> None:
    """Connection refused (nothing listening) is a network error: the feed keeps retrying with
    backoff and counts the attempts; it never raises."""
    stats = FeedStats("okx")
    attempts = asyncio.Event()

    async def count(delay: float) -> None:
        if stats.reconnects >= 3:
            attempts.set()
        await asyncio.sleep(0)

    spec = FeedSpec(
        venue="okx", symbols=["BTC-USDT-SWAP"], url="ws://127.0.0.1:9/ws", reconnect=POLICY
    )

    async def run() -> None:
        async with aclosing(frames(spec, stats=stats, sleep=count)) as stream:
            async for _ in stream:
                pass

    async with asyncio.TaskGroup() as group:
        task = group.create_task(run())
        async with asyncio.timeout(10):
            await attempts.wait()
        task.cancel()
    assert stats.reconnect_reasons == {"connect_failed": stats.reconnects}
    assert stats.state == "closed"


async def test_stopping_the_consumer_closes_the_connection(fake_exchange: Start) -> None:
    """Leaving the ``aclosing`` block closes the websocket cleanly (the server sees it go)."""
    exchange = await fake_exchange("okx")
    stats = FeedStats("okx")
    async with aclosing(frames(spec_for(exchange), stats=stats)) as stream:
        async for _ in stream:
            break
    await exchange.wait_until(lambda: exchange.connections[0].closed_at is not None)
    assert stats.state == "closed"
