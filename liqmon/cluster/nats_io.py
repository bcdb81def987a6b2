"""The JetStream side of an instance: the stream, the leases bucket, the snapshot store, the
log reader and the relay's publisher. Adapters only: what to do is decided elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError, NotFoundError
from nats.js.errors import Error as JetStreamError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from feeds.backoff import CLUSTER_BACKOFF, reconnect_delay
from liqmon.cluster.subjects import relay_message_id, venue_subject
from liqmon.settings import ClusterSection

log = structlog.get_logger("liqmon.cluster")

IDLE_CHECK_S = 1.0
BULK_TIMEOUT_S = 10.0
"""A snapshot's chunks may take longer to be stored than a lease's renewal."""
TRANSIENT = (NatsError, JetStreamError, asyncio.TimeoutError, OSError)
"""What a restarting node, a leader election or a lost connection raise: try again."""

__all__ = ["TRANSIENT", "ClusterLink", "KeyWrongLastSequenceError", "LogReader"]


class ClusterLink:
    """One connection to the cluster and the three JetStream assets liqmon uses."""

    def __init__(self, names: ClusterSection, instance: str) -> None:
        self.urls = names.urls
        self.names = names
        self.instance = instance
        self.nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._obs: ObjectStore | None = None
        self._obs_reads: ObjectStore | None = None
        self._bulk: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None  # noqa: S101  # after connect()
        return self._js

    @property
    def leases(self) -> KeyValue:
        assert self._kv is not None  # noqa: S101  # after connect()
        return self._kv

    @property
    def snapshots(self) -> ObjectStore:
        assert self._obs is not None  # noqa: S101  # after connect()
        return self._obs

    async def connect(self) -> None:
        """Connect (to any server of the list; reconnecting for ever) and make sure the
        stream, the leases bucket and the snapshot store exist, waiting for the cluster to
        have a JetStream quorum."""
        self.nc = await nats.connect(
            servers=self.urls,
            name=f"liqmon-{self.instance}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            error_cb=_connection_error,
            disconnected_cb=_disconnected,
            reconnected_cb=_reconnected,
        )
        # a request the cluster cannot answer now (a node restarting, an election) is asked
        # again soon rather than waited on: an owner renews its lease every third of a period
        self._js = self.nc.jetstream(timeout=min(2.0, max(0.25, self.names.lease_s / 8)))
        self._bulk = self.nc.jetstream(timeout=BULK_TIMEOUT_S)  # snapshots: megabytes
        attempt = 0
        while True:
            try:
                await self._ensure_assets()
                return
            except TRANSIENT as exc:
                delay = _delay(attempt)
                attempt += 1
                log.warning("cluster_not_ready", error=repr(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _ensure_assets(self) -> None:
        names, js = self.names, self.js
        config = StreamConfig(
            name=names.stream,
            subjects=[f"{names.prefix}.part.>"],
            num_replicas=names.replicas,
            storage=StorageType.FILE,
            duplicate_window=120.0,
            max_age=names.log_retention_s,
        )
        try:
            await js.add_stream(config)
        except BadRequestError as exc:  # it exists, made otherwise by an operator: use it
            log.info("cluster_stream_kept", stream=names.stream, detail=str(exc))
        try:
            self._kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=names.leases, ttl=names.lease_s, history=1, replicas=names.replicas
                )
            )
        except BadRequestError:
            self._kv = await js.key_value(names.leases)
        bulk = self._bulk
        assert bulk is not None  # noqa: S101  # made with the connection
        try:
            self._obs = await bulk.create_object_store(
                names.snapshots, config=ObjectStoreConfig(replicas=names.replicas)
            )
        except BadRequestError:
            self._obs = await bulk.object_store(names.snapshots)
        # a new owner reads the snapshot with requests as short as a lease's: one the cluster
        # cannot answer now (an election) is asked again, not waited on for long
        assert self.nc is not None  # noqa: S101  # connected
        reads = self.nc.jetstream(timeout=max(0.5, names.lease_s / 4))
        self._obs_reads = await reads.object_store(names.snapshots)

    async def first_sequence(self) -> int:
        """The stream's oldest sequence still stored."""
        info = await self.js.stream_info(self.names.stream)
        return int(info.state.first_seq)

    async def load_snapshot(self, name: str) -> bytes | None:
        """The snapshot ``name``, or ``None`` if there is none yet."""
        try:
            assert self._obs_reads is not None  # noqa: S101  # after connect()
            result = await self._obs_reads.get(name)
        except NotFoundError:  # ObjectNotFoundError is one
            return None
        return result.data

    async def snapshot_version(self, name: str) -> str | None:
        """An id of the stored snapshot ``name`` (changes with each save), or ``None``."""
        assert self._obs_reads is not None  # noqa: S101  # after connect()
        try:
            info = await self._obs_reads.get_info(name)
        except NotFoundError:
            return None
        return str(info.nuid)

    async def save_snapshot(self, name: str, data: bytes) -> None:
        await self.snapshots.put(name, data)

    async def relay(self, partitions: int, frame: bytes) -> int:
        """Store ``frame`` in every partition's log (once however many instances relay it):
        how many of the copies were new. Retries until each partition has it."""
        fresh = 0
        for partition in range(partitions):
            attempt = 0
            while True:
                try:
                    ack = await self.js.publish(
                        venue_subject(self.names.prefix, partition),
                        frame,
                        headers={"Nats-Msg-Id": relay_message_id(partition, frame)},
                    )
                except TRANSIENT as exc:
                    log.debug("relay_retry", partition=partition, error=repr(exc))
                    await asyncio.sleep(_delay(attempt))
                    attempt += 1
                    continue
                fresh += not ack.duplicate
                break
        return fresh

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


