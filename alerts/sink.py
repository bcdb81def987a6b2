"""The sink protocol every event destination implements, and an in-memory sink.

A sink receives events in order. ``publish`` may buffer; ``flush`` makes everything published so
far durable/visible; ``close`` flushes and releases resources. Sinks never raise for a single
bad event: an event that cannot be delivered is a bug or an outage, reported by the sink's
own counters and logs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from monitor.events import EngineEvent


@runtime_checkable
class EventSink(Protocol):
    async def publish(self, event: EngineEvent) -> None:
        """Accept one event (in stream order)."""

    async def flush(self) -> None:
        """Deliver everything accepted so far."""

    async def close(self) -> None:
        """Flush and release resources; the sink is not used afterwards."""


class MemorySink:
    """Keeps every event in a list: for tests and dry runs."""

    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.closed = False

    async def publish(self, event: EngineEvent) -> None:
        self.events.append(event)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class FanOutSink:
    """Publishes every event to several sinks, in order."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    async def publish(self, event: EngineEvent) -> None:
        for sink in self.sinks:
            await sink.publish(event)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
