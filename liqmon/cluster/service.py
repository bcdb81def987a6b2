"""``liqmon run`` as one instance of a cluster: wiring around :class:`ShardCore` and the leases.

One :class:`asyncio.TaskGroup` owns every task, each named:

* ``venue`` reads the venue feed (every instance does) and ``relay`` stores each frame in
  every partition's log (:class:`~liqmon.cluster.relay.VenueRelay`; JetStream keeps one copy);
* ``leases`` takes free partitions, renews those it holds and gives up those it lost
  (:class:`~liqmon.cluster.lease.Ownership` decides);
* ``partition-{p}``, while this instance owns ``p``: restores the partition from its latest
  snapshot (or its seeds), applies its log from the snapshot's sequence on, hands the events to
  every sink, and saves a snapshot every ``snapshot_interval_s`` once everything before it has
  been delivered to the broker (so that a takeover repeats events but never loses one);
* ``snapshot-copies`` keeps a copy of the latest snapshot of each partition it does not own,
  for a takeover while the store cannot answer;
* ``mqtt-publisher`` and ``http`` (metrics, health) as in the single-instance service.

SIGTERM stops the owners (a last snapshot, then the lease is given back, so that a standby
takes over at once), drains the outbox and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable

import structlog
from prometheus_client import Gauge

from alerts.encoding import engine_notional
from alerts.jsonl import JsonLinesSink
from alerts.outbox import Outbox
from alerts.publisher import MqttSink
from alerts.sink import EventSink, OutputEvent
from liqmon import __version__
from liqmon.cluster.lease import LeaseTerms, Ownership, lease_key, lease_value
from liqmon.cluster.metrics import ClusterMetrics
from liqmon.cluster.nats_io import (
    TRANSIENT,
    ClusterLink,
    KeyWrongLastSequenceError,
    LogReader,
)
from liqmon.cluster.relay import VenueRelay
from liqmon.cluster.seeds import cluster_seeds
from liqmon.cluster.shard_core import ShardCore, restored, seeded
from liqmon.cluster.snapshots import PartitionSnapshots, retrying
from liqmon.cluster.subjects import parse_log_subject, partition_subjects
from liqmon.ops import Metrics, serve
from liqmon.settings import ServiceSettings
from monitor.engine import Engine
from monitor.errors import ConfigError, SnapshotError

log = structlog.get_logger("liqmon.cluster")

STOP_SAVE_S = 15.0
"""A stopping owner waits this long at most for its last snapshot (the broker's
acknowledgements, then the store)."""
LOG_CHECK_S = 30.0
"""How long the check that the log still holds what followed a snapshot waits for an answer."""
CLUSTER_VENUES = ("binance-usdm", "binance-coinm")
"""Venues whose frames an owner applies alike wherever and whenever it parses them: every
tick carries its exchange time and the parser keeps no state between frames."""


class ClusterService:
    """See the module docstring."""

    def __init__(self, settings: ServiceSettings) -> None:
        if settings.feed.venue not in CLUSTER_VENUES:
            raise ConfigError(
                "cluster: a Binance venue feed is needed ([feed] venue binance-usdm or "
                "binance-coinm): every instance reads it, and its frames carry their exchange "
                "time, which makes each frame distinct and its place in the log checkable"
            )
        self.settings = settings
        cluster = settings.cluster
        self.instance = settings.mqtt.instance
        self.names = cluster
        self.link = ClusterLink(cluster, self.instance)
        self.ownership = Ownership(
            self.instance, cluster.partitions, LeaseTerms(cluster.lease_s, cluster.max_partitions)
        )
        self.metrics = Metrics()
        self.cluster_metrics = ClusterMetrics(self.metrics)
        self.stopping = asyncio.Event()
        self.seeds = cluster_seeds(settings)
        self.cores: dict[int, ShardCore] = {}
        self._owners: dict[int, asyncio.Task[None]] = {}
        self._contracts = seeded(
            settings.engine.config(), 0, settings.feed.venue, "mark", self.seeds
        )
        self.relay = VenueRelay(
            settings.feed, self.link, cluster.partitions, self.metrics, self.cluster_metrics
        )
        self.sinks: dict[str, EventSink] = {}
        self.mqtt: MqttSink | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self.snapshots = PartitionSnapshots(
            self.link,
            self.ownership,
            self.cluster_metrics,
            interval_s=cluster.snapshot_interval_s,
            outbox=lambda: None if self.mqtt is None else self.mqtt.outbox,
        )
        self._watch()

    def _watch(self) -> None:
        """The connections and queues, read when scraped (the names of the single instance's
        where they mean the same)."""
        r = self.metrics.registry
        Gauge("liqmon_outbox_depth", "Messages not yet acknowledged", registry=r).set_function(
            lambda: self.mqtt.outbox.depth if self.mqtt is not None else 0
        )
        Gauge("liqmon_mqtt_connected", "1 when connected to the broker", registry=r).set_function(
            lambda: int(self.mqtt is not None and self.mqtt.connected)
        )
        Gauge(
            "liqmon_cluster_connected", "1 when connected to a NATS server", registry=r
        ).set_function(lambda: int(self.link.nc is not None and self.link.nc.is_connected))
        Gauge(
            "liqmon_cluster_relay_queue", "Venue frames waiting to be relayed", registry=r
        ).set_function(lambda: self.relay.queued)

    # -- sinks -------------------------------------------------------------------------------

    def _open_sinks(self) -> None:
        settings = self.settings
        if settings.out is not None:
            stream = open(settings.out, "a", encoding="utf-8")  # noqa: SIM115  # the sink's
            self.sinks["jsonl"] = JsonLinesSink(stream, owns_stream=True, flush_each=True)
        if settings.mqtt.url:
            outbox = Outbox(settings.state.dir / "outbox", fsync=settings.state.fsync)
            self.mqtt = MqttSink(
                settings.mqtt.client_settings(),
                outbox,
                version=__version__,
                notional_of=engine_notional(self._engine_with_contracts),
            )
            self.sinks["mqtt"] = self.mqtt

    def _engine_with_contracts(self) -> Engine:
        return self._contracts.runtime.engine

    async def _publish(self, events: list[OutputEvent]) -> None:
        for event in events:
            for sink in self.sinks.values():
                await sink.publish(event)

    # -- leases ------------------------------------------------------------------------------

    async def _leases(self) -> None:
        ownership, kv = self.ownership, self.link.leases
        tick = min(ownership.terms.poll_every_s, ownership.terms.renew_every_s) / 2
        # renewals go on while stopping, until every owner has saved its last snapshot and
        # given its lease back: a lease let lapse would let a standby in beside it
        while not (self.stopping.is_set() and not self._owners):
            now = time.monotonic()
            for partition, revision in ownership.to_renew(now):
                value = lease_value(self.instance, int(time.time() * 1000))
                written = time.monotonic()  # the server's TTL starts with the write, not its reply
                try:
                    renewed = await kv.update(lease_key(partition), value, last=revision)
                except KeyWrongLastSequenceError:
                    self._lost(partition, "refused")
                    continue
                except TRANSIENT as exc:
                    log.info("lease_renewal_failed", partition=partition, error=repr(exc))
                    continue
                ownership.renewed(partition, renewed, written)
            for partition in ownership.overdue(time.monotonic()):
                self._lost(partition, "overdue")
            if self.stopping.is_set():
                await asyncio.sleep(tick)
                continue
            for partition in ownership.to_acquire(time.monotonic()):
                value = lease_value(self.instance, int(time.time() * 1000))
                written = time.monotonic()
                try:
                    revision = await kv.create(lease_key(partition), value)
                except (KeyWrongLastSequenceError, *TRANSIENT):
                    continue
                if ownership.acquired(partition, revision, written):
                    self._own(partition)
                else:
                    await self._give_back(partition, revision)
            await asyncio.sleep(tick)

    def _own(self, partition: int) -> None:
        assert self._tasks is not None  # noqa: S101  # inside run()
        log.info("partition_acquired", partition=partition, instance=self.instance)
        self.cluster_metrics.acquisitions.labels(str(partition)).inc()
        self.cluster_metrics.owned.labels(str(partition)).set(1)
        self._owners[partition] = self._tasks.create_task(
            self._run_partition(partition), name=f"partition-{partition}"
        )

    def _lost(self, partition: int, reason: str) -> None:
        log.warning("partition_lost", partition=partition, reason=reason, instance=self.instance)
        self.ownership.released(partition)
        self.cluster_metrics.losses.labels(reason).inc()
        self.cluster_metrics.owned.labels(str(partition)).set(0)
        self.cores.pop(partition, None)
        task = self._owners.pop(partition, None)
        if task is not None:
            task.cancel()

    async def _give_back(self, partition: int, revision: int) -> None:
        try:
            await self.link.leases.delete(lease_key(partition), last=revision)
        except (KeyWrongLastSequenceError, *TRANSIENT) as exc:
            log.info("lease_release_failed", partition=partition, error=repr(exc))

    # -- owning a partition ------------------------------------------------------------------

    async def _run_partition(self, partition: int) -> None:
        settings = self.settings
        config = settings.engine.config(state_sweep=False)
        venue = settings.feed.venue
        assert venue is not None  # noqa: S101  # checked at construction
        price_source = settings.feed.price_source
        started = time.monotonic()
        data = await self.snapshots.load(partition)
        core = None
        if data is not None:
            try:
                core = restored(data, config, partition, venue, price_source)
            except (SnapshotError, KeyError, ValueError, TypeError) as exc:
                # a snapshot no owner can read must not stop every owner in turn: start from
                # the seeds and apply the whole log (the retention check below says if it
                # still holds all of it)
                log.error("partition_snapshot_unreadable", partition=partition, error=str(exc))
        if core is None:
            core = seeded(config, partition, venue, price_source, self.seeds)
        self.cores[partition] = core
        assert self._tasks is not None  # noqa: S101  # inside run()
        check = self._check_log_kept(partition, core.applied_seq)
        self._tasks.create_task(check, name=f"partition-{partition}-log-check")
        log.info(
            "partition_restored",
            partition=partition,
            from_snapshot=data is not None,
            applied_seq=core.applied_seq,
            seconds=round(time.monotonic() - started, 3),
        )
        metrics = self.cluster_metrics
        label = str(partition)
        reader = LogReader(
            self.link, partition_subjects(self.names.prefix, partition), core.applied_seq
        )
        interval = settings.cluster.snapshot_interval_s
        saved_seq, saved_at = core.applied_seq, time.monotonic()
        saving: asyncio.Task[None] | None = None
        caught_up = False
        prefix, stopping = self.names.prefix, self.stopping
        async for batch in reader.batches():
            for message in batch:
                seq = message.metadata.sequence.stream
                # the time the log stored it: what any owner reads (never the wall clock)
                now_ms = int(message.metadata.timestamp.timestamp() * 1000)
                subject = parse_log_subject(prefix, partition, message.subject)
                effects = core.apply(seq, subject, message.data, now_ms=now_ms)
                if effects is not None and effects.events:
                    await self._publish(effects.events)
            metrics.applied_seq.labels(label).set(core.applied_seq)
            if reader.pending is not None:
                metrics.lag.labels(label).set(reader.pending)
            if not caught_up and (reader.pending == 0 or (reader.pending is None and not batch)):
                caught_up = True
                log.info(
                    "partition_caught_up",
                    partition=partition,
                    applied_seq=core.applied_seq,
                    seconds=round(time.monotonic() - started, 3),
                )
            due = time.monotonic() - saved_at >= interval and core.applied_seq > saved_seq
            if due and (saving is None or saving.done()):
                saving = asyncio.ensure_future(self.snapshots.save(core, self._owns(core)))
                saved_seq, saved_at = core.applied_seq, time.monotonic()
            if stopping.is_set():  # at a batch's end: a last snapshot, bounded
                if saving is not None and not saving.done():
                    await asyncio.wait([saving])
                last = self.snapshots.save(core, self._owns(core))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(last, timeout=STOP_SAVE_S)
                return

    def _owns(self, core: ShardCore) -> Callable[[], bool]:
        """Whether ``core`` is still this instance's owner of its partition (not one dropped
        when the lease was lost, even if the partition was taken again since)."""
        return lambda: self.cores.get(core.partition) is core

    async def _check_log_kept(self, partition: int, applied_seq: int) -> None:
        """Say loudly if what the log held after the snapshot has expired (the state goes on
        from what is still stored; a snapshot interval far below the log's retention prevents
        it). Beside the restore, not before it: the answer may wait for an election."""
        try:
            first = await asyncio.wait_for(
                retrying(self.link.first_sequence, "first_sequence"), timeout=LOG_CHECK_S
            )
        except TimeoutError:  # the cluster did not answer: nothing is known, stopping is not held
            log.warning("partition_log_unchecked", partition=partition)
            return
        if first > applied_seq + 1:
            log.error(
                "partition_log_truncated",
                partition=partition,
                applied_seq=applied_seq,
                first_stored_seq=first,
            )

    # -- running -----------------------------------------------------------------------------

    def _readiness(self) -> str | None:
        if self.link.nc is None or not self.link.nc.is_connected:
            return "not connected to the cluster"
        if self.mqtt is not None and not self.mqtt.connected:
            return "not connected to the broker"
        return None

    async def run(self, *, install_signals: bool = True) -> int:
        self._open_sinks()
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        await self.link.connect()
        log.info("cluster_joined", instance=self.instance, servers=self.link.urls)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                side: list[asyncio.Task[None]] = []
                if self.mqtt is not None:
                    tasks.create_task(self.mqtt.run(), name="mqtt-publisher")
                http = self.settings.http
                if http.enabled:
                    serving = serve(http.host, http.port, self.metrics, self._readiness, bound=[])
                    side.append(tasks.create_task(serving, name="http"))
                side.append(tasks.create_task(self.relay.read_venue(), name="venue"))
                side.append(tasks.create_task(self.relay.run(), name="relay"))
                copies = self.snapshots.keep_copies()
                side.append(tasks.create_task(copies, name="snapshot-copies"))
                leases = tasks.create_task(self._leases(), name="leases")
                await self.stopping.wait()
                for partition, task in list(self._owners.items()):
                    await asyncio.wait([task])  # a last snapshot (the lease still renewed)
                    held = self.ownership.held.get(partition)
                    if held is not None:
                        await self._give_back(partition, held.revision)
                        self._lost(partition, "stopping")
                self._owners.clear()
                await leases  # ends once no partition is owned
                for task in side:
                    task.cancel()
                for sink in self.sinks.values():
                    await sink.close()
        finally:
            if self.mqtt is not None:
                self.mqtt.outbox.close()
            await self.link.close()
        log.info("service_stopped", instance=self.instance)
        return 0

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("service_stopping", reason="signal")
            self.stopping.set()