class LogReader:
    """A partition's log from a stream sequence on, in batches, surviving restarting nodes:
    an ephemeral pull consumer is made again from the next sequence whenever it fails or its
    deliveries skip a number (what an ordered consumer does). ``pending`` is how far behind
    the log's end the last batch was."""

    def __init__(
        self, link: ClusterLink, subject: str, after_seq: int, *, batch: int = 256
    ) -> None:
        self.link = link
        self.subject = subject
        self.next_seq = after_seq + 1
        self.batch = batch
        self.pending: int | None = None
        self.recreated = 0

    async def _subscribe(self) -> Any:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self.next_seq,
            ack_policy=AckPolicy.ALL,
            filter_subject=self.subject,
            inactive_threshold=30.0,
            max_ack_pending=-1,
        )
        return await self.link.js.pull_subscribe(
            self.subject, durable=None, stream=self.link.names.stream, config=config
        )

    async def batches(self, wait_s: float = 0.25) -> AsyncIterator[list[Msg]]:
        """Batches of messages in order; an empty batch when nothing came within ``wait_s``
        (so that the caller can do its timed work)."""
        attempt = 0
        subscription: Any = None
        idle = 0
        while True:
            try:
                if subscription is None:
                    subscription = await self._subscribe()
                    delivered = 0  # the consumer's count of deliveries so far
                try:
                    messages = await subscription.fetch(self.batch, timeout=wait_s)
                except (TimeoutError, NatsTimeout):
                    idle += 1
                    # quiet: is the consumer still there (a node restarting takes the ones it
                    # held), and is the log really at its end? Asked at once while messages
                    # are known to wait, else every second
                    if (self.pending or 0) > 0 or idle * wait_s >= IDLE_CHECK_S:
                        idle = 0
                        info = await subscription.consumer_info()
                        self.pending = int(info.num_pending)
                    yield []
                    continue
            except TRANSIENT as exc:
                log.info("log_reader_resubscribing", subject=self.subject, error=repr(exc))
                self.recreated += 1
                await _drop(subscription)
                subscription = None
                await asyncio.sleep(_delay(attempt))
                attempt += 1
                continue
            idle = 0
            attempt = 0
            counts = [m.metadata.sequence.consumer for m in messages]
            if counts != list(range(delivered + 1, delivered + 1 + len(counts))):
                # deliveries lost on the way (a reconnect during a fetch): the consumer counts
                # them as delivered and would go on after them; make it again from the next
                # message not applied
                log.info("log_reader_gap", subject=self.subject, next_seq=self.next_seq)
                self.recreated += 1
                await _drop(subscription)
                subscription = None
                continue
            delivered += len(counts)
            fresh = [m for m in messages if m.metadata.sequence.stream >= self.next_seq]
            if fresh:
                self.next_seq = fresh[-1].metadata.sequence.stream + 1
                self.pending = fresh[-1].metadata.num_pending
                # the consumer is ephemeral and its acks keep nothing durable: a lost one is
                # no harm
                with contextlib.suppress(*TRANSIENT):
                    await fresh[-1].ack()
                yield fresh


def _delay(attempt: int) -> float:
    return reconnect_delay(attempt, CLUSTER_BACKOFF, random.random)


async def _drop(subscription: Any) -> None:
    """Unsubscribe if possible; the caller forgets the subscription."""
    if subscription is not None:
        with contextlib.suppress(*TRANSIENT):
            await subscription.unsubscribe()


async def _connection_error(exc: Exception) -> None:
    log.info("cluster_connection_error", error=repr(exc))


async def _disconnected() -> None:
    log.info("cluster_disconnected")


async def _reconnected() -> None:
    log.info("cluster_reconnected")
