"""Test support for the real-broker tests: a Mosquitto fixture and a paho subscriber."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from liqmon.broker import LocalBroker, mosquitto_binary


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    """A private Mosquitto on a free loopback port. Missing mosquitto skips the test, or fails
    it when ``LIQMON_REQUIRE_BROKER`` is set (as in CI)."""
    if mosquitto_binary() is None:
        if os.environ.get("LIQMON_REQUIRE_BROKER"):
            pytest.fail("mosquitto is required (LIQMON_REQUIRE_BROKER is set) but not installed")
        pytest.skip("mosquitto is not installed")
    with LocalBroker() as running:
        yield running


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str]
    content_type: str | None
    correlation_data: bytes | None = None

    @property
    def body(self) -> dict[str, Any] | None:
        return orjson.loads(self.payload) if self.payload else None


class Collector:
    """A paho client in its own thread that records every message on ``topics``.

    ``persistent`` gives it an MQTT 3.1.1 persistent session (clean_session false), so the broker
    keeps its subscription and queues its messages while it is away or the broker restarts.
    """

    def __init__(
        self,
        port: int,
        topics: list[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        v5: bool = True,
    ) -> None:
        self.messages: list[Got] = []
        self.connects: list[bool] = []  # "session present" of each connection
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        protocol = paho.MQTTv5 if v5 and not persistent else paho.MQTTv311
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if protocol == paho.MQTTv311:
            kwargs["clean_session"] = not persistent
        self.client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self._topics = topics
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("the collector could not subscribe")

    def _on_connect(self, client: paho.Client, _userdata: Any, flags: Any, *_: Any) -> None:
        self.connects.append(bool(getattr(flags, "session_present", False)))
        for topic in self._topics:
            client.subscribe(topic, qos=1)
        if not self._topics:  # a publisher only: ready once connected
            self._subscribed.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or []) if props is not None else {}
        content_type = getattr(props, "ContentType", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        got = Got(
            message.topic,
            bytes(message.payload),
            bool(message.retain),
            user,
            content_type,
            bytes(correlation) if correlation is not None else None,
        )
        with self._lock:
            self.messages.append(got)
            self._lock.notify_all()

    def wait_until(self, predicate: Callable[[list[Got]], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition not met; {len(self.messages)} messages so far; "
                        f"connections (session present): {self.connects}"
                    )
                self._lock.wait(remaining)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def alerts(self) -> list[dict[str, Any]]:
        """Alert payloads received, in arrival order, duplicates removed by id."""
        seen: set[str] = set()
        out = []
        for got in self.messages:
            if "/events/" not in got.topic or not got.payload:
                continue
            body = got.body
            assert body is not None
            if body["id"] not in seen:
                seen.add(body["id"])
                out.append(body)
        return out
