"""Normalized JSON Lines a buffer at a time: the replay's hot path (docs/records.md).

A file is read in buffers of whole lines (about a mebibyte each). Each buffer is decoded in one
call into typed records (msgspec structs, one tagged union over the record types that stream
by: ticks, positions, balances, margin transfers), then cut into *runs* the engine takes in one
call each:

* :class:`TickRun`: consecutive ticks, as columns (symbols, float marks, exact mark texts,
  timestamps), their marks validated for the whole run at once;
* :class:`AccountRun`: consecutive positions and balances, as an
  :class:`~monitor.records.AccountBatch` (decimals validated and parsed per column,
  :mod:`feeds.decimals`), for the bulk loader;
* :class:`OneRecord` / :class:`Refused`: everything else, line by line through the exact
  record-by-record parser (:mod:`feeds.normalized`): contracts, snapshots, JSON numbers where
  decimals are expected, anything the fast path does not accept, and every malformed line,
  which gets the very error (reason and detail) the line parser gives.

A buffer that does not decode as a whole (a malformed line, a contract, a blank line) is split
in two at a line boundary and each half tried again, down to single lines: one bad line costs
a few extra decodes of its buffer, not a slow pass over it. Line numbers are those of
:func:`feeds.files.numbered_lines` (blank lines count, and are skipped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Annotated, Literal, NamedTuple

import msgspec
import numpy as np

from feeds.decimals import DecimalColumn, parse_decimals
from feeds.files import CHUNK_BYTES, chunks
from feeds.normalized import (
    MAX_LINE_BYTES,
    MAX_TS,
    decode,
    exact_numbers,
    funding_fields,
    parse_object,
    price_of,
    tick_fields,
    to_decimal,
)
from monitor.errors import MalformedRecord, RecordRefused
from monitor.records import (
    AccountBatch,
    BalanceRecord,
    DecimalArray,
    MarkSource,
    PositionRecord,
    Record,
)

_Stamp = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Side = Literal["both", "long", "short"]
_SIDE_IDS = {"both": 0, "long": 1, "short": 2}
_MARK_CHARACTERS = frozenset("0123456789.-+eE\n")
_MAX_MARK_TEXT = 64


class _Tick(msgspec.Struct, tag_field="type", tag="tick", gc=False):
    ts: _Stamp
    symbol: _Name
    mark: str
    funding_rate: str | None = None
    funding_ts: int | None = None


class _Position(msgspec.Struct, tag_field="type", tag="position", gc=False):
    ts: _Stamp
    account: _Name
    symbol: _Name
    side: _Side
    mode: Literal["isolated", "cross"]
    qty: str
    entry: str
    leverage: str
    isolated_wallet: str | None = None


class _Balance(msgspec.Struct, tag_field="type", tag="balance", gc=False):
    ts: _Stamp
    account: _Name
    asset: _Name
    wallet: str


class _Margin(msgspec.Struct, tag_field="type", tag="margin", gc=False):
    ts: _Stamp
    account: _Name
    symbol: _Name
    side: _Side
    delta: str


_Line = _Tick | _Position | _Balance | _Margin
_DECODER = msgspec.json.Decoder(list[_Line])


Funding = tuple[Decimal | None, int | None]


class TickRun(NamedTuple):
    lines: Sequence[int]
    symbols: list[str]
    marks: list[float]
    texts: list[MarkSource]
    stamps: list[int]
    funding: list[Funding] | None = None
    """Each tick's ``(funding_rate, funding_ts)``, or ``None`` when no tick of the run has any."""


class AccountRun(NamedTuple):
    lines: Sequence[int]
    batch: AccountBatch


class OneRecord(NamedTuple):
    line: int
    record: Record


class Refused(NamedTuple):
    line: int
    error: RecordRefused


Item = TickRun | AccountRun | OneRecord | Refused


