"""Exchange-scale benchmarks: throughput against the parse floor, the naive engine, far
accounts, and memory per position.

    python -m bench.scale                 # every figure of BENCHMARKS.md "At exchange scale"
    python -m bench.scale --runs 5 --only floor,far,memory
    python -m bench.scale --ticks 200000  # a smaller, quicker variant

Workloads (``bench/generate.py``, seeded, cached in ``bench/out``): 5,000, 50,000 and 100,000
active accounts (1–4 positions each, about 2.5, isolated and cross, linear and inverse, real
Binance tiers) over 200 symbols and 1,000,000 ticks; and 5,000 active accounts plus 95,000 far
from any threshold on the same ticks.

Figures are whole processes started as a user would (``liqmon replay FILE --out /dev/null``),
the two commands of a comparison alternating run by run; medians with min–max:

* ``floor``:  replay vs ``python -m bench.floor`` (read + decode every line with the same reader
  and JSON library: the physical limit of a Python replay), at each size;
* ``naive``:  replay vs ``python -m bench.naive replay`` at 5,000 accounts, events compared
  byte for byte first;
* ``far``:    5,000 active + 95,000 far vs the 5,000 alone, same ticks;
* ``memory``: ``python -m bench.memory`` at each size: RSS per open position.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench.run import describe, indexed, naive, paired, same_events, workload

PYTHON = sys.executable
SYMBOLS = 200
SIZES = (5_000, 50_000, 100_000)
PARTS = ("floor", "naive", "far", "memory")


def floor(path: Path) -> list[str]:
    return [PYTHON, "-m", "bench.floor", str(path)]


def _name(accounts: int, far: int, ticks: int, seed: int) -> str:
    far_part = f"+{far // 1000}k" if far else ""
    return f"s{SYMBOLS}-w{accounts // 1000}k{far_part}-s{seed}-t{ticks}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))

    def load(accounts: int, far: int = 0) -> Path:
        name = _name(accounts, far, args.ticks, args.seed)
        return workload(name, accounts, far, args.ticks, args.seed, symbols=SYMBOLS)

    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.runs} runs each, wall time, whole process"
    )
    if "floor" in parts:
        for size in SIZES:
            path = load(size)
            t_replay, t_floor = paired(indexed(path, os.devnull), floor(path), args.runs)
            ratio = statistics.median(t_replay) / statistics.median(t_floor)
            print(f"{path.name}: replay {describe(t_replay)}")
            print(f"{path.name}: floor  {describe(t_floor)}")
            print(f"{path.name}: replay / floor {ratio:.1f}x")
    if "naive" in parts:
        path = load(SIZES[0])
        a, b = indexed(path, os.devnull), naive(path, os.devnull)
        if not same_events(list(a), list(b)):
            print("EVENTS DIFFER between the indexed and the naive engine", file=sys.stderr)
            return 1
        t_indexed, t_naive = paired(a, b, args.runs)
        ratio = statistics.median(t_naive) / statistics.median(t_indexed)
        print(f"{path.name}: indexed {describe(t_indexed)}")
        print(f"{path.name}: naive   {describe(t_naive)}")
        print(f"{path.name}: naive / indexed {ratio:.1f}x (events identical)")
    if "far" in parts:
        small, padded = load(SIZES[0]), load(SIZES[0], 95_000)
        t_small, t_padded = paired(
            indexed(small, os.devnull), indexed(padded, os.devnull), args.runs
        )
        ratio = statistics.median(t_padded) / statistics.median(t_small)
        print(f"{small.name}: {describe(t_small)}")
        print(f"{padded.name}: {describe(t_padded)}")
        print(f"(5k + 95k far) / 5k: {ratio:.2f}x")
    if "memory" in parts:
        for size in SIZES:
            path = load(size)
            result = subprocess.run(
                [PYTHON, "-m", "bench.memory", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(result.stdout)
            print(
                f"{path.name}: {figures['indexed_positions']:,} open positions indexed, "
                f"{figures['bytes_per_position']:,} bytes each "
                f"(RSS {figures['base_rss_mib']} -> {figures['indexed_rss_mib']} MiB; "
                f"end of file {figures['end_rss_mib']} MiB, peak {figures['peak_rss_mib']} MiB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
