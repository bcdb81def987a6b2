"""Time ``liqmon replay`` against the naive engine and against a workload padded with far accounts.

    python -m bench.run              # the figures of BENCHMARKS.md (5 runs each, ~5 minutes)
    python -m bench.run --runs 3     # fewer runs
    python -m bench.run --skip-naive # only the indexed engine (5k vs 5k + 45k far)

Every figure is a whole process, started from the shell as a user would: interpreter start-up,
imports, reading and decompressing the file, the engine, and writing events to a file. Runs of
the commands being compared alternate (A B A B ...), so a drift in the machine's speed hits
both; the report gives the median and the min–max of the wall time, and the ratio of medians.
Before timing, one run of each engine writes its events and the files are compared: a
benchmark of an engine that gives different events would be meaningless.

Three comparisons:

1. naive vs indexed engine, 5,000 accounts, the same file;
2. 5,000 accounts vs the same plus 45,000 far-from-threshold accounts, the same ticks, whole
   process (this includes loading the extra accounts and valuing them at their first ticks);
3. the marginal cost of a tick with and without the far accounts: each account set is replayed
   with ``T`` and ``2T`` ticks (the first ``T`` identical), and ``(time(2T) − time(T)) / T`` is
   the cost of one more tick once everything is loaded.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import generate

OUT = Path(__file__).resolve().parent / "out"
PYTHON = sys.executable


def workload(name: str, accounts: int, far: int, ticks: int, seed: int, symbols: int = 100) -> Path:
    """The seeded workload file (generated once, cached in ``bench/out``)."""
    path = OUT / f"{name}.jsonl.gz"
    if not path.exists():
        generate.main(
            [
                f"--accounts={accounts}",
                f"--far-accounts={far}",
                f"--ticks={ticks}",
                f"--symbols={symbols}",
                f"--seed={seed}",
                f"--out={path}",
            ]
        )
    return path


def indexed(path: Path, out: str) -> list[str]:
    return [PYTHON, "-m", "liqmon.cli", "replay", str(path), "--out", out]


def naive(path: Path, out: str) -> list[str]:
    return [PYTHON, "-m", "bench.naive", "replay", str(path), "--out", out]


def run_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def same_events(a: list[str], b: list[str]) -> bool:
    """Run both once, writing events to files, and compare the files byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        out_a, out_b = os.path.join(tmp, "a.jsonl"), os.path.join(tmp, "b.jsonl")
        a[a.index("--out") + 1] = out_a
        b[b.index("--out") + 1] = out_b
        run_once(a)
        run_once(b)
        return filecmp.cmp(out_a, out_b, shallow=False)


def paired(a: list[str], b: list[str], runs: int) -> tuple[list[float], list[float]]:
    times_a: list[float] = []
    times_b: list[float] = []
    for _ in range(runs):
        times_a.append(run_once(a))
        times_b.append(run_once(b))
    return times_a, times_b


def describe(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args(argv)

    small = workload(f"w5k-s{args.seed}-t{args.ticks}", 5_000, 0, args.ticks, args.seed)
    padded = workload(f"w5k+45k-s{args.seed}-t{args.ticks}", 5_000, 45_000, args.ticks, args.seed)
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"# workloads: {small.name}, {padded.name}; {args.runs} runs each, wall time")

    if not args.skip_naive:
        a, b = indexed(small, os.devnull), naive(small, os.devnull)
        if not same_events(list(a), list(b)):
            print("EVENTS DIFFER between the indexed and the naive engine", file=sys.stderr)
            return 1
        t_indexed, t_naive = paired(a, b, args.runs)
        ratio = statistics.median(t_naive) / statistics.median(t_indexed)
        print(f"indexed, 5k accounts         {describe(t_indexed)}")
        print(f"naive,   5k accounts         {describe(t_naive)}")
        print(f"naive / indexed              {ratio:.1f}x  (events identical)")

    t_small, t_padded = paired(indexed(small, os.devnull), indexed(padded, os.devnull), args.runs)
    ratio = statistics.median(t_padded) / statistics.median(t_small)
    print(f"indexed, 5k accounts         {describe(t_small)}")
    print(f"indexed, 5k + 45k far        {describe(t_padded)}")
    print(f"(5k + 45k far) / 5k          {ratio:.2f}x  (whole process)")

    ticks2 = 2 * args.ticks
    small2 = workload(f"w5k-s{args.seed}-t{ticks2}", 5_000, 0, ticks2, args.seed)
    padded2 = workload(f"w5k+45k-s{args.seed}-t{ticks2}", 5_000, 45_000, ticks2, args.seed)
    t_small2, t_padded2 = paired(
        indexed(small2, os.devnull), indexed(padded2, os.devnull), args.runs
    )
    per_tick_small = (statistics.median(t_small2) - statistics.median(t_small)) / args.ticks
    per_tick_padded = (statistics.median(t_padded2) - statistics.median(t_padded)) / args.ticks
    print(f"indexed, 5k, {ticks2:,} ticks  {describe(t_small2)}")
    print(f"indexed, 5k + 45k, {ticks2:,}  {describe(t_padded2)}")
    print(f"marginal tick, 5k            {per_tick_small * 1e6:.2f} us")
    print(f"marginal tick, 5k + 45k far  {per_tick_padded * 1e6:.2f} us")
    print(f"marginal tick ratio          {per_tick_padded / per_tick_small:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
