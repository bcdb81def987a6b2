"""A bounded queue that says how it is doing: depth, high-water mark, waits of full puts.

The service's producers (feed, replay, account input, clock...) put their inputs here and the
engine task takes them, one consumer, in order. A full queue makes producers wait (back-pressure
instead of unbounded memory); every such wait is counted, and the statistics are exported as
metrics.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InboxStats:
    depth: int
    capacity: int
    high_water: int
    put: int
    full_waits: int
    full_wait_s: float


class Inbox(Generic[T]):
    """See the module docstring."""

    def __init__(self, capacity: int) -> None:
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize=capacity)
        self.capacity = capacity
        self._high_water = 0
        self._put = 0
        self._full_waits = 0
        self._full_wait_s = 0.0

    async def put(self, item: T) -> None:
        queue = self._queue
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            self._full_waits += 1
            started = time.perf_counter()
            await queue.put(item)
            self._full_wait_s += time.perf_counter() - started
        self._put += 1
        depth = queue.qsize()
        if depth > self._high_water:
            self._high_water = depth

    def get_nowait(self) -> T:
        """Raises :class:`asyncio.QueueEmpty` when empty."""
        return self._queue.get_nowait()

    async def get(self, timeout_s: float) -> T | None:
        """The next item, or ``None`` after ``timeout_s`` without one."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=timeout_s)
        except TimeoutError:
            return None

    def empty(self) -> bool:
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()

    def stats(self) -> InboxStats:
        return InboxStats(
            depth=self._queue.qsize(),
            capacity=self.capacity,
            high_water=self._high_water,
            put=self._put,
            full_waits=self._full_waits,
            full_wait_s=self._full_wait_s,
        )
