"""A feed's health as events: the symbols that went stale and came back, and the state of their
holders (flagged stale, or no longer). Judged on receive times only (see :mod:`feeds.health`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import structlog

from alerts.sink import OutputEvent
from feeds.health import FeedEvent, FeedHealth, FeedRecovered
from feeds.ticks import MarkTick
from liqmon.summary import ReplayStats
from monitor.engine import Engine

log = structlog.get_logger("liqmon.runtime")

RECENT_FEED_EVENTS = 1_000


class FeedWatch:
    def __init__(self, health: FeedHealth, engine: Engine, stats: ReplayStats) -> None:
        self.health = health
        self.engine = engine
        self.stats = stats
        self.recent: deque[FeedEvent] = deque(maxlen=RECENT_FEED_EVENTS)

    def frame(self, ticks: Sequence[MarkTick], receive_ns: int) -> list[OutputEvent]:
        """Before a frame received at ``receive_ns`` is applied: the symbols that went stale
        before it arrived, then those its ticks bring back."""
        out = self.at(receive_ns)
        observe = self.health.observe
        for tick in ticks:
            recovered = observe(tick.symbol, receive_ns, tick.mark)
            if recovered is not None:
                out.extend(self._event(recovered))
        return out

    def at(self, now_ns: int) -> list[OutputEvent]:
        """The symbols that went stale by ``now_ns``."""
        out: list[OutputEvent] = []
        for stalled in self.health.check(now_ns):
            out.extend(self._event(stalled))
        return out

    def _event(self, event: FeedEvent) -> list[OutputEvent]:
        self.recent.append(event)
        self.stats.events[event.kind] += 1
        payload = event.to_payload()
        (log.info if isinstance(event, FeedRecovered) else log.warning)(
            event.kind,
            venue=event.venue,
            symbol=event.symbol,
            stale_ms=payload["stale_ms"],
            since_ts=payload["since_ts"],
        )
        states = self.engine.set_stale(event.symbol, not isinstance(event, FeedRecovered))
        self.stats.state_updates += len(states)
        return [event, *states]
