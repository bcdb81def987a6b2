"""Sharded liqmon on a real three-node NATS JetStream cluster: three shards and a standby.

A seeded workload (:func:`tests.cluster_support.workload`) is fed the way a deployment sees it:
account records published by the trading system to ``liqmon.in.records.{account}`` (the
servers' ``partition(3, account)`` mapping puts each in its partition's log), ticks pushed by a
venue that every instance reads and relays. While it runs, the owner of one partition is killed
with SIGKILL and one NATS node is killed and started again. The alerts that reach a real
Mosquitto from all instances, de-duplicated by id, must be exactly those of one ``liqmon
replay`` of the same input: none lost, none changed, none extra. The standby's takeover time
(kill to partition acquired, and to its log applied to the end) is measured and reported.

The kill moments are the test's parameters; ``LIQMON_CLUSTER_KILL_AT`` and
``LIQMON_CLUSTER_RESTART_AT`` (fractions of the workload, 0-1) and ``LIQMON_CLUSTER_SEED``
move them, and ``LIQMON_CLUSTER_REPORT`` names a JSON file for the measured figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest

from liqmon.broker import LocalBroker
from liqmon.cluster.subjects import input_subject, partition_of, venue_subject
from tests.cluster_support import BroadcastVenue, Workload, wait_for, workload
from tests.mqtt_support import Collector, broker  # noqa: F401  # the broker fixture
from tests.nats_support import NatsCluster, require_nats_server
from tests.process_support import LIQMON, Liqmon

pytestmark = pytest.mark.integration

PARTITIONS = 3
LEASE_S = 2.0
ALERTS = ("margin_warning", "margin_recovered", "liquidation")


def _config(
    directory: Path, name: str, cluster: NatsCluster, venue: BroadcastVenue, mqtt_url: str
) -> Path:
    urls = ", ".join(f'"{u}"' for u in cluster.urls)
    path = directory / f"{name}.toml"
    path.write_text(
        f"""
accounts = "{directory / "contracts.jsonl"}"

[feed]
venue = "binance-usdm"
url = "{venue.url}"

[mqtt]
url = "{mqtt_url}"
instance = "{name}"
accounts_input = false
answer_shocks = false

[state]
dir = "{directory / name}"

[http]
port = 0

[log]
format = "json"

