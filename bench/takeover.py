"""Takeover time of a sharded liqmon: the cluster test run with the kill at several moments.

    python -m bench.takeover [--kills 0.2,0.4,0.6,0.8] [--restart-at 0.65] [--seed 7]

Each run is ``tests/test_cluster.py`` as it is (three liqmon shards and a standby on a real
three-node nats-server cluster, a real Mosquitto; lease 2 s): the owner of one partition is
killed with SIGKILL at the given fraction of the workload and NATS node 2 is restarted at
``--restart-at`` (``none``: not restarted). The test itself checks that the de-duplicated alerts
equal a single instance's; this prints, per run, the seconds from the kill to the standby's
``partition_acquired`` and to its ``partition_caught_up`` (the log applied to its end: it
publishes again), the alerts repeated by the takeover, and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(kill_at: float, restart_at: str, seed: int) -> dict[str, object] | None:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "LIQMON_CLUSTER_KILL_AT": str(kill_at),
            "LIQMON_CLUSTER_RESTART_AT": "2" if restart_at == "none" else restart_at,
            "LIQMON_CLUSTER_SEED": str(seed),
            "LIQMON_CLUSTER_REPORT": str(report),
        }
        result = subprocess.run(  # our own test suite
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_cluster.py", "-x"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not report.exists():
            print(result.stdout[-2000:], file=sys.stderr)
            return None
        loaded: dict[str, object] = json.loads(report.read_text())
        return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", default="0.2,0.4,0.6,0.8")
    parser.add_argument("--restart-at", default="0.65")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows = []
    failed = 0
    print("kill_at  acquired_s  caught_up_s  repeated  alerts  killed->taken_by")
    for kill in (float(k) for k in args.kills.split(",")):
        report = one_run(kill, args.restart_at, args.seed)
        if report is None:
            failed += 1
            print(f"{kill:7.2f}  FAILED")
            continue
        rows.append(report)
        print(
            f"{kill:7.2f}  {report['acquired_s']:10.3f}  {report['caught_up_s']:11.3f}  "
            f"{report['repeated']:8}  {report['alerts']:6}  "
            f"{report['killed']}->{report['taken_by']}"
        )
    if rows:
        acquired = [float(r["acquired_s"]) for r in rows]  # type: ignore[arg-type]
        caught = [float(r["caught_up_s"]) for r in rows]  # type: ignore[arg-type]
        print(
            f"median   {statistics.median(acquired):10.3f}  {statistics.median(caught):11.3f}"
            f"   (max {max(acquired):.3f} / {max(caught):.3f}; lease 2 s, goal 4 s)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
