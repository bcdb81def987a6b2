"""``liqmon replay`` of exchange-native captures, merged with account records by time."""

from __future__ import annotations

import gzip
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from alerts.topics import ALERT_KINDS
from tests import cli_support
from tests.conftest import ROOT

CAPTURES = ROOT / "tests" / "data" / "captures"
BYBIT = CAPTURES / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"
HFT_BTC = CAPTURES / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz"
DERIBIT = CAPTURES / "deribit_derivative_ticker_BTC-PERPETUAL_nautilus.csv"
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _contract(symbol: str, kind: str = "linear", asset: str = "USDT", size: str = "1") -> str:
    return json.dumps(
        {
            "type": "contract",
            "symbol": symbol,
            "kind": kind,
            "margin_asset": asset,
            "contract_size": size,
            "brackets": [
                {"floor": "0", "cap": "50000", "mmr": "0.004", "cum": "0"},
                {"floor": "50000", "cap": "1e12", "mmr": "0.005", "cum": "50"},
            ],
        }
    )


def _position(ts: int, account: str, symbol: str, qty: str, entry: str, wallet: str) -> str:
    return json.dumps(
        {
            "type": "position",
            "ts": ts,
            "account": account,
            "symbol": symbol,
            "side": "both",
            "mode": "isolated",
            "qty": qty,
            "entry": entry,
            "leverage": "100",
            "isolated_wallet": wallet,
        }
    )