[cluster]
urls = [{urls}]
partitions = {PARTITIONS}
lease_s = {LEASE_S}
snapshot_interval_s = 1.0
"""
    )
    return path


def _logged(process: Liqmon, event: str) -> list[dict[str, Any]]:
    found = []
    for line in process.lines:
        if f'"{event}"' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == event:
                found.append(entry)
    return found


def _metrics(process: Liqmon) -> str:
    """What the instance's /metrics answers (its port from its ``http_listening`` log)."""
    port = int(_logged(process, "http_listening")[-1]["port"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def _when(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def _owners(instances: dict[str, Liqmon]) -> dict[int, str]:
    """Who owns each partition now, from the logs (the latest acquisition not lost since)."""
    owners: dict[int, tuple[float, str]] = {}
    for name, process in instances.items():
        if process.process.poll() is not None:
            continue
        events = [(_when(e), "acquired", e) for e in _logged(process, "partition_acquired")]
        events += [(_when(e), "lost", e) for e in _logged(process, "partition_lost")]
        for when, what, entry in sorted(events, key=lambda x: x[0]):
            partition = int(entry["partition"])
            if what == "acquired":
                if partition not in owners or owners[partition][0] <= when:
                    owners[partition] = (when, name)
            elif partition in owners and owners[partition][1] == name:
                del owners[partition]
    return {p: name for p, (_, name) in owners.items()}


async def _relayed(js: Any, frame: bytes) -> bool:
    """Whether ``frame`` is the last venue frame of every partition's log (so that the next
    record is stored after it, as in the reference)."""
    for partition in range(PARTITIONS):
        try:
            last = await js.get_last_msg("LIQMON", venue_subject("liqmon", partition))
        except Exception:  # not there yet, a node restarting, an election: not yet
            return False
        if last.data != frame:
            return False
    return True


async def _publish(js: Any, subject: str, payload: bytes, message_id: str) -> None:
    """Publish until acknowledged; a retry of a publish that was stored after all is dropped
    by JetStream (same message id), as a trading system's publisher does."""
    for _ in range(200):
        try:
            await js.publish(subject, payload, timeout=2.0, headers={"Nats-Msg-Id": message_id})
            return
        except Exception:  # a node restarting, an election: publish again
            await asyncio.sleep(0.05)
    raise TimeoutError(f"could not publish to {subject}")


def _reference(tmp_path: Path, load: Workload) -> dict[str, dict[str, Any]]:
    """The alerts of a single ``liqmon replay`` of the same input, by id (with ``liqmon
    run``'s policy, ``hold``)."""
    source = tmp_path / "reference.jsonl"
    source.write_text("\n".join(load.reference) + "\n")
    out = tmp_path / "reference.events.jsonl"
    result = subprocess.run(  # our own command
        [*LIQMON, "replay", str(source), "--policy", "hold", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    alerts = [e for e in events if e["event"] in ALERTS]
    ids = [e["id"] for e in alerts]
    assert len(set(ids)) == len(ids), "a single instance's ids are unique"
    return {e["id"]: e for e in alerts}


def _fraction(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


async def test_three_shards_and_a_standby_lose_nothing_through_a_kill_and_a_node_restart(
    tmp_path: Path,
    broker: LocalBroker,  # noqa: F811  # the fixture
) -> None:
    """The union of the instances' alerts, de-duplicated by id, equals one instance's: the
    owner of a partition is killed -9 and a NATS node restarted while the workload runs."""
    require_nats_server()
    seed = int(os.environ.get("LIQMON_CLUSTER_SEED", "7"))
    load = workload(seed)
    reference = _reference(tmp_path, load)
    assert len(reference) >= 10, "the workload raises alerts"
    touched = {partition_of(step.account, PARTITIONS) for step in load.steps if step.account}
    assert touched == set(range(PARTITIONS)), "every partition holds accounts"
    (tmp_path / "contracts.jsonl").write_text(load.seeds)

    cluster = NatsCluster(tmp_path / "nats", PARTITIONS).start()
    collector = Collector(
        broker.port, ["liqmon/v1/events/#"], client_id="cluster-test", persistent=True
    )
    instances: dict[str, Liqmon] = {}
    try:
        async with BroadcastVenue() as venue:
            for name in ("s1", "s2", "s3", "standby"):
                config = _config(tmp_path, name, cluster, venue, broker.url)
                instances[name] = Liqmon("run", "--config", str(config))
                if name == "s3":  # the fourth starts once three partitions have owners
                    await wait_for(
                        lambda: _async(len(_owners(instances)) == PARTITIONS), 60, "3 owners"
                    )
            await wait_for(lambda: _async(venue.connected == 4), 30, "4 instances on the venue")
            report = await _feed(load, venue, cluster, instances)
            await _wait_for_alerts(collector, reference)
            if "taken_by" in report:
                metrics = await asyncio.to_thread(_metrics, instances[str(report["taken_by"])])
                owned = f'liqmon_cluster_partition_owned{{partition="{report["partition"]}"}} 1.0'
                assert owned in metrics, "the new owner's metrics show its partition"
                assert 'liqmon_cluster_lag_messages{partition="' in metrics
                assert "liqmon_cluster_acquisitions_total" in metrics
    finally:
        for name, process in instances.items():
            process.stop(signal.SIGTERM, timeout=30)
            (tmp_path / f"{name}.log").write_text(process.output())  # to read after a failure
        collector.stop()
        cluster.stop()

    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in collector.messages:
        body = message.body
        if body is not None and body.get("event") in ALERTS:
            got[body["id"]].append(body)
    lost = set(reference) - set(got)
    extra = set(got) - set(reference)
    missing = sorted(
        (partition_of(reference[i]["account"], PARTITIONS), reference[i]["ts"], i) for i in lost
    )
    odd = [reference[i] for i in sorted(lost)[:2]] + [got[i][0] for i in sorted(extra)[:2]]
    assert not lost, f"{len(lost)} lost (partition, ts, id): {missing}; {report}; extra: {odd}"
    assert not extra, f"{len(extra)} alerts no single instance gives: {odd}"
    for event_id, copies in got.items():
        assert all(copy == reference[event_id] for copy in copies), f"alert {event_id} changed"
    report["alerts"] = len(reference)
    report["repeated"] = sum(len(c) - 1 for c in got.values())
    if path := os.environ.get("LIQMON_CLUSTER_REPORT"):
        await asyncio.to_thread(Path(path).write_text, json.dumps(report, indent=2) + "\n")
    # the takeover's time is measured, not bounded here (goal: two lease periods; the figures
    # are in BENCHMARKS.md, from python -m bench.takeover): _feed waited at most ten periods
    # for the new owner to apply the log to its end


async def _async(value: bool) -> bool:
    return value


async def _feed(
    load: Workload, venue: BroadcastVenue, cluster: NatsCluster, instances: dict[str, Liqmon]
) -> dict[str, Any]:
    """Feed every step in order (each in the log before the next), killing one owner and
    restarting one node on the way; what the takeover took."""
    count = len(load.steps)
    kill_at = int(_fraction("LIQMON_CLUSTER_KILL_AT", 0.4) * count)
    restart_at = int(_fraction("LIQMON_CLUSTER_RESTART_AT", 0.65) * count)
    nc = await nats.connect(servers=cluster.urls, max_reconnect_attempts=-1)
    js = nc.jetstream(timeout=2.0)
    killed: tuple[int, str, float] | None = None
    restarting: asyncio.Task[None] | None = None
    try:
        for index, step in enumerate(load.steps):
            if index == kill_at:
                # the owner of the lowest partition that has one (right after the node's
                # restart, leases may be changing hands)
                await wait_for(lambda: _async(bool(_owners(instances))), 10 * LEASE_S, "an owner")
                owners = _owners(instances)
                partition = min(owners)
                victim = owners[partition]
                instances[victim].process.send_signal(signal.SIGKILL)
                killed = (partition, victim, time.time())
            if index == restart_at:
                restarting = asyncio.create_task(asyncio.to_thread(cluster.restart, 1, 1.0))
            if step.account is not None:
                subject = input_subject("liqmon", "records", step.account)
                await _publish(js, subject, step.line.encode(), f"step-{index}")
            else:
                await venue.push(step.line)

                async def stored(frame: bytes = step.line.encode()) -> bool:
                    return await _relayed(js, frame)

                await wait_for(stored, 30, f"frame {index} in every partition's log")
        if restarting is not None:
            await restarting
    finally:
        await nc.close()
    if killed is None:  # no kill in this run (LIQMON_CLUSTER_KILL_AT past the end)
        return {"steps": count, "frames": load.frames, "caught_up_s": 0.0}
    partition, victim, at = killed

    async def taken() -> bool:
        return _owners(instances).get(partition) not in (None, victim)

    await wait_for(taken, 10 * LEASE_S, "a standby to take the dead owner's partition")
    taker = _owners(instances)[partition]
    acquired = [
        e for e in _logged(instances[taker], "partition_acquired") if e["partition"] == partition
    ]

    async def applied() -> bool:
        return any(
            e["partition"] == partition and _when(e) >= _when(acquired[-1])
            for e in _logged(instances[taker], "partition_caught_up")
        )

    await wait_for(applied, 10 * LEASE_S, "the new owner to apply the log to its end")
    caught_up = [
        e for e in _logged(instances[taker], "partition_caught_up") if e["partition"] == partition
    ]
    return {
        "killed": victim,
        "partition": partition,
        "taken_by": taker,
        "lease_s": LEASE_S,
        "acquired_s": round(_when(acquired[-1]) - at, 3),
        "caught_up_s": round(_when(caught_up[-1]) - at, 3),
        "steps": count,
        "frames": load.frames,
    }


async def _wait_for_alerts(collector: Collector, reference: dict[str, dict[str, Any]]) -> None:
    def has_all(messages: list[Any]) -> bool:
        ids = {m.body["id"] for m in messages if m.body and m.body.get("event") in ALERTS}
        return set(reference) <= ids

    with contextlib.suppress(TimeoutError):  # the assertions say what is missing
        await asyncio.to_thread(collector.wait_until, has_all, 60.0)
