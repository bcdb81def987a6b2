"""Alerts over a real Mosquitto: topics, payload schemas, retained state and status, the Last
Will, a broker restart mid-replay, and an outbox that survives ``kill -9``."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from alerts.jsonl import JsonLinesSink
from alerts.mqtt_settings import settings_from_url
from alerts.outbox import Outbox
from alerts.publisher import MqttSink
from alerts.schema import ALERT_MODELS, StatePayload, StatusPayload
from alerts.sink import FanOutSink
from alerts.topics import event_topic
from liqmon.broker import LocalBroker, free_port
from liqmon.replay import replay_file
from monitor import Engine, EngineConfig
from monitor.events import EntityRef
from tests import cli_support
from tests.conftest import ROOT
from tests.mqtt_support import Collector

CRASH = ROOT / "examples" / "crash.jsonl"
GOLDEN = ROOT / "tests" / "data" / "golden" / "crash.events.jsonl"
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _golden() -> list[str]:
    return GOLDEN.read_text().splitlines()


async def _replay_through(
    broker: LocalBroker, tmp_path: Path, *, protocol: str = "5", instance: str = "t"
) -> tuple[list[str], Engine]:
    """Replay the example into the broker and a JSON Lines buffer; return the buffer's lines."""
    settings = settings_from_url(
        broker.url, instance=instance, protocol=protocol, state_interval_ms=0
    )
    mqtt = MqttSink(settings, Outbox(tmp_path / "outbox"), version="test")
    buffer = io.StringIO()
    engine = Engine(EngineConfig.from_values(state_move="0.05"))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(mqtt.run())
        await replay_file(str(CRASH), engine, FanOutSink(JsonLinesSink(buffer), mqtt))
        await mqtt.close()
    mqtt.outbox.close()
    assert mqtt.outbox.depth == 0
    return buffer.getvalue().splitlines(), engine


