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

Funding: ``fundingRate`` (text as sent) and ``nextFundingTime`` (ms, as a string of digits) are
kept per symbol as they come (a delta carries them only when they change, each on its own) and
every tick carries the latest pair as its ``funding_rate``/``funding_ts`` once both are known.
An empty value is "no value" (no change); ``nextFundingTime`` "0" (a contract without funding)
clears the symbol's pair. A malformed value refuses the frame (``invalid_field``) and changes
no state.

Replies to requests — ``{"success":true,"ret_msg":"pong","op":"ping",..}``,
``{"op":"pong",..}``, ``{"success":true,"op":"subscribe",..}`` — are NOTHING;
``"success": false`` is a reject whose detail starts with ``venue error``.
"""

from __future__ import annotations

from typing import Any

from feeds.fields import (
    decimal_text_of,
    describe,
    int_of_text,
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
    """Parser of a Bybit v5 ``tickers`` stream; keeps the last mark and funding of every symbol.

    One instance per connection (or capture): the state is what the stream has said so far.
    """

    __slots__ = ("_due", "_last", "_rates", "venue")

    def __init__(self, venue: str = VENUE) -> None:
        self.venue = venue
        self._last: dict[str, MarkTick] = {}
        self._rates: dict[str, str] = {}  # symbol -> last fundingRate
        self._due: dict[str, int] = {}  # symbol -> last nextFundingTime (ms, > 0)

    def funding(self, symbol: str) -> tuple[str | None, int | None]:
        """The latest ``(fundingRate, nextFundingTime)`` of ``symbol``, or ``(None, None)``
        until both are known."""
        rate, due = self._rates.get(symbol), self._due.get(symbol)
        return (rate, due) if rate is not None and due is not None else (None, None)

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
        rate, due = data.get("fundingRate"), data.get("nextFundingTime")
        has_rate, has_due = rate not in (None, ""), due not in (None, "")
        if (price is None or price == "") and not has_rate and not has_due:
            return NOTHING
        symbol = symbol_of(data.get("symbol", topic[len(TOPIC_PREFIX) :]), "symbol")
        rate_text = decimal_text_of(rate, "fundingRate") if has_rate else None
        due_ms = int_of_text(due, "nextFundingTime") if has_due else None
        marked = price is not None and price != ""
        if marked:
            ts = ms_of(message.get("ts"), "ts")
            mark, text = mark_of(price, "markPrice")
        # the frame is valid: only now does the state change
        if rate_text is not None:
            self._rates[symbol] = rate_text
        if due_ms == 0:
            self._rates.pop(symbol, None)
            self._due.pop(symbol, None)
        elif due_ms is not None:
            self._due[symbol] = due_ms
        if not marked:
            return NOTHING
        funding_rate, funding_ts = self.funding(symbol)
        tick = MarkTick(self.venue, symbol, mark, text, ts, receive_ts_ns, funding_rate, funding_ts)
        self._last[symbol] = tick
        return Parsed((tick,))
