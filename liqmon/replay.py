"""``liqmon replay``: a recorded file through the engine into a sink, with an end-of-run summary.

A driver of the runtime (:mod:`liqmon.runtime`). Lines arrive a buffer at a time, decoded into
runs (:mod:`feeds.batches`); a run of ticks is one engine call, a run of account records one
bulk load. A bad line never stops the replay: it is counted by reason (with its line number)
and logged — the first few of each reason individually, then only in the summary.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from alerts.sink import EventSink, OutputEvent
from feeds.batches import read_items
from feeds.files import UnreadableFile
from feeds.replay_source import Pacer, replay_items
from liqmon.runtime import Runtime, record_kind
from liqmon.summary import ReplayStats
from monitor.engine import Engine

__all__ = ["Pacer", "Progress", "progress_for", "record_kind", "replay_file"]


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

    A driver of the :class:`~liqmon.runtime.Runtime` (no journal, no staleness: a normalized
    file has no receive times). The file is decoded a buffer at a time into runs
    (:mod:`feeds.batches`): a run of ticks is one call of :meth:`Engine.apply_ticks`, a run of
    positions and balances one bulk load; everything else goes record by record. With
    ``speed`` every record is paced by its ``ts``, one at a time.

    An unreadable file (missing, or a corrupt or truncated gzip) ends the replay with
    ``stats.failure`` set; events published before that are kept.
    """
    stats = ReplayStats(source=path, title=label or f"liqmon replay: {path}")
    runtime = Runtime(engine, stats=stats)
    started = time.perf_counter()
    try:
        if speed:
            pacer = Pacer(speed)
            async for paced in replay_items(
                Path(path), after_line=0, pacer=pacer, sleep=asyncio.sleep
            ):
                effects = runtime.file_item(paced.item, source="replay", now_ms=paced.now_ms)
                await _publish(effects.events, sink)
                if progress is not None:
                    progress.update(stats)
        else:
            for items in read_items(path):
                for item in items:
                    effects = runtime.file_item(item, source="replay", now_ms=0)
                    await _publish(effects.events, sink)
                if progress is not None:
                    progress.update(stats)
                await asyncio.sleep(0)  # let the sinks' tasks run between buffers
    except UnreadableFile as exc:  # reported once, by the summary
        stats.failure = f"{exc} (after {stats.lines:,} lines, all applied)"
    finally:
        stats.elapsed = time.perf_counter() - started
        if progress is not None:
            progress.clear()
        await sink.flush()
    return stats


async def _publish(events: Sequence[OutputEvent], sink: EventSink) -> None:
    for event in events:
        await sink.publish(event)


def progress_for(stream: TextIO = sys.stderr) -> Progress | None:
    """A progress line when ``stream`` is a terminal."""
    return Progress(stream) if stream.isatty() else None
