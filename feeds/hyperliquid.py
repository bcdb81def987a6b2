"""Hyperliquid websocket (``wss://api.hyperliquid.xyz/ws``): marks, mids and trades.

Shapes read (docs: ``for-developers/api/websocket/subscriptions`` and ``post-requests``)::

    {"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":{"markPx":"77562.0",...}}}
    {"channel":"allDexsAssetCtxs","data":{"ctxs":[["",[{ctx},...]],["xyz",[{ctx},...]]]}}
    {"channel":"allMids","data":{"mids":{"BTC":"80868.5","@142":"80907.5",...}}}
    {"channel":"trades","data":[{"coin":"HYPE","px":"35.276","time":1764835613064,...}]}
    {"channel":"post","data":{"id":1,"response":{"type":"info","payload":{"type":"meta",
     "data":{"universe":[...],"marginTables":[...]}}}}}
    {"channel":"subscriptionResponse","data":{...}}   {"channel":"pong"}
    {"channel":"error","data":"Invalid subscription ..."}

A tick's symbol is the coin as the exchange names it: ``BTC`` on the first (main) dex,
``xyz:TSLA`` on a HIP-3 dex. Which frames give ticks depends on ``price_source``:

``"mark"`` (default)  ``markPx`` of ``activeAssetCtx`` and of every ``allDexsAssetCtxs`` entry
``"mid"``             every perp of ``allMids`` (spot entries, ``@142`` and ``PURR/USDC``, skipped)
``"trade"``           ``px`` of every perp trade, at its ``time``

Frames of the other sources (and ``l2Book``, ``bbo``, ``activeSpotAssetCtx``, the ``user``
channel) are valid frames without a tick (:data:`~feeds.ticks.NOTHING`).

**Names.** ``allDexsAssetCtxs`` lists each dex's contexts in asset-index order without names:
entry ``i`` is ``meta.universe[i]`` of that dex. The parser learns the universes from the
``meta`` replies of ``post`` requests on the same connection (the live feed sends one per dex
when it connects and again periodically, so a recording of the feed replays with the same
names) or from :meth:`HyperliquidFrames.learn`. Entries of a dex whose universe is not known
yet, and entries past its universe's end (an asset listed since), carry no name: they give no
tick and are counted in :attr:`HyperliquidFrames.unnamed`, not refused (the frame is valid).

**Time.** Asset contexts and mids carry no time. Their ticks are stamped with the frame's
receive time (ms) and, for a frame read without one (a raw capture), with the latest exchange
time the stream has shown (a trade's, a book's or a fill's ``time``; 0 before any): the
engine's clock never goes backwards on them, and replays are deterministic.

A ``post`` reply of type ``error`` and an ``error`` frame are ``venue_error`` rejects. One bad
item of a list does not drop the good ones (one reject per reason, as for Binance arrays).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from feeds.fields import (
    describe,
    mark_of,
    parse_frame,
    refused,
    short,
    unknown_shape,
    venue_error,
)
from feeds.hyperliquid_state import Meta, parse_meta, timestamp
from feeds.ticks import NOTHING, MarkTick, Parsed
from monitor.errors import ConfigError, MalformedRecord

VENUE = "hyperliquid"
PRICE_SOURCES = ("mark", "mid", "trade")
QUIET_CHANNELS = frozenset(
    {"subscriptionResponse", "pong", "l2Book", "bbo", "activeSpotAssetCtx", "user", "userFills"}
)
"""Valid channels that carry no tick for any price source (their ``time`` still advances the
stream clock)."""


def is_perp(coin: str) -> bool:
    """Perp coins are plain (``BTC``) or dex-prefixed (``xyz:TSLA``); spot ones are ``@N`` or a
    pair (``PURR/USDC``)."""
    return not coin.startswith("@") and "/" not in coin


def _coin(value: object, name: str = "coin") -> str:
    if (
        type(value) is not str
        or not 0 < len(value) <= 64
        or not value.isprintable()
        or " " in value
    ):
        raise MalformedRecord("invalid_field", f"{name} is not a coin: {short(value)}")
    return value


class HyperliquidFrames:
    """Parser of one Hyperliquid websocket stream; holds the dexes' universes and the stream
    clock, so use one per connection (or capture)."""

    __slots__ = ("_clock_ms", "_universes", "price_source", "unnamed", "venue")

    def __init__(self, venue: str = VENUE, *, price_source: str = "mark") -> None:
        if price_source not in PRICE_SOURCES:
            raise ConfigError(
                f"price_source must be one of {', '.join(PRICE_SOURCES)}, got {price_source!r}"
            )
        self.venue = venue
        self.price_source = price_source
        self._universes: dict[str, tuple[str, ...]] = {}
        self._clock_ms = 0
        self.unnamed: Counter[str] = Counter()
        """Asset contexts that could not be named, by dex (see the module docstring)."""

    def learn(self, meta: Meta) -> None:
        """Name the asset contexts of ``meta.dex`` by its universe."""
        self._universes[meta.dex] = meta.names

    def universe(self, dex: str) -> tuple[str, ...] | None:
        return self._universes.get(dex)

    def parse(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one raw frame, or why it has none."""
        return parse_frame(raw, receive_ts_ns, self.message)

    def message(self, obj: object, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one decoded frame, or why it has none."""
        try:
            if type(obj) is not dict or type(obj.get("channel")) is not str:
                raise unknown_shape(f"not a Hyperliquid message: {describe(obj)}")
            return self._channel(obj["channel"], obj.get("data"), receive_ts_ns)
        except MalformedRecord as exc:
            return refused(exc)

    def _stamp(self, receive_ts_ns: int | None) -> int:
        if receive_ts_ns is not None:
            return receive_ts_ns // 1_000_000
        return self._clock_ms

    def _advance(self, value: object) -> int:
        ts = timestamp(value)
        if ts is None:
            raise MalformedRecord("invalid_field", "time is required")
        self._clock_ms = max(self._clock_ms, ts)
        return ts

    def _channel(self, channel: str, data: Any, receive_ts_ns: int | None) -> Parsed:
        if channel == "activeAssetCtx":
            if type(data) is not dict:
                raise MalformedRecord("invalid_field", f"data must be an object: {describe(data)}")
            coin = _coin(data.get("coin"))
            ctx = data.get("ctx")
            if type(ctx) is not dict:
                raise MalformedRecord("invalid_field", f"ctx must be an object: {describe(ctx)}")
            if self.price_source != "mark" or not is_perp(coin):
                return NOTHING
            return Parsed((self._tick(coin, ctx.get("markPx"), "markPx", receive_ts_ns),))
        if channel == "allDexsAssetCtxs":
            return self._all_dexs(data, receive_ts_ns)
        if channel == "allMids":
            return self._mids(data, receive_ts_ns)
        if channel == "trades":
            return self._trades(data, receive_ts_ns)
        if channel == "post":
            return self._post(data)
        if channel == "error":
            raise venue_error("hyperliquid", data)
        if channel in QUIET_CHANNELS:
            if type(data) is dict and "time" in data:
                self._advance(data["time"])
            return NOTHING
        raise unknown_shape(f"Hyperliquid channel {short(channel)} carries no price")

    def _tick(
        self, coin: str, price: object, name: str, receive_ts_ns: int | None, ts: int | None = None
    ) -> MarkTick:
        mark, text = mark_of(price, name)
        stamp = self._stamp(receive_ts_ns) if ts is None else ts
        return MarkTick(self.venue, coin, mark, text, stamp, receive_ts_ns)

    def _all_dexs(self, data: Any, receive_ts_ns: int | None) -> Parsed:
        if type(data) is not dict or type(data.get("ctxs")) is not list:
            raise MalformedRecord("invalid_field", f"data.ctxs must be a list: {describe(data)}")
        ticks: list[MarkTick] = []
        bad: dict[str, tuple[str, int]] = {}
        for n, entry in enumerate(data["ctxs"]):
            if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not str:
                raise MalformedRecord("invalid_field", f"ctxs[{n}] is not [dex, contexts]")
            dex, contexts = entry
            if type(contexts) is not list:
                raise MalformedRecord("invalid_field", f"ctxs[{n}] contexts is not a list")
            if self.price_source != "mark":
                continue
            names = self._universes.get(dex, ())
            if len(contexts) > len(names):
                self.unnamed[dex] += len(contexts) - len(names)
            for index, (coin, ctx) in enumerate(zip(names, contexts, strict=False)):
                try:
                    if type(ctx) is not dict:
                        raise MalformedRecord("invalid_field", f"not a context: {describe(ctx)}")
                    ticks.append(self._tick(coin, ctx.get("markPx"), "markPx", receive_ts_ns))
                except MalformedRecord as exc:
                    detail, count = bad.get(exc.reason, (f"{dex}[{index}]: {exc.detail}", 0))
                    bad[exc.reason] = (detail, count + 1)
        return Parsed(tuple(ticks), _rejects(bad))

    def _mids(self, data: Any, receive_ts_ns: int | None) -> Parsed:
        if type(data) is not dict or type(data.get("mids")) is not dict:
            raise MalformedRecord("invalid_field", f"data.mids must be an object: {describe(data)}")
        if self.price_source != "mid":
            return NOTHING
        ticks: list[MarkTick] = []
        bad: dict[str, tuple[str, int]] = {}
        for coin, price in data["mids"].items():
            if not is_perp(coin):
                continue
            try:
                ticks.append(self._tick(_coin(coin), price, coin, receive_ts_ns))
            except MalformedRecord as exc:
                detail, count = bad.get(exc.reason, (exc.detail, 0))
                bad[exc.reason] = (detail, count + 1)
        return Parsed(tuple(ticks), _rejects(bad))

    def _trades(self, data: Any, receive_ts_ns: int | None) -> Parsed:
        if type(data) is not list:
            raise MalformedRecord("invalid_field", f"data must be a list: {describe(data)}")
        ticks: list[MarkTick] = []
        bad: dict[str, tuple[str, int]] = {}
        for index, trade in enumerate(data):
            try:
                if type(trade) is not dict:
                    raise MalformedRecord("invalid_field", f"not a trade: {describe(trade)}")
                coin = _coin(trade.get("coin"))
                ts = self._advance(trade.get("time"))
                if self.price_source == "trade" and is_perp(coin):
                    ticks.append(self._tick(coin, trade.get("px"), "px", receive_ts_ns, ts))
            except MalformedRecord as exc:
                detail, count = bad.get(exc.reason, (f"item {index}: {exc.detail}", 0))
                bad[exc.reason] = (detail, count + 1)
        return Parsed(tuple(ticks), _rejects(bad))

    def _post(self, data: Any) -> Parsed:
        """A reply to a ``post`` request: a ``meta`` teaches the universe of its dex."""
        if type(data) is not dict or type(data.get("response")) is not dict:
            raise MalformedRecord("invalid_field", f"not a post reply: {describe(data)}")
        response = data["response"]
        if response.get("type") == "error":
            raise venue_error("hyperliquid", response.get("payload"))
        payload = response.get("payload")
        if type(payload) is dict and payload.get("type") == "meta":
            meta = parse_meta(payload.get("data"))
            if meta.names:
                self.learn(meta)
        return NOTHING


def _rejects(bad: dict[str, tuple[str, int]]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (reason, detail if count == 1 else f"{detail} (and {count - 1} more items)")
        for reason, (detail, count) in bad.items()
    )
