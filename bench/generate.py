"""Seeded synthetic workloads in liqmon's normalized JSON Lines format.

    python -m bench.generate --accounts 5000 --ticks 200000 --seed 1 --out bench/out/w5k.jsonl.gz

What a workload holds (the same seed gives byte-identical output):

* contracts: ``--symbols`` real Binance USDⓈ-M tier tables (ccxt ``fetch_leverage_tiers`` of
  Oct 2024, ``tests/data``), of which ``--inverse-share`` become COIN-M-style inverse contracts
  (``<BASE>USD_PERP``, contract size 100 for BTC and 10 otherwise) whose tiers are the same
  real table expressed in coin at the starting price, ``cum`` kept continuous;
* *active* accounts: 1–4 positions each, isolated or cross (or both), one-way or hedge legs,
  linear or inverse, leverage 3–50x, wallets from one to two initial margins;
* *far* accounts (``--far-accounts``): the same shapes at 1–2x leverage with deep collateral,
  far from every threshold for the whole run;
* marks: a random walk per symbol (log-normal steps) with occasional jumps of 3–8 %, each
  tick for a random symbol, ``ts`` advancing a few milliseconds per tick. A tick stands for one
  1-second Binance mark update of its symbol, so the step volatility is that of 40–120 %
  annualized volatility over one second (0.007–0.021 %); jumps come on top of it;
* account records interleaved every ``--record-every`` ticks on average: deposits and
  withdrawals, isolated margin moves, position re-sizes, closes and re-opens at the current
  mark (which also revives accounts that were liquidated).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

TIERS = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "data"
    / ("binance_leverage_tiers_ccxt_shape_2024-10.json.gz")
)
START_TS = 1_730_000_000_000
SECONDS_PER_YEAR = 365 * 86_400
VOL_LOW = 0.40 / math.sqrt(SECONDS_PER_YEAR)  # per 1-second step, 40 % annualized
VOL_HIGH = 1.20 / math.sqrt(SECONDS_PER_YEAR)  # 120 % annualized


@dataclass
class Market:
    symbol: str
    inverse: bool
    asset: str
    contract_size: float
    price: float
    volatility: float
    brackets: list[dict[str, str]]
    max_leverage: list[tuple[float, float]]  # (USD notional floor, max leverage) per tier

    def leverage_cap(self, notional_usd: float) -> float:
        """Binance refuses leverage above the tier's maximum for the position's notional."""
        cap = self.max_leverage[0][1]
        for floor, leverage in self.max_leverage:
            if notional_usd >= floor:
                cap = leverage
        return cap


@dataclass
class Account:
    name: str
    far: bool
    slots: list[tuple[Market, str, str]] = field(default_factory=list)  # market, side, mode
    cross_margin: dict[str, float] = field(default_factory=dict)  # initial margin per asset


def _fmt(x: float) -> str:
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.2f}"


def _price(x: float) -> str:
    return f"{x:.{max(2, 6 - math.floor(math.log10(x)))}f}"


def _coin_brackets(rows: list[tuple[float, float, str, str]], price: float) -> list[dict[str, str]]:
    """The real USD table expressed in coin at ``price``, with ``cum`` continuous (exact)."""
    brackets: list[dict[str, str]] = []
    cum = Decimal(0)
    for floor, cap, mmr, _ in rows:
        floor_c = Decimal(_fmt(floor / price))
        if brackets:
            cum += floor_c * (Decimal(mmr) - Decimal(brackets[-1]["mmr"]))
        brackets.append(
            {"floor": str(floor_c), "cap": _fmt(cap / price), "mmr": mmr, "cum": str(cum)}
        )
    return brackets


def load_markets(count: int, inverse_share: float, rng: random.Random) -> list[Market]:
    with gzip.open(TIERS, "rt") as stream:
        tables: dict[str, list[dict[str, Any]]] = json.load(stream)
    names = sorted(k for k in tables if k.endswith("/USDT:USDT"))
    rng.shuffle(names)
    names = sorted(names[:count], key=lambda n: n != "BTC/USDT:USDT")
    markets: list[Market] = []
    n_inverse = round(count * inverse_share)
    for i, name in enumerate(names):
        base = name.split("/")[0]
        price = (
            60_000.0 if base == "BTC" else 2_500.0 if base == "ETH" else 10 ** rng.uniform(-2, 2.7)
        )
        rows = [
            (
                float(t["minNotional"]),
                float(t["maxNotional"]),
                t["info"]["maintMarginRatio"],
                t["info"]["cum"],
            )
            for t in tables[name]
        ]
        caps = [(float(t["minNotional"]), float(t["maxLeverage"])) for t in tables[name]]
        if i < n_inverse:
            brackets = _coin_brackets(rows, price)
            markets.append(
                Market(
                    f"{base}USD_PERP",
                    True,
                    base,
                    100.0 if base == "BTC" else 10.0,
                    price,
                    rng.uniform(VOL_LOW, VOL_HIGH),
                    brackets,
                    caps,
                )
            )
        else:
            brackets = [
                {"floor": repr(f), "cap": repr(c), "mmr": m, "cum": cu} for f, c, m, cu in rows
            ]
            markets.append(
                Market(
                    f"{base}USDT",
                    False,
                    "USDT",
                    1.0,
                    price,
                    rng.uniform(VOL_LOW, VOL_HIGH),
                    brackets,
                    caps,
                )
            )
    return markets


def _qty_for(market: Market, notional_usd: float) -> float:
    if market.inverse:
        return max(1.0, round(notional_usd / market.contract_size))
    return float(_fmt(notional_usd / market.price))


def _notional_in_asset(market: Market, qty: float) -> float:
    if market.inverse:
        return abs(qty) * market.contract_size / market.price
    return abs(qty) * market.price


class Workload:
    def __init__(self, args: argparse.Namespace) -> None:
        # Independent streams, so that adding far accounts leaves every other record unchanged.
        self.streams = {
            name: random.Random(f"{args.seed}-{name}")
            for name in ("markets", "accounts", "far", "ticks", "records")
        }
        self.rng = self.streams["accounts"]  # the stream the record builders draw from
        self.args = args
        self.markets = load_markets(args.symbols, args.inverse_share, self.streams["markets"])
        self.ts = START_TS
        self.accounts: list[Account] = []
        self.active: list[Account] = []

    def _position(self, account: Account, market: Market, side: str, mode: str) -> dict[str, Any]:
        rng = self.rng
        far = account.far
        notional_usd = 10 ** rng.uniform(2.5, 5.5)
        leverage = rng.uniform(1.0, 2.0) if far else rng.choice((3, 5, 10, 15, 20, 25, 35, 50))
        leverage = min(leverage, market.leverage_cap(notional_usd))
        qty = _qty_for(market, notional_usd)
        margin = _notional_in_asset(market, qty) / leverage
        sign = {"long": 1, "short": -1}.get(side, rng.choice((1, -1)))
        entry = market.price * (1 + rng.uniform(-0.002, 0.002))
        record: dict[str, Any] = {
            "type": "position",
            "ts": self.ts,
            "account": account.name,
            "symbol": market.symbol,
            "side": side,
            "mode": mode,
            "qty": _fmt(sign * qty),
            "entry": _price(entry),
            "leverage": str(round(leverage, 2)),
        }
        if mode == "isolated":
            record["isolated_wallet"] = _fmt(margin * (3.0 if far else rng.uniform(1.0, 1.6)))
        else:
            account.cross_margin[market.asset] = (
                account.cross_margin.get(market.asset, 0.0) + margin
            )
        return record

    def _balance(self, account: Account, asset: str) -> dict[str, Any]:
        """A wallet of one to two times the account's initial cross margin (ten when far)."""
        initial = account.cross_margin.get(asset, 0.0)
        factor = 10.0 if account.far else self.rng.uniform(1.0, 2.0)
        return {
            "type": "balance",
            "ts": self.ts,
            "account": account.name,
            "asset": asset,
            "wallet": _fmt(initial * factor),
        }

    def _make_account(self, name: str, far: bool) -> tuple[Account, list[dict[str, Any]]]:
        rng = self.rng
        account = Account(name, far)
        records: list[dict[str, Any]] = []
        n = rng.randint(1, 4)
        hedge = rng.random() < 0.2
        modes = rng.choice(("cross", "isolated", "mixed"))
        chosen = rng.sample(self.markets, min(n, len(self.markets)))
        for market in chosen:
            mode = modes if modes != "mixed" else rng.choice(("cross", "isolated"))
            sides = ("long", "short") if hedge else ("both",)
            account.slots.extend((market, side, mode) for side in sides)
        positions = [self._position(account, m, side, mode) for m, side, mode in account.slots]
        records.extend(self._balance(account, asset) for asset in sorted(account.cross_margin))
        records.extend(positions)
        return account, records

    def _account_record(self) -> dict[str, Any]:
        rng = self.rng
        account = rng.choice(self.active)
        market, side, mode = rng.choice(account.slots)
        roll = rng.random()
        if roll < 0.35:
            return self._position(account, market, side, mode)  # re-size / re-open at the mark
        if roll < 0.45:
            record = self._position(account, market, side, mode)
            record["qty"] = "0"
            record.pop("isolated_wallet", None)
            return record
        if roll < 0.75 and mode == "isolated":
            return {
                "type": "margin",
                "ts": self.ts,
                "account": account.name,
                "symbol": market.symbol,
                "side": side,
                "delta": _fmt(
                    rng.uniform(-0.3, 1.0) * _notional_in_asset(market, _qty_for(market, 1_000))
                ),
            }
        return self._balance(account, market.asset)

    def records(self) -> Iterator[dict[str, Any]]:
        args = self.args
        for market in self.markets:
            yield {
                "type": "contract",
                "symbol": market.symbol,
                "kind": "inverse" if market.inverse else "linear",
                "margin_asset": market.asset,
                "contract_size": _fmt(market.contract_size),
                "brackets": market.brackets,
            }
        for i in range(args.accounts + args.far_accounts):
            far = i >= args.accounts
            self.rng = self.streams["far" if far else "accounts"]
            account, records = self._make_account(f"{'far' if far else 'acct'}-{i:06d}", far)
            self.accounts.append(account)
            if not far:
                self.active.append(account)
            yield from records
        record_probability = 1.0 / args.record_every if args.record_every else 0.0
        rng = self.streams["ticks"]
        self.rng = self.streams["records"]
        for _ in range(args.ticks):
            self.ts += rng.randint(0, 8)
            market = rng.choice(self.markets)
            step = rng.gauss(0.0, market.volatility)
            if rng.random() < args.jump_probability:
                step += rng.choice((-1, 1)) * rng.uniform(0.03, 0.08)
            market.price = min(max(market.price * math.exp(step), 1e-6), 1e7)
            yield {
                "type": "tick",
                "ts": self.ts,
                "symbol": market.symbol,
                "mark": _price(market.price),
            }
            if self.rng.random() < record_probability:
                yield self._account_record()


def write(args: argparse.Namespace, stream: TextIO) -> int:
    count = 0
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for record in Workload(args).records():
        stream.write(dumps(record) + "\n")
        count += 1
    return count


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=5000, help="active accounts")
    p.add_argument("--far-accounts", type=int, default=0, help="accounts far from thresholds")
    p.add_argument("--ticks", type=int, default=200_000)
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--inverse-share", type=float, default=0.2)
    p.add_argument("--record-every", type=int, default=200, help="ticks per account record")
    p.add_argument("--jump-probability", type=float, default=0.0005)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="output path (.gz compresses)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".gz":
        with gzip.open(out, "wt", compresslevel=1) as stream:
            count = write(args, stream)
    else:
        with open(out, "w") as stream:
            count = write(args, stream)
    print(f"{out}: {count:,} records")


if __name__ == "__main__":
    main()