def _replay(
    tmp_path: Path, capture: Path, accounts: list[str], *args: str
) -> tuple[list[dict], dict]:
    accounts_file = tmp_path / "accounts.jsonl"
    accounts_file.write_text("\n".join(accounts) + "\n")
    out, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    result = cli_support.run(
        [
            *LIQMON,
            "replay",
            str(capture),
            "--accounts",
            str(accounts_file),
            "--out",
            str(out),
            "--summary-json",
            str(summary),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in out.read_text().splitlines()]
    return events, json.loads(summary.read_text())


def test_a_bybit_capture_drives_the_engine_at_bybits_real_marks(tmp_path: Path) -> None:
    """Bybit v5 tickers (snapshot + deltas): the 89 marks parse with no reject; the BTCUSDT
    ones value a 100x long opened at 65,500 and liquidate it at the first real mark (65,117.44,
    below its liquidation price); marks for symbols without a contract are dropped, counted."""
    events, summary = _replay(
        tmp_path,
        BYBIT,
        [_contract("BTCUSDT"), _position(1786310800000, "hot", "BTCUSDT", "1", "65500", "655")],
    )
    assert summary["rejected"] == {}
    assert summary["records"]["tick"] == 89
    assert summary["dropped"] == {"unknown_symbol": 89 - summary["ticks_applied"]}
    (liquidation,) = [e for e in events if e["event"] in ALERT_KINDS]
    assert liquidation["event"] == "liquidation"
    assert liquidation["positions"][0]["mark"] == 65117.44
    assert liquidation["ts"] == 1786310817583  # Bybit's message ts: exchange time


def _trades(path: Path) -> list[tuple[int, float]]:
    """``(trade time, price)`` of every trade in an hftbacktest capture, read directly."""
    trades = []
    with gzip.open(path, "rt") as stream:
        for line in stream:
            data = json.loads(line.split(" ", 1)[1])["data"]
            if data["e"] == "trade":
                trades.append((data["T"], float(data["p"])))
    return trades


@pytest.mark.parametrize("time_mode", ["exchange", "local"])
def test_binance_trades_give_a_real_rate_price_stream(tmp_path: Path, time_mode: str) -> None:
    """The hftbacktest capture (bookTicker + trade, no marks) with --price-source trade: all
    21,313 trades become ticks, no frame is refused. A 100x short at 61,620 whose wallet puts
    its liquidation price at exactly 61,830 (tier 2: 0.5 %, cum 50) is warned at the first trade
    and liquidated at exactly the first trade at or above 61,830 — ordered by exchange or by
    local receive time."""
    wallet = "469.15"  # (469.15 + 61,620 + 50) / 1.005 = 61,830
    events, summary = _replay(
        tmp_path,
        HFT_BTC,
        [_contract("BTCUSDT"), _position(1723161250000, "bear", "BTCUSDT", "-1", "61620", wallet)],
        "--price-source",
        "trade",
        "--time",
        time_mode,
    )
    assert summary["rejected"] == {}
    assert summary["records"]["tick"] == 21_313
    trades = _trades(HFT_BTC)
    assert [(e["event"], e.get("level"), e["ts"]) for e in events] == _expected(trades)
    assert events[-1]["positions"][0]["liquidation_price"] == pytest.approx(61_830, rel=1e-12)


def _expected(trades: list[tuple[int, float]]) -> list[tuple[str, float | None, int]]:
    """The alert state machine by hand for this short: MB = 469.15 − (P − 61,620), MM = 0.005·P − 50
    (its notional stays in tier 2), levels 0.7/0.8/0.9, hysteresis 0.05."""
    out: list[tuple[str, float | None, int]] = []
    h: float | None = None
    for ts, price in trades:
        mb, mm = (
            Decimal("469.15") - (Decimal(str(price)) - 61620),
            Decimal("0.005") * Decimal(str(price)) - 50,
        )
        if mb <= mm:
            out.append(("liquidation", None, ts))
            return out
        ratio = mm / mb
        top = max((x for x in (0.7, 0.8, 0.9) if ratio >= Decimal(str(x))), default=None)
        if top is not None and (h is None or top > h):
            out.append(("margin_warning", top, ts))
            h = top
        elif h is not None and ratio < Decimal(str(h)) - Decimal("0.05"):
            if top is None:
                out.append(("margin_recovered", None, ts))
            h = top
    return out


def test_a_tardis_csv_drives_an_inverse_contract(tmp_path: Path) -> None:
    """Tardis derivative_ticker rows (µs timestamps) for Deribit's inverse BTC-PERPETUAL."""
    events, summary = _replay(
        tmp_path,
        DERIBIT,
        [_contract("BTC-PERPETUAL", "inverse", "BTC", "10")],
    )
    assert summary["rejected"] == {}
    assert summary["ticks_applied"] == 3
    assert events == []


def test_accounts_with_normalized_input_is_a_usage_error(tmp_path: Path) -> None:
    """--accounts belongs to captures: with a normalized file it says so and exits 2."""
    accounts = tmp_path / "a.jsonl"
    accounts.write_text(_contract("X") + "\n")
    result = cli_support.run(
        [
            *LIQMON,
            "replay",
            str(ROOT / "examples" / "crash.jsonl"),
            "--accounts",
            str(accounts),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "already is normalized" in result.stderr


def test_an_unrecognised_file_exits_1_naming_the_problem(tmp_path: Path) -> None:
    """A file whose first lines are no known format is unreadable as input."""
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\nworld\n")
    result = cli_support.run(
        [*LIQMON, "replay", str(odd), "--out", str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "odd.txt" in result.stderr


# --- multi-asset collateral and funding (docs/collateral.md) ----------------------------------

DOCS = ROOT / "tests" / "data" / "binance_docs"
VARIANTS = CAPTURES / "binance_markprice_real_message_variants.jsonl"


def _doc_frames() -> list[str]:
    """Real frames: a 2021 USDⓈ-M mark (with ``r``/``T``) and Binance's documented asset index,
    ACCOUNT_CONFIG_UPDATE (leverage, then multi-assets) and ACCOUNT_UPDATE examples."""
    mark = json.loads(VARIANTS.read_text().splitlines()[4])["frame"]
    config = (DOCS / "account_config_update_examples.jsonl").read_text().splitlines()
    return [
        json.dumps(mark),
        json.dumps(
            {
                "stream": "!assetIndex@arr",
                "data": json.loads((DOCS / "asset_index_stream_example.json").read_text()),
            }
        ),
        *config,
        json.dumps(json.loads((DOCS / "account_update_usdm_example.json").read_text())),
    ]


@pytest.mark.parametrize("time_mode", ["exchange", "local"])
def test_capture_frames_give_their_records_and_funded_ticks(tmp_path: Path, time_mode: str) -> None:
    """A prefixed capture of those frames, read by the capture replay frame by frame: the mark
    is a tick with its funding; the asset index gives two collateral records; the user-data
    frames give the named account's asset_mode and account_update (the leverage change
    nothing); each frame at its exchange time, or at its receive time with ``--time local``."""
    from feeds.frames import FrameParser
    from liqmon.capture_replay import CapturedFrame, FeedGaps, _frames
    from monitor.records import AccountUpdateRecord, AssetModeRecord, CollateralRecord

    capture = tmp_path / "capture.jsonl"
    received = [1_700_000_000_000_000_000 + i * 1_000_000 for i in range(5)]
    capture.write_text(
        "".join(f"{ns} {frame}\n" for ns, frame in zip(received, _doc_frames(), strict=True))
    )
    parser = FrameParser(account="acc")
    keyed = list(_frames(capture, "prefixed", parser, time_mode, FeedGaps(10**9)))  # type: ignore[arg-type]
    frames = [frame for *_, frame in keyed]
    assert all(isinstance(f, CapturedFrame) and not f.rejects for f in frames)
    contents = [
        (f.line, [type(x).__name__ for x in (*f.ticks, *f.records)])  # type: ignore[union-attr]
        for f in frames
    ]
    assert contents == [
        (1, ["MarkTick"]),
        (2, ["CollateralRecord", "CollateralRecord"]),
        (3, []),  # the leverage change: nothing
        (4, ["AssetModeRecord"]),
        (5, ["AccountUpdateRecord"]),
    ]
    (tick,) = frames[0].ticks  # type: ignore[union-attr]
    assert (tick.funding_rate, tick.funding_ts) == ("0.00058455", 1617321600000)
    index = frames[1].records  # type: ignore[union-attr]
    assert [r.asset for r in index] == ["ADA", "USDT"]  # type: ignore[union-attr]
    assert isinstance(index[0], CollateralRecord)
    assert frames[3].records == (AssetModeRecord(1611646737479, "acc", True),)  # type: ignore[union-attr]
    (update,) = frames[4].records  # type: ignore[union-attr]
    assert isinstance(update, AccountUpdateRecord)
    assert len(update.balances) == 2
    # a frame without ticks or records keeps the time before it
    exchange = [1617308820003, 1686749230000, 1686749230000, 1611646737479, 1564745798939]
    local = [ns // 1_000_000 for ns in received]
    assert [at for at, *_ in keyed] == (exchange if time_mode == "exchange" else local)


def _pool_story() -> tuple[list[str], list[str]]:
    """A Binance USDⓈ-M capture (frames in the documented shapes) of one multi-assets account
    and its records as normalized lines, written side by side from the same facts."""
    frames: list[str] = []
    lines: list[str] = []

    def index(ts: int, prices: dict[str, str]) -> None:
        items = [
            {"e": "assetIndexUpdate", "E": ts, "s": f"{a}USD", "i": p} for a, p in prices.items()
        ]
        frames.append(json.dumps({"stream": "!assetIndex@arr", "data": items}))
        haircut = {"BTC": "0.05", "USDT": "0.0001"}
        lines.extend(
            json.dumps(
                {"type": "collateral", "ts": ts, "asset": a, "price": p, "haircut": haircut[a]}
            )
            for a, p in prices.items()
        )

    def mark(ts: int, price: str, rate: str, due: int) -> None:
        event = {
            "e": "markPriceUpdate",
            "E": ts,
            "s": "BTCUSDT",
            "p": price,
            "P": price,
            "i": price,
            "r": rate,
            "T": due,
        }
        frames.append(json.dumps({"stream": "btcusdt@markPrice@1s", "data": event}))
        lines.append(
            json.dumps(
                {
                    "type": "tick",
                    "ts": ts,
                    "symbol": "BTCUSDT",
                    "mark": price,
                    "funding_rate": rate,
                    "funding_ts": due,
                }
            )
        )

    frames.append(
        json.dumps({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1000, "T": 999, "ai": {"j": True}})
    )
    lines.append(
        json.dumps({"type": "asset_mode", "ts": 1000, "account": "acc", "multi_assets": True})
    )
    index(1000, {"BTC": "60000", "USDT": "1"})
    frames.append(
        json.dumps(
            {
                "e": "ACCOUNT_UPDATE",
                "E": 2000,
                "T": 1999,
                "a": {
                    "m": "ORDER",
                    "B": [
                        {"a": "USDT", "wb": "-55000", "cw": "-55000", "bc": "0"},
                        {"a": "BTC", "wb": "1", "cw": "1", "bc": "0"},
                    ],
                    "P": [
                        {
                            "s": "BTCUSDT",
                            "pa": "1",
                            "ep": "60000",
                            "cr": "0",
                            "up": "0",
                            "mt": "cross",
                            "iw": "0",
                            "ps": "BOTH",
                        }
                    ],
                },
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "type": "account_update",
                "ts": 2000,
                "account": "acc",
                "balances": [
                    {"asset": "USDT", "wallet": "-55000"},
                    {"asset": "BTC", "wallet": "1"},
                ],
                "positions": [
                    {
                        "symbol": "BTCUSDT",
                        "side": "both",
                        "mode": "cross",
                        "qty": "1",
                        "entry": "60000",
                        "leverage": "0",
                    }
                ],
            }
        )
    )
    mark(3000, "59000", "0.0001", 10000)
    index(4000, {"BTC": "59500"})
    mark(5000, "58900", "0.0002", 10000)
    mark(10000, "58800", "0.0003", 20000)
    index(12000, {"BTC": "59000"})
    return frames, lines


def test_a_pool_capture_replays_like_its_normalized_records(tmp_path: Path) -> None:
    """``liqmon replay CAPTURE --accounts --account acc --funding``: the capture of a pool backed
    by 1 BTC and −55,000 USDT (its BTCUSDT long marked down, BTC's index moving, funding due at
    10,000) gives the oracle's events for the same facts as normalized records — a warning at
    10,000 once the funding of 1 · 58,800 · 0.0002 = 11.76 is booked (MB 313.24, MM 244), then
    a liquidation with shortfall 161.76 when BTC's index falls to 59,000."""
    from tests.oracle import Oracle
    from tests.test_oracle_collateral_agreement import first_difference

    frames, lines = _pool_story()
    capture = tmp_path / "capture.jsonl"
    capture.write_text("\n".join(frames) + "\n")
    contract = _contract("BTCUSDT")
    events, summary = _replay(
        tmp_path, capture, [contract], "--account", "acc", "--funding", "--venue", "binance-usdm"
    )
    assert summary["rejected"] == {}
    oracle = Oracle(funding=True)
    want = [e for line in [contract, *lines] for e in oracle.apply_line(line).events]
    assert [(e["event"], e["ts"]) for e in want] == [
        ("margin_warning", 10000),
        ("liquidation", 12000),
    ]
    assert want[0]["margin_balance"] == pytest.approx(313.24, rel=1e-12)
    assert want[1]["shortfall"] == pytest.approx(161.76, rel=1e-12)
    diff = first_difference(events, want)
    assert diff is None, diff


def test_the_pool_story_frames_parse_to_its_normalized_records() -> None:
    """The two sides of the story above agree record for record (so that the replay test can
    only fail on the replay): every frame's records and ticks are the normalized lines'."""
    from feeds.frames import FrameParser
    from feeds.normalized import parse_line
    from monitor.records import TickRecord

    frames, lines = _pool_story()
    parser = FrameParser("binance-usdm", account="acc")
    got = []
    for frame in frames:
        parsed = parser.parse(frame, None)
        assert parsed.rejects == ()
        got.extend(parsed.records)
        got.extend(
            TickRecord(
                t.exchange_ts_ms,
                t.symbol,
                t.mark,
                t.mark_text,
                None if t.funding_rate is None else Decimal(t.funding_rate),
                t.funding_ts,
            )
            for t in parsed.ticks
        )
    assert got == [parse_line(line) for line in lines]
