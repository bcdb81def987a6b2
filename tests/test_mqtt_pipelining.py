"""Alerts published several at a time keep the outbox's promises: sent in order, removed only
up to the last message the broker confirmed with every message before it confirmed too.

The client here is a stand-in for the aiomqtt client's ``publish`` only (the seam
``MqttSink._send_in_order`` talks to); the whole path on a real broker is in
``test_mqtt_broker.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from alerts.mqtt import IN_FLIGHT, MqttSink, settings_from_url
from alerts.outbox import Outbox


class _Client:
    """Records publishes in call order; acknowledges them in reverse order, failing those in
    ``fail``."""

    def __init__(self, fail: set[bytes] = frozenset()) -> None:  # type: ignore[assignment]
        self.started: list[bytes] = []
        self.fail = fail
        self._gate = asyncio.Event()

    async def publish(self, topic: str, payload: bytes, **_: Any) -> None:
        self.started.append(payload)
        index = len(self.started)
        await asyncio.sleep(0.001 * (IN_FLIGHT - index % IN_FLIGHT))  # later ones ack first
        if payload in self.fail:
            raise aiomqtt.MqttError("connection lost")


def _sink(tmp_path: Path, count: int) -> tuple[MqttSink, Outbox]:
    outbox = Outbox(tmp_path / "outbox")
    for i in range(count):
        outbox.append("t", b"%d" % i, message_id=str(i))
    return MqttSink(settings_from_url("mqtt://127.0.0.1:1"), outbox, version="test"), outbox


async def test_messages_start_in_outbox_order_and_are_acknowledged_together(
    tmp_path: Path,
) -> None:
    sink, outbox = _sink(tmp_path, 10)
    client = _Client()
    await sink._send_in_order(client, outbox.pending(IN_FLIGHT))  # type: ignore[arg-type]
    outbox.close()
    assert client.started == [b"%d" % i for i in range(10)]
    assert outbox.depth == 0
    assert sink.published == 10


async def test_a_failed_publish_keeps_it_and_everything_after_it_in_the_outbox(
    tmp_path: Path,
) -> None:
    sink, outbox = _sink(tmp_path, 10)
    client = _Client(fail={b"4"})
    with pytest.raises(aiomqtt.MqttError):
        await sink._send_in_order(client, outbox.pending(IN_FLIGHT))  # type: ignore[arg-type]
    # 5..9 were acknowledged by the broker, but 4 was not: they are all sent again, in order
    assert outbox.depth == 6
    assert [m.payload for m in outbox.pending(IN_FLIGHT)] == [b"%d" % i for i in range(4, 10)]
    outbox.close()
    reopened = Outbox(tmp_path / "outbox")  # and that survives a restart
    kept = [m.payload for m in reopened.pending(100)]
    reopened.close()
    assert kept == [b"%d" % i for i in range(4, 10)]


async def test_pending_takes_at_most_the_window(tmp_path: Path) -> None:
    _, outbox = _sink(tmp_path, IN_FLIGHT + 5)
    window = outbox.pending(IN_FLIGHT)
    outbox.close()
    assert len(window) == IN_FLIGHT
    assert [m.seq for m in window] == list(range(1, IN_FLIGHT + 1))
