"""A quick performance guard for CI: replay time over the parse floor on a small fixed workload.

    python -m bench.guard            # exit 1 when the ratio exceeds the bound

Generates a seeded workload (2,000 accounts, 1–4 positions each, 200 symbols, 100,000 ticks;
about a second), then times, alternating, ``liqmon replay FILE --out /dev/null`` and the parse
floor (``python -m bench.floor FILE``: read and decode every line) as whole processes, three
runs each. Both are measured in the same run on the same machine, so the ratio of their medians
does not depend on how fast the machine is. A slide back to per-account work per tick would
multiply it; the bound is about twice the ratio measured when it was set (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench import generate
from bench.run import indexed, paired
from bench.scale import floor

BOUND = 5.5
"""About twice the ratio measured when the guard was last set (2.7x with the columnar book,
BENCHMARKS.md)."""
RUNS = 3


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "guard.jsonl.gz"
        generate.main(
            [
                "--accounts=2000",
                "--ticks=100000",
                "--symbols=200",
                "--seed=7",
                f"--out={path}",
            ]
        )
        t_replay, t_floor = paired(indexed(path, os.devnull), floor(path), RUNS)
    ratio = statistics.median(t_replay) / statistics.median(t_floor)
    verdict = "ok" if ratio <= BOUND else "TOO SLOW"
    print(
        f"performance guard: replay {statistics.median(t_replay):.2f} s, parse floor "
        f"{statistics.median(t_floor):.2f} s, ratio {ratio:.1f}x (bound {BOUND:g}x): {verdict}"
    )
    return 0 if ratio <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
