"""The MQTT sink: alerts, state and status on a broker, with nothing lost.

This module and :mod:`alerts.link` (one connection that subscribes and publishes, for request /
response) are the only ones that import aiomqtt (and paho, for MQTT v5 properties).

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

Reconnection uses capped exponential backoff with full jitter and a minimum interval
(:func:`reconnect_delay`); back-pressure (outbox depth, spilled count, oldest unsent age) is
logged while a backlog exists and reported by :meth:`MqttSink.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
import orjson
import structlog
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from alerts.jsonl import encode
from alerts.outbox import OutboundMessage, Outbox, OutboxStats
from alerts.sink import OutputEvent
from alerts.topics import (
    DEFAULT_PREFIX,
    event_topic,
    feed_event_topic,
    service_topic,
    state_topic,
    status_topic,
)
from feeds.health import FeedRecovered, FeedStalled
from monitor.contracts import Contract
from monitor.engine import Engine
from monitor.errors import ConfigError
from monitor.events import (
    EngineEvent,
    EntityRef,
    MarginStateChanged,
    MarginStateCleared,
    PositionView,
    assets_payload,
)
from monitor.notices import InputRejected

log = structlog.get_logger("liqmon.mqtt")

CONTENT_TYPE = "application/json"
IN_FLIGHT = 64
"""Alerts published at once, their acknowledgements awaited together."""
STATES_IN_FLIGHT = 16
"""Retained states being published at once, beside the alerts."""
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""Small packets leave at once: with Nagle's algorithm a publish (or an acknowledgement) can
wait for the peer's delayed ACK of the previous one, 40 ms on Linux."""


class MqttSettings(BaseModel):
    """Where and how to publish. Build from a URL with :func:`settings_from_url`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    prefix: str = DEFAULT_PREFIX
    instance: str = "liqmon"
    event_expiry_s: int | None = Field(default=86_400, ge=1)
    state_interval_ms: int = Field(default=1_000, ge=0)
    publish_timeout_s: float = Field(default=5.0, gt=0)
    keepalive_s: int = Field(default=30, ge=5)

    def display_url(self) -> str:
        """The URL with the password masked: the only form that may appear in logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = (
            f"{self.username}:***@"
            if self.password
            else (f"{self.username}@" if self.username else "")
        )
        return f"{scheme}://{user}{self.host}:{self.port}"


def settings_from_url(url: str, **options: Any) -> MqttSettings:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``; ``options`` set the rest."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            "mqtt: expected mqtt://[user[:password]@]host[:port] or mqtts://..., got a URL "
            f"with scheme {parts.scheme or 'none'!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError("mqtt: the port in the URL is not a number between 1 and 65535") from None
    tls = parts.scheme == "mqtts"
    return MqttSettings(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
        tls=tls,
        **options,
    )


def reconnect_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    minimum: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0, 1, 2, ...): full jitter over an
    exponentially growing, capped window, never less than ``minimum``."""
    window = min(cap, base * 2.0**attempt)
    return max(minimum, window * rand())


def tls_context_for(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` connection (``None`` for plain ``mqtt://``)."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    return context


@dataclass(frozen=True, slots=True)
class _State:
    topic: str
    payload: bytes  # empty: clear the retained state
    message_id: str


PositionExtras = Callable[[EntityRef, PositionView], Mapping[str, Any]]
"""Optional fields a venue adapter adds to a position of the retained state (Hyperliquid's
``exchange_liquidation_price``)."""
NotionalOf = Callable[[str, float, float], float | None]
"""``(symbol, qty, mark) -> notional`` in the margin asset, or ``None`` for an unknown symbol."""


def contract_notional(contract_of: Callable[[str], Contract | None]) -> NotionalOf:
    """The notional of a position at a mark, from its contract: ``|q|·CS·P`` (linear) or
    ``|q|·CS/P`` (inverse), in the margin asset (what the engine's tiers are applied to)."""

    def notional(symbol: str, qty: float, mark: float) -> float | None:
        contract = contract_of(symbol)
        if contract is None or not mark > 0:
            return None
        size = abs(qty) * contract.contract_size_f
        return size / mark if contract.is_inverse else size * mark

    return notional


def engine_notional(engine: Callable[[], Engine]) -> NotionalOf:
    """:func:`contract_notional` with the contracts of ``engine()`` (a getter: the service
    replaces its engine on restore)."""

    def contract_of(symbol: str) -> Contract | None:
        book = engine().book
        sid = book.symbol_names.ids.get(symbol)
        return None if sid is None else book.contracts[sid]

    return contract_notional(contract_of)


def _positions(
    entity: EntityRef,
    positions: tuple[PositionView, ...],
    extras: PositionExtras | None = None,
    notional_of: NotionalOf | None = None,
) -> list[dict[str, Any]]:
    out = [
        {
            "symbol": p.symbol,
            "side": p.side,
            "qty": p.qty,
            "entry": p.entry,
            "mark": p.mark,
            "liquidation_price": p.liquidation_price,
            "bankruptcy_price": p.bankruptcy_price,
            "mark_ts": p.mark_ts,
            "mark_stale": p.mark_stale,
            "funding": p.funding,
        }
        for p in positions
    ]
    if notional_of is not None:
        for body, p in zip(out, positions, strict=True):
            body["notional"] = notional_of(p.symbol, p.qty, p.mark)
    if extras is not None:
        for body, position in zip(out, positions, strict=True):
            body.update(extras(entity, position))
    return out


class PackedProperties(Properties):
    """MQTT 5 PUBLISH properties packed by :func:`publish_properties`: paho assembles them
    attribute by attribute (about 35 µs a message, more than the rest of a publish); paho only
    ever calls :meth:`pack` on the properties of a message it sends."""

    packed: bytes

    def __init__(self, packed: bytes) -> None:
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "packed", packed)

    def pack(self) -> bytes:
        return self.packed

    def __str__(self) -> str:
        return f"PackedProperties({self.packed!r})"


