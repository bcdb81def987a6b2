"""``liqmon run``: the long-running service, as wiring around the runtime.

Every decision (journal, de-duplication, staleness, rejects, snapshots, exactly-once on
restart) is the sans-I/O :class:`~liqmon.runtime.Runtime`'s. This module only connects it:

* before anything runs, :func:`prepare` decides how to start (``--fresh``, ``--resume`` or the
  state left by the same inputs; otherwise it refuses with one line), restores the state and
  works out what each sink still needs;
* one :class:`asyncio.TaskGroup` owns every task, each named: ``mqtt-publisher``, ``http``,
  ``feed``/``replay``/``hyperliquid-watch`` (tick and record sources), ``account-input``,
  ``clock``, ``shock-responder`` and ``engine``;
* producers put their inputs on one bounded :class:`~liqmon.inbox.Inbox` (back-pressure, with
  statistics); the ``engine`` task is its only consumer, hands each input to the runtime and
  carries out the effects: journal first, then the events to every sink, then a snapshot when
  one is due (captured at once from the book's arrays, written on a thread);
* an account message from MQTT is acknowledged to the broker once its effects are carried out.

SIGTERM (or Ctrl-C) stops intake, drains the inbox, snapshots, flushes the outbox to the
broker (bounded by its drain timeout), publishes ``offline`` and exits 0.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from alerts.encoding import engine_notional
from alerts.jsonl import JsonLinesSink
from alerts.outbox import OutboundMessage, Outbox
from alerts.publisher import MqttSink
from alerts.sink import EventSink, OutputEvent
from alerts.topics import ALERT_KINDS
from feeds.health import FeedHealth
from feeds.live import FeedFailed, FeedStats
from feeds.mqtt_input import Received, subscribe
from feeds.replay_source import Pacer, ReplayItem, replay_items
from liqmon import __version__
from liqmon.hyperliquid_watch import HyperliquidWatch
from liqmon.inbox import Inbox
from liqmon.ops import Metrics, serve
from liqmon.persistence import StateStore
from liqmon.runtime import Runtime
from liqmon.runtime.effects import Effects
from liqmon.service_inputs import (
    ClockTick,
    FeedFrame,
    InputMessage,
    OneInput,
    feed_frames,
    seed_items,
)
from liqmon.settings import ServiceSettings
from liqmon.shock_mqtt import ShockResponder
from liqmon.startup import Prepared, owed_after, prepare
from monitor.engine import Engine
from monitor.events import AlertEvent
from monitor.notices import ServiceStarted, ServiceStopped, notice_id

if TYPE_CHECKING:
    from liqmon.cluster.service import ClusterService

log = structlog.get_logger("liqmon.service")

INBOX_SIZE = 10_000
CLOCK_S = 0.1
"""How often time is passed to the runtime (feed staleness events come at most this late)."""
YIELD_EVERY_S = 0.0005
"""The engine task lets other tasks run at least this often while inputs are queued."""
ALERT_YIELDS = 6
"""Event-loop turns the engine task gives up after an input that caused alerts: about what
the MQTT publisher needs to wake, publish and have the packet written."""
SWEEP_INTERVAL_S = 0.5
"""A pass of the state sweep over the whole book starts at most this often (the publisher
sends an entity's state at most every ``state_interval_ms`` anyway)."""
SWEEP_ENTITIES = 4096
SWEEP_EVENTS = 16
"""A piece of the state sweep: at most this many entities valued (in array passes) and this
many state events built, about a millisecond of work between two inputs."""
SWEEP_BACKLOG = 256
"""The sweep pauses while this many states wait for the publisher's budget (``state_rate``):
states are built about as fast as they can be sent, not faster."""

Input = FeedFrame | ReplayItem | InputMessage | OneInput | ClockTick


class AlertPath:
    """The steps of a frame whose ticks raised alerts, into ``liqmon_alert_path_seconds``
    (wall clock: the receive time is the feed's). The last step, outbox to broker, is timed by
    the MQTT publisher (:meth:`Service._delivered`)."""

    __slots__ = ("_applied", "_histogram", "_item", "_taken")

    def __init__(self, histogram: Any, item: FeedFrame, taken_ns: int) -> None:
        self._histogram = histogram
        self._item = item
        self._taken = taken_ns
        self._applied = time.time_ns()

    def finished(self, journaled_ns: int, published_ns: int) -> None:
        item, observe = self._item, self._histogram.labels
        if item.ticks:  # exchange time to receive time: two clocks, the venue's and ours
            exchange_ms = max(tick.exchange_ts_ms for tick in item.ticks)
            observe("venue").observe(max(0.0, item.receive_ns / 1e9 - exchange_ms / 1e3))
        observe("parse").observe((item.parsed_ns - item.receive_ns) / 1e9)
        observe("wait").observe((self._taken - item.parsed_ns) / 1e9)
        observe("engine").observe((self._applied - self._taken) / 1e9)
        observe("journal").observe((journaled_ns - self._applied) / 1e9)
        observe("sinks").observe((published_ns - journaled_ns) / 1e9)


class Service:
    """See the module docstring."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.inbox: Inbox[Input] = Inbox(INBOX_SIZE)
        self.stopping = asyncio.Event()
        self.stop_reason = "signal"
        self.store = StateStore(settings.state.dir, fsync=settings.state.fsync)
        self.runtime = Runtime(Engine(settings.engine.config()))  # replaced by run()
        self.metrics.watch(self)
        self.sinks: dict[str, EventSink] = {}
        self.mqtt: MqttSink | None = None
        self.http_port: int | None = None
        self.restored = False
        self.input_subscribed = asyncio.Event()
        self.engine_idle = asyncio.Event()
        """Set while the engine task waits for an input: when the state sweep may run."""
        self._ready_http = asyncio.Event()
        self._snapshot_writing: asyncio.Future[None] | None = None
        self._gc_started = 0.0
        feed = settings.feed
        self.hyperliquid: HyperliquidWatch | None = None
        if feed.venue == "hyperliquid":
            self.hyperliquid = HyperliquidWatch(feed.watch_spec(), self.metrics.registry)
        self.feed_spec = feed.spec() if feed.venue is not None else None
        self.feed_stats: FeedStats | None = None
        if self.feed_spec is not None:
            self.feed_stats = FeedStats(self.feed_spec.venue)

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    @property
    def feed_health(self) -> FeedHealth | None:
        return self.runtime.health

    # -- sinks ---------------------------------------------------------------------------------

    def _open_sinks(self) -> Outbox | None:
        settings = self.settings
        if settings.out is not None:
            stream = open(settings.out, "a", encoding="utf-8")  # noqa: SIM115  # the sink's
            self.sinks["jsonl"] = JsonLinesSink(
                stream, owns_stream=True, flush_each=True, path=settings.out
            )
        if not settings.mqtt.url:
            return None
        outbox = Outbox(settings.state.dir / "outbox", fsync=settings.state.fsync)
        self.mqtt = MqttSink(
            settings.mqtt.client_settings(),
            outbox,
            version=__version__,
            position_extras=None if self.hyperliquid is None else self.hyperliquid.position_extras,
            notional_of=engine_notional(lambda: self.engine),
        )
        self.sinks["mqtt"] = self.mqtt
        self.mqtt.on_delivered = self._delivered
        return outbox

    def _delivered(self, messages: list[OutboundMessage]) -> None:
        """The broker acknowledged ``messages``: how long each alert took from the outbox."""
        now = time.time()
        mqtt_step = self.metrics.alert_path.labels("mqtt")
        events = f"{self.settings.mqtt.prefix}/events/"
        for message in messages:
            kind = message.topic.removeprefix(events).partition("/")[0]
            if kind in ALERT_KINDS:
                mqtt_step.observe(now - message.queued_at)

    async def _publish(self, events: list[OutputEvent]) -> None:
        sinks = self.sinks.values()
        for event in events:
            for sink in sinks:
                await sink.publish(event)

    # -- the engine task -----------------------------------------------------------------------

    def _effects(self, item: Input) -> Effects:
        runtime = self.runtime
        if isinstance(item, FeedFrame):
            out = runtime.frame(item.ticks, item.receive_ns, source=item.source)
            now_ms = item.receive_ns // 1_000_000
            for record in item.records:
                out.extend(runtime.record(record, source=item.source, now_ms=now_ms))
            for error in item.rejects:
                out.extend(runtime.refused(error, source=item.source, now_ms=now_ms, raw=item.raw))
            return out
        if isinstance(item, ClockTick):
            return runtime.clock(item.now_ns)
        if isinstance(item, InputMessage):
            return runtime.message(item.topic, item.payload, now_ms=item.receive_ms)
        if isinstance(item, OneInput):
            if item.error is not None:
                return runtime.refused(
                    item.error, source=item.source, now_ms=item.now_ms, line=item.line
                )
            assert item.record is not None  # noqa: S101  # one or the other
            return runtime.record(
                item.record, source=item.source, now_ms=item.now_ms, line=item.line, raw=item.raw
            )
        return runtime.file_item(item.item, source=item.source, now_ms=item.now_ms)

    async def _carry_out(self, effects: Effects, path: AlertPath | None = None) -> bool:
        """Journal, then publish, then snapshot if due; whether an alert went out."""
        if effects.journal:
            self.store.journal(effects.journal)
        journaled = time.time_ns()
        alerted = False
        if effects.events:
            await self._publish(effects.events)
            alerted = any(isinstance(e, AlertEvent) for e in effects.events)
            if alerted and path is not None:
                path.finished(journaled, time.time_ns())
        if effects.snapshot_due:
            self._snapshot_in_background()
        return alerted

    async def _engine_loop(self) -> None:
        inbox = self.inbox
        apply_seconds = self.metrics.apply_seconds
        alert_path = self.metrics.alert_path
        yield_at = time.monotonic()
        idle = self.engine_idle
        while not (self.stopping.is_set() and inbox.empty()):
            if inbox.empty():
                idle.set()
            item = await inbox.get(timeout_s=CLOCK_S * 2)
            if item is None:
                continue
            idle.clear()
            taken = time.time_ns()
            started = time.perf_counter()
            effects = self._effects(item)
            apply_seconds.labels(type(item).__name__).observe(time.perf_counter() - started)
            path = AlertPath(alert_path, item, taken) if isinstance(item, FeedFrame) else None
            alerted = await self._carry_out(effects, path)
            handled = item.handled if isinstance(item, InputMessage) else None
            if handled is not None and not handled.done():
                handled.set_result(None)
            if alerted:
                # an alert: let the publisher hand it to the socket before going on
                for _ in range(ALERT_YIELDS):
                    await asyncio.sleep(0)
                yield_at = time.monotonic() + YIELD_EVERY_S
            elif time.monotonic() >= yield_at:
                await asyncio.sleep(0)  # let the sockets be read and written
                yield_at = time.monotonic() + YIELD_EVERY_S

    def _snapshot_in_background(self) -> None:
        """Capture the state now (the book's arrays: milliseconds); serialize and write it on
        a thread while the engine goes on."""
        if self._snapshot_writing is not None and not self._snapshot_writing.done():
            return
        finish = self.store.begin_snapshot(self.engine, self.runtime.snapshot_meta())
        self.runtime.snapshot_taken(time.time_ns())
        self._snapshot_writing = asyncio.ensure_future(asyncio.to_thread(finish))
        self._snapshot_writing.add_done_callback(_log_snapshot_failure)

    # -- producers -----------------------------------------------------------------------------

    async def _state_sweep(self) -> None:
        """Publish the retained states that moved, a small piece at a time and only while the
        engine has nothing to do, so that no alert waits for them: a pass over the book at
        most every :data:`SWEEP_INTERVAL_S`, in pieces of at most :data:`SWEEP_ENTITIES`
        entities and :data:`SWEEP_EVENTS` states (about a millisecond each), no faster than
        the publisher sends them."""
        runtime, mqtt = self.runtime, self.mqtt
        assert mqtt is not None  # noqa: S101  # the task runs with an MQTT sink only
        while not self.stopping.is_set():
            if mqtt.states_pending >= SWEEP_BACKLOG:  # the publisher's budget sets the pace
                await asyncio.sleep(SWEEP_EVENTS / mqtt.settings.state_rate)
                continue
            if runtime.sweep_done:
                await asyncio.sleep(SWEEP_INTERVAL_S)
            await self.engine_idle.wait()  # inputs first
            effects = runtime.sweep(SWEEP_ENTITIES, SWEEP_EVENTS)
            if effects.events:
                await self._publish(effects.events)
            await asyncio.sleep(0)

    async def _clock(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(CLOCK_S)
            await self.inbox.put(ClockTick(time.time_ns()))

    async def _replay_source(self, path: Path, speed: float | None) -> None:
        """Normalized records and ticks from a file, after the last line already applied."""
        pacer = Pacer(speed) if speed else None
        async for item in replay_items(path, after_line=self.runtime.replay_line, pacer=pacer):
            if self.stopping.is_set():
                return
            await self.inbox.put(item)
        log.info("replay_source_finished", path=str(path))
        if self.settings.feed.exit_at_end:
            self.stop("end_of_replay")  # the engine task drains the inbox before it stops

    async def _feed_source(self) -> None:
        assert self.feed_spec is not None  # noqa: S101  # a feed task needs a feed
        assert self.feed_stats is not None  # noqa: S101
        health = self.runtime.health
        if health is not None and self.feed_spec.symbols != "all":
            health.watch(self.feed_spec.symbols, time.time_ns())
        async for frame in feed_frames(
            self.feed_spec,
            self.feed_stats,
            price_source=self.settings.feed.price_source,
            record_dir=self.settings.feed.record_dir,
            metrics=self.metrics,
        ):
            await self.inbox.put(frame)
            if self.stopping.is_set():
                return

    async def _hyperliquid_source(self, watch: HyperliquidWatch) -> None:
        """Contracts from the dexes' meta and snapshots of the watched accounts, polled from
        Hyperliquid's info API (see :mod:`liqmon.hyperliquid_watch`)."""
        async for record in watch.records():
            await self.inbox.put(OneInput.of(record, source="hyperliquid"))
            if self.stopping.is_set():
                return

    async def _account_input(self) -> None:
        """Account records from the trading system over MQTT (see asyncapi.yaml)."""
        settings = self.settings.mqtt.client_settings()
        prefix = f"{settings.prefix}/in/"
        loop = asyncio.get_running_loop()

        async def handle(message: Received) -> None:
            item = InputMessage(
                message.topic.removeprefix(prefix),
                message.payload,
                time.time_ns() // 1_000_000,
                loop.create_future(),
            )
            await self.inbox.put(item)
            assert item.handled is not None  # noqa: S101
            await item.handled  # acknowledged to the broker once carried out

        await subscribe(
            settings,
            [f"{prefix}#"],
            handle,
            ready=self.input_subscribed,
            identifier=f"liqmon-{settings.instance}-in",
            persistent=True,
            raw=True,
        )

    # -- running -------------------------------------------------------------------------------

    def _readiness(self) -> str | None:
        if not self.restored:
            return "restoring state"
        if self.mqtt is not None and not self.mqtt.connected:
            return "not connected to the broker"
        if self._takes_account_input() and not self.input_subscribed.is_set():
            return "not subscribed to the account input"
        if self.feed_stats is not None and self.feed_stats.state != "connected":
            return f"feed {self.feed_stats.venue} {self.feed_stats.state}"
        return None

    def _takes_account_input(self) -> bool:
        return bool(self.settings.mqtt.url and self.settings.mqtt.accounts_input)

    async def _start(self, prepared: Prepared) -> None:
        """Hand each sink what it missed, republish every retained state, seed a fresh start,
        and say in one line what was restored."""
        for name, events in prepared.owed.items():
            sink = self.sinks[name]
            for event in events:
                await sink.publish(event)
        # every retained state is published again by the state sweep (a state computed before
        # a crash but never published among them): the runtime took them all as unpublished
        notice = ServiceStarted(
            id=notice_id("service_started", self.settings.mqtt.instance, time.time_ns()),
            ts=time.time_ns() // 1_000_000,
            instance=self.settings.mqtt.instance,
            version=__version__,
            start=prepared.start,
            summary=prepared.summary,
            restored=prepared.restored,
        )
        log.info("service_started", start=prepared.start, summary=prepared.summary)
        await self._publish([notice])
        if prepared.seed:
            await self._seed(prepared.marks)
        # the book and everything built at start-up stay for the whole run: out of the
        # collector's sight, a full collection costs what the run allocated since, not a
        # quarter of a second of a 100,000-account book (a pause every alert would wait for)
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._gc_timer)
        self.restored = True

    def _gc_timer(self, phase: str, info: dict[str, Any]) -> None:
        """Time each collection (``liqmon_gc_pause_seconds``): a pause is a pause of alerts."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.metrics.gc_pause.labels(str(info["generation"])).observe(pause)

    async def _seed(self, marks: dict[str, str | None]) -> None:
        """Apply the seeds of a fresh start (brackets, ``--accounts``) and snapshot the result:
        seeds are not journaled one by one (a snapshot of the book's arrays is far cheaper than
        hundreds of thousands of journal lines). A crash while seeding leaves no state, so the
        next start seeds again; each durable sink then skips the seeding's events it already
        holds (its mark among them), as after a journal replay."""
        runtime = self.runtime
        runtime.journaling = False
        events: list[OutputEvent] = []
        try:
            async for item in seed_items(self.settings):
                events.extend(self._effects(item).events)
        finally:
            runtime.journaling = True
        self.store.snapshot(self.engine, runtime.snapshot_meta())
        runtime.snapshot_taken(time.time_ns())
        for name, sink in self.sinks.items():
            owed = owed_after(marks[name], events) if name in marks else events
            for event in owed:
                await sink.publish(event)

    async def run(self, *, install_signals: bool = True) -> int:
        outbox = self._open_sinks()
        try:
            prepared = prepare(self.settings, self.store, outbox)
        except BaseException:
            for sink in self.sinks.values():
                await sink.close()
            if outbox is not None:
                outbox.close()
            self.store.close()
            raise
        self.runtime = prepared.runtime
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as tasks:
                side: list[asyncio.Task[None]] = []
                if self.mqtt is not None:
                    tasks.create_task(self.mqtt.run(), name="mqtt-publisher")
                http = self.settings.http
                if http.enabled:
                    bound: list[int] = []
                    serving = serve(
                        http.host,
                        http.port,
                        self.metrics,
                        self._readiness,
                        started=self._ready_http,
                        bound=bound,
                    )
                    side.append(tasks.create_task(serving, name="http"))
                    await self._ready_http.wait()
                    self.http_port = bound[0] if bound else http.port
                await self._start(prepared)
                side.extend(tasks.create_task(p, name=n) for n, p in self._producers())
                engine = tasks.create_task(self._engine_loop(), name="engine")
                await engine
                for task in side:
                    task.cancel()
                await self._stop_cleanly()
        finally:
            if self._gc_timer in gc.callbacks:
                gc.callbacks.remove(self._gc_timer)
            if self.mqtt is not None:
                self.mqtt.outbox.close()  # its task has ended with the task group
            self.store.close()
        log.info("service_stopped")
        return 0

    async def _stop_cleanly(self) -> None:
        if self.feed_stats is not None:
            log.info("feed_summary", **self.feed_stats.snapshot())
        if self._snapshot_writing is not None:  # its journals are still needed
            await asyncio.wait([self._snapshot_writing])
        self.store.snapshot(self.engine, self.runtime.snapshot_meta())
        self.runtime.snapshot_taken(time.time_ns())
        stats = self.runtime.stats
        notice = ServiceStopped(
            id=notice_id("service_stopped", self.settings.mqtt.instance, time.time_ns()),
            ts=time.time_ns() // 1_000_000,
            instance=self.settings.mqtt.instance,
            reason=self.stop_reason,
            counts={
                "ticks": stats.ticks_applied,
                "records": sum(stats.records.values()) - stats.records["tick"],
                "alerts": sum(stats.events[k] for k in _ALERTS),
                "rejected": sum(stats.rejected.values()),
            },
        )
        await self._publish([notice])
        if self.mqtt is not None:
            # the broker keeps the book as it ends: the sweep finishes its pass and makes one
            # more over the whole book, with no budget
            passes = 0
            while passes < 2:
                await self._publish(self.runtime.sweep(SWEEP_ENTITIES, 1 << 62).events)
                passes += self.runtime.sweep_done
        for sink in self.sinks.values():
            await sink.close()

    def _producers(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        producers: list[tuple[str, Coroutine[Any, Any, None]]] = [("clock", self._clock())]
        if self.mqtt is not None:
            producers.append(("state-sweep", self._state_sweep()))
        feed = self.settings.feed
        if feed.replay is not None:
            producers.append(("replay", self._replay_source(feed.replay, feed.replay_speed)))
        if self.feed_spec is not None:
            producers.append(("feed", self._feed_source()))
        if self._takes_account_input():
            producers.append(("account-input", self._account_input()))
        if self.hyperliquid is not None:
            producers.append(("hyperliquid-watch", self._hyperliquid_source(self.hyperliquid)))
        if (responder := self._shock_responder()) is not None:
            producers.append(("shock-responder", responder.run()))
        return producers

    def _shock_responder(self) -> ShockResponder | None:
        """What-if requests answered from the book (see :mod:`liqmon.shock_mqtt`): the engine
        is only read, between two inputs of the engine task (one event loop, one thread)."""
        mqtt = self.settings.mqtt
        if self.mqtt is None or not mqtt.answer_shocks or mqtt.protocol != "5":
            return None
        return ShockResponder(self.mqtt.settings, lambda: self.engine)

    def stop(self, reason: str = "signal") -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        if not self.stopping.is_set():
            log.info("service_stopping", reason=reason)
            self.stop_reason = reason
            self.stopping.set()


_ALERTS = ("margin_warning", "margin_recovered", "liquidation")


def _log_snapshot_failure(future: asyncio.Future[None]) -> None:
    """A snapshot that could not be written is only a missed compaction: the journal since the
    previous one is kept, and the next snapshot tries again."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("state_snapshot_failed", error=str(exc))


def run_service(settings: ServiceSettings) -> int:
    """The ``liqmon run`` entry point. A feed that cannot work (refused by the venue, a bad
    URL) ends the service with status 1 after logging why; the journal holds every applied
    account record, so nothing is lost. A refused start raises :class:`StartRefused` (the
    command line prints its one line)."""
    service: Service | ClusterService
    if settings.cluster.urls:  # one instance of a cluster (docs/deployment.md)
        from liqmon.cluster.service import ClusterService  # clusters only

        service = ClusterService(settings)
    else:
        service = Service(settings)
    status = 1
    try:
        status = asyncio.run(service.run())
    except* FeedFailed as group:
        for exc in group.exceptions:
            log.error("service_failed", reason="feed_failed", detail=str(exc))
    return status
