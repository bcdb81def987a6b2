"""A normalized file as an async source of items: resumed after a line, optionally paced.

The file is decoded a buffer at a time on a thread by the one parser of the format
(:mod:`feeds.batches`); with a speed, each record is released when its ``ts`` is due.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from feeds.batches import AccountRun, Item, OneRecord, Refused, TickRun, read_items


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


@dataclass(slots=True)
class ReplayItem:
    """One item of a normalized file (:mod:`feeds.batches`): a run of ticks, a run of account
    records, one record, or a refused line."""

    item: Item
    now_ms: int
    source: str = "replay"


def _after(item: Item, line: int) -> Item | None:
    """The part of ``item`` after ``line`` of its file (``None``: nothing)."""
    if isinstance(item, OneRecord | Refused):
        return item if item.line > line else None
    lines = item.lines
    if not lines or lines[-1] <= line:
        return None
    if lines[0] > line:
        return item
    keep = [i for i, n in enumerate(lines) if n > line]
    return _pick(item, keep)


def _pick(item: TickRun | AccountRun, keep: list[int]) -> Item:
    if isinstance(item, TickRun):
        return TickRun(
            [item.lines[i] for i in keep],
            [item.symbols[i] for i in keep],
            [item.marks[i] for i in keep],
            [item.texts[i] for i in keep],
            [item.stamps[i] for i in keep],
            None if item.funding is None else [item.funding[i] for i in keep],
        )
    return AccountRun([item.lines[i] for i in keep], item.batch.take(keep))


def _one_by_one(item: Item) -> Iterator[tuple[int | None, Item]]:
    """``(ts, item)`` of each single record of ``item`` (for pacing)."""
    if isinstance(item, Refused):
        yield None, item
    elif isinstance(item, OneRecord):
        yield getattr(item.record, "ts", None), item
    elif isinstance(item, TickRun):
        for i in range(len(item.lines)):
            yield item.stamps[i], _pick(item, [i])
    else:
        for i in range(len(item.lines)):
            yield int(item.batch.ts[i]), _pick(item, [i])


async def replay_items(
    path: Path,
    *,
    after_line: int,
    pacer: Pacer | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    source: str = "replay",
) -> AsyncIterator[ReplayItem]:
    """The items of a normalized file after ``after_line`` (read on a thread, a buffer at a
    time); with a ``pacer``, one record at a time, each when its ``ts`` is due."""
    buffers = read_items(str(path))
    while (items := await asyncio.to_thread(next, buffers, None)) is not None:
        for whole in items:
            item = _after(whole, after_line)
            if item is None:
                continue
            if pacer is None:
                yield ReplayItem(item, time.time_ns() // 1_000_000, source)
                continue
            for ts, single in _one_by_one(item):
                if ts is not None and (delay := pacer.delay(ts)) > 0:
                    await sleep(delay)
                yield ReplayItem(single, time.time_ns() // 1_000_000, source)
