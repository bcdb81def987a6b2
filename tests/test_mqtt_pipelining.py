"""Alerts published several at a time keep the outbox's promises: sent in order, removed only
up to the last message the broker confirmed with every message before it confirmed too. And
the MQTT 5 properties liqmon packs itself are the bytes paho would have packed.

The client here is a stand-in for the aiomqtt client's ``publish`` only (the seam
``MqttSink._send_in_order`` talks to); the whole path on a real broker is in
``test_mqtt_broker.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.encoding import CONTENT_TYPE, PackedProperties, publish_properties
from alerts.mqtt_settings import settings_from_url
from alerts.outbox import Outbox
from alerts.publisher import IN_FLIGHT, STATES_IN_FLIGHT, MqttSink
from monitor.events import EntityRef, MarginStateChanged, MarginStateCleared


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


@given(
    message_id=st.text(max_size=300),
    expiry_s=st.none() | st.integers(min_value=0, max_value=2**32 - 1),
)
def test_packed_publish_properties_are_the_bytes_paho_would_send(
    message_id: str, expiry_s: int | None
) -> None:
    paho = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    paho.ContentType = CONTENT_TYPE
    if message_id:
        paho.UserProperty = [("id", message_id)]
    if expiry_s is not None:
        paho.MessageExpiryInterval = expiry_s
    assert PackedProperties(publish_properties(message_id, expiry_s)).pack() == paho.pack()


def _state_event(account: str, ratio: float) -> MarginStateChanged:
    return MarginStateChanged(
        ts=1,
        entity=EntityRef(account, "cross", "USDT"),
        level=None,
        margin_ratio=ratio,
        margin_balance=100.0,
        maintenance_margin=100.0 * ratio,
        liquidating=False,
        positions=(),
    )


async def test_states_go_at_most_a_window_at_a_time_and_the_latest_of_each_entity_wins(
    tmp_path: Path,
) -> None:
    sink, outbox = _sink(tmp_path, 0)
    client = _Client()
    accounts = [f"acct-{i:03d}" for i in range(3 * STATES_IN_FLIGHT)]
    for account in accounts:
        await sink.publish(_state_event(account, 0.1))
    for account in accounts[:5]:  # newer states before anything went out: coalesced
        await sink.publish(_state_event(account, 0.2))
    sink._start_due_states(client)  # type: ignore[arg-type]
    assert len(sink._state_tasks) == STATES_IN_FLIGHT
    # more are due, but no room: the pump must sleep until a publish ends, not spin
    assert sink._start_due_states(client) is None  # type: ignore[arg-type]
    while sink._states:
        await asyncio.sleep(0.001)
        sink._start_due_states(client)  # type: ignore[arg-type]
    outbox.close()
    assert len(client.started) == len(accounts)  # one per entity: the coalesced ones too
    sent = [orjson.loads(payload) for payload in client.started]
    assert {s["account"]: s["margin_ratio"] for s in sent} == {
        a: 0.2 if a in accounts[:5] else 0.1 for a in accounts
    }


async def test_a_state_cut_off_by_a_lost_connection_is_published_after_reconnecting(
    tmp_path: Path,
) -> None:
    sink, outbox = _sink(tmp_path, 0)
    await sink.publish(_state_event("acct-1", 0.1))
    sink._start_due_states(_Client())  # type: ignore[arg-type]
    await sink._cancel_state_publishes()  # what the pump does when its client fails
    client = _Client()
    sink._start_due_states(client)  # type: ignore[arg-type]
    await asyncio.gather(*sink._state_tasks.values())
    outbox.close()
    assert [orjson.loads(p)["account"] for p in client.started] == ["acct-1"]
    assert not sink._states


async def test_a_state_cut_off_while_on_the_wire_is_published_again(tmp_path: Path) -> None:
    sink, outbox = _sink(tmp_path, 0)
    await sink.publish(_state_event("acct-1", 0.1))
    first = _Client()
    sink._start_due_states(first)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the publish has started
    await sink._cancel_state_publishes()
    client = _Client()
    sink._start_due_states(client)  # type: ignore[arg-type]
    await asyncio.gather(*sink._state_tasks.values())
    outbox.close()
    assert len(first.started) == 1
    assert [orjson.loads(p)["account"] for p in client.started] == ["acct-1"]
    assert not sink._states


async def test_states_keep_to_their_rate_budget(tmp_path: Path) -> None:
    """``state_rate`` bounds how many states start per second, after a first window: with a
    budget of 50 a second, 100 pending states take about two seconds, and the pump is told
    when the next one may start instead of spinning."""
    outbox = Outbox(tmp_path / "outbox")
    settings = settings_from_url("mqtt://127.0.0.1:1", state_rate=50)
    sink = MqttSink(settings, outbox, version="test")
    client = _Client()
    for i in range(100):
        await sink.publish(_state_event(f"acct-{i:03d}", 0.1))
    started = asyncio.get_running_loop().time()
    while sink._states:
        due = sink._start_due_states(client)  # type: ignore[arg-type]
        assert due is not None or not sink._states or sink._state_tasks
        await asyncio.sleep(0.01)
    elapsed = asyncio.get_running_loop().time() - started
    outbox.close()
    assert len(client.started) == 100
    assert (100 - STATES_IN_FLIGHT) / 50 * 0.9 <= elapsed < 4.0


async def test_a_clear_goes_through_the_outbox_and_drops_the_unsent_state(
    tmp_path: Path,
) -> None:
    """A gone entity's empty retained message is durable like an alert (in the outbox, in
    order with the alerts); the state of it still waiting is dropped, never sent after it."""
    sink, outbox = _sink(tmp_path, 0)
    await sink.publish(_state_event("acct-1", 0.1))
    await sink.publish(MarginStateCleared(2, EntityRef("acct-1", "cross", "USDT")))
    assert sink.states_pending == 0
    (message,) = outbox.pending(10)
    assert message.retain
    assert message.payload == b""
    assert message.topic.endswith("/state/acct-1/cross/USDT")
    outbox.close()
