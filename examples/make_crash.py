"""Build ``examples/crash.jsonl`` from real data (run from the repo root)::

    python examples/make_crash.py CANDLES.json

* marks: ``CANDLES.json`` holds Binance XRPUSDT 1h mark-price candles, ``[open_time_ms, open,
  high, low, close, volume]`` each (the team's recorded series ``XRP_USDT_USDT-1h-mark.json``,
  Nov–Dec 2021); the first 30 hours from 15 Nov 2021 06:00 UTC are used. Each candle becomes four
  ticks: open at :00, then the low and high in the order the candle implies (low first when it
  closed up), then the close at :45. The COIN-M XRPUSD_PERP mark is taken equal to the USDⓈ-M
  mark (the real basis is a few basis points);
* tiers: Binance's real XRPUSDT brackets of Feb 2022, from the copy in ``tests/data`` (see
  ``tests/data/PROVENANCE.md``); the COIN-M XRPUSD_PERP table is illustrative (COIN-M shape, cum
  continuous) since no real COIN-M table of that date is recorded;
* accounts: invented, sized so that the real move produces every event kind for a real reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRACKETS = ROOT / "tests" / "data" / "binance_leverage_brackets_major_symbols_2022-02.json"
HOUR = 3_600_000
QUARTER = HOUR // 4
HOURS = 30  # 15 Nov 06:00 to 16 Nov 12:00 UTC: the slide, two gaps and the 16 Nov wick


def xrp_table() -> list[dict[str, str]]:
    tables = json.loads(BRACKETS.read_text())
    table = next(t for t in tables if t["symbol"] == "XRPUSDT")
    return [
        {
            "floor": repr(b["notionalFloor"]),
            "cap": repr(b["notionalCap"]),
            "mmr": repr(b["maintMarginRatio"]),
            "cum": repr(b["cum"]),
        }
        for b in table["brackets"]
    ]


COINM_XRP_TIERS = [  # floor, cap, mmr, cum  (in XRP)
    ("0", "50000", "0.0065", "0"),
    ("50000", "250000", "0.01", "175"),
    ("250000", "1000000", "0.02", "2675"),
    ("1000000", "5000000", "0.05", "32675"),
]


def ticks(candles_file: Path) -> list[dict[str, object]]:
    candles = json.loads(candles_file.read_text())[:HOURS]
    out: list[dict[str, object]] = []
    for open_ms, o, h, l, c, _ in candles:
        middle = (l, h) if c >= o else (h, l)
        for k, price in enumerate((o, *middle, c)):
            for symbol in ("XRPUSDT", "XRPUSD_PERP"):
                out.append(
                    {
                        "type": "tick",
                        "ts": open_ms + k * QUARTER,
                        "symbol": symbol,
                        "mark": f"{price:.5f}",
                    }
                )
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(
            "usage: python examples/make_crash.py CANDLES.json "
            "(Binance XRPUSDT 1h mark-price candles, see the module docstring)"
        )
    candles_file = Path(args[0])
    t0 = 1636956000000  # 2021-11-15 06:00 UTC, the first candle
    setup = t0 - 60_000
    records: list[dict[str, object]] = [
        {
            "type": "contract",
            "symbol": "XRPUSDT",
            "kind": "linear",
            "margin_asset": "USDT",
            "contract_size": "1",
            "brackets": xrp_table(),
        },
        {
            "type": "contract",
            "symbol": "XRPUSD_PERP",
            "kind": "inverse",
            "margin_asset": "XRP",
            "contract_size": "10",
            "brackets": [
                dict(zip(("floor", "cap", "mmr", "cum"), t, strict=True)) for t in COINM_XRP_TIERS
            ],
        },
        # alice: isolated long at 25x -- warned, then liquidated on the first leg down
        {
            "type": "position",
            "ts": setup,
            "account": "alice",
            "symbol": "XRPUSDT",
            "side": "both",
            "mode": "isolated",
            "qty": "20000",
            "entry": "1.2093",
            "leverage": "25",
            "isolated_wallet": "967.44",
        },
        # bob: cross USDT, long XRP -- warned, deposits, recovers
        {"type": "balance", "ts": setup, "account": "bob", "asset": "USDT", "wallet": "3750"},
        {
            "type": "position",
            "ts": setup,
            "account": "bob",
            "symbol": "XRPUSDT",
            "side": "both",
            "mode": "cross",
            "qty": "40000",
            "entry": "1.2093",
            "leverage": "12",
        },
        # carol: cross XRP-margined inverse long (COIN-M) -- liquidated in the 16 Nov wick
        {"type": "balance", "ts": setup, "account": "carol", "asset": "XRP", "wallet": "1980"},
        {
            "type": "position",
            "ts": setup,
            "account": "carol",
            "symbol": "XRPUSD_PERP",
            "side": "both",
            "mode": "cross",
            "qty": "3000",
            "entry": "1.2093",
            "leverage": "15",
        },
        # dave: cross USDT in hedge mode, long and short legs -- warned in the dip, recovers on the bounce
        {"type": "balance", "ts": setup, "account": "dave", "asset": "USDT", "wallet": "3000"},
        {
            "type": "position",
            "ts": setup,
            "account": "dave",
            "symbol": "XRPUSDT",
            "side": "long",
            "mode": "cross",
            "qty": "60000",
            "entry": "1.2093",
            "leverage": "20",
        },
        {
            "type": "position",
            "ts": setup,
            "account": "dave",
            "symbol": "XRPUSDT",
            "side": "short",
            "mode": "cross",
            "qty": "-35000",
            "entry": "1.2050",
            "leverage": "20",
        },
        # erin: isolated short at 10x -- profits, never alerted
        {
            "type": "position",
            "ts": setup,
            "account": "erin",
            "symbol": "XRPUSDT",
            "side": "both",
            "mode": "isolated",
            "qty": "-25000",
            "entry": "1.2093",
            "leverage": "10",
            "isolated_wallet": "3023.25",
        },
        # frank: isolated long at 11x -- warned in the second gap, adds isolated margin, recovers
        {
            "type": "position",
            "ts": setup,
            "account": "frank",
            "symbol": "XRPUSDT",
            "side": "both",
            "mode": "isolated",
            "qty": "15000",
            "entry": "1.2093",
            "leverage": "11",
            "isolated_wallet": "1649.05",
        },
    ]
    account_moves = [
        {
            "type": "margin",
            "ts": t0 + 19 * HOUR + 36 * 60_000,
            "account": "frank",
            "symbol": "XRPUSDT",
            "side": "both",
            "delta": "1500",
        },
        {
            "type": "balance",
            "ts": t0 + 18 * HOUR + 35 * 60_000,
            "account": "bob",
            "asset": "USDT",
            "wallet": "9200",
        },
    ]
    stream = sorted(ticks(candles_file) + account_moves, key=lambda r: r["ts"])  # stable: ticks first at a tie
    lines = [json.dumps(r, separators=(",", ":")) for r in records + stream]
    (ROOT / "examples" / "crash.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
