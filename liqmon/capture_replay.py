"""``liqmon replay`` of exchange-native captures: raw venue frames through the live parsers.

A capture holds what a venue sent (see ``feeds.captures`` for the formats), parsed by the same
:class:`~feeds.frames.FrameParser` the live feed uses, so a replay behaves like the live run.
Accounts and contracts come from a second file of normalized records (``--accounts``), merged
with the ticks by time: records by their ``ts`` (contracts, which have none, first), ticks by
exchange time (``--time exchange``, the default) or by the local receive time the capture
recorded (``--time local``: the order the live run saw them in). At equal times records go
before ticks. The engine always receives exchange time as ``ts``; ticks that arrive out of
exchange order are dropped as stale, as live.

Frames a parser refuses are counted by reason with their capture line numbers.

Besides marks, a capture's frames may carry records (docs/collateral.md): Binance asset-index
prices become ``collateral`` records (valued with ``haircuts``), and, with ``account`` naming
the account of a user-data capture, ``ACCOUNT_UPDATE`` and ``ACCOUNT_CONFIG_UPDATE`` become its
``account_update`` and ``asset_mode`` records. They are merged with the ticks like the records
of ``--accounts``, at their own time. A tick that carries funding (Binance ``r``/``T``, Bybit
``fundingRate``/``nextFundingTime``) reaches the engine as a tick record with its funding
fields, which the engine settles when funding is on.

Where the capture has receive times, the summary also reports the feed's health as the live
run would have seen it: the gaps where a symbol had no mark for ``stale after`` (5 times the
venue's expected interval, as ``liqmon run`` defaults to) and the clock skew (receive time
minus exchange time: network latency plus the offset of the recorder's clock).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import structlog

from alerts.sink import EventSink
from feeds.captures import numbered_frames
from feeds.collateral import HaircutTable
from feeds.files import UnreadableFile, read_lines
from feeds.frames import FrameParser
from feeds.health import FeedHealth
from feeds.live import VENUES
from feeds.normalized import parse_line
from feeds.tardis import TardisDerivativeTicker
from feeds.ticks import MarkTick
from liqmon.replay import Pacer, Progress
from liqmon.runtime import Runtime
from liqmon.summary import ReplayStats
from monitor.engine import Engine
from monitor.errors import MalformedRecord, RecordRefused
from monitor.records import ContractRecord, Record

log = structlog.get_logger("liqmon.replay")

TimeMode = Literal["exchange", "local"]


STALE_MULTIPLE = 5.0
SKEW_SAMPLE = 100_000


@dataclass
class FeedGaps:
    """The feed's health over a capture, from receive times (see the module docstring)."""

    stale_after_ns: int
    last: dict[str, int] = field(default_factory=dict)
    episodes: Counter[str] = field(default_factory=Counter)
    longest: tuple[int, str, int] = (0, "", 0)  # (gap ns, symbol, line of the mark ending it)
    skews_ms: list[float] = field(default_factory=list)
    skew_min_ms: float = math.inf
    skew_max_ms: float = -math.inf
    end_ns: int = 0

    def observe(self, tick: MarkTick, line: int) -> None:
        received = tick.receive_ts_ns
        if received is None:
            return
        skew = received / 1e6 - tick.exchange_ts_ms
        self.skew_min_ms = min(self.skew_min_ms, skew)
        self.skew_max_ms = max(self.skew_max_ms, skew)
        if len(self.skews_ms) < SKEW_SAMPLE:
            self.skews_ms.append(skew)
        last = self.last.get(tick.symbol)
        if last is not None and received - last >= self.stale_after_ns:
            self.episodes[tick.symbol] += 1
            self.longest = max(self.longest, (received - last, tick.symbol, line))
        if last is None or received > last:
            self.last[tick.symbol] = received
        self.end_ns = max(self.end_ns, received)

    def notes(self) -> list[str]:
        if not self.last:
            return []
        limit = self.stale_after_ns / 1e9
        stale_at_end = sorted(
            s for s, t in self.last.items() if self.end_ns - t >= self.stale_after_ns
        )
        total = sum(self.episodes.values())
        gaps = f"feed gaps   {total:,} (no mark for >= {limit:g} s"
        if total:
            gap, symbol, line = self.longest
            worst = ", ".join(f"{s} {n}" for s, n in self.episodes.most_common(3))
            gaps += f"; {worst}; longest {gap / 1e9:.1f} s, {symbol} before line {line}"
        gaps += ")"
        if stale_at_end:
            gaps += f"; silent at the end: {', '.join(stale_at_end[:5])}"
            gaps += " ..." if len(stale_at_end) > 5 else ""
        median = statistics.median(self.skews_ms)
        skew = (
            f"clock skew  receive - exchange time: median {median:,.1f} ms, "
            f"min {self.skew_min_ms:,.1f} ms, max {self.skew_max_ms:,.1f} ms"
        )
        return [gaps, skew]


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    """One frame of a capture, parsed: its ticks, other records and refusals."""

    line: int
    receive_ns: int | None
    ticks: tuple[MarkTick, ...]
    records: tuple[Record, ...]
    rejects: tuple[tuple[str, str], ...]


