"""A cluster's partition snapshots: saved once what came before them was delivered, loaded
by a new owner, and kept in copy by standbys (docs/deployment.md#guarantees)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from alerts.outbox import Outbox
from liqmon.cluster.lease import Ownership
from liqmon.cluster.metrics import ClusterMetrics
from liqmon.cluster.nats_io import TRANSIENT, ClusterLink
from liqmon.cluster.shard_core import ShardCore
from liqmon.persistence import save_snapshot

log = structlog.get_logger("liqmon.cluster")

DELIVERY_WAIT_S = 10.0
"""How long a snapshot waits for the broker to acknowledge what came before it (skipped
otherwise, and tried again at the next interval)."""
T = TypeVar("T")


def snapshot_name(partition: int) -> str:
    return f"partition-{partition}"


async def retrying(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()`` until the cluster answers it (a node restarting, an election: again soon)."""
    attempt = 0
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            log.info("cluster_request_retry", request=what, error=repr(exc))
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            attempt += 1


class PartitionSnapshots:
    """See the module docstring. ``outbox``: the MQTT sink's (``None``: no broker to wait for)."""

    def __init__(
        self,
        link: ClusterLink,
        ownership: Ownership,
        metrics: ClusterMetrics,
        *,
        interval_s: float,
        outbox: Callable[[], Outbox | None],
    ) -> None:
        self.link = link
        self.ownership = ownership
        self.metrics = metrics
        self.interval_s = interval_s
        self._outbox = outbox
        self._kept: dict[int, tuple[str, bytes]] = {}
        """A copy of each partition's latest snapshot, kept while standing by for it."""

    async def load(self, partition: int) -> bytes | None:
        """The partition's latest snapshot; if the store does not answer within half a lease
        (its stream electing a leader after a node's loss takes seconds), the copy this
        instance kept while it stood by: older, so more of the log is applied again, but
        every snapshot saved is a valid start (saved once what came before it was delivered)."""
        name = snapshot_name(partition)
        deadline = time.monotonic() + self.ownership.terms.period_s / 2
        attempt = 0
        while True:
            try:
                return await self.link.load_snapshot(name)
            except TRANSIENT as exc:
                kept = self._kept.get(partition)
                if kept is not None and time.monotonic() >= deadline:
                    log.warning("partition_snapshot_from_standby_copy", partition=partition)
                    return kept[1]
                log.info("cluster_request_retry", request="load_snapshot", error=repr(exc))
                await asyncio.sleep(min(0.5, 0.05 * 2**attempt))
                attempt += 1

    async def keep_copies(self) -> None:
        """While standing by for a partition, keep a copy of its latest snapshot (fetched
        again only when it changed), for a takeover while the store cannot answer."""
        partitions = self.ownership.partitions
        while True:
            standing_by = len(self.ownership.held) < self.ownership.terms.max_owned
            for partition in range(partitions) if standing_by else ():
                if partition in self.ownership.held:
                    continue
                name = snapshot_name(partition)
                try:
                    version = await self.link.snapshot_version(name)
                    kept = self._kept.get(partition)
                    if version is not None and (kept is None or kept[0] != version):
                        data = await self.link.load_snapshot(name)
                        if data is not None:
                            self._kept[partition] = (version, data)
                except TRANSIENT:
                    continue  # the next round
            await asyncio.sleep(self.interval_s)

    async def save(self, core: ShardCore, still_owner: Callable[[], bool]) -> None:
        """Save ``core``'s snapshot once the broker holds every event made before it."""
        snapshot = core.capture()
        seq = core.applied_seq
        outbox = self._outbox()
        mark = outbox.last_seq if outbox is not None else 0
        data = await asyncio.to_thread(save_snapshot, snapshot)
        deadline = time.monotonic() + DELIVERY_WAIT_S
        while outbox is not None and not outbox.delivered_through(mark):
            if time.monotonic() > deadline:
                log.warning(
                    "partition_snapshot_skipped", partition=core.partition, reason="undelivered"
                )
                return
            await asyncio.sleep(0.02)
        if not still_owner():
            return  # lost meanwhile: the new owner saves its own
        name = snapshot_name(core.partition)
        await retrying(lambda: self.link.save_snapshot(name, data), "save_snapshot")
        if not still_owner():  # lost while it was being stored: the new owner's is newer
            log.info("partition_snapshot_after_loss", partition=core.partition, applied_seq=seq)
        self.metrics.snapshots.labels(str(core.partition)).inc()
        log.info("partition_snapshot", partition=core.partition, applied_seq=seq, bytes=len(data))
