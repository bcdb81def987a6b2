"""Binance USDⓈ-M and COIN-M futures: mark prices from ``markPriceUpdate`` frames.

Shapes read (every field era recorded since 2019 — older frames lack ``i``, ``P``, ``r`` or
``T``; ``e``, ``E``, ``s``, ``p`` and, when present, ``r`` and ``T`` are used)::

    {"e":"markPriceUpdate","E":1617308820003,"s":"BTCUSDT","p":"58940.14924532",...}
    {"stream":"btcusdt@markPrice@1s","data":{...the object above...}}     combined stream
    [{...}, {...}]  and  {"stream":"!markPrice@arr","data":[...]}           every symbol

A tick is ``(s, p, E)``: the symbol as sent (``BTCUSDT``, ``BTCUSD_PERP``, ``BTCBUSD_210129``),
the mark's text, and the event time in ms. One bad item of an array does not drop the others:
the good ones become ticks and the bad ones one reject per reason (the first item's detail and
how many more).

Funding: a ``markPriceUpdate``'s ``r`` (the funding rate, text as sent) and ``T`` (the next
funding time, ms) become the tick's ``funding_rate`` and ``funding_ts``. Contracts without
funding send neither (COIN-M dated) or ``T`` 0 (USDⓈ-M dated, with ``r`` "0.00000000"): their
ticks carry none. A malformed ``r`` or ``T`` refuses the event (``invalid_field``).

Collateral: ``assetIndexUpdate`` events (``!assetIndex@arr``, ``<asset>@assetIndex``) become
``collateral`` records with the haircuts of ``haircuts`` (default: Binance's published table);
see :mod:`feeds.collateral`. They are read whatever the price source.

User data: with ``account`` named (a capture of one account's user-data stream),
``ACCOUNT_UPDATE`` becomes an ``account_update`` record and ``ACCOUNT_CONFIG_UPDATE`` an
``asset_mode`` record (or nothing, for a leverage change) of that account (see
:mod:`feeds.accounts`); the other user-data events carry nothing liqmon reads. Without an
account, the two that change an account are refused as ``unknown_account``. An
``ACCOUNT_UPDATE`` that carries JSON numbers (Binance sends strings) is decoded again with every
number exact, from its text.

``price_source`` lets real trade and book captures drive a replay at a real rate:

``"mark"`` (default)  ``markPriceUpdate`` only; ``trade``/``aggTrade``/``bookTicker`` frames are
                      valid frames without a mark (:data:`~feeds.ticks.NOTHING`)
``"trade"``           the price ``p`` of each ``trade``/``aggTrade`` at its trade time ``T``;
                      trades that are not ordinary market trades (``X`` other than ``MARKET``:
                      insurance-fund liquidations, ADL) are skipped
``"mid"``             ``(b + a) / 2`` of each ``bookTicker``, exact, at ``E`` (``T`` when ``E``
                      is absent)

Subscription replies (``{"result":null,"id":1}``) are NOTHING; error replies (``{"error":...}``
or ``{"code":..,"msg":..}``) are rejects whose detail starts with ``venue error``. Other events
(``kline``, ``depthUpdate``, ...) are ``unknown_shape``: they mean a subscription is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from feeds.accounts import USER_DATA_EVENTS, parse_user_data
from feeds.collateral import HaircutTable, asset_index_event, binance_haircuts
from feeds.fields import (
    decimal_text_of,
    decode_frame,
    describe,
    mark_of,
    mid_of,
    ms_of,
    refused,
    short,
    symbol_of,
    unknown_shape,
    venue_error,
)
from feeds.normalized import exact_json, holds_float
from feeds.ticks import NOTHING, MarkTick, Parsed
from monitor.errors import ConfigError, MalformedRecord
from monitor.records import Record

USDM = "binance-usdm"
COINM = "binance-coinm"
PRICE_SOURCES = ("mark", "trade", "mid")
TRADE_EVENTS = frozenset({"trade", "aggTrade"})

_COINM_SYMBOL = re.compile(r"[A-Z0-9]+USD_(?:PERP|\d{6})", re.ASCII)
_USDM_DATED = re.compile(r"[A-Z0-9]+(?:USDT|USDC|BUSD)_\d{6}", re.ASCII)


def exact_user_data(obj: object, raw: str | bytes) -> object:
    """``obj``, the decoded ``raw``, or when it is an ``ACCOUNT_UPDATE`` (bare or wrapped)
    holding a JSON number the fast decoder read as a double, ``raw`` decoded again with every
    number exact (a cheap no for every other frame)."""
    event = obj
    if type(event) is dict and "data" in event and "stream" in event:
        event = event["data"]
    if type(event) is dict and event.get("e") == "ACCOUNT_UPDATE" and holds_float(event):
        return exact_json(raw)
    return obj


def venue_of_symbol(symbol: str) -> str:
    """USDⓈ-M or COIN-M, guessed from a symbol (for frames of unknown origin).

    COIN-M symbols are ``<coin>USD_PERP`` and ``<coin>USD_<yymmdd>``; USDⓈ-M ones are plain
    (``BTCUSDT``) or dated in a stablecoin (``BTCUSDT_210625``, ``BTCBUSD_210129``). A coin whose
    name ends in B (``BNBUSD_210625``) reads as a BUSD contract: name the venue when it matters.
    """
    if _COINM_SYMBOL.fullmatch(symbol) and not _USDM_DATED.fullmatch(symbol):
        return COINM
    return USDM


def check_price_source(price_source: str) -> str:
    if price_source not in PRICE_SOURCES:
        raise ConfigError(
            f"price_source must be one of {', '.join(PRICE_SOURCES)}, got {price_source!r}"
        )
    return price_source


def funding_of(event: dict[str, Any]) -> tuple[str | None, int | None]:
    """A ``markPriceUpdate``'s ``(r, T)`` as ``(funding_rate, funding_ts)``; ``(None, None)``
    for a contract without funding (no ``r`` or ``T``, an empty ``r``, or ``T`` 0)."""
    rate, due = event.get("r"), event.get("T")
    if rate is None or rate == "" or due is None:
        return None, None
    when = ms_of(due, "T")
    if when == 0:
        return None, None
    return decimal_text_of(rate, "r"), when


class BinanceFrames:
    """Parser of Binance futures frames (stateless; see the module docstring).

    ``venue`` names the ticks (``binance-usdm`` or ``binance-coinm``); ``None`` guesses it per
    symbol (:func:`venue_of_symbol`). ``haircuts`` values the asset index (default: Binance's
    table); ``account`` names the account of user-data events.
    """

    __slots__ = ("account", "haircuts", "price_source", "venue")

    def __init__(
        self,
        venue: str | None = USDM,
        *,
        price_source: str = "mark",
        haircuts: HaircutTable | None = None,
        account: str | None = None,
    ) -> None:
        if venue not in (USDM, COINM, None):
            raise ConfigError(f"a Binance venue is {USDM} or {COINM}, got {venue!r}")
        if account is not None and not 0 < len(account) <= 256:
            raise ConfigError(f"an account name has 1 to 256 characters, got {account!r}")
        self.venue = venue
        self.price_source = check_price_source(price_source)
        self.haircuts = haircuts if haircuts is not None else binance_haircuts()
        self.account = account

    def parse(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one raw frame, or why it has none."""
        try:
            obj = exact_user_data(decode_frame(raw), raw)
        except MalformedRecord as exc:
            return refused(exc)
        return self.message(obj, receive_ts_ns)

    def message(self, obj: object, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one decoded frame, or why it has none."""
        try:
            if type(obj) is dict and "stream" in obj and "data" in obj:
                if type(obj["stream"]) is not str:
                    raise MalformedRecord("invalid_field", "stream must be a string")
                obj = obj["data"]
            if type(obj) is list:
                return self._items(obj, receive_ts_ns)
            if type(obj) is not dict:
                raise unknown_shape(f"not a Binance message: {describe(obj)}")
            return self._event(obj, receive_ts_ns)
        except MalformedRecord as exc:
            return refused(exc)

    def _items(self, items: list[Any], receive_ts_ns: int | None) -> Parsed:
        """An array of events (``!markPrice@arr``, ``!assetIndex@arr``): every good item's tick
        or record, one reject per reason for the bad ones."""
        ticks: list[MarkTick] = []
        records: list[Record] = []
        bad: dict[str, tuple[str, int]] = {}  # reason -> (first detail, count)
        for index, item in enumerate(items):
            try:
                if type(item) is not dict:
                    raise unknown_shape(f"not an event: {describe(item)}")
                parsed = self._event(item, receive_ts_ns)
                ticks.extend(parsed.ticks)
                records.extend(parsed.records)
            except MalformedRecord as exc:
                detail, count = bad.get(exc.reason, (f"item {index}: {exc.detail}", 0))
                bad[exc.reason] = (detail, count + 1)
        rejects = tuple(
            (reason, detail if count == 1 else f"{detail} (and {count - 1} more items)")
            for reason, (detail, count) in bad.items()
        )
        return Parsed(tuple(ticks), rejects, tuple(records))

    def _event(self, event: dict[str, Any], receive_ts_ns: int | None) -> Parsed:
        kind = event.get("e")
        if kind == "markPriceUpdate":
            if self.price_source != "mark":
                return NOTHING
            return self._tick(event, "E", receive_ts_ns)
        if type(kind) is str and kind in TRADE_EVENTS:
            if self.price_source != "trade" or event.get("X", "MARKET") != "MARKET":
                return NOTHING
            return self._tick(event, "T", receive_ts_ns)
        if kind == "bookTicker":
            if self.price_source != "mid":
                return NOTHING
            return self._tick(event, "E" if "E" in event else "T", receive_ts_ns, mid=True)
        if kind == "assetIndexUpdate":
            record = asset_index_event(event, self.haircuts)
            return NOTHING if record is None else Parsed(records=(record,))
        if type(kind) is str and kind in USER_DATA_EVENTS:
            return self._user_data(event, kind)
        if kind is None:
            return self._reply(event)
        raise unknown_shape(f"Binance event {short(kind)} carries no price")

    def _user_data(self, event: dict[str, Any], kind: str) -> Parsed:
        """An event of an account's user-data stream (see the module docstring)."""
        changes = kind == "ACCOUNT_UPDATE" or (kind == "ACCOUNT_CONFIG_UPDATE" and "ai" in event)
        if self.account is None:
            if changes:
                raise MalformedRecord(
                    "unknown_account", f"an {kind} event of an account that was not named"
                )
            return NOTHING
        if kind not in ("ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE"):
            return NOTHING
        record = parse_user_data(event, self.account)
        return NOTHING if record is None else Parsed(records=(record,))

    def _reply(self, reply: dict[str, Any]) -> Parsed:
        """A reply to a request: ``{"result":..,"id":..}`` acknowledges, errors are rejects."""
        if "result" in reply and "id" in reply and "error" not in reply:
            return NOTHING
        if "error" in reply:
            error = reply["error"]
            message = error.get("msg", error) if type(error) is dict else error
            raise venue_error("binance", message)
        if "code" in reply and "msg" in reply:
            raise venue_error("binance", f"{short(reply['code'])}: {short(reply['msg'])}")
        raise unknown_shape(f"not a Binance message: {describe(reply)}")

    def _tick(
        self, event: dict[str, Any], when: str, receive_ts_ns: int | None, *, mid: bool = False
    ) -> Parsed:
        """The tick of one event: its price ``p`` (or the book's mid) at time ``event[when]``."""
        symbol = symbol_of(event.get("s"), "s")
        ts = ms_of(event.get(when), when)
        if mid:
            mark, text = mid_of(event.get("b"), event.get("a"))
        else:
            mark, text = mark_of(event.get("p"), "p")
        rate, due = funding_of(event) if event.get("e") == "markPriceUpdate" else (None, None)
        venue = self.venue or venue_of_symbol(symbol)
        return Parsed((MarkTick(venue, symbol, mark, text, ts, receive_ts_ns, rate, due),))
