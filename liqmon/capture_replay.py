"""``liqmon replay`` of exchange-native captures: raw venue frames through the live parsers.

A capture holds what a venue sent (see ``feeds.captures`` for the formats), parsed by the same
:class:`~feeds.frames.FrameParser` the live feed uses, so a replay behaves like the live run.
Accounts and contracts come from a second file of normalized records (``--accounts``), merged
with the ticks by time: records by their ``ts`` (contracts, which have none, first), ticks by
exchange time (``--time exchange``, the default) or by the local receive time the capture
recorded (``--time local``: the order the live run saw them in). At equal times records go
before ticks. The engine always receives exchange time as ``ts``; ticks that arrive out of
exchange order are dropped as stale, as live.

Frames a parser refuses are counted by reason with their capture line numbers.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import structlog

from alerts.sink import EventSink
from feeds.captures import numbered_frames
from feeds.files import UnreadableFile, read_lines
from feeds.frames import FrameParser
from feeds.normalized import parse_line
from feeds.tardis import TardisDerivativeTicker
from feeds.ticks import MarkTick
from liqmon.replay import Pacer, Progress, _pace, record_kind
from liqmon.summary import ReplayStats
from monitor.engine import Engine
from monitor.errors import RecordRefused, TickDropped
from monitor.events import StateEvent
from monitor.records import ContractRecord, Record

log = structlog.get_logger("liqmon.replay")

TimeMode = Literal["exchange", "local"]
_Item = tuple[int, int, int, Record | MarkTick]  # (time ms, order, line, record or tick)


def _ticks(
    path: Path,
    fmt: str,
    parser: FrameParser | TardisDerivativeTicker,
    mode: TimeMode,
    stats: ReplayStats,
) -> Iterator[_Item]:
    for number, (received, raw) in numbered_frames(path, fmt):
        stats.lines += 1
        parsed = parser.parse(raw, received)
        for reason, _ in parsed.rejects:
            stats.reject(reason, number)
        for tick in parsed.ticks:
            at = tick.exchange_ts_ms
            if mode == "local" and tick.receive_ts_ns is not None:
                at = tick.receive_ts_ns // 1_000_000
            yield at, 1, number, tick


def _records(path: Path, stats: ReplayStats) -> Iterator[_Item]:
    for number, line in read_lines(path):
        try:
            record = parse_line(line)
        except RecordRefused as exc:
            stats.reject(exc.reason, number)
            continue
        at = -1 if isinstance(record, ContractRecord) else record.ts
        yield at, 0, number, record


async def replay_capture(
    path: str,
    fmt: str,
    engine: Engine,
    sink: EventSink,
    *,
    venue: str | None = None,
    price_source: str = "mark",
    accounts: str | None = None,
    time_mode: TimeMode = "exchange",
    speed: float | None = None,
    progress: Progress | None = None,
) -> ReplayStats:
    """Apply a capture (merged with ``accounts``); publish events to ``sink``."""
    stats = ReplayStats(source=path, title=f"liqmon replay: {path} ({fmt} capture)")
    parser: FrameParser | TardisDerivativeTicker = (
        TardisDerivativeTicker()
        if fmt == "tardis"
        else FrameParser(venue, price_source=price_source)
    )
    streams: list[Iterator[_Item]] = [_ticks(Path(path), fmt, parser, time_mode, stats)]
    if accounts is not None:
        streams.append(_records(Path(accounts), stats))
    pacer = Pacer(speed) if speed else None
    started = time.perf_counter()
    count = 0
    try:
        for at, _, number, item in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
            if pacer is not None and at >= 0:
                await _pace(pacer, at)
            try:
                if isinstance(item, MarkTick):
                    stats.records["tick"] += 1
                    events = engine.apply_tick(
                        item.symbol, item.mark, item.mark_text, item.exchange_ts_ms
                    )
                    stats.ticks_applied += 1
                else:
                    stats.records[record_kind(item)] += 1
                    events = engine.apply(item)
            except TickDropped as exc:
                stats.dropped[exc.reason] += 1
                continue
            except RecordRefused as exc:
                stats.reject(exc.reason, number)
                continue
            for event in events:
                if isinstance(event, StateEvent):
                    stats.state_updates += 1
                else:
                    stats.events[event.kind] += 1
                await sink.publish(event)
            count += 1
            if progress is not None and count % 4096 == 0:
                progress.update(stats)
    except UnreadableFile as exc:
        stats.failure = f"{exc} (after {stats.lines:,} lines, all applied)"
    finally:
        stats.elapsed = time.perf_counter() - started
        if progress is not None:
            progress.clear()
        await sink.flush()
    return stats
