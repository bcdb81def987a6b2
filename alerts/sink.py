"""The sink protocol every event destination implements, and an in-memory sink.

A sink receives events in order. ``publish`` may buffer; ``flush`` makes everything published so
far durable/visible; ``close`` flushes and releases resources. Sinks never raise for a single
bad event: an event that cannot be delivered is a bug or an outage, reported by the sink's
own counters and logs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from feeds.health import FeedEvent
from monitor.events import EngineEvent
from monitor.notices import Notice

OutputEvent = EngineEvent | FeedEvent | Notice
"""Everything that reaches a sink: the engine's events (alerts and retained states), a feed's
health events, and the service's notices (refused input, started, stopped)."""


@runtime_checkable
class EventSink(Protocol):
    async def publish(self, event: OutputEvent) -> None:
        """Accept one event (in stream order). A sink ignores the kinds it does not carry."""

    async def flush(self) -> None:
        """Deliver everything accepted so far."""

    async def close(self) -> None:
        """Flush and release resources; the sink is not used afterwards."""


class MemorySink:
    """Keeps every event in a list: for tests and dry runs."""

    def __init__(self) -> None:
        self.events: list[OutputEvent] = []
        self.closed = False

    async def publish(self, event: OutputEvent) -> None:
        self.events.append(event)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


class FanOutSink:
    """Publishes every event to several sinks, in order."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = sinks

    async def publish(self, event: OutputEvent) -> None:
        for sink in self.sinks:
            await sink.publish(event)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()
