"""The MQTT publisher: alerts, state and status on a broker, with nothing lost.

This module, :mod:`alerts.link` (one connection that subscribes and publishes, for request /
response) and :mod:`feeds.mqtt_input` (the subscriber) are the only ones that talk to a broker;
what they send is encoded by :mod:`alerts.encoding`, where they connect is
:mod:`alerts.mqtt_settings`.

* **Alerts** (QoS 1, not retained) are appended to the durable :class:`~alerts.outbox.Outbox`
  first, then published in order, up to :data:`IN_FLIGHT` awaiting their acknowledgements
  together, each removed only once the broker acknowledged it and every message before it.
  A publish that fails or times out is treated as unknown and sent again (with whatever
  followed it) after reconnecting: delivery is at least once, and subscribers de-duplicate by
  ``id``. States are published beside the alerts by tasks of their own: an alert never waits
  for a state's acknowledgement.
* **State** (QoS 1, retained) is coalesced per entity: only the latest state is kept, published
  at most every ``state_interval_ms`` per entity; a gone entity gets an empty retained message.
* **Status** (QoS 1, retained): ``online`` on every connect, ``offline`` on a clean shutdown, and
  ``offline`` as the Last Will when liqmon dies without one.
* On MQTT v5 every message carries its content type and the event id as a user property; alerts
  may carry a message expiry. Every payload also carries ``id`` and ``ts`` in its body.

Reconnection waits :func:`feeds.backoff.reconnect_delay` (capped exponential backoff with full
jitter and a minimum interval, :data:`~feeds.backoff.MQTT_BACKOFF`). Broker errors
(``aiomqtt.MqttError``) never leave :meth:`MqttSink.run`: they end a connection, which is made
again. Back-pressure (outbox depth, spilled count, oldest unsent age) is logged while a backlog
exists and reported by :meth:`MqttSink.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import count
from typing import Any

import aiomqtt
import orjson
import structlog
from paho.mqtt.properties import Properties

from alerts.encoding import (
    NotionalOf,
    PackedProperties,
    PositionExtras,
    StateMessage,
    event_message,
    notice_message,
    publish_properties,
    state_message,
    status_payload,
)
from alerts.mqtt_settings import MqttSettings, aiomqtt_client
from alerts.outbox import OutboundMessage, Outbox, OutboxStats
from alerts.sink import OutputEvent
from alerts.topics import status_topic
from feeds.backoff import MQTT_BACKOFF, reconnect_delay
from monitor.events import EngineEvent, EntityRef, MarginStateChanged, MarginStateCleared

log = structlog.get_logger("liqmon.mqtt")

IN_FLIGHT = 64
"""Alerts published at once, their acknowledgements awaited together."""
STATES_IN_FLIGHT = 16
"""Retained states being published at once, beside the alerts."""


class MqttSink:
    """See the module docstring. Run :meth:`run` in the service's task group; :meth:`close`
    makes it drain (within ``drain_timeout_s``), publish ``offline`` and return."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        *,
        version: str,
        drain_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        position_extras: PositionExtras | None = None,
        notional_of: NotionalOf | None = None,
    ) -> None:
        self.settings = settings
        self._position_extras = position_extras
        self._notional_of = notional_of
        self.outbox = outbox
        self._version = version
        self._drain_timeout = drain_timeout_s
        self._clock = clock
        self._rand = rand
        self._started_ms = int(clock() * 1000)
        self._wake = asyncio.Event()
        self._closing = False
        self._deadline = float("inf")
        self._states: dict[EntityRef, MarginStateChanged] = {}
        """The latest unpublished state of each entity, encoded when it is sent (a state
        replaced before its turn costs no encoding)."""
        self._state_tasks: dict[EntityRef, asyncio.Task[None]] = {}
        self._state_queue: list[tuple[float, int, EntityRef]] = []  # (due, order, entity)
        self._state_order = count()
        self._state_failure: Exception | None = None
        self._state_sent_at: dict[EntityRef, float] = {}
        self._state_tokens = float(STATES_IN_FLIGHT)
        self._state_tokens_at = time.monotonic()
        self._drained = asyncio.Event()
        self.connected = False
        self.reconnects = 0
        self.published = 0
        self.states_published = 0
        self.states_coalesced = 0
        self._last_backlog_log = 0.0
        self.on_delivered: Callable[[list[OutboundMessage]], None] | None = None
        """Called with each run of messages the broker acknowledged (for latency figures)."""

    # -- the sink protocol ---------------------------------------------------------------------

    async def publish(self, event: OutputEvent) -> None:
        prefix = self.settings.prefix
        if not isinstance(event, EngineEvent):  # a feed health event or a notice
            self._message(*notice_message(prefix, self.settings.instance, event))
        elif isinstance(event, MarginStateChanged):
            self._keep_state(event.entity, event)
        elif isinstance(event, MarginStateCleared):
            self._clear_state(event)
        else:
            topic, payload = event_message(prefix, event)
            self.outbox.append(
                topic,
                payload,
                qos=1,
                retain=False,
                message_id=event.id,
                expiry_s=self.settings.event_expiry_s,
                mark="alert",
            )
        self._drained.clear()
        self._wake.set()

    def last_alert_id(self) -> str | None:
        """The id of the last alert in the outbox (before a restart too): the sink's
        exactly-once mark."""
        return self.outbox.marks.get("alert")

    def _message(self, topic: str, body: dict[str, Any]) -> None:
        """A feed health event or a notice through the outbox: QoS 1, not retained, in order
        with the alerts. ``body`` must carry ``id``."""
        self.outbox.append(
            topic,
            orjson.dumps(body),
            qos=1,
            retain=False,
            message_id=str(body["id"]),
            expiry_s=self.settings.event_expiry_s,
        )
        self._drained.clear()
        self._wake.set()

    def _clear_state(self, event: MarginStateCleared) -> None:
        """A gone entity: its empty retained message goes through the outbox, in order with the
        alerts and as durable as they are (a clear lost in a crash would leave the broker
        showing an entity that no longer exists). A state of it not yet sent is dropped, one
        about to be sent is stopped; one already written to the socket precedes the clear."""
        entity = event.entity
        self._states.pop(entity, None)
        task = self._state_tasks.pop(entity, None)
        if task is not None:
            task.cancel()
        self._state_sent_at.pop(entity, None)
        topic = state_message(self.settings.prefix, event).topic
        self.outbox.append(topic, b"", qos=1, retain=True, message_id="", expiry_s=None)

    def _keep_state(self, entity: EntityRef, state: MarginStateChanged) -> None:
        if entity in self._states:
            self.states_coalesced += 1
        elif entity not in self._state_tasks:  # a finishing publish schedules its successor
            self._schedule_state(entity)
        self._states[entity] = state

    def _schedule_state(self, entity: EntityRef) -> None:
        """Queue ``entity``'s pending state for when its interval since the last publish ends."""
        at = self._state_sent_at.get(entity, 0.0) + self.settings.state_interval_ms / 1000.0
        heappush(self._state_queue, (at, next(self._state_order), entity))

    async def flush(self) -> None:
        """Wait until everything accepted so far reached the broker (or the drain deadline)."""
        if self.outbox.depth == 0 and not self._states:
            return
        self._wake.set()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout=self._drain_timeout)
        except TimeoutError:
            log.warning("mqtt_flush_timed_out", **self._backlog())

    async def close(self) -> None:
        """Drain what is pending (bounded by the drain timeout), then stop :meth:`run`."""
        self._closing = True
        self._deadline = time.monotonic() + self._drain_timeout
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        backlog = self.outbox.stats()
        return {
            "broker": self.settings.display_url(),
            "connected": self.connected,
            "reconnects": self.reconnects,
            "published": self.published,
            "states_published": self.states_published,
            "states_coalesced": self.states_coalesced,
            "outbox_depth": backlog.depth,
            "outbox_spilled": backlog.spilled,
            "oldest_unsent_age_s": backlog.oldest_unsent_age_s,
        }

    # -- the connection loop -------------------------------------------------------------------

    def _properties(self, message_id: str, expiry_s: int | None) -> Properties | None:
        if self.settings.protocol != "5":
            return None
        return PackedProperties(publish_properties(message_id, expiry_s))

    def _status(self, status: str) -> bytes:
        return status_payload(
            status,
            ts_ms=int(self._clock() * 1000),
            instance=self.settings.instance,
            version=self._version,
            started_ms=self._started_ms,
        )

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        will = aiomqtt.Will(
            status_topic(s.prefix, s.instance),
            self._status("offline"),
            qos=1,
            retain=True,
            properties=self._properties("", None),
        )
        client = aiomqtt_client(
            s,
            identifier=f"liqmon-{s.instance}",
            will=will,
            max_inflight_messages=IN_FLIGHT + STATES_IN_FLIGHT,
        )
        client.pending_calls_threshold = 2 * IN_FLIGHT  # its warning is for leaked calls
        return client

    async def run(self) -> None:
        """Connect, publish, reconnect on failure; return once closed and drained (or out of
        time, leaving what is left in the outbox for the next start)."""
        attempt = 0
        s = self.settings
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    if attempt:
                        self.reconnects += 1
                    attempt = 0
                    log.info("mqtt_connected", broker=s.display_url(), instance=s.instance)
                    status = status_topic(s.prefix, s.instance)
                    await self._send(client, status, self._status("online"), retain=True)
                    await self._pump(client)
                    await self._send(client, status, self._status("offline"), retain=True)
                    self.connected = False
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                if self._closing and time.monotonic() >= self._deadline:
                    log.warning("mqtt_gave_up_draining", **self._backlog())
                    return
                delay = reconnect_delay(attempt, MQTT_BACKOFF, self._rand)
                attempt += 1
                log.warning(
                    "mqtt_disconnected",
                    broker=s.display_url(),
                    error=str(exc),
                    retry_in_s=round(delay, 3),
                    **self._backlog(),
                )
                await self._sleep(delay)
            finally:
                self.outbox.persist()

    async def _sleep(self, seconds: float) -> None:
        if self._closing:
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        await asyncio.sleep(seconds)

    async def _send(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        *,
        retain: bool,
        message_id: str = "",
        expiry_s: int | None = None,
    ) -> None:
        await client.publish(
            topic,
            payload,
            qos=1,
            retain=retain,
            properties=self._properties(message_id, expiry_s),
            timeout=self.settings.publish_timeout_s,
        )

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish alerts in order, and due states beside them; return when closing and nothing
        is left.

        Up to :data:`IN_FLIGHT` alerts are published at once (QoS 1 acknowledgements are
        awaited together, not one round trip each); the client sends them in order, and the
        outbox is acknowledged up to the last message of the unbroken prefix the broker
        confirmed. States are published by tasks of their own (at most
        :data:`STATES_IN_FLIGHT`, one per entity at a time), so an alert never waits for a
        state's acknowledgement.
        """
        try:
            while True:
                if self._state_failure is not None:
                    failure, self._state_failure = self._state_failure, None
                    raise failure
                messages = self.outbox.pending(IN_FLIGHT)
                if messages:
                    await self._send_in_order(client, messages)
                    continue
                next_due = self._start_due_states(client)
                if not self._states:
                    self._drained.set()
                    if self._closing:
                        return
                self._wake.clear()
                timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
                if self._closing:
                    remaining = max(0.0, self._deadline - time.monotonic())
                    timeout = remaining if timeout is None else min(timeout, remaining)
                    if remaining == 0.0:
                        log.warning("mqtt_drain_deadline", **self._backlog())
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        finally:
            await self._cancel_state_publishes()

    async def _cancel_state_publishes(self) -> None:
        """Stop the state publishes in flight (the connection is gone or closing); their states
        stay pending, due at once on the next connection."""
        tasks = dict(self._state_tasks)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for entity in tasks:  # a task cancelled before it ran never reached its ``finally``
            if self._state_tasks.pop(entity, None) is not None and entity in self._states:
                heappush(self._state_queue, (0.0, next(self._state_order), entity))
        self._state_failure = None  # it ended that connection; the next one starts clean

    async def _send_in_order(self, client: aiomqtt.Client, messages: list[OutboundMessage]) -> None:
        """Publish ``messages`` concurrently (started in order) and acknowledge, in the outbox,
        every message up to the first failure; re-raise that failure."""
        results = await asyncio.gather(
            *(
                self._send(
                    client,
                    message.topic,
                    message.payload,
                    retain=message.retain,
                    message_id=message.message_id,
                    expiry_s=message.expiry_s,
                )
                for message in messages
            ),
            return_exceptions=True,
        )
        confirmed = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            confirmed += 1
        if confirmed:
            self.outbox.ack(messages[confirmed - 1].seq)
            self.published += confirmed
            if self.on_delivered is not None:
                self.on_delivered(messages[:confirmed])
            self._log_backlog()
        if confirmed < len(results):
            failure = results[confirmed]
            assert isinstance(failure, BaseException)  # noqa: S101  # found above
            raise failure

    def _start_due_states(self, client: aiomqtt.Client) -> float | None:
        """Start publishing the pending states that are due (as many as
        :data:`STATES_IN_FLIGHT` allows; all are due when closing); return when the next one
        falls due (monotonic), or ``None``. A finishing publish wakes the pump too. The queue is
        ordered by due time: a call costs the states it starts, not the states pending."""
        queue = self._state_queue
        now = time.monotonic()
        room = STATES_IN_FLIGHT - len(self._state_tasks)
        if room <= 0:
            return None  # the next publish to finish wakes the pump
        rate = self.settings.state_rate
        tokens = min(
            float(STATES_IN_FLIGHT), self._state_tokens + (now - self._state_tokens_at) * rate
        )
        self._state_tokens_at = now
        if not self._closing:  # the budget: at most ``state_rate`` states a second
            if tokens < 1.0:
                self._state_tokens = tokens
                if not queue:
                    return None
                return max(queue[0][0], now + (1.0 - tokens) / rate)
            room = min(room, int(tokens))
        started = 0
        while queue and room > 0 and (queue[0][0] <= now or self._closing):
            _, _, entity = heappop(queue)
            event = self._states.get(entity)
            if event is None or entity in self._state_tasks:
                continue  # scheduled again by the publish in flight when it ends
            room -= 1
            started += 1
            state = state_message(
                self.settings.prefix, event, self._position_extras, self._notional_of
            )
            self._state_tasks[entity] = asyncio.create_task(
                self._send_state(client, entity, event, state)
            )
        self._state_tokens = max(0.0, tokens - started)
        return queue[0][0] if queue else None

    @property
    def states_pending(self) -> int:
        """Retained states waiting for their turn (see ``state_rate``)."""
        return len(self._states)

    async def _send_state(
        self,
        client: aiomqtt.Client,
        entity: EntityRef,
        event: MarginStateChanged,
        state: StateMessage,
    ) -> None:
        sent = False
        try:
            await self._send(
                client, state.topic, state.payload, retain=True, message_id=state.message_id
            )
            sent = True
        except Exception as exc:  # the pump re-raises it (and reconnects)
            if self._state_failure is None:
                self._state_failure = exc
        finally:  # also when cancelled (the connection is gone, or the entity was cleared)
            if self._state_tasks.get(entity) is asyncio.current_task():
                del self._state_tasks[entity]
            if sent:
                if self._states.get(entity) is event:
                    del self._states[entity]
                self._state_sent_at[entity] = time.monotonic()
                self.states_published += 1
            if entity in self._states:  # a newer state came meanwhile, or this one failed
                if sent:
                    self._schedule_state(entity)
                else:
                    heappush(self._state_queue, (0.0, next(self._state_order), entity))
            self._wake.set()

    def _backlog(self) -> dict[str, Any]:
        stats: OutboxStats = self.outbox.stats()
        return {
            "outbox_depth": stats.depth,
            "outbox_spilled": stats.spilled,
            "oldest_unsent_age_s": None
            if stats.oldest_unsent_age_s is None
            else round(stats.oldest_unsent_age_s, 3),
            "states_pending": len(self._states),
        }

    def _log_backlog(self) -> None:
        now = time.monotonic()
        if self.outbox.depth > 1000 and now - self._last_backlog_log > 10.0:
            self._last_backlog_log = now
            log.info("mqtt_backlog", **self._backlog())
