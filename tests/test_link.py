"""``alerts.link``: one MQTT connection that subscribes and publishes, with a real Mosquitto —
the sync barrier, reconnection, and MQTT 5 request properties."""

from __future__ import annotations

import asyncio

import pytest

from alerts.link import LinkDown, MqttLink
from alerts.mqtt_settings import settings_from_url
from feeds.mqtt_input import Received
from liqmon.broker import LocalBroker
from tests.mqtt_support import Collector

pytestmark = pytest.mark.integration

RETAINED = 5_000


def _retain(broker: LocalBroker, count: int) -> None:
    publisher = Collector(broker.port, [])
    try:
        for i in range(count):
            publisher.client.publish(f"t/book/{i}", b'{"n": %d}' % i, qos=1, retain=True)
        publisher.client.publish("t/done", b"{}", qos=1).wait_for_publish(30)
    finally:
        publisher.stop()


async def test_the_sync_barrier_comes_after_every_retained_message(broker: LocalBroker) -> None:
    """With 5,000 retained messages on the broker, ``on_synced`` is called once all of them
    were handed to ``on_message``, not before; ``wait_synced`` returns then."""
    _retain(broker, RETAINED)
    got: list[Received] = []
    at_barrier: list[int] = []
    settings = settings_from_url(broker.url, prefix="t")
    link = MqttLink(
        settings, ["t/book/#"], got.append, on_synced=lambda: at_barrier.append(len(got))
    )
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(link.run())
        await link.wait_synced(30)
        running.cancel()
    assert at_barrier == [RETAINED]
    assert all(m.retained for m in got)
    assert {m.body["n"] for m in got if m.body} == set(range(RETAINED))


async def test_it_reconnects_by_itself_and_syncs_again(broker: LocalBroker) -> None:
    """The broker goes away: ``on_disconnect``, publishing raises LinkDown; it comes back on
    the same port: the link reconnects alone, calls ``on_connect`` again and passes a new
    barrier with the retained messages delivered again."""
    _retain(broker, 3)
    got: list[Received] = []
    events: list[str] = []
    lost = asyncio.Event()

    def disconnected() -> None:
        events.append("disconnect")
        lost.set()

    link = MqttLink(
        settings_from_url(broker.url, prefix="t"),
        ["t/book/#"],
        got.append,
        on_connect=lambda: events.append("connect"),
        on_synced=lambda: events.append("synced"),
        on_disconnect=disconnected,
    )
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(link.run())
        await link.wait_synced(30)
        broker.stop()
        await asyncio.wait_for(lost.wait(), timeout=30)
        with pytest.raises(LinkDown):
            await link.publish("t/x", b"{}")
        await asyncio.to_thread(broker.start)
        await link.wait_synced(60)
        running.cancel()
    # the last disconnect is the cancellation's: a cancelled link leaves the broker
    assert events == ["connect", "synced", "disconnect", "connect", "synced", "disconnect"]
    assert link.connections == 2
    assert len(got) == 6


async def test_request_properties_reach_the_receiver(broker: LocalBroker) -> None:
    """A publish with a Response Topic and Correlation Data arrives with both (MQTT 5), and a
    JSON body decoded; a payload that is not a JSON object is counted, not delivered."""
    got: list[Received] = []
    arrived = asyncio.Event()

    def take(message: Received) -> None:
        got.append(message)
        arrived.set()

    settings = settings_from_url(broker.url, prefix="t")
    receiver = MqttLink(settings, ["t/ask"], take)
    sender = MqttLink(settings, [], lambda _: None)
    async with asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(receiver.run()), tasks.create_task(sender.run())]
        await receiver.wait_synced(30)
        await sender.wait_synced(30)
        await sender.publish("t/ask", b"[1, 2]")
        await sender.publish(
            "t/ask", b'{"q": 1}', response_topic="t/answers/me", correlation_data=b"\x00\x07"
        )
        await asyncio.wait_for(arrived.wait(), timeout=30)
        for task in running:
            task.cancel()
    assert len(got) == 1
    assert got[0].body == {"q": 1}
    assert got[0].response_topic == "t/answers/me"
    assert got[0].correlation_data == b"\x00\x07"
    assert receiver.malformed == 1
