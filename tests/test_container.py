"""The container's conventions, and its entrypoint command run exactly as the image runs it
(the image itself cannot be built on our machines: no Docker engine)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from liqmon.broker import LocalBroker, free_port
from liqmon.settings import load_settings
from tests.conftest import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _dockerfile_env() -> dict[str, str]:
    block = DOCKERFILE.split("\nENV ", 2)[-1].split("\nRUN ", 1)[0]
    return dict(re.findall(r"(LIQMON_\w+)=(\S+)", block))


def test_the_image_runs_as_a_non_root_user_with_exec_form_commands() -> None:
    """Slim base, a non-root USER, exec-form ENTRYPOINT/CMD/HEALTHCHECK, a state volume."""
    assert "FROM python:3.11-slim" in DOCKERFILE
    assert re.search(r"^USER liqmon$", DOCKERFILE, re.MULTILINE)
    assert 'ENTRYPOINT ["liqmon"]' in DOCKERFILE
    assert 'CMD ["run"]' in DOCKERFILE
    assert 'CMD ["liqmon", "health", "--port", "9108"]' in DOCKERFILE
    assert 'VOLUME ["/var/lib/liqmon"]' in DOCKERFILE


def test_every_setting_in_the_image_and_compose_file_is_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The LIQMON_* variables of the Dockerfile and of compose.yaml load without error (a typo
    there would stop the container at start)."""
    env = {**_dockerfile_env(), **COMPOSE["services"]["liqmon"]["environment"]}
    env["LIQMON_BRACKETS"] = json.dumps([str(ROOT / "deploy" / "brackets.json")])
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert settings.mqtt.url == "mqtt://mosquitto:1883"
    assert settings.feed.venue == "binance-usdm"
    assert settings.state.dir == Path("/var/lib/liqmon")


def test_the_entrypoint_runs_configured_by_environment_only(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """``liqmon run`` with nothing but the image's variables (a recorded source instead of a
    venue): healthy, ready, JSON logs, and a clean exit on SIGTERM (docker stop)."""
    port = free_port()
    env = {
        **os.environ,
        **_dockerfile_env(),
        "LIQMON_STATE__DIR": str(tmp_path / "state"),
        "LIQMON_HTTP__HOST": "127.0.0.1",
        "LIQMON_HTTP__PORT": str(port),
        "LIQMON_MQTT__URL": broker.url,
        "LIQMON_FEED__REPLAY": str(ROOT / "examples" / "crash.jsonl"),
        "LIQMON_FEED__REPLAY_SPEED": "100",
    }
    process = subprocess.Popen(
        [*LIQMON, "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = [*LIQMON, "health", "--port", str(port)]
        deadline = time.monotonic() + 30
        while subprocess.run([*health, "--ready"], capture_output=True, check=False).returncode:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the service never became ready"
            time.sleep(0.1)
        assert subprocess.run(health, capture_output=True, check=False).returncode == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=45)
    assert process.returncode == 0
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert {"service_started", "mqtt_connected", "service_stopped"} <= {e["event"] for e in logs}


def test_health_fails_when_nothing_listens() -> None:
    """The probe exits 1 when the service is down (what marks the container unhealthy)."""
    result = subprocess.run(
        [*LIQMON, "health", "--port", str(free_port())], capture_output=True, check=False
    )
    assert result.returncode == 1