_Item = tuple[int, int, int, Record | CapturedFrame]  # (time ms, order, line, record or frame)


def _frames(
    path: Path,
    fmt: str,
    parser: FrameParser | TardisDerivativeTicker,
    mode: TimeMode,
    gaps: FeedGaps,
) -> Iterator[_Item]:
    """The capture's frames in file order, each keyed by its time: the exchange time of its
    earliest tick, else of its earliest record (``local``: its receive time); a frame with
    neither keeps the time before it."""
    at = -1
    for number, (received, raw) in numbered_frames(path, fmt):
        parsed = parser.parse(raw, received)
        for tick in parsed.ticks:
            gaps.observe(tick, number)
        stamped = [r.ts for r in parsed.records if not isinstance(r, ContractRecord)]
        if mode == "local" and received is not None:
            at = received // 1_000_000
        elif parsed.ticks:
            at = min(t.exchange_ts_ms for t in parsed.ticks)
        elif stamped:
            at = min(stamped)
        frame = CapturedFrame(number, received, parsed.ticks, parsed.records, parsed.rejects)
        yield at, 1, number, frame


def _records(path: Path, stats: ReplayStats) -> Iterator[_Item]:
    for number, line in read_lines(path):
        try:
            record = parse_line(line)
        except RecordRefused as exc:
            stats.reject(exc.reason, number)
            continue
        at = -1 if isinstance(record, ContractRecord) else record.ts
        yield at, 0, number, record


async def replay_capture(
    path: str,
    fmt: str,
    engine: Engine,
    sink: EventSink,
    *,
    venue: str | None = None,
    price_source: str = "mark",
    accounts: str | None = None,
    time_mode: TimeMode = "exchange",
    speed: float | None = None,
    progress: Progress | None = None,
    haircuts: HaircutTable | None = None,
    account: str | None = None,
    stale_after: float = STALE_MULTIPLE,
    expected_interval_s: float | None = None,
) -> ReplayStats:
    """Apply a capture (merged with ``accounts``); publish events to ``sink``. ``haircuts``
    values Binance's asset index (default: Binance's table); ``account`` names the account of
    the capture's Binance user-data events.

    A driver of the :class:`~liqmon.runtime.Runtime`, frame by frame as ``liqmon run`` is:
    where the capture has receive times, the feed's health is judged on them exactly as the
    live run judges it (``stale_after`` times ``expected_interval_s``, the venue's by default),
    so ``feed_stale`` and ``feed_recovered`` reach the sink where they did live.
    """
    stats = ReplayStats(source=path, title=f"liqmon replay: {path} ({fmt} capture)")
    parser: FrameParser | TardisDerivativeTicker = (
        TardisDerivativeTicker()
        if fmt == "tardis"
        else FrameParser(venue, price_source=price_source, haircuts=haircuts, account=account)
    )
    if expected_interval_s is None:
        expected_interval_s = VENUES[venue].expected_interval_s if venue in VENUES else 1.0
    gaps = FeedGaps(round(stale_after * expected_interval_s * 1e9))
    health = FeedHealth(venue or fmt, expected_interval_s=expected_interval_s, multiple=stale_after)
    runtime = Runtime(engine, health=health, stats=stats)
    source = f"feed:{venue or fmt}"
    streams: list[Iterator[_Item]] = [_frames(Path(path), fmt, parser, time_mode, gaps)]
    if accounts is not None:
        streams.append(_records(Path(accounts), stats))
    pacer = Pacer(speed) if speed else None
    started = time.perf_counter()
    count = 0
    try:
        for at, _, number, item in heapq.merge(*streams, key=lambda x: (x[0], x[1])):
            if pacer is not None and at >= 0 and (delay := pacer.delay(at)) > 0:
                await asyncio.sleep(delay)
            if isinstance(item, CapturedFrame):
                stats.lines += 1
                effects = runtime.frame(item.ticks, item.receive_ns, source=source)
                now_ms = (item.receive_ns or 0) // 1_000_000
                for record in item.records:
                    effects.extend(runtime.record(record, source=source, now_ms=now_ms))
                for reason, detail in item.rejects:
                    error = MalformedRecord(reason, detail)
                    effects.extend(
                        runtime.refused(error, source=source, now_ms=now_ms, line=number)
                    )
            else:
                effects = runtime.record(item, source="accounts_file", now_ms=0)
            for event in effects.events:
                await sink.publish(event)
            count += 1
            if progress is not None and count % 4096 == 0:
                progress.update(stats)
    except UnreadableFile as exc:
        stats.failure = f"{exc} (after {stats.lines:,} lines, all applied)"
    finally:
        stats.notes.extend(gaps.notes())
        stats.elapsed = time.perf_counter() - started
        if progress is not None:
            progress.clear()
        await sink.flush()
    return stats
