"""Memory per open position: replay a workload in-process and measure the resident set.

    python -m bench.memory FILE

Prints one JSON object: the RSS after imports (``base``); the RSS and the open positions once
every symbol has had its first mark (``indexed``: every position loaded, valued and in the
trigger index — the steady state of a book) and ``(indexed - base) / positions``, what each
open position costs with everything the engine keeps for it (its entity, its share of the
trigger index, marks), measured, not estimated; and the RSS, open positions and peak at the end
of the file (liquidated positions are gone by then, but the allocator keeps their memory).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys

from feeds.files import read_lines
from feeds.normalized import parse_line
from liqmon import logs
from monitor.engine import Engine
from monitor.errors import RecordRefused
from monitor.records import TickRecord

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.memory FILE", file=sys.stderr)
        return 2
    logs.configure(level="error")  # refused records are expected; stdout carries the figures
    gc.set_threshold(10_000, 50, 50)  # as the CLI does
    engine = Engine()
    gc.collect()
    base = rss_bytes()
    events = refused = lines = 0
    indexed: dict[str, int] | None = None
    ticked: set[str] = set()
    for _, line in read_lines(args[0]):
        lines += 1
        try:
            record = parse_line(line)
            if isinstance(record, TickRecord):
                ticked.add(record.symbol)
            events += len(engine.apply(record))
        except RecordRefused:  # malformed records included
            refused += 1
        if indexed is None and ticked and len(ticked) == len(engine.contracts):
            # every symbol has its first mark: every position is valued and indexed
            gc.collect()
            indexed = {"rss": rss_bytes(), "positions": engine.position_count}
    gc.collect()
    end = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    positions = engine.position_count
    book = indexed or {"rss": end, "positions": positions}
    print(
        json.dumps(
            {
                "file": args[0],
                "lines": lines,
                "refused": refused,
                "events": events,
                "base_rss_mib": round(base / 2**20, 1),
                "indexed_rss_mib": round(book["rss"] / 2**20, 1),
                "indexed_positions": book["positions"],
                "bytes_per_position": round((book["rss"] - base) / book["positions"])
                if book["positions"]
                else None,
                "end_rss_mib": round(end / 2**20, 1),
                "end_positions": positions,
                "peak_rss_mib": round(peak / 2**20, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