async def test_every_alert_arrives_on_its_documented_topic_with_a_valid_payload(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The broker delivers exactly the JSON Lines sink's events, in order, each on the topic of
    its kind and entity, valid against its schema, with the v5 content type and id property."""
    collector = Collector(broker.port, ["liqmon/v1/#"])
    lines, _ = await _replay_through(broker, tmp_path)
    collector.wait_until(lambda got: len([g for g in got if "/events/" in g.topic]) >= 13)
    collector.stop()
    assert lines == _golden()
    events = [g for g in collector.messages if "/events/" in g.topic]
    assert [g.payload.decode() for g in events] == lines
    for got in events:
        body = got.body
        assert body is not None
        ALERT_MODELS[body["event"]].model_validate(body)
        entity = EntityRef(
            body["account"], body["scope"], body["asset"], body.get("symbol"), body.get("side")
        )
        assert got.topic == event_topic("liqmon/v1", body["event"], entity)
        assert not got.retain
        assert got.content_type == "application/json"
        assert got.user_properties == {"id": body["id"]}
    assert {g.body["event"] for g in events if g.body} == set(ALERT_MODELS)


async def test_a_late_subscriber_sees_the_state_of_every_open_entity(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """After the replay, a new subscriber to the state subtree gets one retained state per open
    entity (and none for entities that are gone), each valid against the state schema; the
    status topic says offline (a clean shutdown)."""
    _, engine = await _replay_through(broker, tmp_path)
    late = Collector(broker.port, ["liqmon/v1/state/#", "liqmon/v1/status/+"])
    open_entities = {e.ref.account for e in engine.entities()}
    late.wait_until(
        lambda got: (
            {g.body["account"] for g in got if "/state/" in g.topic and g.body} >= open_entities
            and any("/status/" in g.topic for g in got)
        ),
        timeout=10,
    )
    late.stop()
    states = [g for g in late.messages if "/state/" in g.topic]
    assert all(g.retain for g in states)
    accounts = sorted(g.body["account"] for g in states if g.body)
    assert accounts == sorted(open_entities)  # alice, carol and dave were liquidated: cleared
    assert set(accounts) == {"bob", "erin", "frank"}
    for got in states:
        assert got.body is not None
        StatePayload.model_validate(got.body)
    (status,) = [g for g in late.messages if "/status/" in g.topic]
    assert status.retain
    assert status.body is not None
    StatusPayload.model_validate(status.body)
    assert status.body["status"] == "offline"


async def test_mqtt_3_1_1_carries_id_and_ts_in_the_body(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """With MQTT 3.1.1 (no properties) the same payloads arrive, ids and ts in the body."""
    collector = Collector(broker.port, ["liqmon/v1/events/#"], v5=False)
    lines, _ = await _replay_through(broker, tmp_path, protocol="3.1.1")
    collector.wait_until(lambda got: len(got) >= 13)
    collector.stop()
    assert [g.payload.decode() for g in collector.messages] == lines
    assert all(g.body and g.body["id"] and g.body["ts"] for g in collector.messages)


def _paced_replay(
    broker_url: str, outbox: Path, out: Path, speed: str, *, log_level: str = "warning"
) -> list[str]:
    return [
        *LIQMON,
        "--log-level",
        log_level,
        "replay",
        str(CRASH),
        "--out",
        str(out),
        "--speed",
        speed,
        "--mqtt",
        broker_url,
        "--instance",
        "victim",
        "--outbox",
        str(outbox),
        "--drain-timeout-s",
        "20",
    ]


def test_the_last_will_says_offline_when_liqmon_is_killed(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """kill -9 of a running liqmon: the broker publishes its Last Will, status offline."""
    collector = Collector(broker.port, ["liqmon/v1/status/+"])
    process = subprocess.Popen(
        _paced_replay(broker.url, tmp_path / "outbox", tmp_path / "events.jsonl", "100"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        collector.wait_until(
            lambda got: any(g.body and g.body["status"] == "online" for g in got), timeout=15
        )
        os.kill(process.pid, signal.SIGKILL)
        collector.wait_until(
            lambda got: (
                bool(got) and got[-1].body is not None and got[-1].body["status"] == "offline"
            ),
            timeout=15,
        )
    finally:
        process.kill()
        process.wait()
        collector.stop()
    last = collector.messages[-1].body
    assert last is not None
    assert last["instance"] == "victim"


def test_a_broker_restart_mid_replay_loses_nothing(broker: LocalBroker, tmp_path: Path) -> None:
    """The broker goes away for three seconds in the middle of a paced replay and comes back:
    after de-duplication by id, a persistent subscriber has every event of the JSON Lines sink,
    in order."""
    collector = Collector(broker.port, ["liqmon/v1/events/#"], client_id="ops", persistent=True)
    out = tmp_path / "events.jsonl"
    log = tmp_path / "liqmon.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            _paced_replay(broker.url, tmp_path / "outbox", out, "12000", log_level="info"),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        collector.wait_until(lambda got: len(got) >= 2, timeout=20)  # well under way
        broker.stop()
        time.sleep(3.0)  # the outage itself, not a wait for something
        broker.start()
        assert process.wait(timeout=60) == 0, log.read_text()
        expected = out.read_text().splitlines()
        collector.wait_until(lambda _: len(collector.alerts()) >= len(expected), timeout=30)
    finally:
        process.kill()
        process.wait()
        collector.stop()
    assert expected == _golden()
    assert [encode_line(a) for a in collector.alerts()] == expected


def encode_line(body: dict[str, object]) -> str:
    """A received payload in the JSON Lines sink's encoding (both use compact JSON)."""
    return orjson.dumps(body).decode()


def test_the_outbox_survives_kill_9_and_is_delivered_after_restart(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """liqmon replays with the broker unreachable (events pile up in its outbox), is killed
    with -9, and started again with the broker back: everything it had queued arrives."""
    outbox = tmp_path / "outbox"
    out = tmp_path / "events.jsonl"
    unreachable = f"mqtt://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        _paced_replay(unreachable, outbox, out, "1000000"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for_lines(out, 13), "the replay did not write its events"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
    assert len(list(outbox.glob("segment-*.jsonl"))) >= 1
    collector = Collector(broker.port, ["liqmon/v1/events/#"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    restarted = cli_support.run(
        [
            *LIQMON,
            "replay",
            str(empty),
            "--out",
            str(tmp_path / "none.jsonl"),
            "--mqtt",
            broker.url,
            "--instance",
            "victim",
            "--outbox",
            str(outbox),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert restarted.returncode == 0, restarted.stderr
    collector.wait_until(lambda _: len(collector.alerts()) >= 13, timeout=20)
    collector.stop()
    assert [encode_line(a) for a in collector.alerts()] == _golden()


def _wait_for_lines(path: Path, count: int, timeout: float = 20.0) -> bool:
    """Poll a file another process writes (there is nothing else to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return True
        time.sleep(0.05)
    return False


def test_a_plain_mosquitto_sub_receives_exactly_the_json_lines_events(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The stock command-line subscriber sees the JSON Lines sink's events, byte for byte."""
    binary = shutil.which("mosquitto_sub")
    stdbuf = shutil.which("stdbuf")  # coreutils: line-buffers mosquitto_sub's output
    if binary is None or stdbuf is None:
        if os.environ.get("LIQMON_REQUIRE_BROKER"):
            pytest.fail("mosquitto_sub is required (LIQMON_REQUIRE_BROKER is set)")
        pytest.skip("mosquitto_sub is not installed (mosquitto-clients)")
    received = tmp_path / "received.txt"
    with open(received, "w") as sink:
        subscriber = subprocess.Popen(
            [
                stdbuf,  # line-buffered, so that -d's "received SUBACK" shows as it happens
                "-oL",
                binary,
                "-d",
                "-h",
                "127.0.0.1",
                "-p",
                str(broker.port),
                "-q",
                "1",
                "-t",
                "liqmon/v1/events/#",
                "-C",
                "13",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while "received SUBACK" not in received.read_text():  # -d reports the subscription
            assert time.monotonic() < deadline, received.read_text()
            time.sleep(0.02)
        lines, _ = asyncio.run(_replay_through(broker, tmp_path))
        assert subscriber.wait(timeout=20) == 0
    finally:
        subscriber.kill()
        subscriber.wait()
    payloads = [line for line in received.read_text().splitlines() if line.startswith("{")]
    assert payloads == lines == _golden()
