"""Reading MQTT: the account input of ``liqmon run``, and every subscriber (``liqmon tail``,
the demo's terminal).

:func:`subscribe` subscribes to filters (QoS 1), hands each message to a handler as a
:class:`Received`, and reconnects with :func:`feeds.backoff.reconnect_delay` until cancelled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson
import structlog
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.mqtt_settings import NO_DELAY, MqttSettings
from feeds.backoff import MQTT_BACKOFF, reconnect_delay

log = structlog.get_logger("liqmon.mqtt")


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
            delay = reconnect_delay(attempt, MQTT_BACKOFF, random.random)
            attempt += 1
            log.warning(
                "mqtt_subscriber_disconnected",
                broker=s.display_url(),
                error=str(exc),
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)
