"""The MQTT subscriber (``feeds.mqtt_input``) on a real Mosquitto: a message is acknowledged
only after its handler returned, so a persistent session gets back every message liqmon did not
finish (a crash, an exception, a cancelled task), in order, and never one it finished."""

from __future__ import annotations

import ast
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.mqtt_settings import MqttSettings, settings_from_url
from feeds.mqtt_input import Received, SubscriptionStatus, subscribe
from liqmon.broker import LocalBroker
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

TOPIC = "liqmon/v1/in/records"
CLIENT_ID = "liqmon-test-in"


def _publish(port: int, payloads: list[bytes]) -> None:
    """Publish ``payloads`` at QoS 1, each acknowledged by the broker before the next."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(TOPIC, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


async def _session(
    settings: MqttSettings,
    handler: Callable[[Received], Awaitable[None] | None],
    *,
    seconds: float = 0.5,
    status: SubscriptionStatus | None = None,
    raw: bool = True,
) -> None:
    """Run the persistent input session for ``seconds`` after it subscribed, then cancel it."""
    ready = asyncio.Event()
    task = asyncio.create_task(
        subscribe(
            settings,
            [TOPIC],
            handler,
            ready=ready,
            identifier=CLIENT_ID,
            persistent=True,
            raw=raw,
            status=status,
        )
    )
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _collect(into: list[bytes]) -> Callable[[Received], None]:
    return lambda message: into.append(message.payload)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_is_acknowledged_only_after_its_handler_returned(
    broker: LocalBroker, protocol: str
) -> None:
    """Three messages queued for the session; the first handler never returns (the task is
    cancelled while it runs). The next session gets all three again, in order: none was
    acknowledged on arrival, not even those the first session never reached. The session after
    that, whose handler returned each time, gets nothing: they were acknowledged."""
    settings = settings_from_url(broker.url, protocol=protocol)
    await _session(settings, lambda _: None, seconds=0.1)  # the session exists from now on
    _publish(broker.port, [b"m0", b"m1", b"m2"])

    started: list[bytes] = []

    async def stuck(message: Received) -> None:
        started.append(message.payload)
        await asyncio.sleep(3600)

    await _session(settings, stuck)
    assert started == [b"m0"]
    again: list[bytes] = []
    status = SubscriptionStatus()
    await _session(settings, _collect(again), status=status)
    assert again == [b"m0", b"m1", b"m2"]
    assert (status.received, status.acknowledged) == (3, 3)
    after: list[bytes] = []
    await _session(settings, _collect(after))
    assert after == []


async def test_a_handler_that_raises_leaves_its_message_with_the_broker(
    broker: LocalBroker,
) -> None:
    """The handler fails on the second message: ``subscribe`` ends with that error, the first
    message stays acknowledged and the second and third come back on the next session."""
    settings = settings_from_url(broker.url)
    await _session(settings, lambda _: None, seconds=0.1)
    _publish(broker.port, [b"m0", b"m1", b"m2"])

    def fail_on_m1(message: Received) -> None:
        if message.payload == b"m1":
            raise RuntimeError("the journal is full")

    with pytest.raises(RuntimeError, match="journal"):
        await asyncio.wait_for(
            subscribe(
                settings, [TOPIC], fail_on_m1, identifier=CLIENT_ID, persistent=True, raw=True
            ),
            10,
        )
    again: list[bytes] = []
    await _session(settings, _collect(again))
    assert again == [b"m1", b"m2"]


CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
from alerts.mqtt_settings import settings_from_url
from feeds.mqtt_input import subscribe

async def handle(message):
    print(message.payload.decode(), flush=True)
    await asyncio.sleep(3600)  # killed here, before the record is "journaled"

asyncio.run(subscribe(settings_from_url({url!r}), [{topic!r}], handle,
                      identifier={client!r}, persistent=True, raw=True))
"""


async def test_kill_9_while_handling_delivers_the_message_again(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """A process handling the first of three messages is killed with -9: the next session of
    the same client id gets the three, in order (nothing was acknowledged before it was
    handled, and the broker kept the session through the abrupt disconnect)."""
    settings = settings_from_url(broker.url)
    await _session(settings, lambda _: None, seconds=0.1)
    _publish(broker.port, [b"m0", b"m1", b"m2"])
    script = tmp_path / "child.py"
    script.write_text(
        textwrap.dedent(CHILD.format(root=str(ROOT), url=broker.url, topic=TOPIC, client=CLIENT_ID))
    )
    child = subprocess.Popen(  # noqa: ASYNC220  # read line by line below
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.strip() == "m0"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    again: list[bytes] = []
    await _session(settings, _collect(again), seconds=1.0)
    assert again == [b"m0", b"m1", b"m2"]


async def test_a_payload_that_is_not_a_json_object_is_skipped_and_acknowledged(
    broker: LocalBroker,
) -> None:
    """Without ``raw``, a handler sees JSON objects only; what is skipped is acknowledged too
    (it would be skipped again), so the next session gets nothing back."""
    settings = settings_from_url(broker.url)
    await _session(settings, lambda _: None, seconds=0.1, raw=False)
    _publish(broker.port, [b"not json", b"[1, 2]", b'{"type": "balance"}'])
    bodies: list[object] = []
    await _session(settings, lambda m: bodies.append(m.body), raw=False)
    assert bodies == [{"type": "balance"}]
    await _session(settings, lambda m: bodies.append(m.body), raw=False)
    assert bodies == [{"type": "balance"}]


async def test_the_subscriber_comes_back_after_the_broker_restarts(broker: LocalBroker) -> None:
    """The broker goes away and comes back on the same port: the session reconnects by itself
    (with backoff), ``status`` says whether it is subscribed, and a message published while it
    was away (the broker persisted the session) arrives."""
    settings = settings_from_url(broker.url)
    status = SubscriptionStatus()
    got: list[bytes] = []
    ready = asyncio.Event()
    task = asyncio.create_task(
        subscribe(
            settings,
            [TOPIC],
            _collect(got),
            ready=ready,
            identifier=CLIENT_ID,
            persistent=True,
            raw=True,
            status=status,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert status.subscribed
        broker.stop()
        for _ in range(100):
            if not status.subscribed:
                break
            await asyncio.sleep(0.05)
        assert not status.subscribed
        broker.start()
        _publish(broker.port, [b"after"])
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        assert got == [b"after"]
        assert status.subscribed
        assert status.connections == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


BROKER_CLIENTS = ["feeds/mqtt_input.py", "alerts/publisher.py", "alerts/link.py"]


def _private_accesses(source: str) -> list[str]:
    """Every ``x._name`` in ``source`` where ``x`` is not ``self`` or ``cls``."""
    return [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]


@pytest.mark.parametrize("path", BROKER_CLIENTS)
def test_the_broker_clients_use_no_private_attribute_of_a_library(path: str) -> None:
    """No ``x._name`` in the modules that talk to a broker, except on ``self`` (their own
    state): aiomqtt's and paho's internals (``client._client``, ``message._topic``) are not an
    API and change without notice."""
    assert _private_accesses((ROOT / path).read_text(encoding="utf-8")) == []


def test_the_check_sees_the_old_subscriber_s_private_access() -> None:
    """The walk flags what the subscriber did before (``client._client.ack(...)``), and not a
    module's own ``self._client``."""
    assert _private_accesses("client._client.ack(message.mid, message.qos)") == ["line 1: ._client"]
    assert _private_accesses("self._client.ack(1, 1)") == []
