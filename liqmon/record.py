"""``liqmon record``: connect to a venue and write its raw frames to capture files.

The files are the ``prefixed`` capture format (``<receive ns> <frame>`` lines, gzip, rotated by
size and age; see :mod:`feeds.recorder`), which ``liqmon replay`` reads back through the same
parsers as the live feed: record today, replay tomorrow. The recording stops after
``--duration`` seconds, after ``--max-frames`` frames, or on SIGTERM / Ctrl-C, and always
finishes its current file cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from feeds.live import FeedSpec, FeedStats, Frame, frames
from feeds.recorder import RecorderStats, record

log = structlog.get_logger("liqmon.record")


@dataclass
class RecordingResult:
    recorder: RecorderStats
    feed: FeedStats
    stopped_by: str


async def _limited(
    spec: FeedSpec, stats: FeedStats, max_frames: int | None
) -> AsyncIterator[Frame]:
    count = 0
    source = frames(spec, stats=stats)
    try:
        async for frame in source:
            yield frame
            count += 1
            if max_frames is not None and count >= max_frames:
                return
    finally:
        await source.aclose()


async def run_recording(
    spec: FeedSpec,
    directory: Path,
    *,
    rotate_bytes: int,
    rotate_seconds: float,
    duration_s: float | None = None,
    max_frames: int | None = None,
    prefix: str | None = None,
    install_signals: bool = True,
) -> RecordingResult:
    """Record ``spec``'s frames into ``directory`` (which must exist) until a limit or a
    signal stops it."""
    feed_stats = FeedStats(spec.venue)
    recorder_stats = RecorderStats()
    task = asyncio.create_task(
        record(
            _limited(spec, feed_stats, max_frames),
            directory,
            rotate_bytes=rotate_bytes,
            rotate_seconds=rotate_seconds,
            prefix=prefix or spec.venue,
            stats=recorder_stats,
        )
    )
    stopped_by = "max_frames" if max_frames is not None else "end"
    signalled = False

    def on_signal() -> None:
        nonlocal signalled
        signalled = True
        task.cancel()

    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
    log.info("recording", venue=spec.venue, url=spec.url, directory=str(directory))
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=duration_s)
    except TimeoutError:
        stopped_by = "duration"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except asyncio.CancelledError:
        if not signalled:
            raise
        stopped_by = "signal"
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info(
        "recording_stopped",
        stopped_by=stopped_by,
        frames=recorder_stats.frames,
        files=recorder_stats.files,
    )
    return RecordingResult(recorder_stats, feed_stats, stopped_by)


def render_recording(result: RecordingResult, directory: Path) -> str:
    """The end-of-recording summary, for humans."""
    rec, feed = result.recorder, result.feed
    lines = [
        f"liqmon record: {feed.venue} into {directory} (stopped by {result.stopped_by})",
        f"  frames      {rec.frames:,} ({rec.bytes:,} bytes of frame text)",
        f"  files       {rec.files:,} ({rec.rotations:,} rotations)",
        f"  connection  {feed.connects:,} connects, {feed.reconnects:,} reconnects"
        + (
            f" ({', '.join(f'{k} {v}' for k, v in sorted(feed.reconnect_reasons.items()))})"
            if feed.reconnect_reasons
            else ""
        ),
        f"  replay with liqmon replay {directory}/<file>{' --venue ' + feed.venue}",
    ]
    if rec.newlines_replaced:
        lines.append(f"  note        {rec.newlines_replaced:,} frames had line breaks (now spaces)")
    return "\n".join(lines)
