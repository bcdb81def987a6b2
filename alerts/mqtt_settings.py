"""Where the broker is and how to reach it: settings, ``mqtt://`` URLs and TLS.

Shared by every MQTT client of liqmon: the publisher (:mod:`alerts.publisher`), the link
(:mod:`alerts.link`) and the input subscriber (:mod:`feeds.mqtt_input`). No connection is made
here: :func:`aiomqtt_client` only builds a client, which connects when entered.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiomqtt
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from alerts.topics import DEFAULT_PREFIX
from monitor.errors import ConfigError

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
    state_rate: int = Field(default=1_000, ge=1)
    """Retained states published per second at most: their budget, so that a burst of state
    changes never crowds the alerts out of the event loop or the broker (a burst drains over
    seconds; an entity's latest state is what is sent)."""
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


def tls_context_for(settings: MqttSettings) -> ssl.SSLContext | None:
    """The TLS context of an ``mqtts://`` connection (``None`` for plain ``mqtt://``); a CA,
    certificate or key file that cannot be read or used is a :class:`ConfigError`."""
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
        raise ConfigError(f"mqtt: the TLS files cannot be used: {exc}") from exc
    return context


def aiomqtt_client(settings: MqttSettings, *, identifier: str, **options: Any) -> aiomqtt.Client:
    """An (unconnected) aiomqtt client for ``settings``: credentials, protocol, keepalive,
    timeout, TLS and ``TCP_NODELAY``; ``options`` are further ``aiomqtt.Client`` arguments."""
    s = settings
    return aiomqtt.Client(
        s.host,
        s.port,
        username=s.username,
        password=s.password.get_secret_value() if s.password else None,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5 if s.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        keepalive=s.keepalive_s,
        timeout=s.publish_timeout_s,
        tls_context=tls_context_for(s),
        socket_options=NO_DELAY,
        **options,
    )
