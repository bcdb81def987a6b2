"""Reading MQTT: the account input of ``liqmon run``, and every subscriber (``liqmon tail``,
the demo's terminal).

:func:`subscribe` subscribes to filters at QoS 1, hands each message to a handler as a
:class:`Received`, and reconnects with :func:`feeds.backoff.reconnect_delay` until cancelled.

**Acknowledgement.** A QoS 1 message is acknowledged to the broker (its PUBACK sent) only after
the handler returned for it, and messages are handled one at a time, in arrival order, so
PUBACKs leave in the order the messages came (as MQTT requires). A message whose handler has
not returned when the connection is lost, the handler raises, the task is cancelled or the
process dies (``kill -9`` included) is not acknowledged: on a **persistent** session the broker
still holds it and delivers it again, flagged as a duplicate, when the same client id
reconnects — before any later message. ``liqmon run``'s handler returns once the record is
journaled, so an account message is either in the journal or still at the broker: never lost,
possibly applied twice (the records set values, and a redelivered ``margin`` is recognised).
Messages acknowledged are never delivered again; delivery is *at least once*.

A persistent session (``persistent=True``, with a fixed ``identifier``) is MQTT 5 *clean start
false* with a *session expiry* of :data:`SESSION_EXPIRY_S`, or MQTT 3.1.1 *clean session false*:
the broker keeps the subscriptions and queues QoS 1 messages while liqmon is away, for as long
as its own limits allow (Mosquitto: ``max_queued_messages``, and a persistence file to survive
its own restart).

**Why paho, not aiomqtt, here.** aiomqtt 2.5 (the client the publisher and the link use) has no
public way to delay an acknowledgement: its message callback only puts the message on its queue,
and paho sends the PUBACK as soon as that callback returns, that is on *arrival*, before the
message is even taken from ``client.messages`` (a known limitation of aiomqtt, open upstream
when this was written; see docs/choices.md). Every message in that queue, and the one being
handled, would be lost in a crash. So this module drives a paho-mqtt client (aiomqtt's own
transport, a declared dependency of liqmon) through paho's *public* API only:
``Client(manual_ack=True)`` and :meth:`paho.mqtt.client.Client.ack`, and paho's documented
external event loop hooks (``on_socket_open`` / ``on_socket_register_write`` / ... with
``loop_read``, ``loop_write``, ``loop_misc``) on the running asyncio loop. A connection failure
is a :class:`~monitor.errors.BrokerError` inside this module and is retried; :func:`subscribe`
itself only ends by cancellation or by an exception of the handler."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.mqtt_settings import NO_DELAY, MqttSettings, tls_context_for
from feeds.backoff import MQTT_BACKOFF, reconnect_delay
from monitor.errors import BrokerError, MalformedRecord

log = structlog.get_logger("liqmon.mqtt")

SESSION_EXPIRY_S = 7 * 86_400
"""How long the broker keeps a persistent input session (and its queued messages) while liqmon
is away."""


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


def json_body(data: bytes) -> dict[str, Any] | None:
    """The JSON object of a payload, ``None`` for an empty one; a
    :class:`~monitor.errors.MalformedRecord` (``invalid_json``, ``not_an_object``) else."""
    if not data:
        return None
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord("invalid_json", str(exc)[:120]) from None
    if not isinstance(decoded, dict):
        raise MalformedRecord("not_an_object", f"a JSON {type(decoded).__name__}")
    return decoded


@dataclass(slots=True)
class SubscriptionStatus:
    """What a :func:`subscribe` loop is doing, for readiness checks and metrics."""

    subscribed: bool = False
    """Connected, with every filter acknowledged by the broker."""
    connections: int = 0
    received: int = 0
    acknowledged: int = 0
    last_error: str = ""


async def subscribe(
    settings: MqttSettings,
    filters: list[str],
    on_message: Callable[[Received], Awaitable[None] | None],
    *,
    ready: asyncio.Event | None = None,
    identifier: str | None = None,
    persistent: bool = False,
    raw: bool = False,
    status: SubscriptionStatus | None = None,
) -> None:
    """Subscribe to ``filters`` (QoS 1) and call ``on_message`` for each message (awaiting it
    when it is a coroutine), reconnecting with backoff until cancelled. ``ready`` is set once
    the first subscription is in place; ``status`` follows every connection.

    ``persistent`` (needs ``identifier``): a session the broker keeps across disconnects and
    restarts of liqmon. Every QoS 1 message is acknowledged only once ``on_message`` returned
    for it (see the module docstring).

    Without ``raw``, bodies are decoded JSON objects and anything else is skipped with a
    warning (and acknowledged); with ``raw``, ``Received.body`` is ``None`` and
    ``Received.payload`` the bytes.
    """
    if persistent and not identifier:
        raise ValueError("a persistent session needs an identifier")
    status = status if status is not None else SubscriptionStatus()
    attempt = 0
    while True:
        try:
            async with _Connection(settings, identifier or "", persistent=persistent) as link:
                await link.subscribe(filters)
                status.subscribed = True
                status.connections += 1
                attempt = 0
                if ready is not None:
                    ready.set()
                async for message in link.messages():
                    status.received += 1
                    received = _received(message, raw)
                    if received is None:
                        log.warning("mqtt_message_not_json", topic=_topic(message))
                    else:
                        result = on_message(received)
                        if result is not None:
                            await result
                    if link.ack(message):
                        status.acknowledged += 1
        except BrokerError as exc:
            status.subscribed = False
            status.last_error = str(exc)
            delay = reconnect_delay(attempt, MQTT_BACKOFF, random.random)
            attempt += 1
            log.warning(
                "mqtt_subscriber_disconnected",
                broker=settings.display_url(),
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)
        finally:
            status.subscribed = False


def _topic(message: paho.MQTTMessage) -> str:
    try:
        return message.topic
    except UnicodeDecodeError:  # a broker must refuse such a topic; paho raises here
        return "<a topic that is not UTF-8>"


def _received(message: paho.MQTTMessage, raw: bool) -> Received | None:
    """The :class:`Received` of a message; ``None`` when it must be skipped (not JSON)."""
    data = bytes(message.payload)
    body = None
    if not raw:
        try:
            body = json_body(data)
        except MalformedRecord:
            return None
    props = getattr(message, "properties", None)
    response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
    correlation = getattr(props, "CorrelationData", None) if props is not None else None
    return Received(
        _topic(message),
        body,
        bool(message.retain),
        data,
        response_topic=str(response_topic) if response_topic else None,
        correlation_data=bytes(correlation) if correlation is not None else None,
    )


class _Connection:
    """One paho client, with manual acknowledgements, run on the current asyncio loop.

    paho calls its socket hooks from the thread that runs ``connect()`` (an executor thread:
    it blocks on the TCP connection) and later from the loop's own callbacks; every hook
    therefore schedules its work on the loop (:meth:`_on_loop`) and re-checks, when it runs,
    that the socket is still the client's.
    """

    def __init__(self, settings: MqttSettings, identifier: str, *, persistent: bool) -> None:
        self._settings = settings
        self._persistent = persistent
        self._v5 = settings.protocol == "5"
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=identifier,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else not persistent,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.connect_timeout = settings.publish_timeout_s
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        context = tls_context_for(settings)
        if context is not None:
            client.tls_set_context(context)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._queue: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
        self._misc: asyncio.Task[None] | None = None

    # -- the context manager: connect, and close whatever happened -----------------------

    async def __aenter__(self) -> _Connection:
        s = self._settings
        properties = None
        clean_start: paho.CleanStartOption = (
            paho.MQTT_CLEAN_START_FIRST_ONLY
        )  # 3.1.1: clean_session
        if self._v5:
            clean_start = not self._persistent
            if self._persistent:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = SESSION_EXPIRY_S
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    s.host, s.port, s.keepalive_s, clean_start=clean_start, properties=properties
                ),
            )
            sock = self._client.socket()
            if sock is not None and hasattr(sock, "setsockopt"):
                for option in NO_DELAY:
                    sock.setsockopt(*option)
            await self._wait(self._connected, "connect")
        except (OSError, ValueError) as exc:
            self._close()
            raise BrokerError(f"cannot connect to {s.display_url()}: {exc}") from exc
        except BaseException:
            self._close()
            raise
        self._misc = self._loop.create_task(self._keepalive(), name="mqtt-input-keepalive")
        return self

    async def __aexit__(self, *_: object) -> None:
        if not self._lost.done():
            self._client.disconnect()  # queues DISCONNECT; the session stays if persistent
            with contextlib.suppress(Exception):
                self._client.loop_write()  # send it now: the loop may not run much longer
        self._close()

    def _close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
        sock = self._client.socket()
        if sock is not None:
            self._forget(sock)
            sock.close()
        if not self._lost.done():
            self._lost.set_result(None)
        for pending in self._subscribes.values():
            pending.cancel()
        if self._connected.done() and not self._connected.cancelled():
            self._connected.exception()  # retrieved: a refused CONNACK was raised already

    # -- what the subscriber uses ----------------------------------------------------------

    async def subscribe(self, filters: list[str]) -> None:
        """Subscribe to every filter at QoS 1 in one SUBSCRIBE; a refusal is a BrokerError."""
        if not filters:
            return
        result, mid = self._client.subscribe([(topic_filter, 1) for topic_filter in filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerError(f"subscribe failed: {paho.error_string(result)}")
        pending = self._subscribes[mid] = self._loop.create_future()
        codes = await self._wait(pending, "subscribe")
        refused = [f for f, code in zip(filters, codes, strict=False) if code.is_failure]
        if refused:
            raise BrokerError(f"the broker refused the subscription to {', '.join(refused)}")

    async def messages(self) -> AsyncIterator[paho.MQTTMessage]:
        """Messages in arrival order until the connection is lost (then a BrokerError: what
        was received and not acknowledged stays with the broker)."""
        while True:
            if self._lost.done():
                raise BrokerError("the connection was lost")
            if not self._queue.empty():
                yield self._queue.get_nowait()
                continue
            getter = asyncio.ensure_future(self._queue.get())
            try:
                await asyncio.wait((getter, self._lost), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()  # asyncio.Queue keeps an item a cancelled get() was given
            if getter.done() and not getter.cancelled() and not self._lost.done():
                yield getter.result()

    def ack(self, message: paho.MQTTMessage) -> bool:
        """Acknowledge ``message`` (QoS 1 or 2) on this connection; ``False`` when there is
        nothing to acknowledge or the connection is gone (the broker will deliver it again)."""
        if message.qos == 0 or self._lost.done():
            return False
        return self._client.ack(message.mid, message.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def _wait(self, future: asyncio.Future[Any], what: str) -> Any:
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                done, _ = await asyncio.wait(
                    (future, self._lost), return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            raise BrokerError(f"{what}: no answer from the broker") from None
        if future not in done:
            raise BrokerError(f"{what}: the connection was lost")
        return future.result()

    async def _keepalive(self) -> None:
        """paho's periodic work: PINGREQ when due, and noticing a silent broker."""
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1.0)
        self._gone()

    def _gone(self) -> None:
        if not self._lost.done():
            self._lost.set_result(None)

    # -- paho's callbacks ------------------------------------------------------------------

    def _on_connect(self, _c: paho.Client, _u: Any, _f: Any, code: ReasonCode, *_: Any) -> None:
        if self._connected.done():
            return
        if code.is_failure:
            self._connected.set_exception(BrokerError(f"the broker refused the connection: {code}"))
        else:
            self._connected.set_result(None)

    def _on_disconnect(self, *_: Any) -> None:
        self._gone()

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode], *_: Any
    ) -> None:
        pending = self._subscribes.pop(mid, None)
        if pending is not None and not pending.done():
            pending.set_result(codes)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        self._queue.put_nowait(message)  # unbounded: nothing acknowledged is ever dropped

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._watch, sock)

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._forget, sock)
        self._on_loop(self._gone)

    def _on_register_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock)

    def _on_unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._on_loop(self._loop.remove_writer, sock)

    # -- sockets on the loop ---------------------------------------------------------------

    def _on_loop(self, function: Callable[..., Any], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    def _watch(self, sock: socket.socket) -> None:
        if self._client.socket() is sock:  # not closed (or replaced) since paho asked
            self._loop.add_reader(sock, self._readable)

    def _want_write(self, sock: socket.socket) -> None:
        if self._client.socket() is sock:
            self._loop.add_writer(sock, self._writable)

    def _forget(self, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    def _readable(self) -> None:
        try:
            while True:
                self._client.loop_read()
                sock = self._client.socket()
                if sock is None or not getattr(sock, "pending", lambda: 0)():
                    break  # an SSL socket may hold decoded bytes the selector cannot see
        except Exception:  # a broken connection, whatever paho raised about it
            self._gone()

    def _writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception:
            self._gone()
