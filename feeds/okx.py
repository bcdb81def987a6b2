"""OKX v5: mark prices from the public ``mark-price`` channel (``/ws/v5/public``).

Shapes read (OKX API v5 docs, "Mark price channel",
https://www.okx.com/docs-v5/en/#public-data-websocket-mark-price-channel)::

    {"arg":{"channel":"mark-price","instId":"LTC-USD-190628"},
     "data":[{"instType":"FUTURES","instId":"LTC-USD-190628","markPx":"0.1","ts":"1597026383085"}]}
    {"id":"1512","event":"subscribe","arg":{...},"connId":"a4d3ae55"}
    {"id":"1512","event":"error","code":"60012","msg":"Invalid request: ...","connId":"a4d3ae55"}
    pong                                           (plain text, the answer to the text "ping")

Each item of ``data`` is one tick ``(instId, markPx, ts)``; ``ts`` is a *string* of ms digits
(as documented: a JSON number there is refused as ``invalid_field``). A bad item does not drop
the good ones (one reject per reason, as for Binance arrays).

Events: ``subscribe``, ``unsubscribe``, ``login``, ``channel-conn-count`` and ``notice`` (64008,
"the connection will soon be closed for a service upgrade") carry no mark and are NOTHING;
``error`` (and ``*-error``) is a reject ``unknown_shape`` whose detail is ``venue error from okx:
<code>: <msg>`` — the venue refused something, and it must show in the counts. Pushes of other
channels are ``unknown_shape``.
"""

from __future__ import annotations

from typing import Any

from feeds.fields import (
    describe,
    int_of_text,
    mark_of,
    parse_frame,
    refused,
    short,
    symbol_of,
    unknown_shape,
    venue_error,
)
from feeds.ticks import NOTHING, MarkTick, Parsed
from monitor.errors import MalformedRecord

VENUE = "okx"
CHANNEL = "mark-price"
QUIET_EVENTS = frozenset({"subscribe", "unsubscribe", "login", "channel-conn-count", "notice"})


def is_pong(raw: str | bytes) -> bool:
    """Whether ``raw`` is OKX's plain-text ``pong``."""
    return raw in ("pong", b"pong")


class OkxMarkPrice:
    """Parser of OKX ``mark-price`` pushes and the replies around them (stateless)."""

    __slots__ = ("venue",)

    def __init__(self, venue: str = VENUE) -> None:
        self.venue = venue

    def parse(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one raw frame, or why it has none."""
        if is_pong(raw):
            return NOTHING
        return parse_frame(raw, receive_ts_ns, self.message)

    def message(self, obj: object, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one decoded frame, or why it has none."""
        try:
            if type(obj) is not dict:
                raise unknown_shape(f"not an OKX message: {describe(obj)}")
            if "event" in obj:
                return self._event(obj)
            return self._push(obj, receive_ts_ns)
        except MalformedRecord as exc:
            return refused(exc)

    @staticmethod
    def _event(event: dict[str, Any]) -> Parsed:
        kind = event["event"]
        if type(kind) is not str:
            raise unknown_shape(f"OKX event {short(kind)}")
        if kind == "error" or kind.endswith("-error"):
            raise venue_error("okx", f"{event.get('code', '')}: {event.get('msg', '')}")
        if kind in QUIET_EVENTS:
            return NOTHING
        raise unknown_shape(f"OKX event {short(kind)}")

    def _push(self, push: dict[str, Any], receive_ts_ns: int | None) -> Parsed:
        arg, data = push.get("arg"), push.get("data")
        if type(arg) is not dict or type(data) is not list:
            raise unknown_shape(f"not an OKX message: {describe(push)}")
        if arg.get("channel") != CHANNEL:
            raise unknown_shape(f"OKX channel {short(arg.get('channel'))} carries no mark")
        ticks: list[MarkTick] = []
        bad: dict[str, tuple[str, int]] = {}  # reason -> (first detail, count)
        for index, item in enumerate(data):
            try:
                ticks.append(self._tick(item, receive_ts_ns))
            except MalformedRecord as exc:
                detail, count = bad.get(exc.reason, (f"item {index}: {exc.detail}", 0))
                bad[exc.reason] = (detail, count + 1)
        rejects = tuple(
            (reason, detail if count == 1 else f"{detail} (and {count - 1} more items)")
            for reason, (detail, count) in bad.items()
        )
        return Parsed(tuple(ticks), rejects)

    def _tick(self, item: object, receive_ts_ns: int | None) -> MarkTick:
        if type(item) is not dict:
            raise unknown_shape(f"not a mark price: {describe(item)}")
        symbol = symbol_of(item.get("instId"), "instId")
        ts = int_of_text(item.get("ts"), "ts")
        mark, text = mark_of(item.get("markPx"), "markPx")
        return MarkTick(self.venue, symbol, mark, text, ts, receive_ts_ns)
