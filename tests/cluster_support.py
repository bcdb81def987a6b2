"""Test support for the cluster tests: a venue that pushes scripted Binance frames to every
connection, and a seeded workload split the way a deployment sees it.

The venue (:class:`BroadcastVenue`) speaks Binance USDⓈ-M's combined stream (``/market/stream``,
``!markPrice@arr@1s``): each frame the test pushes goes to every connected instance, as the
exchange sends the same frame to every subscriber.

The workload (:func:`workload`) is a seeded scenario of :mod:`tests.scenarios` (contracts,
account records, ticks with jumps, bad records) taken apart:

* contracts: the seed file every instance is given (``accounts``);
* account records: input the trading system publishes to ``liqmon.in.records.{account}``;
* ticks: each run of consecutive ticks one Binance frame (a venue's array), from the venue;
* the reference: one normalized file with the same contracts, records and ticks in the order
  the test feeds them, for a single ``liqmon replay``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.scenarios import generate

VENUE_PATH = "/market/stream"
STREAM = "!markPrice@arr@1s"


class BroadcastVenue:
    """A Binance combined-stream endpoint on 127.0.0.1 that sends each pushed frame to every
    open connection (see the module docstring)."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._connections: set[ServerConnection] = set()
        self.port = 0
        self.sent = 0

    async def __aenter__(self) -> BroadcastVenue:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/market"

    @property
    def connected(self) -> int:
        return len(self._connections)

    async def _handle(self, ws: ServerConnection) -> None:
        self._connections.add(ws)
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(ws)

    async def push(self, frame: str) -> None:
        self.sent += 1
        for ws in list(self._connections):
            try:
                await ws.send(frame)
            except ConnectionClosed:
                self._connections.discard(ws)


def binance_frame(ticks: list[dict[str, Any]]) -> str:
    """One ``!markPrice@arr`` frame carrying ``ticks`` (normalized tick records)."""
    items = [
        {"e": "markPriceUpdate", "E": t["ts"], "s": t["symbol"], "p": _plain(t["mark"])}
        for t in ticks
    ]
    return json.dumps({"stream": STREAM, "data": items}, separators=(",", ":"))


def _plain(value: object) -> str:
    """A mark as decimal text, the way Binance sends it (a string, no exponent)."""
    return format(Decimal(str(value)), "f")


@dataclass(frozen=True)
class Step:
    """One thing the test feeds: an account record (``account``, ``line``) or a venue frame."""

    account: str | None
    line: str  # the record's JSON line, or the Binance frame


@dataclass
class Workload:
    seeds: str  # contract lines
    steps: list[Step] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)  # the single instance's input

    @property
    def frames(self) -> int:
        return sum(step.account is None for step in self.steps)


def workload(seed: int, steps: int = 300) -> Workload:
    """See the module docstring. Lines that are not a JSON object (the scenario's malformed
    lines), ticks whose ``ts`` or mark a venue frame cannot carry, and a tick repeated
    exactly are left out of both the cluster's input and the reference."""
    seeds: list[str] = []
    frames: set[str] = set()
    out = Workload("")
    run: list[dict[str, Any]] = []  # consecutive ticks: one frame, as in a venue's array

    def end_run() -> None:
        if not run:
            return
        frame = binance_frame(run)
        if frame not in frames:  # a venue never sends one frame twice: its E moves
            frames.add(frame)
            out.steps.append(Step(None, frame))
            for tick in run:
                plain = {"type": "tick", "ts": tick["ts"], "symbol": tick["symbol"]}
                out.reference.append(json.dumps({**plain, "mark": _plain(tick["mark"])}))
        run.clear()

    for line in generate(seed, steps).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        kind = record.get("type")
        if kind == "tick":
            if not isinstance(record.get("ts"), int) or not isinstance(record.get("symbol"), str):
                continue
            try:
                _plain(record["mark"])
            except (KeyError, ArithmeticError, ValueError):
                continue
            run.append(record)
            continue
        end_run()
        if kind == "contract":
            seeds.append(line)
            out.reference.append(line)
        elif isinstance(record.get("account"), str) and record["account"]:
            out.steps.append(Step(record["account"], line))
            out.reference.append(line)
    end_run()
    out.seeds = "\n".join(seeds) + "\n"
    return out


async def wait_for(predicate: Any, within_s: float, what: str, every_s: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not await predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(every_s)
