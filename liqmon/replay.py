"""``liqmon replay``: a recorded file through the engine into a sink, with an end-of-run summary.

The loop is deliberately flat: lines arrive in batches, ticks take a hand-validated fast path
straight to :meth:`Engine.apply_tick`, every other record goes through the pydantic boundary.
A bad line never stops the replay: it is counted by reason (with its line number) and logged —
the first few of each reason individually, then only in the summary.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

import orjson
import structlog

from alerts.sink import EventSink
from feeds.files import UnreadableFile, line_batches
from feeds.normalized import MAX_LINE_BYTES, decode, exact_numbers, parse_object, tick_fields
from liqmon.summary import ReplayStats
from monitor.engine import Engine
from monitor.errors import RecordRefused, TickDropped
from monitor.events import StateEvent
from monitor.records import AccountUpdateRecord, ContractRecord, MarkSource, Record, TickRecord

LOGGED_PER_REASON = 10
log = structlog.get_logger("liqmon.replay")


class Pacer:
    """Sleeps so that records are applied ``speed`` times as fast as their ``ts`` advance."""

    def __init__(self, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._speed = speed
        self._clock = clock
        self._origin: tuple[int, float] | None = None

    def delay(self, ts: int) -> float:
        """Seconds to wait before applying a record stamped ``ts``."""
        now = self._clock()
        if self._origin is None:
            self._origin = (ts, now)
            return 0.0
        first_ts, started = self._origin
        due = started + (ts - first_ts) / 1000.0 / self._speed
        return max(0.0, due - now)


class Progress:
    """A single self-overwriting status line on a terminal."""

    def __init__(self, stream: TextIO, interval: float = 0.5) -> None:
        self._stream = stream
        self._interval = interval
        self._next = time.monotonic() + interval
        self._shown = False

    def update(self, stats: ReplayStats) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        events = sum(stats.events.values())
        self._stream.write(
            f"\r  {stats.lines:,} lines, {stats.ticks_applied:,} ticks, {events:,} events ..."
        )
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()


class _RefusalLog:
    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def __call__(self, exc: RecordRefused, line: int) -> None:
        self._seen[exc.reason] += 1
        count = self._seen[exc.reason]
        if count <= LOGGED_PER_REASON:
            log.warning(
                "record_refused",
                line=line,
                reason=exc.reason,
                detail=exc.detail,
                outcome="dropped" if isinstance(exc, TickDropped) else "rejected",
            )
            if count == LOGGED_PER_REASON:
                log.warning(
                    "record_refused_quiet",
                    reason=exc.reason,
                    note="further refusals of this reason are only counted",
                )


async def replay_file(
    path: str,
    engine: Engine,
    sink: EventSink,
    *,
    speed: float | None = None,
    progress: Progress | None = None,
    label: str | None = None,
) -> ReplayStats:
    """Apply every record of ``path`` in order; publish events to ``sink``; return the counts.

    An unreadable file (missing, or a corrupt or truncated gzip) ends the replay with
    ``stats.failure`` set; events published before that are kept.
    """
    stats = ReplayStats(source=path, title=label or f"liqmon replay: {path}")
    refused = _RefusalLog()
    pacer = Pacer(speed) if speed else None
    apply_tick = engine.apply_tick
    apply = engine.apply
    records = stats.records
    events_by_kind = stats.events
    started = time.perf_counter()
    seen_ticks = applied_ticks = 0  # local counters on the hot path, added to stats per batch
    loads = orjson.loads
    try:
        async for batch in line_batches(path):
            stats.lines += len(batch)
            for number, line in batch:
                try:
                    try:
                        obj = loads(line) if len(line) <= MAX_LINE_BYTES else decode(line)
                    except orjson.JSONDecodeError:
                        obj = decode(line)  # raises the MalformedRecord that says why
                    if type(obj) is dict and obj.get("type") == "tick":
                        symbol, mark, raw, ts = tick_fields(obj)
                        # a JSON number's exact text is the line's, read only if ever needed
                        text: MarkSource = raw if type(raw) is str else line
                        seen_ticks += 1
                        if pacer is not None:
                            await _pace(pacer, ts)
                        events = apply_tick(symbol, mark, text, ts)
                        applied_ticks += 1
                        if not events:
                            continue
                    else:
                        record = parse_object(exact_numbers(obj, line))
                        records[record_kind(record)] += 1
                        if pacer is not None and not isinstance(
                            record, ContractRecord | TickRecord
                        ):
                            await _pace(pacer, record.ts)
                        events = apply(record)
                        if isinstance(record, ContractRecord):
                            for warning in record.contract.warnings:
                                if warning not in stats.warnings:
                                    stats.warnings.append(warning)
                                    log.warning("tier_table_warning", detail=warning)
                except TickDropped as exc:
                    stats.dropped[exc.reason] += 1
                    refused(exc, number)
                    continue
                except RecordRefused as exc:
                    stats.reject(exc.reason, number)
                    refused(exc, number)
                    continue
                for event in events:
                    if isinstance(event, StateEvent):
                        stats.state_updates += 1
                    else:
                        events_by_kind[event.kind] += 1
                    await sink.publish(event)
            records["tick"] += seen_ticks
            stats.ticks_applied += applied_ticks
            seen_ticks = applied_ticks = 0
            if progress is not None:
                progress.update(stats)
    except UnreadableFile as exc:  # reported once, by the summary
        stats.failure = f"{exc} (after {stats.lines:,} lines, all applied)"
    finally:
        if seen_ticks:  # a batch cut short by an error
            records["tick"] += seen_ticks
            stats.ticks_applied += applied_ticks
        stats.elapsed = time.perf_counter() - started
        if progress is not None:
            progress.clear()
        await sink.flush()
    return stats


def record_kind(record: Record) -> str:
    """The record's ``type`` as in the input (``tick``, ``position``, ``account_snapshot``...)."""
    if isinstance(record, AccountUpdateRecord):
        return "account_snapshot" if record.replace else "account_update"
    return type(record).__name__.removesuffix("Record").lower()


async def _pace(pacer: Pacer, ts: int) -> None:
    delay = pacer.delay(ts)
    if delay > 0:
        await asyncio.sleep(delay)


def progress_for(stream: TextIO = sys.stderr) -> Progress | None:
    """A progress line when ``stream`` is a terminal."""
    return Progress(stream) if stream.isatty() else None
