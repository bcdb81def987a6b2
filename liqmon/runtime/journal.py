"""What the journal holds and when a snapshot is due (the runtime's policies, without I/O).

The journal keeps what the marks alone do not restore: every account record, and every tick
batch that changed an alert state or funding (:attr:`monitor.engine.Engine.changes`). A tick
that changed nothing is only remembered as its symbol's latest mark (*dirty*); the next journal
write starts with those marks, so that re-applying the journal values each record at the marks
it was valued at. Lines from a replayed file carry their line number (``_line``) so that a
restart resumes after the last one applied.
"""

from __future__ import annotations

from collections.abc import Sequence

from feeds.batches import Funding
from feeds.normalized import record_json
from monitor.records import MarkSource, Record, TickRecord
from monitor.snapshot import mark_text

SNAPSHOT_JOURNAL_MIN = 1
SNAPSHOT_JOURNAL_MAX = 100_000
"""A periodic snapshot waits until the journal since the last one holds a quarter as many lines
as there are open positions, bounded by these (a large quiet book is not rewritten every
interval for a few journal lines; restart time stays bounded either way)."""

Tick = tuple[int, str, float, MarkSource, Funding | None, int | None]
"""``(ts, symbol, mark, mark text, funding, source line)``."""


def tick_line(tick: Tick) -> bytes:
    ts, symbol, mark, text, funding, line = tick
    rate, when = funding if funding is not None else (None, None)
    return with_line(record_json(TickRecord(ts, symbol, mark, mark_text(text), rate, when)), line)


def with_line(line: bytes, source_line: int | None) -> bytes:
    if source_line is None:
        return line
    return line[:-1] + b',"_line":' + str(source_line).encode() + b"}"


class Journal:
    """The lines to journal for each input (see the module docstring)."""

    def __init__(self) -> None:
        self._dirty: dict[str, Tick] = {}
        self.written = 0
        self.since_snapshot = 0

    def ticks(self, ticks: Sequence[Tick], *, changed: bool) -> list[bytes]:
        """A batch of accepted ticks: all of them (after the dirty marks) if it ``changed``
        state, else none (each is its symbol's latest mark)."""
        if not changed:
            dirty = self._dirty
            for tick in ticks:
                dirty[tick[1]] = tick
            return []
        lines = self._flush()
        lines.extend(tick_line(t) for t in ticks)
        return self._count(lines)

    def record(self, record: Record, source_line: int | None = None) -> list[bytes]:
        """An applied record, after the dirty marks."""
        lines = self._flush()
        lines.append(with_line(record_json(record), source_line))
        return self._count(lines)

    def records(self, records: Sequence[tuple[Record, int | None]]) -> list[bytes]:
        lines = self._flush()
        lines.extend(with_line(record_json(r), n) for r, n in records)
        return self._count(lines)

    def snapshot_taken(self) -> None:
        """A snapshot holds the state; the dirty marks stay (until the snapshot is written, a
        restart replays the older journals and the new one: its records need those marks)."""
        self.since_snapshot = 0

    def _flush(self) -> list[bytes]:
        dirty = self._dirty
        if not dirty:
            return []
        lines = [tick_line(t) for t in dirty.values()]
        dirty.clear()
        return lines

    def _count(self, lines: list[bytes]) -> list[bytes]:
        self.written += len(lines)
        self.since_snapshot += len(lines)
        return lines


class SnapshotPolicy:
    """Every ``interval_ns``, once the journal since the last snapshot is worth it."""

    def __init__(self, interval_ns: int | None) -> None:
        self.interval_ns = interval_ns
        self._last_ns: int | None = None

    def due(self, now_ns: int, *, journaled: int, positions: int) -> bool:
        if not self.interval_ns:
            return False
        if self._last_ns is None:
            self._last_ns = now_ns  # the interval runs from the first look
            return False
        if now_ns - self._last_ns < self.interval_ns:
            return False
        return journaled >= min(SNAPSHOT_JOURNAL_MAX, max(SNAPSHOT_JOURNAL_MIN, positions // 4))

    def taken(self, now_ns: int) -> None:
        self._last_ns = now_ns
