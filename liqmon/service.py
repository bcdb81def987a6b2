"""``liqmon run``: the long-running service. Thin wiring around the pure engine.

One :class:`asyncio.TaskGroup` owns every task: the MQTT sink's connection, the HTTP endpoint,
the tick source (a venue feed, or a recorded file), the account-input subscription, the feed
health clock, the what-if responder (:class:`~liqmon.shock_mqtt.ShockResponder`, which only
reads the engine), and the engine loop. Producers put inputs on one bounded queue (back-pressure: a
full queue makes them wait); the engine loop is the queue's only consumer, so the engine is never
touched concurrently.

For each input the engine loop: applies it; journals it if it was an account record or changed
an entity's alert state (before any event leaves); hands the events to the sinks, which skip
what they already wrote before a crash (:class:`GuardedSink`); and, every
``state.snapshot_interval_s`` (once the journal is worth it), snapshots the state and compacts
the journal — the state is captured at once, the file written on a thread. An account message
from MQTT is acknowledged to the broker only after it was journaled, so one in flight during a
crash is delivered again.

SIGTERM (or Ctrl-C) stops intake, drains the queue, snapshots, flushes the outbox to the broker
(bounded by its drain timeout), publishes ``offline`` and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from alerts.encoding import engine_notional
from alerts.jsonl import JsonLinesSink
from alerts.outbox import Outbox
from alerts.publisher import MqttSink
from alerts.sink import EventSink
from alerts.topics import feed_event_topic
from feeds.accounts import parse_account_update
from feeds.brackets import load_brackets
from feeds.files import read_lines
from feeds.frames import FrameParser
from feeds.health import FeedEvent, FeedHealth, FeedRecovered
from feeds.live import FeedFailed, FeedSpec, FeedStats, frames
from feeds.mqtt_input import Received, subscribe
from feeds.normalized import (
    decode,
    exact_numbers,
    parse_line,
    parse_object,
    record_json,
    tick_fields,
)
from feeds.recorder import Recorder
from liqmon import __version__
from liqmon.hyperliquid_watch import HyperliquidWatch
from liqmon.ops import Metrics, serve
from liqmon.persistence import SinkMark, StateStore
from liqmon.settings import ServiceSettings
from liqmon.shock_mqtt import ShockResponder
from monitor.engine import Engine
from monitor.errors import RecordRefused, TickDropped
from monitor.events import EngineEvent, StateEvent
from monitor.records import ContractRecord, MarginRecord, MarkSource, Record, TickRecord
from monitor.snapshot import mark_text

log = structlog.get_logger("liqmon.service")

QUEUE_SIZE = 10_000
SNAPSHOT_CHECK_S = 1.0
SNAPSHOT_JOURNAL_MIN = 1
SNAPSHOT_JOURNAL_MAX = 100_000
"""A periodic snapshot waits until the journal since the last one holds a quarter as many lines
as there are open positions, bounded by these."""
FEED_STATUS_LOG_S = 60.0
"""How often the feed's connection state, counters and clock skew are logged (one line)."""
HEALTH_CHECK_S = 0.1
"""How often feed staleness is checked (events come at most this late)."""
YIELD_EVERY_S = 0.0005
"""The engine loop lets other tasks run at least this often while inputs are queued."""
ALERT_YIELDS = 6
"""Event-loop turns the engine loop gives up after an input that caused events: about what
the MQTT sink needs to wake, publish and have the packet written."""
RECENT_FEED_EVENTS = 1_000


@dataclass(slots=True)
class Input:
    """One thing for the engine: a record, or a tick (kept unpacked: the hot path)."""

    source: str
    record: Record | None = None
    symbol: str = ""
    mark: float = 0.0
    text: MarkSource = ""
    ts: int = 0
    line: int | None = None  # position in a replayed file (to resume after a restart)
    receive_ns: int | None = None  # local receive time of a feed tick
    raw: bytes = b""
    topic: str = ""  # the MQTT topic an account message came on
    handled: asyncio.Future[None] | None = None  # set once journaled (MQTT acknowledgement)


