"""Tardis ``derivative_ticker`` CSV: mark prices from recorded rows of any derivatives venue.

The columns (https://docs.tardis.dev/downloadable-csv-files/data-types, "derivative_ticker")::

    exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,
    predicted_funding_rate,open_interest,last_price,index_price,mark_price

``timestamp`` (the venue's time) and ``local_timestamp`` (Tardis' receive time) are integer
*microseconds*: a row's tick has ``exchange_ts_ms = timestamp // 1000`` and
``receive_ts_ns = local_timestamp * 1000``. Its venue is the row's ``exchange`` (``deribit``,
``okex-swap``, ``okex-futures``, ...). A row without ``mark_price`` (a funding or open-interest
update; Tardis leaves a cell empty when the venue gave no value) is :data:`~feeds.ticks.NOTHING`;
so is the header (a row naming ``local_timestamp``), which also sets the column order for the
rows after it (the default order above applies until one is seen). A row that is not UTF-8,
or whose field count does not match the header, is ``unknown_shape``.
"""

from __future__ import annotations

from feeds.fields import frame_size_ok, int_of_text, mark_of, short, symbol_of
from feeds.ticks import MAX_FRAME_BYTES, NOTHING, MarkTick, Parsed
from monitor.errors import MalformedRecord

COLUMNS = (
    "exchange",
    "symbol",
    "timestamp",
    "local_timestamp",
    "funding_timestamp",
    "funding_rate",
    "predicted_funding_rate",
    "open_interest",
    "last_price",
    "index_price",
    "mark_price",
)
REQUIRED = ("exchange", "symbol", "timestamp", "local_timestamp", "mark_price")


def is_header(fields: list[str]) -> bool:
    """Whether a row's fields are a Tardis CSV header (no data row has a ``local_timestamp``)."""
    return "local_timestamp" in fields


class TardisDerivativeTicker:
    """Parser of ``derivative_ticker`` rows; remembers the column order of the last header."""

    __slots__ = ("_at", "_width")

    def __init__(self) -> None:
        self._width = len(COLUMNS)
        self._at = {name: COLUMNS.index(name) for name in REQUIRED}

    def parse(self, row: str | bytes, receive_ts_ns: int | None = None) -> Parsed:
        """The tick of one CSV row, or why it has none.

        The row's ``local_timestamp`` is its receive time; ``receive_ts_ns`` is used only for a
        row where that column is empty.
        """
        try:
            return self._row(row, receive_ts_ns)
        except MalformedRecord as exc:
            return Parsed.reject(exc.reason, exc.detail)

    def _row(self, raw: str | bytes, receive_ts_ns: int | None) -> Parsed:
        if not frame_size_ok(raw):
            raise MalformedRecord("oversized", f"a row of more than {MAX_FRAME_BYTES} bytes")
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedRecord("unknown_shape", "a CSV row that is not UTF-8") from None
        row = raw.rstrip("\r\n")
        fields = row.split(",")
        if is_header(fields):
            return self._header(fields)
        if len(fields) != self._width:
            raise MalformedRecord(
                "unknown_shape", f"{len(fields)} fields where the header has {self._width}"
            )
        price = fields[self._at["mark_price"]]
        if not price:
            return NOTHING
        venue = symbol_of(fields[self._at["exchange"]], "exchange")
        symbol = symbol_of(fields[self._at["symbol"]], "symbol")
        ts_us = int_of_text(fields[self._at["timestamp"]], "timestamp")
        local = fields[self._at["local_timestamp"]]
        if local or receive_ts_ns is None:
            receive_ts_ns = int_of_text(local, "local_timestamp") * 1000
        mark, text = mark_of(price, "mark_price")
        return Parsed((MarkTick(venue, symbol, mark, text, ts_us // 1000, receive_ts_ns),))

    def _header(self, names: list[str]) -> Parsed:
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise MalformedRecord(
                "unknown_shape", f"a header without {', '.join(missing)}: {short(','.join(names))}"
            )
        self._width = len(names)
        self._at = {name: names.index(name) for name in REQUIRED}
        return NOTHING
