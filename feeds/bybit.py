"""Bybit v5: mark prices from the public ``tickers.{symbol}`` topic (linear, inverse, option).

Shapes read::

    {"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","markPrice":"65117.44",
     ...},"cs":753843900397,"ts":1786310817583}
    {"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":...},...}

A snapshot carries every field; a delta only those that changed, so most deltas carry no
``markPrice`` and are :data:`~feeds.ticks.NOTHING`. A snapshot or delta with ``markPrice`` is one
tick ``(data.symbol, markPrice, ts)``: ``ts`` is the message's time in ms (deltas need no
snapshot first: a delta's ``markPrice`` is the whole value, not a change). An empty
``markPrice`` (Bybit's way of saying "no value", as for ``preOpenPrice``) is no mark either.

Replies to requests — ``{"success":true,"ret_msg":"pong","op":"ping",..}``,
``{"op":"pong",..}``, ``{"success":true,"op":"subscribe",..}`` — are NOTHING;
``"success": false`` is a reject whose detail starts with ``venue error``.
"""

from __future__ import annotations

from typing import Any

from feeds.fields import (
    describe,
    mark_of,
    ms_of,
    parse_frame,
    refused,
    short,
    symbol_of,
    unknown_shape,
    venue_error,
)
from feeds.ticks import NOTHING, MarkTick, Parsed
from monitor.errors import MalformedRecord

VENUE = "bybit"
TOPIC_PREFIX = "tickers."


class BybitTickers:
    """Parser of a Bybit v5 ``tickers`` stream; keeps the last mark of every symbol.

    One instance per connection (or capture): the state is what the stream has said so far.
    """

    __slots__ = ("_last", "venue")

    def __init__(self, venue: str = VENUE) -> None:
        self.venue = venue
        self._last: dict[str, MarkTick] = {}

    def last(self, symbol: str) -> MarkTick | None:
        """The last mark tick of ``symbol`` (``None`` before its first)."""
        return self._last.get(symbol)

    @property
    def symbols(self) -> frozenset[str]:
        """Every symbol that has had a mark."""
        return frozenset(self._last)

    def parse(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        """The tick of one raw frame, or why it has none."""
        return parse_frame(raw, receive_ts_ns, self.message)

    def message(self, obj: object, receive_ts_ns: int | None) -> Parsed:
        """The tick of one decoded frame, or why it has none."""
        try:
            if type(obj) is not dict:
                raise unknown_shape(f"not a Bybit message: {describe(obj)}")
            if "topic" not in obj:
                return self._reply(obj)
            return self._ticker(obj, receive_ts_ns)
        except MalformedRecord as exc:
            return refused(exc)

    @staticmethod
    def _reply(reply: dict[str, Any]) -> Parsed:
        if type(reply.get("op")) is not str:
            raise unknown_shape(f"not a Bybit message: {describe(reply)}")
        if reply.get("success") is False:
            raise venue_error("bybit", reply.get("ret_msg", ""))
        return NOTHING

    def _ticker(self, message: dict[str, Any], receive_ts_ns: int | None) -> Parsed:
        topic = message["topic"]
        if type(topic) is not str or not topic.startswith(TOPIC_PREFIX):
            raise unknown_shape(f"Bybit topic {short(topic)} carries no mark")
        kind = message.get("type")
        if kind not in ("snapshot", "delta"):
            raise unknown_shape(f"Bybit ticker of type {short(kind)}")
        data = message.get("data")
        if type(data) is not dict:
            raise MalformedRecord("invalid_field", f"data must be an object: {describe(data)}")
        price = data.get("markPrice")
        if price is None or price == "":
            return NOTHING
        symbol = symbol_of(data.get("symbol", topic[len(TOPIC_PREFIX) :]), "symbol")
        ts = ms_of(message.get("ts"), "ts")
        mark, text = mark_of(price, "markPrice")
        tick = MarkTick(self.venue, symbol, mark, text, ts, receive_ts_ns)
        self._last[symbol] = tick
        return Parsed((tick,))
