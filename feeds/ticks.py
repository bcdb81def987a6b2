"""What every exchange parser produces: mark ticks, or a reason why a frame gave none.

A parser is a pure function from one raw frame (the exact websocket text, or one CSV row) to a
:class:`Parsed`: the ticks it carried, the other records it carried (``collateral`` records of
Binance's asset index; the ``account_update`` and ``asset_mode`` records of Binance user-data
events when the stream's account is named) and, when it was not usable, the reasons. Parsers
never raise on bad input; they count it. Live feeds and recorded captures go through the same
parser, so a replay behaves exactly like the live run.

A tick may carry the funding its stream reports (``funding_rate``, the decimal text as sent, and
``funding_ts``, the next funding time in ms: both or neither; docs/collateral.md §3): Binance
``markPriceUpdate`` ``r``/``T``, Bybit ``tickers`` ``fundingRate``/``nextFundingTime``.

Timestamps are kept apart: ``exchange_ts_ms`` is the venue's event time (what the engine's
``ts`` is), ``receive_ts_ns`` is when this machine received the frame (``None`` when unknown).

Reject reasons (stable codes, counted in summaries and metrics):

``invalid_json``      not JSON (or not UTF-8)
``oversized``         a frame over :data:`MAX_FRAME_BYTES`
``unknown_shape``     valid JSON that is not a message this parser knows
``venue_error``       an error reply of the venue (a refused subscription, a bad request)
``invalid_price``     a mark that is not a finite positive number below 1e30
``invalid_field``     a missing or mistyped field (symbol, timestamps, ...)
``unknown_account``   a Binance user-data event that changes an account (``ACCOUNT_UPDATE``,
                      the multi-assets flag of ``ACCOUNT_CONFIG_UPDATE``) in a stream whose
                      account was not named
"""

from __future__ import annotations

from typing import NamedTuple

from monitor.records import Record

MAX_FRAME_BYTES = 4 << 20
"""Binance's ``!markPrice@arr`` for every symbol is about 150 KiB; nothing legitimate nears
4 MiB."""


class MarkTick(NamedTuple):
    """One mark price from a venue."""

    venue: str
    symbol: str
    mark: float
    mark_text: str  # the decimal text as the venue sent it (exact)
    exchange_ts_ms: int
    receive_ts_ns: int | None
    funding_rate: str | None = None  # the decimal text as the venue sent it (exact)
    funding_ts: int | None = None  # the next funding time that rate applies to, ms


class Parsed(NamedTuple):
    """The outcome of parsing one frame: ticks (possibly none), other records (possibly none)
    and rejection reasons."""

    ticks: tuple[MarkTick, ...] = ()
    rejects: tuple[tuple[str, str], ...] = ()  # (reason, detail)
    records: tuple[Record, ...] = ()

    @classmethod
    def reject(cls, reason: str, detail: str = "") -> Parsed:
        return cls((), ((reason, detail),))


NOTHING = Parsed()
"""A valid frame that carries no mark (a subscription ack, a ticker delta without markPrice)."""
