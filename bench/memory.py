"""Memory per open position: replay a workload in-process and measure the resident set.

    python -m bench.memory FILE

Prints one JSON object: the RSS after imports and contracts (``base``), at the end of the
replay (``end``), the peak (``peak``, from ``getrusage``), the open positions and entities at
the end, and ``(end - base) / positions``: what each open position costs with everything the
engine keeps for it (its entity, the trigger index, marks), measured, not estimated.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys

from alerts.sink import MemorySink
from liqmon.replay import replay_file
from monitor.engine import Engine

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _CountingSink(MemorySink):
    """Counts events without keeping them (their memory is not the engine's)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def publish(self, event: object) -> None:  # type: ignore[override]
        self.count += 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.memory FILE", file=sys.stderr)
        return 2
    gc.set_threshold(10_000, 50, 50)  # as the CLI does
    engine = Engine()
    gc.collect()
    base = rss_bytes()
    sink = _CountingSink()
    stats = asyncio.run(replay_file(args[0], engine, sink))
    gc.collect()
    end = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    positions = engine.position_count
    print(
        json.dumps(
            {
                "file": args[0],
                "lines": stats.lines,
                "events": sink.count,
                "positions": positions,
                "entities": engine.entity_count,
                "base_rss_mib": round(base / 2**20, 1),
                "end_rss_mib": round(end / 2**20, 1),
                "peak_rss_mib": round(peak / 2**20, 1),
                "bytes_per_position": round((end - base) / positions) if positions else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
