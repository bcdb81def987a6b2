"""Every instance reads the venue and stores each frame in every partition's log: the
relay (docs/deployment.md#topology). JetStream keeps one copy of each frame per partition
however many instances relay it (the message id is made from the frame's bytes)."""

from __future__ import annotations

import asyncio
from collections import deque

from feeds.frames import FrameParser
from feeds.live import FeedStats, frames
from liqmon.cluster.metrics import ClusterMetrics
from liqmon.cluster.nats_io import ClusterLink
from liqmon.ops import Metrics
from liqmon.settings import FeedSection

RELAY_QUEUE = 1_000
"""Frames waiting to be relayed; past this the oldest is dropped (another instance's copy
fills the gap) and counted."""


class VenueRelay:
    """The ``venue`` task (:meth:`read_venue`) and the ``relay`` task (:meth:`run`)."""

    def __init__(
        self,
        feed: FeedSection,
        link: ClusterLink,
        partitions: int,
        metrics: Metrics,
        cluster_metrics: ClusterMetrics,
    ) -> None:
        self.feed = feed
        self.link = link
        self.partitions = partitions
        self.metrics = metrics
        self.cluster_metrics = cluster_metrics
        self._frames: deque[bytes] = deque(maxlen=RELAY_QUEUE)
        self._ready = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._frames)

    async def read_venue(self) -> None:
        """The venue's frames, as received, for the relay: those that carry ticks or records
        (the owners parse them again, with the same parser); the others are counted here."""
        feed = self.feed
        spec = feed.spec()
        parser = FrameParser(spec.venue, price_source=feed.price_source)
        received = self.metrics.feed_frames.labels(spec.venue)
        refused = self.metrics.feed_rejects
        async for frame in frames(spec, stats=FeedStats(spec.venue)):
            received.inc()
            parsed = parser.parse(frame.raw, frame.receive_ts_ns)
            for reason, _ in parsed.rejects:
                refused.labels(spec.venue, reason).inc()
            if not parsed.ticks and not parsed.records:
                continue
            if len(self._frames) == self._frames.maxlen:
                self.cluster_metrics.relay_dropped.inc()
            self._frames.append(frame.raw.encode())
            self._ready.set()

    async def run(self) -> None:
        relayed = self.cluster_metrics.relayed
        while True:
            while not self._frames:
                self._ready.clear()
                await self._ready.wait()
            frame = self._frames.popleft()
            fresh = await self.link.relay(self.partitions, frame)
            relayed.labels("new").inc(fresh)
            relayed.labels("duplicate").inc(self.partitions - fresh)
