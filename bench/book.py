"""The book at scale, in-process: load, first marks, snapshot, restore, memory.

    python -m bench.book --accounts 5000 --far 95000      # ~250,000 positions
    python -m bench.book --accounts 1000000 --symbols 200  # ~3,000,000 positions

Builds the opening of a seeded workload (``bench/generate.py``: contracts, then every account's
balances and positions, no ticks), and measures, in one process, each step a live service goes
through when it starts on that book:

* ``load``: the account records, decoded and loaded through the replay's path (bulk);
* ``first_marks``: one frame with the first mark of every symbol (``!markPrice@arr``): every
  position is valued (at entry until then) and every entity re-evaluated and banded;
* ``snapshot``: capturing the whole state (what the event loop pays; the file is written on
  another thread), then writing it and restoring an engine from the file;
* memory: the resident set before loading and at its peak, per open position.

Prints one JSON object. Engine steps are timed with ``time.perf_counter`` around the calls (not
the whole process: these are the costs a running service pays, not start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import generate
from feeds.batches import AccountRun, OneRecord, read_items
from liqmon import logs
from liqmon.persistence import load_snapshot, save_snapshot
from monitor.bulk import apply_batch
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import RecordRefused
from monitor.snapshot import export_state, restore_state

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=5000, help="active accounts")
    parser.add_argument("--far", type=int, default=95_000, help="far-from-threshold accounts")
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policy", default="hold", choices=("hold", "close"))
    args = parser.parse_args(argv)
    logs.configure(level="error")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "book.jsonl"
        # generated in another process: its memory is not the engine's
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.generate",
                f"--accounts={args.accounts}",
                f"--far-accounts={args.far}",
                "--ticks=0",
                f"--symbols={args.symbols}",
                f"--seed={args.seed}",
                f"--out={path}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        gc.collect()
        base = rss_bytes()
        engine = Engine(EngineConfig.from_values(policy=args.policy))
        started = time.perf_counter()
        events = 0
        for items in read_items(str(path)):
            for item in items:
                if isinstance(item, AccountRun):
                    events += len(apply_batch(engine, item.batch)[0])
                elif isinstance(item, OneRecord):
                    with contextlib.suppress(RecordRefused):
                        events += len(engine.apply(item.record))
        load_s = time.perf_counter() - started
        # one frame: the first mark of every symbol, near its positions' entries
        prices = _starting_prices(engine)
        symbols = list(prices)
        started = time.perf_counter()
        frame_events, _ = engine.apply_ticks(
            symbols,
            [prices[s] for s in symbols],
            [repr(prices[s]) for s in symbols],
            [generate.START_TS + 1] * len(symbols),
        )
        first_marks_s = time.perf_counter() - started
        positions = engine.position_count
        steady = rss_bytes()
        started = time.perf_counter()
        snapshot = export_state(engine)
        capture_s = time.perf_counter() - started
        started = time.perf_counter()
        data = save_snapshot(snapshot)
        snap_path = Path(tmp) / "snapshot.npz"
        snap_path.write_bytes(data)
        write_s = time.perf_counter() - started
        peak = peak_bytes()
        started = time.perf_counter()
        restored = restore_state(load_snapshot(snap_path), engine.config)
        restore_s = time.perf_counter() - started
        assert restored.position_count == positions
    print(
        json.dumps(
            {
                "accounts": args.accounts + args.far,
                "positions": positions,
                "entities": engine.entity_count,
                "load_s": round(load_s, 3),
                "load_events": events,
                "first_marks_s": round(first_marks_s, 3),
                "first_marks_events": len(frame_events),
                "snapshot_capture_ms": round(capture_s * 1000, 1),
                "snapshot_write_ms": round(write_s * 1000, 1),
                "snapshot_bytes": len(data),
                "restore_ms": round(restore_s * 1000, 1),
                "base_rss_mib": round(base / 2**20, 1),
                "steady_rss_mib": round(steady / 2**20, 1),
                "peak_rss_mib": round(peak / 2**20, 1),
                "bytes_per_position_steady": round((steady - base) / positions),
                "bytes_per_position_peak": round((peak - base) / positions),
            }
        )
    )
    return 0


def _starting_prices(engine: Engine) -> dict[str, float]:
    """A mark near the entries of each symbol's positions (their mean entry)."""
    book = engine.book
    rows = book.rows
    size = rows.size
    live = rows.sign[:size] != 0
    sums: dict[str, float] = {}
    import numpy as np

    symbol = rows.symbol[:size][live]
    entry = rows.entry[:size][live]
    totals = np.bincount(symbol, weights=entry, minlength=len(book.symbol_names))
    counts = np.bincount(symbol, minlength=len(book.symbol_names))
    for sid, name in enumerate(book.symbol_names.names):
        if counts[sid]:
            sums[name] = float(totals[sid] / counts[sid])
    return sums


if __name__ == "__main__":
    sys.exit(main())