class GuardedSink:
    """A durable sink that skips events it already wrote before a restart (see
    :class:`~liqmon.persistence.SinkMark`). State events pass unguarded (they are retained
    latest-values, and regenerated ones are current)."""

    def __init__(self, inner: EventSink, mark: SinkMark, last_written_id: str | None) -> None:
        self.inner = inner
        self.mark = mark
        self._last_written_id = last_written_id

    async def publish(self, event: EngineEvent) -> None:
        if isinstance(event, StateEvent):
            await self.inner.publish(event)
            return
        self.mark.settle(event.seq, event.id, self._last_written_id)
        if event.seq <= self.mark.seq:
            return
        await self.inner.publish(event)
        self.mark.advance(event.seq)

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()
        self.mark.close()


def _last_line_id(path: Path) -> str | None:
    """The ``id`` of the last event line of a JSON Lines file (read from its end)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - 65_536))
            lines = stream.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
            return str(orjson.loads(line)["id"])
    return None


@dataclass
class Health:
    restored: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


class Service:
    """See the module docstring."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health()
        self.queue: asyncio.Queue[Input] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.stopping = asyncio.Event()
        self.store = StateStore(settings.state.dir, fsync=settings.state.fsync)
        self.engine = Engine(settings.engine.config())
        self.metrics.watch(lambda: self.engine)
        self.sinks: list[EventSink] = []
        self.mqtt: MqttSink | None = None
        self.replay_line = 0
        self._margin_keys: set[tuple[str, str, str, str, int]] = set()
        self._dirty_marks: dict[str, Input] = {}  # the last tick of symbols not yet journaled
        self._last_snapshot = time.monotonic()
        self.http_port: int | None = None
        self._ready_http = asyncio.Event()
        feed = settings.feed
        self.feed_spec: FeedSpec | None = feed.spec() if feed.venue is not None else None
        self.feed_stats: FeedStats | None = None
        self.feed_health: FeedHealth | None = None
        self.feed_events: deque[FeedEvent] = deque(maxlen=RECENT_FEED_EVENTS)
        self._feed_logged = time.monotonic()
        self.recorder: Recorder | None = None
        self._recorder_flushed = time.monotonic()
        self._applied_receive_ns: int | None = None  # receive time of the last tick applied
        self._queued_feed_ticks = 0  # feed ticks waiting in the queue
        self._snapshot_writing: asyncio.Future[None] | None = None
        self.hyperliquid: HyperliquidWatch | None = None
        if feed.venue == "hyperliquid":
            self.hyperliquid = HyperliquidWatch(feed.watch_spec(), self.metrics.registry)
        if self.feed_spec is not None:
            self.feed_stats = FeedStats(self.feed_spec.venue)
            self.feed_health = FeedHealth(
                self.feed_spec.venue,
                expected_interval_s=self.feed_spec.expected_interval_s,
                multiple=feed.stale_after,
            )

    # -- start-up ------------------------------------------------------------------------------

    def _open_sinks(self) -> None:
        state_dir = self.settings.state.dir
        if self.settings.out is not None:
            out = self.settings.out
            stream = open(out, "a", encoding="utf-8")  # noqa: SIM115  # closed by the sink
            self.sinks.append(
                GuardedSink(
                    JsonLinesSink(stream, owns_stream=True, flush_each=True),
                    SinkMark(state_dir, "jsonl"),
                    _last_line_id(out),
                )
            )
        if self.settings.mqtt.url:
            outbox = Outbox(state_dir / "outbox", fsync=self.settings.state.fsync)
            self.mqtt = MqttSink(
                self.settings.mqtt.client_settings(),
                outbox,
                version=__version__,
                position_extras=None
                if self.hyperliquid is None
                else self.hyperliquid.position_extras,
                notional_of=engine_notional(lambda: self.engine),
            )
            self.sinks.append(
                GuardedSink(self.mqtt, SinkMark(state_dir, "mqtt"), outbox.last_message_id)
            )

    async def _publish(self, events: list[EngineEvent]) -> None:
        for event in events:
            if not isinstance(event, StateEvent):
                self.metrics.events.labels(event.kind).inc()
            for sink in self.sinks:
                await sink.publish(event)

    async def restore(self) -> None:
        """Snapshot + journal, then the seeds of a fresh start (brackets, --accounts)."""
        restored = self.store.restore(self.settings.engine.config())
        self.engine = restored.engine
        self.replay_line = int(restored.meta.get("replay_line", 0))
        replayed: list[EngineEvent] = []
        for record in restored.journal_records:
            with contextlib.suppress(RecordRefused):
                replayed.extend(self.engine.apply(record))
            if isinstance(record, MarginRecord):
                self._margin_keys.add(_margin_key(record))
        await self._publish(replayed)  # the guarded sinks send only what never left
        self.replay_line = max(self.replay_line, restored.last_source_line)
        log.info(
            "state_restored",
            from_snapshot=restored.from_snapshot,
            journal_records=len(restored.journal_records),
            entities=self.engine.entity_count,
            events_reemitted=len(replayed),
            replay_line=self.replay_line,
        )
        if not restored.from_snapshot and not restored.journal_records:
            await self._seed()
        self.health.restored = True

    async def _seed(self) -> None:
        for path in self.settings.brackets:
            load = load_brackets(path)
            for contract in load.contracts:
                await self._apply(Input(source="brackets", record=ContractRecord(contract)))
        if self.settings.accounts is not None:
            for number, line in read_lines(self.settings.accounts):
                try:
                    record = parse_line(line)
                except RecordRefused as exc:
                    self.metrics.rejected.labels("accounts_file", exc.reason).inc()
                    log.warning(
                        "seed_record_refused", line=number, reason=exc.reason, detail=exc.detail
                    )
                    continue
                await self._apply(Input(source="accounts_file", record=record, raw=line))

    # -- the engine loop -----------------------------------------------------------------------

    async def _apply(self, item: Input) -> None:
        engine = self.engine
        before = engine.transitions
        started = time.perf_counter()
        record = item.record
        try:
            if record is None:
                events = []
                if item.receive_ns is not None:  # a feed tick
                    self._applied_receive_ns = item.receive_ns
                    self._queued_feed_ticks -= 1
                    if self.feed_health is not None:
                        health = self.feed_health
                        recovered = health.observe(item.symbol, item.receive_ns, item.mark)
                        if recovered is not None:
                            events.extend(await self._feed_event(recovered))
                events.extend(engine.apply_tick(item.symbol, item.mark, item.text, item.ts))
                self.metrics.ticks.labels(item.source).inc()
                self._dirty_marks[item.symbol] = item
            else:
                if isinstance(record, MarginRecord) and item.source == "mqtt":
                    key = _margin_key(record)
                    if key in self._margin_keys:
                        log.info(
                            "margin_redelivery_skipped",
                            account=record.account,
                            symbol=record.symbol,
                            ts=record.ts,
                        )
                        return
                events = list(engine.apply(record))
                self.metrics.records.labels(type(record).__name__.removesuffix("Record")).inc()
        except TickDropped as exc:
            self.metrics.dropped.labels(exc.reason).inc()
            return
        except RecordRefused as exc:
            self._reject(item, exc)
            return
        finally:
            self.metrics.apply_seconds.labels("tick" if record is None else "record").observe(
                time.perf_counter() - started
            )
        if record is not None or engine.transitions != before:
            self._journal(item)
            if isinstance(record, MarginRecord):
                self._margin_keys.add(_margin_key(record))
        if events:
            await self._publish(events)

    def _journal(self, item: Input) -> None:
        """Journal an input that changed state, preceded by the current mark of every symbol
        that ticked since the last journal write: re-applying the journal must value each
        record at the marks it was valued at."""
        for symbol, tick in self._dirty_marks.items():
            if symbol != item.symbol or item.record is not None:
                self._write_journal(tick)
        self._dirty_marks.clear()
        self._write_journal(item)

    def _write_journal(self, item: Input) -> None:
        record = item.record
        if record is None:
            record = TickRecord(item.ts, item.symbol, item.mark, mark_text(item.text))
        line = record_json(record)
        if item.line is not None:
            line = line[:-1] + b',"_line":' + str(item.line).encode() + b"}"
        self.store.journal(line)
        self.metrics.journaled.inc()

    def _reject(self, item: Input, exc: RecordRefused) -> None:
        self.metrics.rejected.labels(item.source, exc.reason).inc()
        log.warning(
            "input_rejected",
            source=item.source,
            reason=exc.reason,
            detail=exc.detail,
            line=item.line,
        )
        if self.mqtt is not None and item.source == "mqtt":
            now_ms = int(time.time() * 1000)
            body = {
                "ts": now_ms,
                "source": item.source,
                "reason": exc.reason,
                "detail": exc.detail,
                "topic": item.topic,
                "payload": item.raw[:4096].decode("utf-8", "replace"),
            }
            body = {"id": _digest(body), **body}
            self.mqtt.publish_message("rejects", body)

    async def _feed_event(self, event: FeedEvent) -> list[EngineEvent]:
        """Publish a feed health event; flag the symbol in the engine (its state events)."""
        self.feed_events.append(event)
        self.metrics.feed_events.labels(event.kind).inc()
        payload = event.to_payload()
        (log.info if isinstance(event, FeedRecovered) else log.warning)(
            event.kind,
            venue=event.venue,
            symbol=event.symbol,
            stale_ms=payload["stale_ms"],
            since_ts=payload["since_ts"],
        )
        if self.mqtt is not None:
            prefix = self.mqtt.settings.prefix
            topic = feed_event_topic(prefix, event.kind, event.venue, event.symbol)
            self.mqtt.publish_message(topic.removeprefix(f"{prefix}/"), payload)
        assert self.feed_health is not None  # noqa: S101  # feed events need a feed
        self.metrics.feed_stale_symbols.labels(event.venue).set(
            len(self.feed_health.stale_symbols())
        )
        return list(self.engine.set_stale(event.symbol, not isinstance(event, FeedRecovered)))

    async def _check_feed(self) -> None:
        health = self.feed_health
        if health is None:
            return
        events: list[EngineEvent] = []
        now_ns = time.time_ns()
        if self._queued_feed_ticks > 0 and self._applied_receive_ns is not None:
            # behind the feed: judge it by what it had delivered when the tick being applied
            # arrived, not by the wall clock (its ticks waiting here are not a silent venue)
            now_ns = min(now_ns, self._applied_receive_ns)
        for stalled in health.check(now_ns):
            events.extend(await self._feed_event(stalled))
        if events:
            await self._publish(events)
        if self.recorder is not None and time.monotonic() - self._recorder_flushed >= 1.0:
            self.recorder.flush()  # a killed service loses at most a second of frames
            self._recorder_flushed = time.monotonic()
        stats = self.feed_stats
        if stats is not None:
            if time.monotonic() - self._feed_logged >= FEED_STATUS_LOG_S:
                self._log_feed("feed_status")
            venue = stats.venue
            self.metrics.feed_connected.labels(venue).set(1 if stats.state == "connected" else 0)
            self.metrics.feed_reconnects.labels(venue).set(stats.reconnects)
            if stats.clock_skew_ms is not None:
                self.metrics.feed_clock_skew.labels(venue).set(stats.clock_skew_ms / 1000)

    def _log_feed(self, what: str) -> None:
        assert self.feed_stats is not None  # noqa: S101  # only called with a feed
        assert self.feed_health is not None  # noqa: S101
        self._feed_logged = time.monotonic()
        stats = self.feed_stats.snapshot()
        log.info(
            what,
            venue=stats["venue"],
            state=stats["state"],
            frames=stats["frames"],
            connects=stats["connects"],
            reconnects=stats["reconnects"],
            reconnect_reasons=stats["reconnect_reasons"],
            clock_skew_ms=None
            if stats["clock_skew_ms"] is None
            else round(stats["clock_skew_ms"], 1),
            stale_symbols=self.feed_health.stale_symbols()[:20],
            feed_events=len(self.feed_events),
        )

    async def _engine_loop(self) -> None:
        queue = self.queue
        wait = HEALTH_CHECK_S if self.feed_health is not None else SNAPSHOT_CHECK_S
        next_check = yield_at = time.monotonic()
        while not (self.stopping.is_set() and queue.empty()):
            try:
                item = queue.get_nowait()  # a frame's ticks arrive together: no task per item
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    item = None
            if time.monotonic() >= next_check:
                await self._check_feed()
                next_check = time.monotonic() + HEALTH_CHECK_S
            if item is not None:
                emitted = self.engine.events_emitted
                try:
                    await self._apply(item)
                    if self.engine.events_emitted != emitted:
                        # an alert: let the sinks hand it to the socket before going on
                        for _ in range(ALERT_YIELDS):
                            await asyncio.sleep(0)
                        yield_at = time.monotonic() + YIELD_EVERY_S
                    elif time.monotonic() >= yield_at:
                        await asyncio.sleep(0)  # let the sockets be read and written
                        yield_at = time.monotonic() + YIELD_EVERY_S
                finally:
                    if item.line is not None:
                        self.replay_line = max(self.replay_line, item.line)
                    if item.handled is not None and not item.handled.done():
                        item.handled.set_result(None)
                self.metrics.queue_depth.set(queue.qsize())
            if self._snapshot_due():
                self._snapshot_in_background()
            self._report_sinks()

    def _snapshot_due(self) -> bool:
        """Every ``snapshot_interval_s``, once the journal since the last snapshot is worth it:
        a snapshot costs the whole book (about a second at 100,000 accounts), so a large, quiet
        book is not rewritten every interval for a few journal lines (restart time stays
        bounded: replaying the journal costs about what the snapshot would have)."""
        if time.monotonic() - self._last_snapshot < self.settings.state.snapshot_interval_s:
            return False
        if self._snapshot_writing is not None and not self._snapshot_writing.done():
            return False
        return self.store.journaled >= min(
            SNAPSHOT_JOURNAL_MAX, max(SNAPSHOT_JOURNAL_MIN, self.engine.position_count // 4)
        )

    def _snapshot_in_background(self) -> None:
        """Capture the state now; serialize and write it on a thread (the engine goes on)."""
        finish = self.store.begin_snapshot(self.engine, {"replay_line": self.replay_line})
        # the marks not journaled yet stay dirty: until the file is written, a restart restores
        # the previous snapshot, and the new journal must value its records at the same marks
        self._after_snapshot(keep_dirty_marks=True)
        self._snapshot_writing = asyncio.ensure_future(asyncio.to_thread(finish))
        self._snapshot_writing.add_done_callback(_log_snapshot_failure)

    def snapshot(self) -> None:
        self.store.snapshot(self.engine, {"replay_line": self.replay_line})
        self._after_snapshot(keep_dirty_marks=False)

    def _after_snapshot(self, *, keep_dirty_marks: bool) -> None:
        if not keep_dirty_marks:
            self._dirty_marks.clear()  # the written snapshot holds every mark
        self._last_snapshot = time.monotonic()
        self.metrics.snapshots.inc()

    def _report_sinks(self) -> None:
        if self.mqtt is not None:
            stats = self.mqtt.outbox.stats()
            self.metrics.outbox_depth.set(stats.depth)
            self.metrics.outbox_spilled.set(stats.spilled)
            self.metrics.mqtt_connected.set(1 if self.mqtt.connected else 0)

    # -- producers -----------------------------------------------------------------------------

    async def _put(self, item: Input) -> None:
        if item.receive_ns is not None:
            self._queued_feed_ticks += 1
        await self.queue.put(item)

    async def _replay_source(self, path: Path, speed: float | None) -> None:
        """Normalized records and ticks from a file, resuming after the last applied line."""
        resume = self.replay_line
        origin: tuple[int, float] | None = None
        for number, line in await asyncio.to_thread(lambda: list(read_lines(path))):
            if number <= resume:
                continue
            if self.stopping.is_set():
                return
            ts: int | None
            try:
                obj = decode(line)
                if type(obj) is dict and obj.get("type") == "tick":
                    symbol, mark, raw, ts = tick_fields(obj)
                    item = Input(
                        source="replay",
                        symbol=symbol,
                        mark=mark,
                        text=raw if isinstance(raw, str) else line,
                        ts=ts,
                        line=number,
                    )
                else:
                    record = parse_object(exact_numbers(obj, line))
                    item = Input(source="replay", record=record, line=number, raw=line)
                    ts = getattr(record, "ts", None)
            except RecordRefused as exc:
                self.metrics.rejected.labels("replay", exc.reason).inc()
                self.replay_line = max(self.replay_line, number)
                continue
            if speed and ts is not None:
                now = time.monotonic()
                if origin is None:
                    origin = (ts, now)
                due = origin[1] + (ts - origin[0]) / 1000.0 / speed
                if due > now:
                    await asyncio.sleep(due - now)
            await self._put(item)
        log.info("replay_source_finished", path=str(path))
        if self.settings.feed.exit_at_end:
            self.stop()  # the engine loop drains the queue before it stops

    async def _feed_source(self, spec: FeedSpec) -> None:
        """Marks from a venue's websocket: every frame through the venue's pure parser."""
        stats = self.feed_stats
        assert stats is not None  # noqa: S101  # made with the spec
        assert self.feed_health is not None  # noqa: S101
        venue = spec.venue
        parser = FrameParser(venue, price_source=self.settings.feed.price_source)
        if spec.symbols != "all":
            self.feed_health.watch(spec.symbols, time.time_ns())
        frames_counter = self.metrics.feed_frames.labels(venue)
        source = f"feed:{venue}"
        record_dir = self.settings.feed.record_dir
        if record_dir is not None:
            record_dir.mkdir(parents=True, exist_ok=True)
            self.recorder = Recorder(record_dir, prefix=venue)
        try:
            await self._consume_feed(spec, stats, parser, frames_counter, source)
        finally:
            if self.recorder is not None:
                self.recorder.close()

    async def _consume_feed(
        self,
        spec: FeedSpec,
        stats: FeedStats,
        parser: FrameParser,
        frames_counter: Any,
        source: str,
    ) -> None:
        venue = spec.venue
        recorder = self.recorder
        async for frame in frames(spec, stats=stats):
            frames_counter.inc()
            if recorder is not None:
                recorder.write(frame)
            parsed = parser.parse(frame.raw, frame.receive_ts_ns)
            for reason, detail in parsed.rejects:
                self.metrics.feed_rejects.labels(venue, reason).inc()
                log.warning("feed_frame_refused", venue=venue, reason=reason, detail=detail[:200])
            for tick in parsed.ticks:
                stats.observe_skew(tick.exchange_ts_ms, frame.receive_ts_ns)
                await self._put(
                    Input(
                        source=source,
                        symbol=tick.symbol,
                        mark=tick.mark,
                        text=tick.mark_text,
                        ts=tick.exchange_ts_ms,
                        receive_ns=frame.receive_ts_ns,
                    )
                )
            if self.stopping.is_set():
                return

    async def _hyperliquid_source(self, watch: HyperliquidWatch) -> None:
        """Contracts from the dexes' meta and snapshots of the watched accounts, polled from
        Hyperliquid's info API (see :mod:`liqmon.hyperliquid_watch`)."""
        async for record in watch.records():
            await self._put(Input(source="hyperliquid", record=record, raw=record_json(record)))
            if self.stopping.is_set():
                return

    async def _account_input(self) -> None:
        """Account records from the trading system over MQTT (see asyncapi.yaml)."""
        settings = self.settings.mqtt.client_settings()
        prefix = settings.prefix
        loop = asyncio.get_running_loop()

        async def handle(message: Received) -> None:
            item = self._account_item(message, prefix)
            if item is None:
                return
            item.handled = loop.create_future()
            await self._put(item)
            await item.handled  # acknowledged to the broker once journaled

        await subscribe(
            settings,
            [f"{prefix}/in/#"],
            handle,
            identifier=f"liqmon-{settings.instance}-in",
            persistent=True,
            raw=True,
        )

    def _account_item(self, message: Received, prefix: str) -> Input | None:
        topic = message.topic.removeprefix(f"{prefix}/in/")
        raw = message.payload
        try:
            if topic == "records":
                record = parse_line(raw)
            elif topic.startswith("binance/"):
                account = topic.removeprefix("binance/")
                record = parse_account_update(decode(raw), account)
            else:
                raise RecordRefused("unknown_topic", f"no input topic {message.topic}")
        except RecordRefused as exc:
            self._reject(Input(source="mqtt", raw=raw, topic=message.topic), exc)
            return None
        return Input(source="mqtt", record=record, raw=raw, topic=message.topic)

    # -- running -------------------------------------------------------------------------------

    def _readiness(self) -> str | None:
        if not self.health.restored:
            return "restoring state"
        if self.mqtt is not None and not self.mqtt.connected:
            return "not connected to the broker"
        if self.feed_stats is not None and self.feed_stats.state != "connected":
            return f"feed {self.feed_stats.venue} {self.feed_stats.state}"
        return None

    async def run(self, *, install_signals: bool = True) -> int:
        self._open_sinks()
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        try:
            async with asyncio.TaskGroup() as tasks:
                side: list[asyncio.Task[None]] = []
                if self.mqtt is not None:
                    tasks.create_task(self.mqtt.run())
                http = self.settings.http
                if http.enabled:
                    bound: list[int] = []
                    side.append(
                        tasks.create_task(
                            serve(
                                http.host,
                                http.port,
                                self.metrics,
                                self._readiness,
                                started=self._ready_http,
                                bound=bound,
                            )
                        )
                    )
                    await self._ready_http.wait()
                    self.http_port = bound[0] if bound else http.port
                await self.restore()
                side.extend(tasks.create_task(p) for p in self._producers())
                if (responder := self._shock_responder()) is not None:
                    side.append(tasks.create_task(responder.run(), name="shock-responder"))
                await self._engine_loop()
                for task in side:
                    task.cancel()
                if self.feed_stats is not None:
                    self._log_feed("feed_summary")
                if self._snapshot_writing is not None:  # its journals are still needed
                    await asyncio.wait([self._snapshot_writing])
                self.snapshot()
                for sink in self.sinks:
                    await sink.close()
        finally:
            if self.mqtt is not None:
                self.mqtt.outbox.close()  # its task has ended with the task group
            self.store.close()
        log.info("service_stopped")
        return 0

    def _producers(self) -> list[Coroutine[Any, Any, None]]:
        producers: list[Coroutine[Any, Any, None]] = []
        feed = self.settings.feed
        if feed.replay is not None:
            producers.append(self._replay_source(feed.replay, feed.replay_speed))
        if self.feed_spec is not None:
            producers.append(self._feed_source(self.feed_spec))
        if self.settings.mqtt.url and self.settings.mqtt.accounts_input:
            producers.append(self._account_input())
        if self.hyperliquid is not None:
            producers.append(self._hyperliquid_source(self.hyperliquid))
        return producers

    def _shock_responder(self) -> ShockResponder | None:
        """What-if requests answered from the book (see :mod:`liqmon.shock_mqtt`): the engine
        is only read, between two inputs of the engine loop (one event loop, one thread)."""
        mqtt = self.settings.mqtt
        if self.mqtt is None or not mqtt.answer_shocks or mqtt.protocol != "5":
            return None
        return ShockResponder(self.mqtt.settings, lambda: self.engine)

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        if not self.stopping.is_set():
            log.info("service_stopping")
            self.stopping.set()


def _log_snapshot_failure(future: asyncio.Future[None]) -> None:
    """A snapshot that could not be written is only a missed compaction: the journal since the
    previous one is kept, and the next snapshot tries again."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("state_snapshot_failed", error=str(exc))


def _margin_key(record: MarginRecord) -> tuple[str, str, str, str, int]:
    """Identifies a margin record, to recognise a redelivered one (identical content and ts)."""
    return (record.account, record.symbol, record.side, str(record.delta), record.ts)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(body), digest_size=10).hexdigest()


def run_service(settings: ServiceSettings) -> int:
    """The ``liqmon run`` entry point. A feed that cannot work (refused by the venue, a bad
    URL) ends the service with status 1 after logging why; the journal holds every applied
    account record, so nothing is lost."""
    status = 1
    try:
        status = asyncio.run(Service(settings).run())
    except* FeedFailed as group:
        for exc in group.exceptions:
            log.error("service_failed", reason="feed_failed", detail=str(exc))
    return status
