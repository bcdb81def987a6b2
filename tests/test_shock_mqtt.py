"""The what-if shock over MQTT 5 request/response, with a real Mosquitto and real ``liqmon run``
processes: each instance answers for its own book on the request's Response Topic with its
Correlation Data, and ``liqmon shock`` adds the answers of every instance up."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.schema import ShockAnswerPayload, ShockRefusalPayload
from alerts.sink import MemorySink
from liqmon.broker import LocalBroker
from liqmon.replay import replay_file
from liqmon.settings import EngineSection
from monitor.engine import Engine
from monitor.shock import shock
from tests import cli_support
from tests.conftest import ROOT
from tests.mqtt_support import Collector
from tests.process_support import LIQMON, Liqmon

pytestmark = pytest.mark.integration

CRASH = ROOT / "examples" / "crash.jsonl"
BOOKS = {"svc-a": {"alice", "bob", "carol"}, "svc-b": {"dave", "erin", "frank"}}
MOVES = {"XRPUSDT": Decimal("-0.2"), "XRPUSD_PERP": Decimal("-0.2")}
ANSWER_ONLY = {"id", "ts", "instance", "as_of_ts", "elapsed_ms"}


def _book_file(tmp_path: Path, name: str) -> Path:
    """The crash with the accounts of ``name`` only, ending with a position of a marker account
    (its retained state says the service applied the whole file)."""
    accounts = BOOKS[name]
    lines = [
        line
        for line in CRASH.read_text().splitlines()
        if json.loads(line).get("account", "-") in accounts | {"-"}
    ]
    last_ts = max(json.loads(line).get("ts", 0) for line in lines)
    marker = {
        "type": "position",
        "ts": last_ts,
        "account": f"zz-end-{name}",
        "symbol": "XRPUSDT",
        "side": "both",
        "mode": "isolated",
        "qty": "10",
        "entry": "1.1",
        "leverage": "5",
        "isolated_wallet": "3",
    }
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join([*lines, json.dumps(marker)]) + "\n")
    return path


def _final_engine(path: Path) -> Engine:
    """The book the service holds at the end of ``path`` (its engine settings, policy close)."""
    engine = Engine(EngineSection(policy="close").config())
    asyncio.run(replay_file(str(path), engine, MemorySink()))
    return engine


def _service(broker: LocalBroker, tmp_path: Path, name: str, path: Path) -> Liqmon:
    return Liqmon(
        "run",
        "--replay",
        str(path),
        "--mqtt",
        broker.url,
        "--state-dir",
        str(tmp_path / f"state-{name}"),
        "--http-port",
        "0",
        env={
            "LIQMON_ENGINE__POLICY": "close",
            "LIQMON_LOG__LEVEL": "info",
            "LIQMON_LOG__FORMAT": "json",
            "LIQMON_MQTT__INSTANCE": name,
        },
    )


def _ready(broker: LocalBroker, services: dict[str, Liqmon]) -> None:
    """Every service applied its whole file (its marker's retained state arrived) and its
    responder is subscribed (it logged so)."""
    collector = Collector(broker.port, ["liqmon/v1/state/#"])
    try:
        collector.wait_until(
            lambda got: all(
                any(f"/state/zz-end-{name}/" in g.topic for g in got) for name in services
            ),
            timeout=60,
        )
    finally:
        collector.stop()
    for name, service in services.items():
        service.wait_for_line(
            lambda line, name=name: "mqtt_link_connected" in line and f"{name}-shock" in line
        )


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ANSWER_ONLY}


def test_liqmon_shock_adds_up_the_answers_of_two_running_instances(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """Two ``liqmon run`` instances, each with half of the crash's accounts: ``liqmon shock``
    gets one answer from each (as soon as both online instances answered, not at the
    timeout), each exactly the engine's shock of that instance's final book, and prints them
    with their sum."""
    paths = {name: _book_file(tmp_path, name) for name in BOOKS}
    services = {name: _service(broker, tmp_path, name, path) for name, path in paths.items()}
    try:
        _ready(broker, services)
        move_args = ["--move", "XRPUSDT=-20%", "--move", "XRPUSD_PERP=-0.2"]
        result = cli_support.run(
            [*LIQMON, "shock", "--mqtt", broker.url, *move_args, "--json", "--timeout", "30"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
        )
        combined = json.loads(result.stdout)
        assert combined["instances"] == ["svc-a", "svc-b"]
        assert combined["asked"] == ["svc-a", "svc-b"]
        assert combined["missing"] == []
        assert combined["waited_ms"] < 30_000
        liquidated: set[tuple[str, str]] = set()
        for name, path in paths.items():
            body = combined["answers"][name]
            ShockAnswerPayload.model_validate(body)
            assert body["instance"] == name
            expected = shock(_final_engine(path), MOVES).as_dict()
            assert _strip(body) == expected
            liquidated |= {(name, o["account"]) for o in expected["liquidations"]}
        assert {(o["instance"], o["account"]) for o in combined["liquidations"]} == liquidated
        assert {name for name, _ in liquidated} == {"svc-a", "svc-b"}  # both books count
        text = cli_support.run(
            [*LIQMON, "shock", "--mqtt", broker.url, *move_args, "--timeout", "30"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=ROOT,
        ).stdout
        assert "[svc-a]" in text
        assert "[svc-b]" in text
        assert f"total (2 instances)  {len(liquidated)} liquidations" in text
    finally:
        statuses = [service.stop() for service in services.values()]
    assert statuses == [0, 0]


def test_answers_go_to_the_response_topic_with_the_correlation_data(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """On the wire, with a plain MQTT 5 client: a request is answered on its Response Topic
    with its Correlation Data; a malformed one gets a refusal the same way; a request without
    a Response Topic gets nothing."""
    service = _service(broker, tmp_path, "svc-a", _book_file(tmp_path, "svc-a"))
    try:
        _ready(broker, {"svc-a": service})
        answers = Collector(broker.port, ["test/answers/#"])
        requests = [
            (b"good", b'{"moves": {"XRPUSDT": "-20%"}}'),
            (b"bad", b'{"moves": "everything down"}'),
        ]
        for correlation, payload in requests:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "test/answers/me"
            props.CorrelationData = correlation
            answers.client.publish(
                "liqmon/v1/shock/request", payload, qos=1, properties=props
            ).wait_for_publish(5)
        answers.client.publish("liqmon/v1/shock/request", requests[0][1], qos=1).wait_for_publish(5)
        answers.wait_until(lambda got: len(got) >= 2, timeout=30)
        by_correlation = {g.correlation_data: g for g in answers.messages}
        assert set(by_correlation) == {b"good", b"bad"}
        good = by_correlation[b"good"]
        assert good.topic == "test/answers/me"
        assert good.content_type == "application/json"
        body = orjson.loads(good.payload)
        ShockAnswerPayload.model_validate(body)
        assert body["instance"] == "svc-a"
        assert body["moves"] == {"XRPUSDT": -0.2}
        refusal = orjson.loads(by_correlation[b"bad"].payload)
        ShockRefusalPayload.model_validate(refusal)
        assert refusal["error"] == "invalid_request"
        service.wait_for_line(lambda line: "shock_request_without_response_topic" in line)
        assert len(answers.messages) == 2
        answers.stop()
    finally:
        assert service.stop() == 0


def test_liqmon_shock_says_when_nobody_answers(broker: LocalBroker) -> None:
    """With no instance on the broker it waits for its timeout, says so and exits 1; with no
    broker at all it says it could not connect."""
    result = cli_support.run(
        [*LIQMON, "shock", "--mqtt", broker.url, "--move", "BTCUSDT=-8%", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "no instance answered within 1 s" in result.stderr
    port = broker.port
    broker.stop()
    gone = f"mqtt://127.0.0.1:{port}"
    result = cli_support.run(
        [*LIQMON, "shock", "--mqtt", gone, "--move", "BTCUSDT=-8%", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "no connection to mqtt://127.0.0.1" in result.stderr
