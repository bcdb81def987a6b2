"""The service's inputs, as the engine task receives them, and the adapters that make them.

Each producer turns its source into these small items (one pure parser per format does the
work): a venue's frames (:func:`feed_frames`), a recorded file (paced and resumed,
:mod:`feeds.replay_source`), the seeds of a fresh start (:func:`seed_items`), MQTT input
messages and the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from feeds.brackets import load_brackets
from feeds.frames import FrameParser
from feeds.live import FeedSpec, FeedStats, frames
from feeds.recorder import Recorder
from feeds.replay_source import ReplayItem, replay_items
from feeds.ticks import MarkTick
from liqmon.ops import Metrics
from liqmon.settings import ServiceSettings
from monitor.errors import MalformedRecord, RecordRefused
from monitor.records import ContractRecord, Record

log = structlog.get_logger("liqmon.service")

RECORDER_FLUSH_S = 1.0
"""A killed service loses at most this much of the frames it was recording."""


@dataclass(slots=True)
class FeedFrame:
    """One frame of a venue, parsed: its ticks, other records, and why parts were refused."""

    ticks: tuple[MarkTick, ...]
    records: tuple[Record, ...]
    rejects: list[RecordRefused]
    receive_ns: int
    source: str
    raw: bytes


@dataclass(slots=True)
class ClockTick:
    """Time passed (wall clock, ns)."""

    now_ns: int


@dataclass(slots=True)
class InputMessage:
    """A message of the account input topics (``topic`` without ``{prefix}/in/``); ``handled``
    is resolved once its effects are carried out (then it is acknowledged to the broker)."""

    topic: str
    payload: bytes
    receive_ms: int
    handled: asyncio.Future[None] | None = None


@dataclass(slots=True)
class OneInput:
    """A single record, or a line its parser refused, from ``source``."""

    record: Record | None
    error: RecordRefused | None
    source: str
    now_ms: int
    line: int | None = None
    raw: bytes = b""

    @classmethod
    def of(cls, record: Record, *, source: str) -> OneInput:
        return cls(record, None, source, time.time_ns() // 1_000_000)


async def feed_frames(
    spec: FeedSpec,
    stats: FeedStats,
    *,
    price_source: str,
    record_dir: Path | None,
    metrics: Metrics,
) -> AsyncIterator[FeedFrame]:
    """A venue's frames, each through the venue's pure parser (recorded raw first, with
    ``record_dir``)."""
    venue = spec.venue
    parser = FrameParser(venue, price_source=price_source)
    frames_counter = metrics.feed_frames.labels(venue)
    source = f"feed:{venue}"
    recorder: Recorder | None = None
    if record_dir is not None:
        await asyncio.to_thread(record_dir.mkdir, parents=True, exist_ok=True)
        recorder = Recorder(record_dir, prefix=venue)
    flushed = time.monotonic()
    try:
        async for frame in frames(spec, stats=stats):
            frames_counter.inc()
            if recorder is not None:
                recorder.write(frame)
                if time.monotonic() - flushed >= RECORDER_FLUSH_S:
                    recorder.flush()
                    flushed = time.monotonic()
            parsed = parser.parse(frame.raw, frame.receive_ts_ns)
            rejects: list[RecordRefused] = []
            for reason, detail in parsed.rejects:
                metrics.feed_rejects.labels(venue, reason).inc()
                rejects.append(MalformedRecord(reason, detail[:200]))
            for tick in parsed.ticks:
                stats.observe_skew(tick.exchange_ts_ms, frame.receive_ts_ns)
            yield FeedFrame(
                parsed.ticks,
                parsed.records,
                rejects,
                frame.receive_ts_ns,
                source,
                frame.raw.encode() if rejects else b"",
            )
    finally:
        if recorder is not None:
            recorder.close()


async def seed_items(settings: ServiceSettings) -> AsyncIterator[OneInput | ReplayItem]:
    """What a fresh start is seeded with: the bracket files' contracts, then ``--accounts``."""
    for path in settings.brackets:
        for contract in load_brackets(path).contracts:
            yield OneInput.of(ContractRecord(contract), source="brackets")
    if settings.accounts is not None:
        async for item in replay_items(settings.accounts, after_line=0, source="accounts_file"):
            yield item
