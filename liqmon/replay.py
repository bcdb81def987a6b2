"""``liqmon replay``: a recorded file through the engine into a sink, with an end-of-run summary.

Lines arrive a buffer at a time, decoded into runs (:mod:`feeds.batches`); a run of ticks is one
engine call, a run of account records one bulk load. A bad line never stops the replay: it is
counted by reason (with its line number) and logged — the first few of each reason
individually, then only in the summary.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO

import structlog

from alerts.sink import EventSink
from feeds.batches import AccountRun, OneRecord, TickRun, read_items
from feeds.files import UnreadableFile
from liqmon.summary import ReplayStats
from monitor.bulk import apply_batch
from monitor.engine import Engine
from monitor.errors import RecordRefused, TickDropped
from monitor.events import EngineEvent, StateEvent
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    ContractRecord,
    Record,
    TickRecord,
)

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

    The file is decoded a buffer at a time into runs (:mod:`feeds.batches`): a run of ticks is
    one call of :meth:`Engine.apply_ticks`, a run of positions and balances one bulk load
    (:func:`monitor.bulk.apply_batch`); everything else goes record by record. With ``speed``
    every record is paced by its ``ts``, one at a time.

    An unreadable file (missing, or a corrupt or truncated gzip) ends the replay with
    ``stats.failure`` set; events published before that are kept.
    """
    stats = ReplayStats(source=path, title=label or f"liqmon replay: {path}")
    refused = _RefusalLog()
    pacer = Pacer(speed) if speed else None
    started = time.perf_counter()
    try:
        for items in read_items(path):
            for item in items:
                events: Sequence[EngineEvent]
                if isinstance(item, TickRun):
                    events = await _ticks(engine, item, stats, refused, pacer)
                elif isinstance(item, AccountRun):
                    events = await _accounts(engine, item, stats, refused, pacer)
                elif isinstance(item, OneRecord):
                    stats.lines += 1
                    events = await _one(engine, item.record, item.line, stats, refused, pacer)
                else:
                    stats.lines += 1
                    stats.reject(item.error.reason, item.line)
                    refused(item.error, item.line)
                    continue
                await _publish(events, sink, stats)
            if progress is not None:
                progress.update(stats)
            if pacer is None:
                await asyncio.sleep(0)  # let the sinks' tasks run between buffers
    except UnreadableFile as exc:  # reported once, by the summary
        stats.failure = f"{exc} (after {stats.lines:,} lines, all applied)"
    finally:
        stats.elapsed = time.perf_counter() - started
        if progress is not None:
            progress.clear()
        await sink.flush()
    return stats


async def _publish(events: Sequence[EngineEvent], sink: EventSink, stats: ReplayStats) -> None:
    by_kind = stats.events
    for event in events:
        if isinstance(event, StateEvent):
            stats.state_updates += 1
        else:
            by_kind[event.kind] += 1
        await sink.publish(event)


async def _ticks(
    engine: Engine, run: TickRun, stats: ReplayStats, refused: _RefusalLog, pacer: Pacer | None
) -> list[EngineEvent]:
    count = len(run.symbols)
    stats.lines += count
    stats.records["tick"] += count
    if pacer is None:
        events, dropped = engine.apply_ticks(
            run.symbols, run.marks, run.texts, run.stamps, run.funding
        )
    else:
        events, dropped = [], []
        for i, symbol in enumerate(run.symbols):
            await _pace(pacer, run.stamps[i])
            rate, when = run.funding[i] if run.funding is not None else (None, None)
            try:
                events.extend(
                    engine.apply_tick(symbol, run.marks[i], run.texts[i], run.stamps[i], rate, when)
                )
            except TickDropped as error:
                dropped.append((i, error))
    stats.ticks_applied += count - len(dropped)
    for i, drop in dropped:
        stats.dropped[drop.reason] += 1
        refused(drop, run.lines[i])
    return events


async def _accounts(
    engine: Engine, run: AccountRun, stats: ReplayStats, refused: _RefusalLog, pacer: Pacer | None
) -> list[EngineEvent]:
    batch = run.batch
    count = len(batch)
    stats.lines += count
    positions = int(batch.is_position.sum())
    stats.records["position"] += positions
    stats.records["balance"] += count - positions
    if pacer is None:
        events, rejected = apply_batch(engine, batch)
    else:
        events, rejected = [], []
        for i in range(count):
            await _pace(pacer, int(batch.ts[i]))
            try:
                events.extend(engine.apply(batch.record(i)))
            except RecordRefused as error:
                rejected.append((i, error))
    for i, refusal in rejected:
        stats.reject(refusal.reason, run.lines[i])
        refused(refusal, run.lines[i])
    return events


async def _one(
    engine: Engine,
    record: Record,
    line: int,
    stats: ReplayStats,
    refused: _RefusalLog,
    pacer: Pacer | None,
) -> Sequence[EngineEvent]:
    if isinstance(record, TickRecord):
        stats.records["tick"] += 1
    else:
        stats.records[record_kind(record)] += 1
    if pacer is not None and not isinstance(record, ContractRecord):
        await _pace(pacer, record.ts)
    try:
        events = engine.apply(record)
    except TickDropped as exc:
        stats.dropped[exc.reason] += 1
        refused(exc, line)
        return ()
    except RecordRefused as exc:
        stats.reject(exc.reason, line)
        refused(exc, line)
        return ()
    if isinstance(record, TickRecord):
        stats.ticks_applied += 1
    if isinstance(record, ContractRecord):
        for warning in record.contract.warnings:
            if warning not in stats.warnings:
                stats.warnings.append(warning)
                log.warning("tier_table_warning", detail=warning)
    return events


def record_kind(record: Record) -> str:
    """The record's ``type`` as in the input (``tick``, ``position``, ``account_snapshot``...)."""
    if isinstance(record, AccountUpdateRecord):
        return "account_snapshot" if record.replace else "account_update"
    if isinstance(record, AssetModeRecord):
        return "asset_mode"
    return type(record).__name__.removesuffix("Record").lower()


async def _pace(pacer: Pacer, ts: int) -> None:
    delay = pacer.delay(ts)
    if delay > 0:
        await asyncio.sleep(delay)


def progress_for(stream: TextIO = sys.stderr) -> Progress | None:
    """A progress line when ``stream`` is a terminal."""
    return Progress(stream) if stream.isatty() else None
