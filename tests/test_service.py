"""``liqmon run``: crash safety under kill -9, graceful SIGTERM, account records over MQTT,
hostile input, the ops endpoint and configuration errors."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.topics import ALERT_KINDS
from bench.generate import Workload
from liqmon.broker import LocalBroker, free_port
from liqmon.persistence import load_snapshot
from monitor.snapshot import EngineSnapshot
from tests.conftest import ROOT
from tests.mqtt_support import Collector

CRASH = ROOT / "examples" / "crash.jsonl"
GOLDEN = ROOT / "tests" / "data" / "golden" / "crash.events.jsonl"
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "LIQMON_ENGINE__POLICY": "close",
        "LIQMON_LOG__LEVEL": "warning",
        "LIQMON_MQTT__INSTANCE": "svc",
        **extra,
    }


def _workload(path: Path, seed: int) -> Path:
    args = argparse.Namespace(
        accounts=300,
        far_accounts=0,
        ticks=20_000,
        symbols=12,
        inverse_share=0.25,
        record_every=40,
        jump_probability=0.003,
        seed=seed,
    )
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in Workload(args).records()) + b"\n")
    return path


def _run_args(source: Path, state: Path, out: Path, *extra: str) -> list[str]:
    return [
        *LIQMON,
        "run",
        "--replay",
        str(source),
        "--exit-at-end",
        "--out",
        str(out),
        "--state-dir",
        str(state),
        "--http-port",
        "0",
        *extra,
    ]


def _alerts(path: Path) -> list[dict[str, object]]:
    """The alert events of a JSON Lines file (the service also writes its notices there)."""
    lines = (json.loads(line) for line in path.read_text().splitlines())
    return [e for e in lines if e["event"] in ALERT_KINDS]


def _ids(path: Path) -> list[str]:
    return [str(e["id"]) for e in _alerts(path)]


def _engine_state(state: Path) -> EngineSnapshot:
    """The engine's state in the snapshot, without the trigger bands (they depend on when
    entities were last evaluated, which a restart changes, not on the state itself)."""
    snapshot = load_snapshot(state / "snapshot.npz").without_bands()
    snapshot.meta.pop("generation")
    snapshot.meta.pop("service")
    return snapshot


@pytest.mark.parametrize(
    "seed", [21, *(pytest.param(s, marks=pytest.mark.slow) for s in (11, 22, 23, 12))]
)
def test_kill_9_at_random_points_loses_and_repeats_nothing(tmp_path: Path, seed: int) -> None:
    """A paced run killed with -9 several times and restarted each time ends with exactly the
    events (ids, in order, none twice) and the final state of an uninterrupted run."""
    source = _workload(tmp_path / "workload.jsonl", seed)
    env = _env(LIQMON_STATE__SNAPSHOT_INTERVAL_S="0.5")
    whole = tmp_path / "whole"
    subprocess.run(
        _run_args(source, whole / "state", whole / "events.jsonl"),
        env=env,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    broken = tmp_path / "broken"
    rng = random.Random(seed)
    kills = 0
    while True:
        process = subprocess.Popen(
            _run_args(source, broken / "state", broken / "events.jsonl", "--speed", "12"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = rng.uniform(0.6, 1.6) if kills < 5 else 120
            assert process.wait(timeout=deadline) == 0
            break
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
    assert kills >= 3
    expected = _ids(whole / "events.jsonl")
    assert len(expected) > 100
    assert _ids(broken / "events.jsonl") == expected
    assert _engine_state(broken / "state") == _engine_state(whole / "state")


def test_sigterm_drains_snapshots_and_goes_offline(broker: LocalBroker, tmp_path: Path) -> None:
    """SIGTERM mid-run: intake stops, the outbox reaches the broker, the status goes offline
    (published, not the Last Will), a snapshot is written and the exit status is 0; a restart
    continues from there without repeating an event."""
    collector = Collector(broker.port, ["liqmon/v1/#"])
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    args = _run_args(CRASH, state, out, "--speed", "20000", "--mqtt", broker.url)
    process = subprocess.Popen(
        args, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    collector.wait_until(lambda got: any("/events/" in g.topic for g in got), timeout=30)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert (state / "snapshot.npz").exists()
    statuses = [g.body["status"] for g in collector.messages if "/status/" in g.topic and g.body]
    assert statuses[0] == "online"
    assert statuses[-1] == "offline"
    first = _ids(out)
    assert 0 < len(first) < 13
    subprocess.run(
        args,
        env=_env(),
        cwd=ROOT,
        check=True,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    collector.wait_until(lambda _: len(collector.alerts()) >= 13, timeout=20)
    collector.stop()
    golden = [json.loads(line)["id"] for line in GOLDEN.read_text().splitlines()]
    assert _ids(out) == golden
    assert [a["id"] for a in collector.alerts()] == golden


def test_account_records_over_mqtt_give_the_events_of_the_replay(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """The example's contracts, balances and positions published to the input topic, its ticks
    from a file: the same alert events as replaying the whole file. Bad messages go to the
    rejects topic with a reason and change nothing."""
    lines = CRASH.read_text().splitlines()
    start = 1636956000000  # the first tick; the setup records come before it
    setup = [line for line in lines if json.loads(line).get("ts", 0) < start]
    rest = [line for line in lines if line not in setup]
    ticks = tmp_path / "ticks.jsonl"
    # a tick for no contract (ignored) an hour earlier paces the first real tick to come
    # 180 ms after start at 20,000x: time for the queued account records to apply first
    earlier = json.dumps({"type": "tick", "ts": start - 3_600_000, "symbol": "NONE", "mark": "1"})
    ticks.write_text("\n".join([earlier, *rest]) + "\n")
    # liqmon's persistent input session, made in advance: the broker queues what follows
    Collector(broker.port, ["liqmon/v1/in/#"], client_id="liqmon-svc-in", persistent=True).stop()
    rejects = Collector(broker.port, ["liqmon/v1/rejects"])
    hostile = [
        b"not json at all",
        b'{"type":"balance","ts":"soon","account":"x","asset":"USDT","wallet":"1"}',
        b'{"type":"balance","ts":1,"account":"x","asset":"USDT","wallet":"1e400"}',
        b'{"type":"margin","ts":1,"account":"nobody","symbol":"XRPUSDT","side":"both","delta":"5"}',
        b'{"type":"position","ts":1,"account":"x","symbol":"NOPE","side":"both",'
        b'"mode":"cross","qty":"1","entry":"1","leverage":"1"}',
    ]
    feeder = Collector(broker.port, [])
    for line in [*[s.encode() for s in setup], *hostile]:
        feeder.client.publish("liqmon/v1/in/records", line, qos=1).wait_for_publish(5)
    feeder.client.publish("liqmon/v1/in/nowhere", b"{}", qos=1).wait_for_publish(5)
    feeder.stop()
    out = tmp_path / "events.jsonl"
    args = [
        *LIQMON,
        "run",
        "--replay",
        str(ticks),
        "--exit-at-end",
        "--out",
        str(out),
        "--state-dir",
        str(tmp_path / "state"),
        "--http-port",
        "0",
        "--mqtt",
        broker.url,
        "--speed",
        "20000",
    ]
    subprocess.run(
        args,
        env=_env(),
        cwd=ROOT,
        check=True,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rejects.wait_until(lambda got: len(got) >= len(hostile) + 1, timeout=20)
    rejects.stop()
    reasons = sorted(g.body["reason"] for g in rejects.messages if g.body)
    assert reasons == sorted(
        [
            "invalid_json",
            "invalid_field",
            "number_out_of_range",
            "margin_not_open_isolated",
            "unknown_symbol",
            "unknown_topic",
        ]
    )
    got = _alerts(out)
    want = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
    assert [(e["event"], e["account"], e["ts"], e["margin_balance"]) for e in got] == [
        (e["event"], e["account"], e["ts"], e["margin_balance"]) for e in want
    ]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_health_and_readiness_over_http(tmp_path: Path) -> None:
    """/metrics is valid Prometheus text with the documented families; /healthz answers 200;
    /readyz answers 200 once state is restored."""
    port = str(free_port())
    process = subprocess.Popen(
        [
            *LIQMON,
            "run",
            "--replay",
            str(CRASH),
            "--state-dir",
            str(tmp_path / "state"),
            "--http-port",
            port,
            "--speed",
            "2000",
        ],
        env=_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        assert _get(f"{base}/healthz") == (200, "ok\n")
        status, text = _get(f"{base}/metrics")
        assert status == 200
        names = {family.name for family in text_string_to_metric_families(text)}
        assert {
            "liqmon_ticks",
            "liqmon_ticks_dropped",
            "liqmon_records_rejected",
            "liqmon_apply_seconds",
            "liqmon_events",
            "liqmon_queue_depth",
            "liqmon_outbox_depth",
            "liqmon_mqtt_connected",
            "liqmon_feed_connected",
            "liqmon_entities_by_level",
            "liqmon_positions",
            "liqmon_accounts",
        } <= names
        assert _get(f"{base}/nothing")[0] == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LIQMON_MQTT__URL": "http://broker"}, "mqtt.url"),
        ({"LIQMON_ENGINE__POLICY": "sometimes"}, "engine.policy"),
        ({"LIQMON_FEED__VENUE": "ftx"}, "feed.venue"),
        ({"LIQMON_STATE__SNAPSHOT_INTERVAL_S": "0"}, "state.snapshot_interval_s"),
        ({"LIQMON_HTTP__PORT": "http"}, "http.port"),
        ({"LIQMON_FEED__VENU": "bybit"}, "feed.venu"),  # a typo is not silently ignored
    ],
)
def test_a_bad_setting_fails_fast_naming_it(env: dict[str, str], message: str) -> None:
    """Exit 2 with one line naming the setting, its variable and its file key."""
    result = subprocess.run(
        [*LIQMON, "config", "--print"],
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    assert "LIQMON_" in line


def test_config_print_masks_secrets(tmp_path: Path) -> None:
    """The effective configuration shows where secrets are set, never what they are."""
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")  # a test secret, checked never to be shown
    config = tmp_path / "liqmon.toml"
    config.write_text(
        f'[mqtt]\nurl = "mqtt://ops:inline@broker:1883"\npassword_file = "{secret}"\n'
    )
    result = subprocess.run(
        [*LIQMON, "config", "--print", "--config", str(config)],
        env={**_env(), "LIQMON_MQTT__PASSWORD": "fromenv"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=ROOT,
    )
    assert "inline" not in result.stdout
    assert "fromenv" not in result.stdout
    assert "hunter2" not in result.stdout
    printed = json.loads(result.stdout)
    assert printed["mqtt"]["url"] == "mqtt://ops:***@broker:1883"
    assert printed["mqtt"]["password"] == "***"  # noqa: S105  # the mask


def test_restart_with_a_torn_journal_line_recovers(tmp_path: Path) -> None:
    """A journal whose last line was cut by a crash: the line is dropped, the rest applies."""
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    subprocess.run(
        _run_args(CRASH, state, out),
        env=_env(LIQMON_STATE__SNAPSHOT_INTERVAL_S="999"),
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    shutil.copy(state / "snapshot.npz", tmp_path / "kept.npz")
    journal = next(state.glob("journal-*.jsonl"))
    with open(journal, "ab") as stream:
        stream.write(b'{"type":"balance","ts":9,"acc')
    result = subprocess.run(
        _run_args(CRASH, state, out),
        env=_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _ids(out) == [json.loads(line)["id"] for line in GOLDEN.read_text().splitlines()]


def test_restarts_are_explicit_and_fresh_starts_over(tmp_path: Path) -> None:
    """``run`` on examples/crash.jsonl: the same command again restores and writes nothing
    twice; with another ``--out`` it refuses (exit 2, one line naming the state directory and
    both choices) and writes nothing; ``--fresh`` then starts over and writes every alert to the
    new file, and on the old one it appends them after the lines it already holds."""
    source, state = ROOT / "examples" / "crash.jsonl", tmp_path / "state"
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    done = subprocess.run(_run_args(source, state, first), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    alerts = _ids(first)
    assert alerts
    again = subprocess.run(_run_args(source, state, first), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert _ids(first) == alerts
    refused = subprocess.run(
        _run_args(source, state, second), capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("liqmon")]
    for needed in (str(state), "--resume", "--fresh", "b.jsonl"):
        assert needed in line
    assert not second.exists() or _ids(second) == []
    fresh = subprocess.run(
        _run_args(source, state, second, "--fresh"), capture_output=True, timeout=120
    )
    assert fresh.returncode == 0, fresh.stderr
    assert _ids(second) == alerts
    fresh_again = subprocess.run(
        _run_args(source, state, first, "--fresh"), capture_output=True, timeout=120
    )
    assert fresh_again.returncode == 0, fresh_again.stderr
    assert _ids(first) == alerts + alerts  # started over: its earlier lines stay
