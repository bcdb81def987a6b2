"""Live mark-price feeds: one websocket per venue, raw frames with the time they arrived.

:func:`frames` is an async generator of :class:`Frame` — the exact text the venue sent and the
local wall-clock time (``time.time_ns()``, injectable) at which it was received. It connects,
subscribes, keeps the connection alive the way each venue asks, reconnects with capped
exponential backoff, full jitter and a minimum interval (:func:`feeds.backoff.reconnect_delay`,
the pure function every connection of liqmon uses), re-subscribes, and replaces a connection
*before* the venue's lifetime limit ends it (make before break: the new connection is
subscribed and delivering before the old one is closed). It never parses prices: frames go to
the pure parsers (``feeds.frames``), the same ones a replay of a recording uses.

Transport chatter is handled here and not yielded: heartbeat replies, subscription
acknowledgements, subscription errors (logged and counted) and OKX service notices (which start
an early rotation). Every other frame is yielded as is, including garbage: the parser counts it.

Venue rules followed (each venue's :class:`VenueProfile` cites its source):

* Binance USDⓈ-M and COIN-M: combined streams in the URL (``/stream?streams=a/b``), stream
  ``<symbol>@markPrice@1s`` or ``!markPrice@arr@1s``; the server pings, the library answers;
  a connection lives at most 24 h, so it is rotated at 23 h.
* Bybit v5 linear: ``{"op":"subscribe","args":["tickers.BTCUSDT",...]}`` in batches; the client
  sends ``{"op":"ping"}`` every 20 s.
* OKX v5 public: ``{"op":"subscribe","args":[{"channel":"mark-price","instId":...}]}``; the client
  sends the text ``ping`` after N < 30 s without a message and expects ``pong`` within N s.
* Hyperliquid: ``{"method":"subscribe","subscription":{"type":"allDexsAssetCtxs"}}`` (or
  ``activeAssetCtx`` per coin, ``allMids``, ``trades``), plus one ``post`` info request for the
  ``meta`` of each watched dex, sent again every ``refresh_s`` (a listing changes the universe
  the asset contexts are indexed by); the client sends ``{"method":"ping"}`` every 30 s (the
  server closes a connection after 60 s without a message) and expects ``{"channel":"pong"}``.

Only bounded buffers: frames over :data:`~feeds.ticks.MAX_FRAME_BYTES` fail the connection
(close 1009, then a reconnect), and the library queues at most ``buffer_frames`` frames before
TCP back-pressure. Frames are simply yielded: the consumer's pace is the feed's pace.

State transitions are logged (structlog, ``liqmon.feed``), one line each — never one per frame;
:class:`FeedStats` counts frames and reconnects and holds the connection state and the latest
exchange-vs-local clock skew.

Errors (in :mod:`monitor.errors`): :class:`~monitor.errors.FeedFailed`, the feed cannot go on:
a non-retryable error (HTTP 4xx on the handshake, a bad URL, a certificate that does not
verify). Retryable ones (network errors, lost connections, HTTP 429 and 5xx) never leave
:func:`frames`: they are counted and the connection is made again.

Use it with :func:`contextlib.aclosing` so the connection is closed when the consumer stops::

    async with aclosing(frames(spec, stats=stats)) as stream:
        async for frame in stream:
            parsed = parser.parse(frame.raw, frame.receive_ts_ns)
"""

from __future__ import annotations

import asyncio
import math
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)
from websockets.frames import CloseCode

from feeds.backoff import FEED_BACKOFF, ReconnectPolicy, reconnect_delay
from feeds.ticks import MAX_FRAME_BYTES
from monitor.errors import FeedFailed as FeedFailed

log = structlog.get_logger("liqmon.feed")

Venue = Literal["binance-usdm", "binance-coinm", "bybit", "okx", "hyperliquid"]
ConnectionState = Literal["idle", "connecting", "connected", "reconnecting", "failed", "closed"]


