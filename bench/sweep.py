"""Time and memory against the size of the book: 5,000 to 1,000,000 accounts, one plot.

    python -m bench.sweep                      # every size, 3 runs each (1M: 1 run)
    python -m bench.sweep --sizes 5000,50000   # a quicker subset
    python -m bench.sweep --plot-only          # redraw bench/scale.png from bench/out/sweep.json

Two families of seeded workloads (``bench/generate.py``, 200 symbols, 1,000,000 ticks, cached in
``bench/out``): *active* books, where every account trades at 3–50x leverage, and *padded*
books, 5,000 active accounts plus far-from-threshold ones up to the size. For each size and
family, whole processes as a user starts them (``liqmon replay FILE --out /dev/null``):

* the replay of the book alone (every account record, no tick: the file cut at its first tick),
* the replay of the whole file, and
* the peak resident set of each (``ru_maxrss`` of the finished child), per open position.

``(whole − book) / 1,000,000`` is the cost of a tick once the book is loaded: flat in the padded
family means far accounts cost nothing per tick. Figures are medians with min–max; the plot
(``bench/scale.png``, needs matplotlib: ``pip install matplotlib``) shows time, memory per
position and the per-tick cost against accounts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.run import OUT, workload

PYTHON = sys.executable
SYMBOLS = 200
TICKS = 1_000_000
ACTIVE_PADDED = 5_000
RESULTS = OUT / "sweep.json"
PLOT = Path(__file__).resolve().parent / "scale.png"


def _name(family: str, accounts: int) -> str:
    if family == "active":
        return f"s{SYMBOLS}-w{accounts // 1000}k-s1-t{TICKS}"
    far = accounts - ACTIVE_PADDED
    return f"s{SYMBOLS}-w5k+{far // 1000}k-s1-t{TICKS}"


def _files(family: str, accounts: int) -> tuple[Path, Path]:
    """The whole workload and its book alone (cut before the first tick)."""
    active = accounts if family == "active" else ACTIVE_PADDED
    far = 0 if family == "active" else accounts - ACTIVE_PADDED
    whole = workload(_name(family, accounts), active, far, TICKS, 1, symbols=SYMBOLS)
    book = whole.with_name(whole.name.replace(".jsonl.gz", ".book.jsonl.gz"))
    if not book.exists():
        with gzip.open(whole, "rb") as source, gzip.open(book, "wb", compresslevel=1) as out:
            for line in source:
                if b'"type":"tick"' in line:
                    break
                out.write(line)
    return whole, book


def _run(path: Path, policy: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one replay process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [PYTHON, "-m", "liqmon.cli", "replay", str(path), "--out", os.devnull, "--policy", policy],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status:
        raise RuntimeError(f"replay of {path} failed ({status})")
    return elapsed, usage.ru_maxrss * 1024


def _positions(path: Path) -> int:
    """Open positions at the end of the book (a count of the slots its records leave open)."""
    slots: dict[tuple[str, str, str], bool] = {}
    with gzip.open(path, "rb") as source:
        for line in source:
            if b'"type":"position"' in line:
                record = json.loads(line)
                key = (record["account"], record["symbol"], record["side"])
                slots[key] = record["qty"] not in ("0", 0)
    return sum(slots.values())


def measure(sizes: list[int], runs: int) -> list[dict[str, object]]:
    results = []
    for family in ("padded", "active"):
        for accounts in sizes:
            if family == "padded" and accounts <= ACTIVE_PADDED:
                continue
            whole, book = _files(family, accounts)
            count = 1 if accounts >= 1_000_000 else runs
            book_runs = [_run(book, "hold") for _ in range(count)]
            whole_runs = [_run(whole, "hold") for _ in range(count)]
            positions = _positions(book)
            t_book = [t for t, _ in book_runs]
            t_whole = [t for t, _ in whole_runs]
            peak = max(m for _, m in whole_runs)
            row = {
                "family": family,
                "accounts": accounts,
                "positions": positions,
                "runs": count,
                "book_s": [statistics.median(t_book), min(t_book), max(t_book)],
                "whole_s": [statistics.median(t_whole), min(t_whole), max(t_whole)],
                "tick_us": (statistics.median(t_whole) - statistics.median(t_book)) / TICKS * 1e6,
                "peak_rss_mib": peak / 2**20,
                "peak_bytes_per_position": peak / positions,
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def plot(results: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for family, style in (("active", "o-"), ("padded", "s--")):
        rows = sorted((r for r in results if r["family"] == family), key=lambda r: r["accounts"])  # type: ignore[arg-type,return-value]
        if not rows:
            continue
        accounts = [r["accounts"] for r in rows]
        label = "active accounts" if family == "active" else "5k active + far accounts"
        axes[0].plot(accounts, [r["whole_s"][0] for r in rows], style, label=label)  # type: ignore[index]
        axes[1].plot(accounts, [r["peak_bytes_per_position"] for r in rows], style, label=label)
        axes[2].plot(accounts, [r["tick_us"] for r in rows], style, label=label)
    titles = (
        "replay, 1M ticks (s, whole process)",
        "peak RSS per open position (bytes)",
        "cost of a tick once loaded (µs)",
    )
    for axis, title in zip(axes, titles, strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("accounts")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[1].axhline(400, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)
    print(f"wrote {PLOT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000,100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    if args.plot_only:
        results = json.loads(RESULTS.read_text())
    else:
        results = measure([int(s) for s in args.sizes.split(",")], args.runs)
        RESULTS.write_text(json.dumps(results, indent=1))
    plot(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
