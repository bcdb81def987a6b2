"""A live run equals a replay of the same frames, across dropped connections and silences.

A local server (``tests/fake_exchange.py``) plays real recorded frames of Binance USDⓈ-M
(hftbacktest), Bybit v5 (cryptofeed) and OKX v5 (the documented ``mark-price`` push shape with
the real rows of a Tardis ``okex-swap`` capture) to ``liqmon run --feed VENUE``, cutting the
connection several times and falling silent once. The service's JSON Lines events must equal
those of ``liqmon replay`` of the same frames from a file (nothing sent after a reconnect is
lost), and those of a replay of what the service recorded while it ran (``--record``).
``feed_stale`` / ``feed_recovered`` must appear exactly where marks were silent.

Accounts are derived from the frames: isolated longs and shorts (and one cross account) whose
margin ratio reaches an alert level at a price the recording actually visits, so warnings,
recoveries and liquidations all happen on real price paths.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alerts.jsonl import encode
from alerts.sink import MemorySink
from alerts.topics import ALERT_KINDS
from feeds.brackets import load_brackets
from feeds.captures import numbered_frames
from feeds.frames import FrameParser
from liqmon.capture_replay import replay_capture
from liqmon.service import Service
from liqmon.settings import load_settings
from monitor.engine import Engine
from monitor.events import StateEvent
from monitor.records import ContractRecord
from tests.conftest import ROOT
from tests.fake_exchange import (
    FakeExchange,
    Start,
    fake_exchange_fixture,  # noqa: F401  # registers the fake_exchange fixture
)

CAPTURES = ROOT / "tests" / "data" / "captures"
BRACKETS = ROOT / "tests" / "data" / "binance_leverage_brackets_major_symbols_2024-10.json"
LEVELS = "0.7,0.8,0.9"
HYSTERESIS = "0.002"  # small: the recorded prices move little, so bounces re-arm levels
EXPECTED_INTERVAL_MS = 100
STALE_AFTER = 4.0  # intervals: a symbol is stale after 0.4 s without a mark
PAUSE_S = 1.2


@dataclass(frozen=True)
class Case:
    venue: str
    price_source: str
    lines: list[bytes]  # capture lines, each one frame with its receive time
    fmt: str
    symbols: str
    extra_records: tuple[str, ...] = ()


def _capture_lines(path: Path, count: int) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        return [line for _, line in zip(range(count), stream, strict=False)]


def _okx_lines() -> list[bytes]:
    """The OKX ``mark-price`` push (docs shape) for each row of the okex-swap capture, wrapped
    with the capture's local receive time."""
    rows = (CAPTURES / "okex_swap_BTC-USDC-SWAP_derivative_ticker_nautilus.csv").read_text()
    lines = []
    for row in rows.splitlines()[1:]:
        cells = row.split(",")
        symbol, ts_us, local_us, mark = cells[1], int(cells[2]), int(cells[3]), cells[10]
        raw = json.dumps(
            {
                "arg": {"channel": "mark-price", "instId": symbol},
                "data": [
                    {"instType": "SWAP", "instId": symbol, "markPx": mark, "ts": str(ts_us // 1000)}
                ],
            },
            separators=(",", ":"),
        )
        lines.append(json.dumps({"local_ts": local_us / 1e6, "raw": raw}).encode() + b"\n")
    return lines


OKX_CONTRACT = json.dumps(
    {
        "type": "contract",
        "symbol": "BTC-USDC-SWAP",
        "kind": "linear",
        "margin_asset": "USDC",
        "contract_size": "1",
        "brackets": [{"floor": "0", "cap": "1e12", "mmr": "0.004", "cum": "0"}],
    }
)

CASES = {
    "binance-usdm": lambda: Case(
        "binance-usdm",
        "trade",
        _capture_lines(CAPTURES / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz", 2500),
        "prefixed",
        "BTCUSDT",
    ),
    "bybit": lambda: Case(
        "bybit",
        "mark",
        _capture_lines(CAPTURES / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz", 800),
        "wrapped",
        "BTCUSDT,ETHUSDT,SOLUSDT,DOGEUSDT",
    ),
    "okx": lambda: Case("okx", "mark", _okx_lines(), "wrapped", "BTC-USDC-SWAP", (OKX_CONTRACT,)),
}


def _marks(capture: Path, case: Case) -> dict[str, list[Decimal]]:
    parser = FrameParser(case.venue, price_source=case.price_source)
    marks: dict[str, list[Decimal]] = {}
    for _, (received, raw) in numbered_frames(capture, case.fmt):
        for tick in parser.parse(raw, received).ticks:
            marks.setdefault(tick.symbol, []).append(Decimal(tick.mark_text))
    return marks


def _mmr(symbol: str, extra: tuple[str, ...]) -> Decimal:
    for contract in load_brackets(BRACKETS).contracts:
        if contract.symbol == symbol:
            return contract.tiers[0].mmr
    for line in extra:
        record = json.loads(line)
        if record["symbol"] == symbol:
            return Decimal(record["brackets"][0]["mmr"])
    raise AssertionError(symbol)


def _accounts(marks: dict[str, list[Decimal]], case: Case) -> list[str]:
    """Positions whose ratio equals a level at a price the recording visits (entry = that
    price, notional in the first tier): longs warn as the price falls below it, shorts as it
    rises above; a cross account holds every symbol."""
    lines = list(case.extra_records)
    cross_wallet = Decimal(0)
    for symbol, prices in sorted(marks.items()):
        ordered = sorted(prices)
        qty = (Decimal(5000) / ordered[0]).quantize(Decimal("0.001"))
        mmr = _mmr(symbol, case.extra_records)
        for n, quantile in enumerate((0.2, 0.5, 0.8)):
            price = ordered[int(quantile * (len(ordered) - 1))]
            for side, sign in (("long", 1), ("short", -1)):
                for level in (Decimal("0.8"), Decimal("0.9"), Decimal("0.999")):
                    wallet = price * qty * mmr / level
                    lines.append(
                        json.dumps(
                            {
                                "type": "position",
                                "ts": 1,
                                "account": f"{symbol}-{side}-{n}-{level}",
                                "symbol": symbol,
                                "side": "both",
                                "mode": "isolated",
                                "qty": str(sign * qty),
                                "entry": str(price),
                                "leverage": "100",
                                "isolated_wallet": str(wallet),
                            }
                        )
                    )
        median = ordered[len(ordered) // 2]
        cross_wallet += median * qty * mmr / Decimal("0.85")
        lines.append(
            json.dumps(
                {
                    "type": "position",
                    "ts": 1,
                    "account": "cross-book",
                    "symbol": symbol,
                    "side": "both",
                    "mode": "cross",
                    "qty": str(qty),
                    "entry": str(median),
                    "leverage": "50",
                }
            )
        )
    asset = "USDC" if case.venue == "okx" else "USDT"
    lines.append(
        json.dumps(
            {
                "type": "balance",
                "ts": 1,
                "account": "cross-book",
                "asset": asset,
                "wallet": str(cross_wallet),
            }
        )
    )
    return lines


async def _live(
    fake: FakeExchange, case: Case, accounts: Path, tmp_path: Path, expected_ticks: int
) -> tuple[list[dict[str, Any]], Service]:
    out = tmp_path / "live.jsonl"
    settings = load_settings(
        None,
        engine={"levels": LEVELS, "hysteresis": HYSTERESIS},
        feed={
            "venue": case.venue,
            "symbols": case.symbols,
            "url": fake.url,
            "price_source": case.price_source,
            "expected_interval_ms": EXPECTED_INTERVAL_MS,
            "stale_after": STALE_AFTER,
            "record_dir": tmp_path / "recorded",
        },
        state={"dir": tmp_path / "state"},
        http={"enabled": False},
        brackets=[BRACKETS],
        accounts=accounts,
        out=out,
    )
    service = Service(settings)
    running = asyncio.create_task(service.run(install_signals=False))
    try:
        await fake.wait_until(lambda: fake.script_done, within_s=60)
        async with asyncio.timeout(30):
            while service.runtime.stats.records["tick"] < expected_ticks:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # every tick sent was taken by the runtime
    finally:
        service.stop()
        assert await running == 0
    return [json.loads(line) for line in out.read_text().splitlines()], service


async def _replayed(capture: Path, case: Case, accounts: Path) -> list[dict[str, Any]]:
    """What ``liqmon replay`` of the capture writes (alerts and feed health, in order), with
    the live run's staleness settings."""
    settings = load_settings(None, engine={"levels": LEVELS, "hysteresis": HYSTERESIS})
    engine = Engine(settings.engine.config())
    for contract in load_brackets(BRACKETS).contracts:
        engine.apply(ContractRecord(contract))
    sink = MemorySink()
    stats = await replay_capture(
        str(capture),
        case.fmt,
        engine,
        sink,
        venue=case.venue,
        price_source=case.price_source,
        accounts=str(accounts),
        stale_after=STALE_AFTER,
        expected_interval_s=EXPECTED_INTERVAL_MS / 1000,
    )
    assert stats.failure is None
    return [json.loads(encode(e)) for e in sink.events if not isinstance(e, StateEvent)]


def _received(recording: Path, case: Case) -> list[tuple[str, int]]:
    """``(symbol, receive time)`` of every tick the live run received, from its recording."""
    parser = FrameParser(case.venue, price_source=case.price_source)
    return [
        (tick.symbol, received)
        for _, (received, raw) in numbered_frames(recording, "prefixed")
        if received is not None
        for tick in parser.parse(raw, received).ticks
    ]


def _check_staleness(events: list[dict[str, Any]], received: list[tuple[str, int]]) -> None:
    """Every feed_stale starts at a mark followed by at least the stale limit of silence and is
    stamped at the moment the limit passed; each is closed by a feed_recovered at the next mark
    of that symbol (if one came); every silence longer than the limit is reported."""
    limit_ms = round(STALE_AFTER * EXPECTED_INTERVAL_MS)
    by_symbol: dict[str, list[int]] = {}
    for symbol, ns in received:
        by_symbol.setdefault(symbol, []).append(ns // 1_000_000)
    feed = [e for e in events if e["event"] in ("feed_stale", "feed_recovered")]
    for event in feed:
        times = by_symbol.get(event["symbol"], [])
        if event["event"] == "feed_stale":
            assert event["stale_ms"] == limit_ms
            assert event["ts"] == event["since_ts"] + limit_ms
            if event["last_mark_ts"] is None:
                continue
            assert event["since_ts"] in times
            later = [t for t in times if t > event["since_ts"]]
            assert not later or later[0] - event["since_ts"] >= limit_ms - 1, "stale, no silence"
        else:
            assert event["recovered_ts"] in times
            assert event["stale_ms"] >= limit_ms - 1
    for symbol, times in by_symbol.items():
        silences = [(a, b) for a, b in itertools.pairwise(times) if b - a > limit_ms + 1]
        for start, end in silences:
            assert any(
                e["event"] == "feed_stale" and e["symbol"] == symbol and e["since_ts"] == start
                for e in feed
            ), f"{symbol}: silence from {start} not reported"
            assert any(
                e["event"] == "feed_recovered"
                and e["symbol"] == symbol
                and e["recovered_ts"] == end
                for e in feed
            )


@pytest.mark.parametrize("venue", sorted(CASES))
async def test_a_live_run_with_drops_and_a_silence_equals_the_replay_of_its_frames(
    venue: str, fake_exchange: Start, tmp_path: Path
) -> None:
    case = CASES[venue]()
    capture = tmp_path / f"capture.{case.fmt}.jsonl"
    capture.write_bytes(b"".join(case.lines))
    marks = _marks(capture, case)
    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text("\n".join(_accounts(marks, case)) + "\n")
    script = [
        raw.decode() if isinstance(raw, bytes) else raw
        for _, (_, raw) in numbered_frames(capture, case.fmt)
    ]
    n = len(script)
    drops = frozenset({n // 5, n // 2, (4 * n) // 5}) if n > 10 else frozenset({0, 2})
    pause_at = (3 * n) // 10 if n > 10 else 3
    fake = await fake_exchange(
        venue, interval_s=0.001, script=script, drop_after=drops, pause_after={pause_at: PAUSE_S}
    )
    expected_ticks = sum(len(v) for v in marks.values())

    live, service = await _live(fake, case, accounts, tmp_path, expected_ticks)
    replayed = await _replayed(capture, case, accounts)
    (recording,) = (tmp_path / "recorded").iterdir()  # what the live run received, as it came
    replayed_recording = await _replayed(recording, replace(case, fmt="prefixed"), accounts)

    assert fake.drops == len(drops)
    assert service.feed_stats is not None
    assert service.feed_stats.reconnects >= len(drops)
    kinds = {e["event"] for e in replayed}
    assert {"margin_warning", "liquidation"} <= kinds, kinds
    # the events file of the live run: its start, then alerts and feed health, in order
    assert live[0]["event"] == "service_started"
    assert live[-1]["event"] == "service_stopped"
    live_events = [e for e in live if not e["event"].startswith("service_")]
    # the replay of what it received gives exactly that, feed health included
    assert live_events == replayed_recording
    assert any(e["event"] == "feed_stale" for e in live_events)
    assert any(e["event"] == "feed_recovered" for e in live_events)
    # the original capture has other receive times (its own silences): the same alerts
    assert [e for e in live_events if e["event"] in ALERT_KINDS] == [
        e for e in replayed if e["event"] in ALERT_KINDS
    ]
    assert len({e["id"] for e in live}) == len(live)
    _check_staleness(live_events, _received(recording, case))