# --- venues -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueProfile:
    """What liqmon assumes about a venue's public mark-price websocket (defaults of a
    :class:`FeedSpec`).

    ``expected_interval_s`` is the longest normal gap between two marks of one symbol;
    ``max_age_s`` is when a connection is replaced before the venue drops it; ``heartbeat`` is
    who keeps the connection alive and how; ``protocol_ping_s`` enables RFC 6455 pings from
    the client (only where the venue is known to answer them).
    """

    url: str
    expected_interval_s: float
    max_age_s: float | None
    heartbeat: Literal["server", "bybit", "okx", "hyperliquid"]
    heartbeat_s: float | None
    protocol_ping_s: float | None


VENUES: dict[str, VenueProfile] = {
    # https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
    # and its "Important WebSocket Change Notice": market streams (markPrice among them) moved to
    # wss://fstream.binance.com/market (announced 2026-03-06; legacy URLs retired 2026-04-23, per
    # ccxt/ccxt#28091). "A single connection is only valid for 24 hours"; "the server will send a
    # ping frame every 3 minutes" and disconnects without a pong within 10 minutes; the stream
    # <symbol>@markPrice@1s updates every 1000 ms (Mark-Price-Stream page).
    "binance-usdm": VenueProfile(
        url="wss://fstream.binance.com/market",
        expected_interval_s=1.0,
        max_age_s=23 * 3600.0,
        heartbeat="server",
        heartbeat_s=None,
        protocol_ping_s=20.0,
    ),
    # https://developers.binance.com/docs/derivatives/coin-margined-futures/websocket-market-streams
    # (base URL wss://dstream.binance.com, same 24 h, ping and combined-stream rules).
    "binance-coinm": VenueProfile(
        url="wss://dstream.binance.com",
        expected_interval_s=1.0,
        max_age_s=23 * 3600.0,
        heartbeat="server",
        heartbeat_s=None,
        protocol_ping_s=20.0,
    ),
    # https://bybit-exchange.github.io/docs/v5/ws/connect: "we recommend that you send the ping
    # heartbeat packet every 20 seconds"; public linear endpoint. Ticker deltas carry markPrice
    # only when it changed: a real capture (cryptofeed's, 2026-08, in tests/data/captures/
    # bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz) shows gaps of up to 19.2 s for
    # DOGEUSDT, hence the 20 s expected interval.
    "bybit": VenueProfile(
        url="wss://stream.bybit.com/v5/public/linear",
        expected_interval_s=20.0,
        max_age_s=None,
        heartbeat="bybit",
        heartbeat_s=20.0,
        protocol_ping_s=None,
    ),
    # https://www.okx.com/docs-v5/en/#overview-websocket-connect: the connection breaks after
    # 30 s without data; send 'ping' after N < 30 s of silence and expect 'pong' within N s.
    # Mark price channel: pushed every 200 ms on change and every 10 s when unchanged.
    "okx": VenueProfile(
        url="wss://ws.okx.com:8443/ws/v5/public",
        expected_interval_s=10.0,
        max_age_s=None,
        heartbeat="okx",
        heartbeat_s=20.0,
        protocol_ping_s=None,
    ),
    # https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/websocket and its
    # "Timeouts and heartbeats" page: "the server will close any connection if it hasn't sent a
    # message to it in the last 60 seconds"; a heartbeat is {"method":"ping"}, answered by
    # {"channel":"pong"}. Asset contexts are pushed as they change (a quiet HIP-3 market can
    # stay unchanged for long: 10 s is the interval after which a mark counts as late).
    "hyperliquid": VenueProfile(
        url="wss://api.hyperliquid.xyz/ws",
        expected_interval_s=10.0,
        max_age_s=None,
        heartbeat="hyperliquid",
        heartbeat_s=30.0,
        protocol_ping_s=None,
    ),
}

BINANCE_MAX_STREAMS = 200
"""Streams per connection we put in one URL. Binance allows 1024 per connection (USDⓈ-M page;
200 on some routes, per nautilus_trader), but the URL carries them all; for more symbols
subscribe to ``all`` (``!markPrice@arr@1s``)."""
BYBIT_BATCH = 10
"""Topics per Bybit subscribe request (the limit for spot; linear has none, so it is safe)."""
BYBIT_MAX_ARGS_CHARS = 21_000
"""Bybit: "for one public connection, you cannot have length of args array over 21,000
characters" (v5/ws/connect, "Public channel - Args limits")."""
OKX_BATCH = 100
"""Instruments per OKX subscribe request: ~5 KB, well under the 64 KB request limit, and few
requests against the 480 subscribe/unsubscribe/login requests per hour per connection."""
ROTATION_POLL_S = 0.02
"""While a replacement connection starts, the old one is read every this many seconds."""
ROTATION_MAX_CARRIED = 20_000
"""Frames of the old connection held while the new one starts; past this the rotation is
abandoned (and retried later), so that buffer is bounded."""

