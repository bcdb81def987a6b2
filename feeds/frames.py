"""The one entry point from a raw exchange frame to mark ticks, for live feeds and replays alike.

:class:`FrameParser` wraps the venue parsers (:mod:`feeds.binance`, :mod:`feeds.bybit`,
:mod:`feeds.okx`) behind one call, ``parse(raw, receive_ts_ns) -> Parsed``. With a venue it
reads that venue's frames only; with ``venue=None`` it recognises each frame's venue by its shape:

=====================================================================  ===========
shape                                                                  venue
=====================================================================  ===========
a list; an object with ``stream`` + ``data``, ``e``, ``result`` +      Binance (USDⓈ-M or
``id``, ``error`` + ``id``, or ``code`` + ``msg``                      COIN-M by symbol)
an object with ``topic`` or ``op``                                     Bybit
an object with ``arg`` or ``event``; the text ``pong``                 OKX
an object with ``channel``                                             Hyperliquid
=====================================================================  ===========

Anything else is ``unknown_shape``. Frames over :data:`~feeds.ticks.MAX_FRAME_BYTES` are
``oversized`` before any decoding; text that is not JSON is ``invalid_json``. A parser instance
holds the Bybit ticker state and the Hyperliquid universes, so use one per connection or
capture.
"""

from __future__ import annotations

from typing import Protocol

from feeds.binance import COINM, USDM, BinanceFrames, check_price_source, exact_user_data
from feeds.bybit import BybitTickers
from feeds.collateral import HaircutTable
from feeds.fields import decode_frame, describe, refused
from feeds.hyperliquid import HyperliquidFrames
from feeds.okx import OkxMarkPrice, is_pong
from feeds.ticks import NOTHING, Parsed
from monitor.errors import ConfigError, MalformedRecord

BYBIT = "bybit"
OKX = "okx"
HYPERLIQUID = "hyperliquid"
VENUES = (USDM, COINM, BYBIT, OKX, HYPERLIQUID)

_BINANCE_KEYS = ("e", "result", "error")


class VenueParser(Protocol):
    """What every venue parser offers: decoded JSON in, ticks or reasons out."""

    def message(self, obj: object, receive_ts_ns: int | None) -> Parsed: ...


class FrameParser:
    """Raw frames of one venue (or of any, ``venue=None``) to :class:`~feeds.ticks.Parsed`.

    ``price_source`` (``mark``, ``trade`` or ``mid``) applies to Binance and Hyperliquid
    frames; see :mod:`feeds.binance` and :mod:`feeds.hyperliquid`. ``haircuts`` values
    Binance's asset index (default: Binance's table, :mod:`feeds.collateral`); ``account``
    names the account of Binance user-data events. Unknown venues or price sources are a
    :class:`ConfigError`.
    """

    __slots__ = ("_binance", "_bybit", "_hyperliquid", "_okx", "_only", "price_source", "venue")

    def __init__(
        self,
        venue: str | None = None,
        *,
        price_source: str = "mark",
        haircuts: HaircutTable | None = None,
        account: str | None = None,
    ) -> None:
        if venue is not None and venue not in VENUES:
            raise ConfigError(f"venue must be one of {', '.join(VENUES)}, got {venue!r}")
        check_price_source(price_source)
        if price_source != "mark" and venue in (BYBIT, OKX):
            raise ConfigError(
                f"price_source {price_source!r} applies to Binance and Hyperliquid frames only"
            )
        self.venue = venue
        self.price_source = price_source
        binance_venue = venue if venue in (USDM, COINM) else None
        self._binance = BinanceFrames(
            binance_venue, price_source=price_source, haircuts=haircuts, account=account
        )
        self._bybit = BybitTickers()
        self._okx = OkxMarkPrice()
        self._hyperliquid = HyperliquidFrames(price_source=price_source)
        only: dict[str | None, VenueParser | None] = {
            USDM: self._binance,
            COINM: self._binance,
            BYBIT: self._bybit,
            OKX: self._okx,
            HYPERLIQUID: self._hyperliquid,
            None: None,
        }
        self._only = only[venue]

    @property
    def bybit(self) -> BybitTickers:
        """The Bybit state (last mark per symbol)."""
        return self._bybit

    @property
    def hyperliquid(self) -> HyperliquidFrames:
        """The Hyperliquid state (the dexes' universes)."""
        return self._hyperliquid

    def parse(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        """The ticks of one raw frame (text or bytes, as received), or why it has none."""
        if is_pong(raw) and self.venue in (None, OKX):
            return NOTHING
        try:
            obj = decode_frame(raw)
            parser = self._detect(obj) if self._only is None else self._only
            if parser is self._binance:
                obj = exact_user_data(obj, raw)  # an ACCOUNT_UPDATE's numbers from their text
        except MalformedRecord as exc:
            return refused(exc)
        return parser.message(obj, receive_ts_ns)

    def _detect(self, obj: object) -> VenueParser:
        if type(obj) is list:
            return self._binance
        if type(obj) is dict:
            if ("stream" in obj and "data" in obj) or any(key in obj for key in _BINANCE_KEYS):
                return self._binance
            if "topic" in obj or "op" in obj:
                return self._bybit
            if "arg" in obj or "event" in obj:
                return self._okx
            if "channel" in obj:
                return self._hyperliquid
            if "code" in obj and "msg" in obj:
                return self._binance
        raise MalformedRecord("unknown_shape", f"no venue sends {describe(obj)}")
