"""One MQTT 5 connection that subscribes *and* publishes, reconnecting by itself: what request /
response needs (the what-if shock), and readers that must know when the broker's retained
messages have all arrived (the dashboard's book).

::

    link = MqttLink(settings, ["liqmon/v1/status/+"], on_message, identifier="liqmon-shock-1f2e")
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(link.run(), name="mqtt-link")
        await link.wait_synced(10)
        await link.publish(topic, body, response_topic=..., correlation_data=...)

**The sync barrier.** After every (re)connection the link subscribes to its filters, then to a
private topic of its own, and publishes a marker there. A broker sends the retained messages of a
subscription right after acknowledging it, and delivers one connection's messages in order, so
when the marker comes back every retained message of the filters has been handed to
``on_message``. ``on_connect`` is called before subscribing, ``on_synced`` at the barrier and
``on_disconnect`` when the connection is lost: a reader that rebuilds retained state from
scratch on each connection drops, at the barrier, what the broker no longer holds.

Messages are decoded as in :func:`feeds.mqtt_input.subscribe` (JSON objects; an empty payload is a
cleared retained message, ``body=None``); MQTT 5 request properties (Response Topic,
Correlation Data) are in :class:`~feeds.mqtt_input.Received`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable

import aiomqtt
import orjson
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.encoding import CONTENT_TYPE
from alerts.mqtt_settings import MqttSettings, aiomqtt_client
from feeds.backoff import MQTT_BACKOFF, reconnect_delay
from feeds.mqtt_input import Received, json_body
from monitor.errors import LinkDown as LinkDown
from monitor.errors import MalformedRecord

log = structlog.get_logger("liqmon.link")

SYNC_TIMEOUT_S = 600.0
"""The marker's acknowledgement may queue behind every retained message of the filters."""


def _properties(
    *,
    response_topic: str | None,
    correlation_data: bytes | None,
    expiry_s: int | None,
) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = CONTENT_TYPE
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if expiry_s is not None:
        props.MessageExpiryInterval = expiry_s
    return props


def _decode(message: aiomqtt.Message) -> Received | None:
    payload = message.payload
    data = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
    try:
        body = json_body(data)
    except MalformedRecord:
        return None
    props = message.properties
    response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
    correlation = getattr(props, "CorrelationData", None) if props is not None else None
    return Received(
        str(message.topic),
        body,
        bool(message.retain),
        data,
        response_topic=str(response_topic) if response_topic else None,
        correlation_data=bytes(correlation) if correlation is not None else None,
    )


class MqttLink:
    """See the module docstring. ``on_message`` may be a coroutine function (it is awaited, so
    a slow handler holds the next message back: hand long work to a bounded queue)."""

    def __init__(
        self,
        settings: MqttSettings,
        filters: list[str],
        on_message: Callable[[Received], Awaitable[None] | None],
        *,
        identifier: str | None = None,
        on_connect: Callable[[], None] | None = None,
        on_synced: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.filters = filters
        self.identifier = identifier or f"liqmon-link-{secrets.token_hex(4)}"
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_synced = on_synced
        self._on_disconnect = on_disconnect
        self._client: aiomqtt.Client | None = None
        self._sync_topic = f"{settings.prefix}/link/sync/{self.identifier}"
        self._sync_marker = b""
        self.synced = asyncio.Event()
        """Set at the barrier of the current connection; cleared while disconnected."""
        self.connections = 0
        self.malformed = 0
        self._fresh = False

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_synced(self, seconds: float) -> None:
        """Wait until the current connection passed its sync barrier (``TimeoutError``)."""
        await asyncio.wait_for(self.synced.wait(), timeout=seconds)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> None:
        """Publish on the current connection; :class:`LinkDown` when there is none."""
        client = self._client
        if client is None:
            raise LinkDown(f"not connected to {self.settings.display_url()}")
        properties = (
            _properties(
                response_topic=response_topic,
                correlation_data=correlation_data,
                expiry_s=expiry_s,
            )
            if self.settings.protocol == "5"
            else None
        )
        try:
            await client.publish(
                topic,
                payload,
                qos=qos,
                retain=retain,
                properties=properties,
                timeout=self.settings.publish_timeout_s,
            )
        except aiomqtt.MqttError as exc:
            raise LinkDown(f"publish to {topic} failed: {exc}") from exc

    def _make_client(self) -> aiomqtt.Client:
        return aiomqtt_client(self.settings, identifier=self.identifier)

    async def run(self) -> None:
        """Connect, subscribe, deliver; reconnect with backoff until cancelled."""
        attempt = 0
        s = self.settings
        while True:
            error = ""
            try:
                await self._connection()
            except* aiomqtt.MqttError as group:
                error = str(group.exceptions[0])
            finally:
                self._lost()
            if self._fresh:  # it was connected this time: the backoff starts again
                attempt = 0
            delay = reconnect_delay(attempt, MQTT_BACKOFF, random.random)
            attempt += 1
            log.warning(
                "mqtt_link_disconnected",
                broker=s.display_url(),
                client=self.identifier,
                error=error,
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _connection(self) -> None:
        """One connection, until it fails (an MQTT error, possibly in a group)."""
        self._fresh = False
        async with self._make_client() as client, asyncio.TaskGroup() as tasks:
            if self._on_connect is not None:
                self._on_connect()
            self._client = client
            self.connections += 1
            self._fresh = True
            # messages are taken while the subscriptions are made: a broker holding 100,000
            # retained states sends them all before the marker comes back
            tasks.create_task(self._subscribe(client), name="mqtt-link-subscribe")
            async for message in client.messages:
                await self._deliver(message)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        """The private sync topic, then every filter in one SUBSCRIBE (its retained messages
        follow its acknowledgement), then the marker, which comes back after all of them."""
        s = self.settings
        await client.subscribe(self._sync_topic, qos=1)
        if self.filters:
            await client.subscribe([(topic_filter, 1) for topic_filter in self.filters])
        log.info("mqtt_link_connected", broker=s.display_url(), client=self.identifier)
        self._sync_marker = orjson.dumps({"sync": secrets.token_hex(8)})
        await client.publish(self._sync_topic, self._sync_marker, qos=1, timeout=SYNC_TIMEOUT_S)

    def _lost(self) -> None:
        was_connected = self._client is not None
        self._client = None
        self.synced.clear()
        if was_connected and self._on_disconnect is not None:
            self._on_disconnect()

    async def _deliver(self, message: aiomqtt.Message) -> None:
        if str(message.topic) == self._sync_topic:
            if message.payload == self._sync_marker and not self.synced.is_set():
                self.synced.set()
                if self._on_synced is not None:
                    self._on_synced()
            return
        received = _decode(message)
        if received is None:
            self.malformed += 1
            return
        result = self._on_message(received)
        if result is not None:
            await result