def publish_properties(message_id: str, expiry_s: int | None) -> bytes:
    """The packed properties of a PUBLISH: content type, the event id as the user property
    ``id`` (when there is one) and the message expiry (when set), in identifier order as paho
    packs them, preceded by their length."""
    body = bytearray()
    if expiry_s is not None:
        body += b"\x02" + expiry_s.to_bytes(4, "big")
    body += b"\x03" + _utf8(CONTENT_TYPE)
    if message_id:
        body += b"\x26" + _utf8("id") + _utf8(message_id)
    return _variable_int(len(body)) + bytes(body)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _variable_int(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def state_payload(
    event: MarginStateChanged,
    extras: PositionExtras | None = None,
    notional_of: NotionalOf | None = None,
) -> dict[str, Any]:
    """The retained state message of an entity (see ``alerts.schema.StatePayload``); with
    ``notional_of``, each position also carries its ``notional``; ``extras`` adds optional
    fields to its positions."""
    entity = event.entity
    body: dict[str, Any] = {
        "ts": event.ts,
        "account": entity.account,
        "scope": entity.scope,
        "asset": entity.asset,
    }
    if entity.scope == "isolated":
        body["symbol"] = entity.symbol
        body["side"] = entity.side
    body.update(
        level=event.level,
        margin_ratio=event.margin_ratio,
        margin_balance=event.margin_balance,
        maintenance_margin=event.maintenance_margin,
        liquidating=event.liquidating,
        positions=_positions(entity, event.positions, extras, notional_of),
    )
    if event.assets:
        body["assets"] = assets_payload(event.assets)
    digest = hashlib.blake2b(orjson.dumps(body), digest_size=10).hexdigest()
    return {"id": digest, **body}


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
        self._states: dict[EntityRef, _State] = {}
        self._state_tasks: dict[EntityRef, asyncio.Task[None]] = {}
        self._state_queue: list[tuple[float, int, EntityRef]] = []  # (due, order, entity)
        self._state_order = count()
        self._state_failure: Exception | None = None
        self._state_sent_at: dict[EntityRef, float] = {}
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
            if isinstance(event, FeedStalled | FeedRecovered):
                topic = feed_event_topic(prefix, event.kind, event.venue, event.symbol)
            elif isinstance(event, InputRejected):
                topic = f"{prefix}/rejects"
            else:
                topic = service_topic(prefix, event.kind, self.settings.instance)
            self._message(topic, event.to_payload())
        elif isinstance(event, MarginStateChanged):
            payload = state_payload(event, self._position_extras, self._notional_of)
            self._keep_state(
                event.entity,
                _State(state_topic(prefix, event.entity), orjson.dumps(payload), payload["id"]),
            )
        elif isinstance(event, MarginStateCleared):
            self._keep_state(event.entity, _State(state_topic(prefix, event.entity), b"", ""))
        else:
            self.outbox.append(
                event_topic(prefix, event.kind, event.entity),
                encode(event).encode(),
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

    def _keep_state(self, entity: EntityRef, state: _State) -> None:
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
        ts = int(self._clock() * 1000)
        body = {
            "ts": ts,
            "status": status,
            "instance": self.settings.instance,
            "version": self._version,
            "started_at": self._started_ms,
        }
        digest = hashlib.blake2b(orjson.dumps(body), digest_size=10).hexdigest()
        return orjson.dumps({"id": digest, **body})

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        topic = status_topic(s.prefix, s.instance)
        will = aiomqtt.Will(
            topic,
            self._status("offline"),
            qos=1,
            retain=True,
            properties=self._properties("", None),
        )
        tls_context = tls_context_for(s)
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            identifier=f"liqmon-{s.instance}",
            protocol=(
                aiomqtt.ProtocolVersion.V5 if s.protocol == "5" else aiomqtt.ProtocolVersion.V311
            ),
            will=will,
            keepalive=s.keepalive_s,
            timeout=s.publish_timeout_s,
            tls_context=tls_context,
            max_inflight_messages=IN_FLIGHT + STATES_IN_FLIGHT,
            socket_options=NO_DELAY,
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
                    await self._send(
                        client,
                        status_topic(s.prefix, s.instance),
                        self._status("online"),
                        retain=True,
                    )
                    await self._pump(client)
                    await self._send(
                        client,
                        status_topic(s.prefix, s.instance),
                        self._status("offline"),
                        retain=True,
                    )
                    self.connected = False
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                if self._closing and time.monotonic() >= self._deadline:
                    log.warning("mqtt_gave_up_draining", **self._backlog())
                    return
                delay = reconnect_delay(attempt, rand=self._rand)
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
        while queue and room > 0 and (queue[0][0] <= now or self._closing):
            _, _, entity = heappop(queue)
            state = self._states.get(entity)
            if state is None or entity in self._state_tasks:
                continue  # scheduled again by the publish in flight when it ends
            room -= 1
            self._state_tasks[entity] = asyncio.create_task(self._send_state(client, entity, state))
        return queue[0][0] if queue else None

    async def _send_state(self, client: aiomqtt.Client, entity: EntityRef, state: _State) -> None:
        sent = False
        try:
            await self._send(
                client, state.topic, state.payload, retain=True, message_id=state.message_id
            )
            sent = True
        except Exception as exc:  # the pump re-raises it (and reconnects)
            if self._state_failure is None:
                self._state_failure = exc
        finally:  # also when cancelled (the connection is gone)
            self._state_tasks.pop(entity, None)
            if sent:
                if self._states.get(entity) is state:
                    del self._states[entity]
                if state.payload:
                    self._state_sent_at[entity] = time.monotonic()
                else:
                    self._state_sent_at.pop(entity, None)
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


# ---------------------------------------------------------------------------------------------
# Subscribing (liqmon tail, the demo's terminal)


@dataclass(frozen=True, slots=True)
class Received:
    """A message as a subscriber sees it: the topic, the decoded JSON body (``None`` for an
    empty retained message, which clears a state) and whether the broker replayed it from its
    retained store."""

    topic: str
    body: dict[str, Any] | None
    retained: bool
    payload: bytes = b""
    response_topic: str | None = None
    """MQTT 5 request/response: where the sender wants an answer (see :mod:`alerts.link`)."""
    correlation_data: bytes | None = None


SESSION_EXPIRY_S = 7 * 86_400
"""How long the broker keeps a persistent input session (and its queued messages) while liqmon
is away."""


async def subscribe(
    settings: MqttSettings,
    filters: list[str],
    on_message: Callable[[Received], Awaitable[None] | None],
    *,
    ready: asyncio.Event | None = None,
    identifier: str | None = None,
    persistent: bool = False,
    raw: bool = False,
) -> None:
    """Subscribe to ``filters`` (QoS 1) and call ``on_message`` for each message (awaiting it
    when it is a coroutine), reconnecting with backoff until cancelled. ``ready`` is set once
    the first subscription is in place.

    ``persistent`` (needs ``identifier``): a session the broker keeps across disconnects and
    restarts of liqmon, and messages are acknowledged only once ``on_message`` returned — a
    message liqmon did not finish handling is delivered again. (aiomqtt does not expose manual
    acknowledgement; the paho client under it does.)

    Without ``raw``, bodies are decoded JSON objects and anything else is skipped with a
    warning; with ``raw``, ``Received.body`` is ``None`` and ``Received.payload`` the bytes.
    """
    attempt = 0
    s = settings
    while True:
        connect_properties = None
        if persistent and s.protocol == "5":
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = SESSION_EXPIRY_S
        try:
            client = aiomqtt.Client(
                s.host,
                s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password else None,
                identifier=identifier,
                protocol=(
                    aiomqtt.ProtocolVersion.V5
                    if s.protocol == "5"
                    else aiomqtt.ProtocolVersion.V311
                ),
                keepalive=s.keepalive_s,
                timeout=s.publish_timeout_s,
                clean_session=(False if persistent and s.protocol != "5" else None),
                clean_start=(
                    False if persistent and s.protocol == "5" else MQTT_CLEAN_START_FIRST_ONLY
                ),
                properties=connect_properties,
                socket_options=NO_DELAY,
            )
            if persistent:
                client._client.manual_ack_set(True)  # see the docstring
            async with client:
                for topic_filter in filters:
                    await client.subscribe(topic_filter, qos=1)
                attempt = 0
                if ready is not None:
                    ready.set()
                async for message in client.messages:
                    payload = message.payload
                    data = (
                        bytes(payload)
                        if isinstance(payload, bytes | bytearray)
                        else str(payload or "").encode()
                    )
                    body: dict[str, Any] | None = None
                    if data and not raw:
                        try:
                            decoded = orjson.loads(data)
                        except orjson.JSONDecodeError:
                            decoded = None
                        if not isinstance(decoded, dict):
                            log.warning("mqtt_message_not_json", topic=str(message.topic))
                            if persistent:
                                client._client.ack(message.mid, message.qos)
                            continue
                        body = decoded
                    result = on_message(
                        Received(str(message.topic), body, bool(message.retain), data)
                    )
                    if result is not None:
                        await result
                    if persistent:
                        client._client.ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            delay = reconnect_delay(attempt)
            attempt += 1
            log.warning(
                "mqtt_subscriber_disconnected",
                broker=s.display_url(),
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)
