"""``liqmon replay`` of exchange-native captures, merged with account records by time."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

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
    result = subprocess.run(
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
    (liquidation,) = events
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
    result = subprocess.run(
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
    result = subprocess.run(
        [*LIQMON, "replay", str(odd), "--out", str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "odd.txt" in result.stderr