_SYMBOL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")
HYPERLIQUID_REFRESH_S = 300.0
"""How often the Hyperliquid feed asks again for the ``meta`` of its dexes."""


# --- configuration ------------------------------------------------------------------------


class FeedSpec(BaseModel):
    """One feed: a venue, its symbols, and how the connection is run.

    Omitted settings take the venue's defaults (:data:`VENUES`); ``None`` turns an optional
    one off. ``url`` overrides the endpoint (``--feed-url``); for Binance it is the base to
    which ``/stream?streams=...`` is appended. Times are in seconds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    venue: Venue
    symbols: tuple[str, ...] | Literal["all"]
    url: str = ""
    expected_interval_s: float = Field(default=1.0, gt=0)
    max_age_s: float | None = Field(default=None, gt=0)
    heartbeat_s: float | None = Field(default=None, gt=0)
    pong_timeout_s: float = Field(default=10.0, gt=0)
    idle_timeout_s: float | None = Field(default=60.0, gt=0)
    protocol_ping_s: float | None = Field(default=None, gt=0)
    open_timeout_s: float = Field(default=10.0, gt=0)
    close_timeout_s: float = Field(default=2.0, gt=0)
    buffer_frames: int = Field(default=16, ge=1, le=4096)
    reconnect: ReconnectPolicy = FEED_BACKOFF
    price_source: Literal["mark", "trade", "mid"] = "mark"
    """Hyperliquid: which channel gives the ticks (see :mod:`feeds.hyperliquid`)."""
    dexes: tuple[str, ...] = ("",)
    """Hyperliquid: the perp dexes whose ``meta`` is requested (``""`` is the first dex); the
    dexes of listed HIP-3 symbols (``xyz:TSLA``) are added."""
    refresh_s: float | None = Field(default=HYPERLIQUID_REFRESH_S, gt=0)
    """Hyperliquid: how often the ``meta`` requests are sent again (None: at connect only)."""

    @model_validator(mode="before")
    @classmethod
    def _venue_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("venue") not in VENUES:
            return data
        profile = VENUES[data["venue"]]
        defaults = {
            "url": profile.url,
            "expected_interval_s": profile.expected_interval_s,
            "max_age_s": profile.max_age_s,
            "heartbeat_s": profile.heartbeat_s,
            "protocol_ping_s": profile.protocol_ping_s,
        }
        merged = {**defaults, **data}
        if not merged["url"]:
            merged["url"] = profile.url
        return merged

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            unique = list(dict.fromkeys(value))
            if not unique:
                raise ValueError("at least one symbol, or 'all'")
            for symbol in unique:
                if not isinstance(symbol, str) or not 0 < len(symbol) <= 64:
                    raise ValueError(f"not a symbol: {symbol!r}")
                if not set(symbol) <= _SYMBOL_CHARS:
                    raise ValueError(f"not a symbol: {symbol!r} (letters, digits, - _ . only)")
            return tuple(unique)
        return value

    @field_validator("dexes", mode="before")
    @classmethod
    def _dexes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            for dex in value:
                if not isinstance(dex, str) or len(dex) > 32 or not set(dex) <= _SYMBOL_CHARS:
                    raise ValueError(f"not a dex name: {dex!r}")
            return tuple(dict.fromkeys(["", *value]))
        return value

    @model_validator(mode="after")
    def _limits(self) -> FeedSpec:
        if not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url: expected ws:// or wss://, got {self.url!r}")
        if self.venue == "okx" and self.heartbeat_s is not None and self.heartbeat_s >= 30:
            raise ValueError("heartbeat_s: OKX closes a connection silent for 30 s; use N < 30")
        if self.venue == "hyperliquid":
            if self.symbols == "all" and self.price_source == "trade":
                raise ValueError(
                    "price source trade needs the coins listed (one trades stream each)"
                )
            if self.symbols != "all":
                listed = {symbol.partition(":")[0] for symbol in self.symbols if ":" in symbol}
                extra = tuple(sorted(listed - set(self.dexes)))
                if extra:
                    object.__setattr__(self, "dexes", (*self.dexes, *extra))
        elif self.symbols == "all":
            if not self.venue.startswith("binance"):
                raise ValueError(
                    f"symbols 'all' is only available on Binance (!markPrice@arr); list the "
                    f"{self.venue} instruments to watch"
                )
        elif self.venue.startswith("binance") and len(self.symbols) > BINANCE_MAX_STREAMS:
            raise ValueError(
                f"{len(self.symbols)} Binance streams on one connection (at most "
                f"{BINANCE_MAX_STREAMS}); use symbols 'all'"
            )
        elif self.venue == "bybit":
            chars = sum(len(f"tickers.{symbol}") for symbol in self.symbols)
            if chars > BYBIT_MAX_ARGS_CHARS:
                raise ValueError(
                    f"Bybit allows {BYBIT_MAX_ARGS_CHARS} characters of topics per connection; "
                    f"these symbols need {chars}: split them over several feeds"
                )
        return self


class Subscription(NamedTuple):
    """How to subscribe: the URL to open, the messages to send once it is open, and those to
    send again every ``refresh_s`` while it stays open."""

    url: str
    messages: tuple[str, ...]
    refresh: tuple[str, ...] = ()


def subscription(spec: FeedSpec) -> Subscription:
    """The URL and subscribe messages for ``spec`` (sent again after every reconnect).

    Binance: combined streams in the URL, ``<symbol lowercase>@markPrice@1s`` each, or
    ``!markPrice@arr@1s`` for all symbols (one array frame per second). Bybit: ``tickers.<symbol>``
    topics, :data:`BYBIT_BATCH` per request. OKX: ``mark-price`` channel per ``instId``,
    :data:`OKX_BATCH` per request.
    """
    base = spec.url.rstrip("/")
    if spec.venue == "hyperliquid":
        return _hyperliquid_subscription(spec)
    if spec.venue in ("binance-usdm", "binance-coinm"):
        if spec.symbols == "all":
            streams = ["!markPrice@arr@1s"]
        else:
            streams = [f"{symbol.lower()}@markPrice@1s" for symbol in spec.symbols]
        return Subscription(f"{base}/stream?streams={'/'.join(streams)}", ())
    symbols = () if spec.symbols == "all" else spec.symbols  # FeedSpec refuses 'all' here
    messages: list[str] = []
    if spec.venue == "bybit":
        topics = [f"tickers.{symbol}" for symbol in symbols]
        for number, start in enumerate(range(0, len(topics), BYBIT_BATCH)):
            request: dict[str, object] = {
                "req_id": f"sub-{number}",
                "op": "subscribe",
                "args": topics[start : start + BYBIT_BATCH],
            }
            messages.append(orjson.dumps(request).decode())
    else:
        channels = [{"channel": "mark-price", "instId": symbol} for symbol in symbols]
        for number, start in enumerate(range(0, len(channels), OKX_BATCH)):
            okx_request: dict[str, object] = {
                "id": f"sub{number}",
                "op": "subscribe",
                "args": channels[start : start + OKX_BATCH],
            }
            messages.append(orjson.dumps(okx_request).decode())
    return Subscription(spec.url, tuple(messages))


def _hyperliquid_subscription(spec: FeedSpec) -> Subscription:
    """Hyperliquid: one subscription per stream (``allDexsAssetCtxs`` for all marks, else
    ``activeAssetCtx`` per coin; ``allMids`` per dex for mids; ``trades`` per coin), then one
    ``post`` ``meta`` request per dex, which is also the periodic refresh."""
    coins = () if spec.symbols == "all" else spec.symbols
    streams: list[dict[str, str]]
    if spec.price_source == "mid":
        streams = [{"type": "allMids", **({"dex": dex} if dex else {})} for dex in spec.dexes]
    elif spec.price_source == "trade":
        streams = [{"type": "trades", "coin": coin} for coin in coins]
    elif spec.symbols == "all":
        streams = [{"type": "allDexsAssetCtxs"}]
    else:
        streams = [{"type": "activeAssetCtx", "coin": coin} for coin in coins]
    subscribe = tuple(
        orjson.dumps({"method": "subscribe", "subscription": stream}).decode() for stream in streams
    )
    metas = tuple(
        orjson.dumps(
            {
                "method": "post",
                "id": number,
                "request": {
                    "type": "info",
                    "payload": {"type": "meta", **({"dex": d} if d else {})},
                },
            }
        ).decode()
        for number, d in enumerate(spec.dexes, start=1)
    )
    return Subscription(spec.url, subscribe + metas, metas)


# --- transport chatter --------------------------------------------------------------------

BYBIT_PING = '{"op":"ping"}'
OKX_PING = "ping"
HYPERLIQUID_PING = '{"method":"ping"}'
_CONTROL_MAX_CHARS = 2048


class Control(NamedTuple):
    """A frame that is transport chatter, not data."""

    kind: Literal["pong", "ack", "error", "notice"]
    detail: str = ""


def classify(venue: str, raw: str) -> Control | None:
    """``None`` for a data frame (or garbage, which the parser counts), else what chatter it is.

    Only short frames that lack the venue's data marker are decoded, so data frames cost a
    length check and a substring search.
    """
    if venue == "okx" and raw == "pong":
        return Control("pong")
    if len(raw) > _CONTROL_MAX_CHARS or not raw.startswith("{"):
        return None
    if venue == "hyperliquid":
        return _hyperliquid_control(raw)
    marker = {"bybit": '"topic"', "okx": '"data"'}.get(venue, '"stream"')
    if marker in raw:
        return None
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    if venue == "bybit":
        op = message.get("op")
        if op == "pong" or (op == "ping" and message.get("ret_msg") == "pong"):
            return Control("pong")
        if op == "subscribe":
            if message.get("success") is True:
                return Control("ack")
            return Control("error", str(message.get("ret_msg", "")))
        return None
    if venue == "okx":
        event = message.get("event")
        if event in ("subscribe", "unsubscribe"):
            return Control("ack")
        if event in ("error", "notice"):
            kind: Literal["error", "notice"] = event
            return Control(kind, f"{message.get('code', '')} {message.get('msg', '')}".strip())
        return None
    if "id" in message and "result" in message:
        return Control("ack")
    if "id" in message and "error" in message:
        return Control("error", str(message["error"]))
    return None


def _hyperliquid_control(raw: str) -> Control | None:
    """Hyperliquid chatter: ``pong``, ``subscriptionResponse`` and ``error`` channels (data
    frames, ``post`` replies included, go to the parser)."""
    if '"pong"' not in raw and '"subscriptionResponse"' not in raw and '"error"' not in raw:
        return None
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    channel = message.get("channel")
    if channel == "pong":
        return Control("pong")
    if channel == "subscriptionResponse":
        return Control("ack")
    if channel == "error":
        return Control("error", str(message.get("data", ""))[:200])
    return None


# --- errors and reasons -------------------------------------------------------------------


def retryable(exc: BaseException) -> bool:
    """Whether a failure to connect (or a lost connection) is worth retrying.

    Retried: network errors and timeouts, lost connections, malformed handshakes, and HTTP
    408, 418 and 429 (Binance's rate-limit and ban answers) and 5xx. Not retried: other HTTP
    statuses (a wrong URL or path), an invalid URI, a certificate that does not verify.
    """
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status >= 500 or status in (408, 418, 429)
    if isinstance(exc, InvalidURI | ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, OSError | TimeoutError | EOFError | ConnectionClosed | InvalidHandshake)


def failure_reason(exc: BaseException) -> str:
    """A short stable code for why a connection attempt failed or a connection ended."""
    if isinstance(exc, ConnectionClosed):
        if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
            return "message_too_big"
        if isinstance(exc, ConnectionClosedOK):
            return "closed_by_venue"
        return "connection_lost"
    if isinstance(exc, InvalidStatus):
        return f"http_{exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "open_timeout"
    if isinstance(exc, OSError):
        return "connect_failed"
    if isinstance(exc, InvalidHandshake):
        return "handshake_failed"
    return type(exc).__name__


# --- frames and statistics ----------------------------------------------------------------


class Frame(NamedTuple):
    """One message as the venue sent it, and when it was received (local wall clock, ns)."""

    raw: str
    receive_ts_ns: int


@dataclass(slots=True)
class FeedStats:
    """Counters and state of one feed; the generator updates them, anyone may read them.

    ``clock_skew_ms`` is the latest ``receive time − exchange time`` of a tick (network latency
    plus how far the local clock is ahead of the venue's), set by the consumer through
    :meth:`observe_skew` since only the parser knows a frame's exchange time.
    """

    venue: str
    state: ConnectionState = "idle"
    frames: int = 0
    chars: int = 0
    control_frames: int = 0
    connects: int = 0
    reconnects: int = 0
    rotations: int = 0
    subscribe_errors: int = 0
    reconnect_reasons: dict[str, int] = field(default_factory=dict)
    last_reason: str | None = None
    last_delay_s: float | None = None
    connected_since_ns: int | None = None
    last_frame_ns: int | None = None
    clock_skew_ms: float | None = None

    def observe_skew(self, exchange_ts_ms: int, receive_ts_ns: int) -> None:
        """Record ``receive_ts_ns / 1e6 − exchange_ts_ms`` as the latest clock skew (ms)."""
        self.clock_skew_ms = receive_ts_ns / 1e6 - exchange_ts_ms

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, for status messages and logs."""
        return {
            "venue": self.venue,
            "state": self.state,
            "frames": self.frames,
            "chars": self.chars,
            "control_frames": self.control_frames,
            "connects": self.connects,
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "subscribe_errors": self.subscribe_errors,
            "reconnect_reasons": dict(self.reconnect_reasons),
            "last_reason": self.last_reason,
            "last_delay_s": self.last_delay_s,
            "connected_since_ns": self.connected_since_ns,
            "last_frame_ns": self.last_frame_ns,
            "clock_skew_ms": self.clock_skew_ms,
        }


# --- one connection -----------------------------------------------------------------------


class _Drop(Exception):
    """The connection is unusable; reconnect (``abort``: without a closing handshake, for a
    peer that stopped answering)."""

    def __init__(self, reason: str, detail: str = "", *, abort: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.abort = abort


class _Rotate(Exception):
    """Replace the connection (it is old, or the venue announced it will close it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Link:
    """One open, subscribed websocket and its timers (loop time, seconds)."""

    def __init__(
        self,
        ws: ClientConnection,
        spec: FeedSpec,
        stats: FeedStats,
        clock: Callable[[], int],
        logger: Any,
        refresh: tuple[str, ...] = (),
    ) -> None:
        self.ws = ws
        self.spec = spec
        self.stats = stats
        self.clock = clock
        self.log = logger
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.opened_at = now
        self.last_rx = now
        self.last_data = now
        self.data_frames = 0
        self.dead = False
        self.rotate_at = now + spec.max_age_s if spec.max_age_s is not None else math.inf
        self.rotate_reason = "max_age"
        self.rotation_failures = 0
        heartbeat = VENUES[spec.venue].heartbeat
        self.heartbeat = heartbeat if spec.heartbeat_s is not None else "server"
        self.next_ping = now + spec.heartbeat_s if spec.heartbeat_s is not None else math.inf
        self.pong_due = math.inf
        self.refresh = refresh
        every = spec.refresh_s if refresh else None
        self.refresh_at = now + every if every is not None else math.inf

    @classmethod
    async def open(
        cls,
        spec: FeedSpec,
        plan: Subscription,
        stats: FeedStats,
        clock: Callable[[], int],
        logger: Any,
    ) -> _Link:
        ws = await connect(
            plan.url,
            open_timeout=spec.open_timeout_s,
            ping_interval=spec.protocol_ping_s,
            ping_timeout=spec.protocol_ping_s,
            close_timeout=spec.close_timeout_s,
            max_size=MAX_FRAME_BYTES,
            max_queue=spec.buffer_frames,
        )
        try:
            for message in plan.messages:
                await ws.send(message)
        except BaseException:
            ws.transport.abort()
            raise
        return cls(ws, spec, stats, clock, logger, plan.refresh)

    def _ping_at(self) -> float:
        interval = self.spec.heartbeat_s
        if interval is None or self.pong_due != math.inf or self.heartbeat == "server":
            return math.inf
        if self.heartbeat == "okx":  # after `interval` without any message
            return self.last_rx + interval
        return self.next_ping

    def _idle_at(self) -> float:
        idle = self.spec.idle_timeout_s
        return self.last_data + idle if idle is not None else math.inf

    async def _send_refresh(self, now: float) -> None:
        try:
            for message in self.refresh:
                await self.ws.send(message)
        except ConnectionClosed as exc:
            raise _Drop(failure_reason(exc), str(exc)) from exc
        self.refresh_at = now + (self.spec.refresh_s or math.inf)

    async def _send_ping(self, now: float) -> None:
        ping = {"bybit": BYBIT_PING, "hyperliquid": HYPERLIQUID_PING}.get(self.heartbeat, OKX_PING)
        try:
            await self.ws.send(ping)
        except ConnectionClosed as exc:
            raise _Drop(failure_reason(exc), str(exc)) from exc
        self.pong_due = now + self.spec.pong_timeout_s
        self.next_ping = now + (self.spec.heartbeat_s or math.inf)

    def _accept(self, raw: str) -> Frame | None:
        """Book a received message: a :class:`Frame` for data, ``None`` for chatter."""
        received = self.clock()
        self.last_rx = self.loop.time()
        self.pong_due = math.inf  # any message shows the connection is alive
        control = classify(self.spec.venue, raw)
        if control is None:
            self.last_data = self.last_rx
            self.data_frames += 1
            self.stats.frames += 1
            self.stats.chars += len(raw)
            self.stats.last_frame_ns = received
            return Frame(raw, received)
        self.stats.control_frames += 1
        if control.kind == "error":
            self.stats.subscribe_errors += 1
            self.log.error("feed_venue_error", detail=control.detail)
        elif control.kind == "notice":
            self.log.warning("feed_venue_notice", detail=control.detail)
            self.rotate_at, self.rotate_reason = self.last_rx, "venue_notice"
        return None

    async def receive(self) -> Frame:
        """The next data frame; raises :class:`_Drop` or :class:`_Rotate` when a timer or the
        venue ends this connection's service."""
        while True:
            now = self.loop.time()
            if now >= self.rotate_at:
                raise _Rotate(self.rotate_reason)
            if now >= self.pong_due:
                raise _Drop(
                    "heartbeat_timeout", f"no reply within {self.spec.pong_timeout_s} s", abort=True
                )
            if now >= self._idle_at():
                raise _Drop("idle", f"no data for {self.spec.idle_timeout_s} s")
            if now >= self._ping_at():
                await self._send_ping(now)
            if now >= self.refresh_at:
                await self._send_refresh(now)
            deadline = min(
                self.rotate_at, self.pong_due, self._idle_at(), self._ping_at(), self.refresh_at
            )
            try:
                async with asyncio.timeout_at(None if deadline == math.inf else deadline):
                    raw = await self.ws.recv(decode=True)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                self.dead = True
                raise _Drop(failure_reason(exc), str(exc)) from exc
            frame = self._accept(raw)
            if frame is not None:
                return frame

    async def drain(self) -> list[Frame]:
        """Data frames already received and queued, without waiting for more."""
        out: list[Frame] = []
        while not self.dead:
            try:
                async with asyncio.timeout(0):
                    raw = await self.ws.recv(decode=True)
            except TimeoutError:
                break
            except ConnectionClosed:
                self.dead = True
                break
            frame = self._accept(raw)
            if frame is not None:
                out.append(frame)
        return out

    async def close(self) -> None:
        try:
            await self.ws.close()
        except BaseException:
            self.ws.transport.abort()
            raise


# --- the feed -----------------------------------------------------------------------------


async def frames(
    spec: FeedSpec,
    *,
    stats: FeedStats,
    clock: Callable[[], int] = time.time_ns,
    rand: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[Frame, None]:
    """Every data frame of the feed, in arrival order, for as long as the consumer iterates.

    Reconnects forever on retryable failures (waiting :func:`reconnect_delay`; the attempt
    count resets once a connection delivers data) and raises :class:`FeedFailed` on the others.
    ``clock`` stamps receive times; ``rand`` and ``sleep`` are the backoff's randomness and
    wait (tests inject them).
    """
    plan = subscription(spec)
    logger = log.bind(venue=spec.venue)
    link: _Link | None = None
    carried: deque[Frame] = deque()
    attempt = 0
    reason: str | None = None
    detail = ""
    try:
        while True:
            while carried:
                yield carried.popleft()
            if link is None:
                if reason is not None:
                    delay = reconnect_delay(attempt, spec.reconnect, rand)
                    attempt += 1
                    stats.state = "reconnecting"
                    stats.reconnects += 1
                    stats.reconnect_reasons[reason] = stats.reconnect_reasons.get(reason, 0) + 1
                    stats.last_reason, stats.last_delay_s = reason, delay
                    logger.warning(
                        "feed_reconnecting",
                        reason=reason,
                        detail=detail,
                        delay_s=round(delay, 3),
                        attempt=attempt,
                    )
                    await sleep(delay)
                stats.state = "connecting"
                logger.info("feed_connecting", url=spec.url)
                try:
                    link = await _Link.open(spec, plan, stats, clock, logger)
                except Exception as exc:
                    if not retryable(exc):
                        stats.state = "failed"
                        logger.error("feed_failed", reason=failure_reason(exc), detail=str(exc))
                        raise FeedFailed(f"{spec.venue} feed at {spec.url}: {exc}") from exc
                    reason, detail = failure_reason(exc), str(exc)
                    continue
                stats.state = "connected"
                stats.connects += 1
                stats.connected_since_ns = clock()
                logger.info("feed_connected", requests=len(plan.messages))
            try:
                frame = await link.receive()
            except _Drop as drop:
                if drop.abort:
                    link.ws.transport.abort()
                else:
                    await link.close()
                link = None
                reason, detail = drop.reason, drop.detail
                continue
            except _Rotate as rotate:
                link = await _rotate(link, rotate.reason, plan, carried, rand, logger)
                continue
            if link.data_frames == 1:
                attempt = 0
            yield frame
    finally:
        if link is not None:
            await link.close()
        if stats.state != "failed":
            stats.state = "closed"
        logger.info("feed_closed", state=stats.state)


async def _rotate(
    old: _Link,
    why: str,
    plan: Subscription,
    carried: deque[Frame],
    rand: Callable[[], float],
    logger: Any,
) -> _Link:
    """Replace ``old`` by a new subscribed connection once that one delivers data.

    Until then ``old`` keeps being read; its frames, and the new one's first, go to ``carried``
    (receive times as they arrived) and the old connection is closed. A venue that repeats a
    frame on both connections gives it twice (same exchange time, so the engine applies it
    idempotently). If the new connection fails, ``old`` stays and the rotation is retried after
    a backoff delay.
    """
    spec, stats = old.spec, old.stats
    logger.info("feed_rotating", reason=why, age_s=round(old.loop.time() - old.opened_at, 3))
    new: _Link | None = None
    try:
        new = await _Link.open(spec, plan, stats, old.clock, logger)
        async with asyncio.timeout(spec.open_timeout_s + spec.expected_interval_s):
            while True:
                carried.extend(await old.drain())
                if len(carried) >= ROTATION_MAX_CARRIED:
                    raise _Drop("rotation_backlog", f"{len(carried)} frames while switching")
                try:
                    async with asyncio.timeout(ROTATION_POLL_S):
                        first = await new.receive()
                    break
                except TimeoutError:
                    continue
    except Exception as exc:
        if new is not None:
            await new.close()
        delay = reconnect_delay(old.rotation_failures, spec.reconnect, rand)
        old.rotation_failures += 1
        old.rotate_at = old.loop.time() + delay
        reason = exc.reason if isinstance(exc, _Drop | _Rotate) else failure_reason(exc)
        logger.warning("feed_rotation_failed", reason=reason, detail=str(exc), retry_in_s=delay)
        return old
    except BaseException:  # cancelled: the new connection is not ours to keep
        if new is not None:
            new.ws.transport.abort()
        raise
    carried.extend(await old.drain())
    carried.append(first)
    await old.close()
    stats.rotations += 1
    stats.connects += 1
    stats.connected_since_ns = old.clock()
    logger.info("feed_rotated", reason=why, carried=len(carried))
    return new