def buffers(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(number of the first line, bytes)`` of the file in pieces of whole lines (each ends
    with a newline, except perhaps the last piece of a file without a final newline)."""
    number = 1
    pending = b""
    for chunk in chunks(path, chunk_bytes):
        data = pending + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            continue
        piece, pending = data[: cut + 1], data[cut + 1 :]
        yield number, piece
        number += piece.count(b"\n")
    if pending:
        yield number, pending + b"\n"


def decode_buffer(data: bytes, first_line: int) -> list[Item]:
    """The runs of a buffer of whole lines (see the module docstring)."""
    items: list[Item] = []
    _decode_into(data, first_line, items)
    return _merged(items)


def _decode_into(data: bytes, first_line: int, items: list[Item]) -> None:
    lines = data.count(b"\n")
    fits = len(data) <= MAX_LINE_BYTES or _longest_line(data) <= MAX_LINE_BYTES
    if fits:
        try:
            structs = _DECODER.decode(b"[" + data[:-1].replace(b"\n", b",") + b"]")
        except msgspec.DecodeError:
            structs = None
        if structs is not None and len(structs) == lines:
            items.extend(_runs(structs, first_line, data))
            return
    if lines <= 1:
        _slow_lines(data, first_line, items)
        return
    middle = data.find(b"\n", len(data) // 2)
    if middle < 0 or middle == len(data) - 1:
        middle = data.find(b"\n")
    head, tail = data[: middle + 1], data[middle + 1 :]
    _decode_into(head, first_line, items)
    _decode_into(tail, first_line + head.count(b"\n"), items)


def _longest_line(data: bytes) -> int:
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    return int(np.diff(ends, prepend=-1).max()) - 1 if len(ends) else len(data)


def _slow_lines(data: bytes, first_line: int, items: list[Item]) -> None:
    """Line by line through the exact parser (blank lines count and are skipped)."""
    for offset, line in enumerate(data.split(b"\n")[:-1]):
        number = first_line + offset
        if not line.strip():
            continue
        items.append(slow_line(line, number))


def slow_line(line: bytes, number: int) -> Item:
    """One line through the record-by-record parser."""
    try:
        obj = decode(line)
        if type(obj) is dict and obj.get("type") == "tick":
            symbol, mark, raw, ts = tick_fields(obj)
            funding = funding_fields(obj)
            text: MarkSource = raw if type(raw) is str else line
            pair = [funding] if funding != (None, None) else None
            return TickRun((number,), [symbol], [mark], [text], [ts], pair)
        return OneRecord(number, parse_object(exact_numbers(obj, line)))
    except RecordRefused as exc:
        return Refused(number, exc)


def _runs(structs: list[_Line], first_line: int, data: bytes) -> list[Item]:
    """Cut decoded lines into runs."""
    items: list[Item] = []
    start = 0
    count = len(structs)
    while start < count:
        kind = type(structs[start])
        stop = start + 1
        if kind is _Tick:
            while stop < count and type(structs[stop]) is _Tick:
                stop += 1
            items.extend(_tick_runs(structs[start:stop], first_line + start, data))  # type: ignore[arg-type]
        elif kind is _Position or kind is _Balance:
            while stop < count and type(structs[stop]) in (_Position, _Balance):
                stop += 1
            items.extend(_account_runs(structs[start:stop], first_line + start))  # type: ignore[arg-type]
        else:
            items.append(_struct_record(structs[start], first_line + start))
        start = stop
    return items


def _tick_runs(ticks: list[_Tick], first_line: int, data: bytes) -> list[Item]:
    if any(t.funding_rate is not None or t.funding_ts is not None for t in ticks):
        return _ticks_one_by_one(ticks, first_line)  # funding fields: checked one by one
    texts = [t.mark for t in ticks]
    marks: list[float] | None = None
    if set("\n".join(texts)) <= _MARK_CHARACTERS and max(map(len, texts)) <= _MAX_MARK_TEXT:
        try:
            values = np.array(texts, dtype=np.float64)
        except ValueError:
            values = None
        if values is not None and ((values >= 1e-30) & (values < 1e30)).all():
            marks = values.tolist()
    if marks is None:  # some mark is refused: find which, with the line parser's reason
        return _ticks_one_by_one(ticks, first_line)
    return [
        TickRun(
            range(first_line, first_line + len(ticks)),
            [t.symbol for t in ticks],
            marks,
            texts,  # type: ignore[arg-type]
            [t.ts for t in ticks],
        )
    ]


def _ticks_one_by_one(ticks: list[_Tick], first_line: int) -> list[Item]:
    items: list[Item] = []
    for offset, tick in enumerate(ticks):
        number = first_line + offset
        try:
            mark = price_of(tick.mark)
            funding = funding_fields(
                {"funding_rate": tick.funding_rate, "funding_ts": tick.funding_ts}
            )
        except MalformedRecord as exc:
            items.append(Refused(number, exc))
            continue
        pair = [funding] if funding != (None, None) else None
        items.append(TickRun((number,), [tick.symbol], [mark], [tick.mark], [tick.ts], pair))
    return items


def _record_of(struct: _Position | _Balance, number: int) -> Item:
    """One decoded position or balance as a record, checked as :mod:`feeds.normalized` checks
    it; anything it would refuse goes through it for the reason."""
    try:
        if type(struct) is _Balance:
            record: Record = BalanceRecord(
                struct.ts, struct.account, struct.asset, to_decimal(struct.wallet)
            )
        else:
            position: _Position = struct  # type: ignore[assignment]
            qty = to_decimal(position.qty)
            entry = to_decimal(position.entry)
            leverage = to_decimal(position.leverage)
            isolated = position.mode == "isolated"
            wallet = (
                to_decimal(position.isolated_wallet)
                if isolated and position.isolated_wallet is not None
                else None
            )
            if position.isolated_wallet is not None and not isolated:
                to_decimal(position.isolated_wallet)  # validated even where unused
            if qty != 0 and (entry <= 0 or leverage < 0 or (isolated and wallet is None)):
                raise ValueError("a rule the exact parser words")
            record = PositionRecord(
                position.ts,
                position.account,
                position.symbol,
                position.side,
                position.mode,
                qty,
                entry,
                leverage,
                wallet,
            )
    except ValueError:
        return _struct_record(struct, number)
    return OneRecord(number, record)


def _struct_record(struct: _Line, number: int) -> Item:
    """A decoded line through the exact parser (the same verdict as its line would get)."""
    fields = msgspec.structs.asdict(struct)
    fields["type"] = type(struct).__struct_config__.tag
    try:
        return OneRecord(number, parse_object(fields))
    except RecordRefused as exc:
        return Refused(number, exc)


class _Parsed(NamedTuple):
    """The columns of a run of positions and balances, parsed once."""

    is_position: np.ndarray
    isolated: np.ndarray
    has_wallet: np.ndarray
    qty: DecimalColumn
    entry: DecimalColumn
    wallet: DecimalColumn
    qty_text: list[str]
    entry_text: list[str]
    wallet_text: list[str]
    leverage: list[str]


SMALL_RUN = 16
"""Fewer consecutive positions and balances than this are records, not a batch (the columns
would cost more to build than they save)."""


def _account_runs(records: list[_Position | _Balance], first_line: int) -> list[Item]:
    """Positions and balances as batches; a record the columns cannot take exactly (a
    decimal in another form, a rule to check) goes through the exact parser on its own."""
    count = len(records)
    if count < SMALL_RUN:
        return [_record_of(r, first_line + k) for k, r in enumerate(records)]
    positions = [r if type(r) is _Position else None for r in records]
    parsed = _Parsed(
        is_position=np.array([p is not None for p in positions]),
        isolated=np.array([p is not None and p.mode == "isolated" for p in positions]),
        has_wallet=np.array([p is not None and p.isolated_wallet is not None for p in positions]),
        qty=parse_decimals(qty_text := [p.qty if p else "0" for p in positions]),
        entry=parse_decimals(entry_text := [p.entry if p else "0" for p in positions]),
        wallet=parse_decimals(
            wallet_text := [
                (p.isolated_wallet or "0") if p else r.wallet  # type: ignore[union-attr]
                for p, r in zip(positions, records, strict=True)
            ]
        ),
        qty_text=qty_text,
        entry_text=entry_text,
        wallet_text=wallet_text,
        leverage=(leverage := [p.leverage if p else "0" for p in positions]),
    )
    lever = parse_decimals(leverage)
    slow = parsed.qty.slow | parsed.entry.slow | lever.slow | parsed.wallet.slow
    opening = parsed.is_position & (parsed.qty.value != 0.0)
    # the rules a single position record is checked against (feeds.normalized._position)
    slow |= opening & ((parsed.entry.value <= 0.0) | (lever.value < 0.0))
    slow |= opening & parsed.isolated & ~parsed.has_wallet
    items: list[Item] = []
    start = 0
    # consecutive fast records form one batch; each slow one is decided on its own
    for position in [*np.flatnonzero(slow).tolist(), count]:
        if position > start:
            items.append(_batch(records, start, position, first_line, parsed))
        if position < count:
            items.append(_struct_record(records[position], first_line + position))
        start = position + 1
    return items


def _batch(
    records: list[_Position | _Balance], start: int, stop: int, first_line: int, c: _Parsed
) -> AccountRun:
    picked = records[start:stop]
    window = slice(start, stop)

    def column(parsed: DecimalColumn) -> DecimalArray:
        return DecimalArray(parsed.value[window], parsed.mantissa[window], parsed.exponent[window])

    batch = AccountBatch(
        is_position=c.is_position[window],
        ts=np.array([r.ts for r in picked], dtype=np.int64),
        account=[r.account for r in picked],
        symbol=[r.symbol if type(r) is _Position else "" for r in picked],
        asset=[r.asset if type(r) is _Balance else "" for r in picked],
        side=np.array(
            [_SIDE_IDS[r.side] if type(r) is _Position else 0 for r in picked],
            dtype=np.int8,
        ),
        isolated=c.isolated[window],
        qty=column(c.qty),
        entry=column(c.entry),
        wallet=column(c.wallet),
        has_wallet=c.has_wallet[window],
        exact=np.ones(stop - start, dtype=bool),
        leverage=c.leverage[window],
        qty_text=c.qty_text[window],
        entry_text=c.entry_text[window],
        wallet_text=c.wallet_text[window],
    )
    return AccountRun(range(first_line + start, first_line + stop), batch)


def _merged(items: list[Item]) -> list[Item]:
    """Adjacent tick runs joined (the halves of a split buffer, single slow ticks)."""
    out: list[Item] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, TickRun) and isinstance(last, TickRun):
            funding = None
            if last.funding is not None or item.funding is not None:
                funding = (last.funding or [(None, None)] * len(last.symbols)) + (
                    item.funding or [(None, None)] * len(item.symbols)
                )
            out[-1] = TickRun(
                [*last.lines, *item.lines],
                last.symbols + item.symbols,
                last.marks + item.marks,
                last.texts + item.texts,
                last.stamps + item.stamps,
                funding,
            )
        else:
            out.append(item)
    return out


def read_items(path: str) -> Iterator[list[Item]]:
    """Every line of the file at ``path`` as runs, a buffer at a time."""
    for first_line, data in buffers(path):
        yield decode_buffer(data, first_line)
