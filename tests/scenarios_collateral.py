"""Seeded scenarios with multi-asset collateral pools and funding (docs/collateral.md).

``generate(seed)`` returns the text of one normalized replay file; the same seed always gives
the same text. It is :mod:`tests.scenarios` (whose accounts, probes, malformed lines, stale and
unknown ticks it keeps) with, on top:

* contracts that always include USDT- and USDC-margined linear ones;
* ``collateral`` records for USDT, USDC, BTC, ETH and BNB: index prices that move (BTC and ETH
  follow their contracts' marks when the scenario has them, with crashes and spikes of
  3-12 %), haircuts from Binance's published collateral value ratios (BTC/ETH/BNB 95 %,
  USDT/USDC 99.99 %: haircuts 0.05 and 0.0001), now and then another valid haircut
  (0, 0.02, 0.1, 0.25); some assets are first priced late, so pools wait for them;
* pool accounts (``asset_mode`` true, some switched after opening cross positions in
  single-asset mode) holding USDT and USDC contracts, one-way and hedged, with wallets in
  USDT (negative in about a third of them: borrowed against coin), USDC, BTC, ETH, sized so
  the initial ratio spreads over 0.15-0.9; balances, multi-balance ``account_update`` records
  (the shape of a multi-assets ``ACCOUNT_UPDATE``), position updates and closes;
* mode switches back and forth (``false`` any time, ``true`` also for single-asset accounts,
  which is rejected while they hold an isolated or inverse position), repeated modes;
* records that must be rejected: isolated and inverse positions (and closes) of pool
  accounts, non-positive collateral prices, haircuts outside [0, 1);
* pool probes: a fresh pool whose one ``account_update`` puts MM/MB exactly on a level, on
  level − hysteresis, at MB = MM or at MB = 0 (or within ~1e-24 of it on a random side);
* funding: most ticks carry ``funding_rate`` (a random walk per symbol, with jumps) and
  ``funding_ts`` (the next multiple of a 60 s funding interval, so funding settles several
  times per symbol; now and then the funding time just passed, as a lagging feed repeats it).

The generator never simulates the engine: it may send a record it cannot know will be
refused (which is the point). ``generate(seed, pools=False)`` is exactly
``tests.scenarios.generate(seed)``.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

from tests.scenarios import (
    BOUNDARIES,
    LINEAR_START,
    Generator,
    Leg,
    Market,
    Slot,
    _decimal_text,
    _fr,
    _terminates,
    linear_tables,
    sig,
)

FUNDING_INTERVAL_MS = 60_000
# Binance's collateral value ratios (docs/collateral.md): haircut = 1 − ratio
HAIRCUTS = {"USDT": "0.0001", "USDC": "0.0001", "BTC": "0.05", "ETH": "0.05", "BNB": "0.05"}
OTHER_HAIRCUTS = ("0", "0.02", "0.1", "0.25")
INDEX_START = {"USDT": 1.0, "USDC": 0.9999, "BTC": 62000.0, "ETH": 2500.0, "BNB": 580.0}
FOLLOWS = {"BTC": ("BTCUSDT", "BTCUSDC"), "ETH": ("ETHUSDT", "ETHUSDC"), "BNB": ("BNBUSDT",)}
POOL_NAMES = ["pool", "Whale", "mm_desk", "p2", "quant_7"]
STABLE = ("USDT", "USDC")


class CollateralGenerator(Generator):
    """See the module docstring."""

    def __init__(self, seed: int, steps: int, *, pools: bool = True) -> None:
        super().__init__(seed, steps)
        self.pools = pools
        self.index = dict(INDEX_START)  # the walk's state (float) per collateral asset
        self.priced: dict[str, tuple[Fraction, Fraction]] = {}  # last valid record sent
        self.late: dict[str, int] = {}  # asset -> step of its first collateral record
        self.rates: dict[str, float] = {}
        self.multi: set[str] = set()  # accounts the generator switched on (its own guess)
        self.pool_wallets: dict[tuple[str, str], Decimal] = {}

    # -- output -----------------------------------------------------------------------------

    def emit(self, record: dict[str, Any]) -> None:
        """Ticks also carry funding fields (nine times in ten)."""
        if self.pools and record.get("type") == "tick" and self.rng.random() < 0.9:
            record["funding_rate"], record["funding_ts"] = self.funding(
                record["symbol"], record["ts"]
            )
        super().emit(record)

    def funding(self, symbol: str, ts: int) -> tuple[str, int]:
        """The symbol's funding rate (a random walk with jumps, 8 decimals as Binance writes
        it) and its next funding time (one time in twenty, the one just passed)."""
        rng = self.rng
        rate = self.rates.get(symbol, rng.uniform(-0.0005, 0.001))
        if rng.random() < 0.03:
            rate = rng.choice([-1, 1]) * rng.uniform(0.002, 0.0075)
        rate = min(max(rate + rng.gauss(0.0, 0.00005), -0.0075), 0.0075)
        self.rates[symbol] = rate
        text = format(Decimal(repr(rate)).quantize(Decimal("1e-8")), "f")
        if Decimal(text) == 0:
            text = "0.00000000"
        due = (ts // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        if ts % FUNDING_INTERVAL_MS < 3000 and rng.random() < 0.05:
            due -= FUNDING_INTERVAL_MS  # a lagging feed still sends the time just passed
        return self.dec(text), due

    # -- set-up -----------------------------------------------------------------------------

    def add_contracts(self) -> None:
        """The base contracts, plus a USDC- and a USDT-margined linear one if they lack them."""
        super().add_contracts()
        if not self.pools:
            return
        for wanted in ("USDC", "USDT"):
            if not any(m.asset == wanted and m.kind == "linear" for m in self.markets.values()):
                choices = [s for s in sorted(LINEAR_START) if s.endswith(wanted)]
                self.add_linear(self.rng.choice(choices))

    def add_linear(self, symbol: str) -> None:
        table = linear_tables()[symbol]
        asset = "USDC" if symbol.endswith("USDC") else "USDT"
        self.emit(
            {
                "type": "contract",
                "symbol": symbol,
                "kind": "linear",
                "margin_asset": asset,
                "contract_size": self.dec("1"),
                "brackets": table,
            }
        )
        start = LINEAR_START[symbol]
        self.markets[symbol] = Market(
            symbol,
            "linear",
            asset,
            Fraction(1),
            [tuple(_fr(b[k]) for k in ("floor", "cap", "mmr", "cum")) for b in table],  # type: ignore[misc]
            float(start),
            float(start),
            self.rng.uniform(0.0005, 0.003),
            0,
        )

    def build(self) -> str:
        if not self.pools:
            return super().build()
        self.add_contracts()
        for market in self.markets.values():
            if market.first_step == 0:
                self.tick(market, self.t, sig(market.price, 6))
        for asset in sorted(INDEX_START):
            if asset == "BNB" or self.rng.random() < 0.25:
                self.late[asset] = self.rng.randint(1, self.steps // 2)
            else:
                self.collateral_record(asset)
        self.add_accounts()
        self.add_pools()
        for k in range(1, self.steps + 1):
            self.step(k)
        return "\n".join(self.lines) + "\n"

    def linear(self, asset: str | None = None) -> list[Market]:
        return [
            m
            for _, m in sorted(self.markets.items())
            if m.kind == "linear" and (asset is None or m.asset == asset)
        ]

    def add_pools(self) -> None:
        rng = self.rng
        for account in rng.sample(POOL_NAMES, rng.randint(2, 4)):
            self.accounts.append(account)
            switch_later = rng.random() < 0.3
            if not switch_later:
                self.emit(self.mode_record(account, True))
            slots: list[Slot] = []
            for _ in range(rng.randint(1, 4)):
                market = rng.choice(self.linear())
                style = self.styles.setdefault(
                    (account, market.symbol), rng.choice(["oneway", "hedge"])
                )
                sides = (
                    ["both"]
                    if style == "oneway"
                    else rng.choice([["long"], ["short"], ["long", "short"]])
                )
                for side in sides:
                    if (account, market.symbol, side) not in self.slots:
                        slot = Slot(account, market.symbol, side, "cross")
                        self.slots[(account, market.symbol, side)] = slot
                        slots.append(slot)
            records = [self.size_position(slot, 0.5) for slot in slots]
            mm_usd = Fraction(0)
            for slot, record in zip(slots, records, strict=True):
                market = self.markets[slot.symbol]
                mm = market.maintenance(_fr(record["qty"]), _fr(record["entry"]))
                mm_usd += mm * Fraction(self.index[market.asset])
            wallets = self.pool_wallet_mix(float(mm_usd) / self.initial_ratio())
            balances = [{"asset": a, "wallet": self.dec(w)} for a, w in wallets.items()]
            for asset, wallet in wallets.items():
                self.pool_wallets[(account, asset)] = Decimal(wallet)
            if rng.random() < 0.4:  # one multi-assets account_update for everything
                listed = [_listed(record) for record in records]
                self.emit(self.update_record(account, balances, listed))
            else:
                for asset, wallet in wallets.items():
                    self.emit(self.balance_record(account, asset, wallet))
                for record in records:
                    self.emit(record)
            if switch_later:  # cross entities in single-asset mode first, then the pool
                self.emit(self.mode_record(account, True))

    def pool_wallet_mix(self, value_usd: float) -> dict[str, str]:
        """Wallets worth ``value_usd`` as collateral: some of BTC, ETH, USDC, USDT, and now
        and then a negative USDT wallet borrowed against the coins."""
        rng = self.rng
        assets = rng.sample(["BTC", "ETH", "USDC", "USDT"], rng.randint(1, 4))
        borrow = rng.random() < 0.35
        if borrow:
            assets = [a for a in assets if a != "USDT"] or ["BTC"]
        weights = [rng.uniform(0.2, 1.0) for _ in assets]
        gross = value_usd * (1 + rng.uniform(0.3, 1.5)) if borrow else value_usd
        out: dict[str, str] = {}
        for asset, weight in zip(assets, weights, strict=True):
            worth = gross * weight / sum(weights)
            out[asset] = sig(worth / (self.index[asset] * (1 - float(HAIRCUTS[asset]))), 6)
        if borrow:
            out["USDT"] = "-" + sig(gross - value_usd, 6)
        return out

    # -- records ----------------------------------------------------------------------------

    def mode_record(self, account: str, multi: bool) -> dict[str, Any]:
        if multi:
            self.multi.add(account)
        else:
            self.multi.discard(account)
        return {
            "type": "asset_mode",
            "ts": self.record_ts(),
            "account": account,
            "multi_assets": multi,
        }

    def update_record(
        self, account: str, balances: list[dict[str, Any]], positions: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "type": "account_update",
            "ts": self.record_ts(),
            "account": account,
            "balances": balances,
            "positions": positions,
        }

    def collateral_record(self, asset: str, haircut: str | None = None) -> None:
        rng = self.rng
        if haircut is None:
            haircut = HAIRCUTS[asset] if rng.random() < 0.9 else rng.choice(OTHER_HAIRCUTS)
        price = sig(self.index[asset], 8)
        self.priced[asset] = (_fr(price), _fr(haircut))
        ts = self.t if rng.random() < 0.9 else self.t - rng.randint(1, 20_000)
        self.emit(
            {
                "type": "collateral",
                "ts": ts,
                "asset": asset,
                "price": self.dec(price),
                "haircut": self.dec(haircut),
            }
        )

    def move_index(self, asset: str) -> None:
        """The index follows its contract's mark (when there is one) or walks; crashes and
        spikes of 3-12 % now and then."""
        rng = self.rng
        follow = [self.markets[s] for s in FOLLOWS.get(asset, ()) if s in self.markets]
        if follow and rng.random() < 0.8:
            self.index[asset] = follow[0].price * (1 + rng.gauss(0.0, 0.0005))
        elif asset in STABLE:
            self.index[asset] = INDEX_START[asset] * (1 + rng.gauss(0.0, 0.0003))
        else:
            self.index[asset] *= math.exp(0.002 * rng.gauss(0.0, 1.0))
        if asset not in STABLE and rng.random() < 0.04:
            self.index[asset] *= 1 + rng.choice([-1, 1]) * rng.uniform(0.03, 0.12)

    # -- the stream -------------------------------------------------------------------------

    def step(self, k: int) -> None:
        if not self.pools:
            super().step(k)
            return
        rng = self.rng
        due = [a for a, at in sorted(self.late.items()) if at == k]
        if due:
            del self.late[due[0]]
            self.collateral_record(due[0])
            return
        u = rng.random()
        if u < 0.07:
            self.collateral_step()
        elif u < 0.095:
            self.pool_balance_step()
        elif u < 0.115:
            self.pool_position_step()
        elif u < 0.125:
            self.mode_step()
        elif u < 0.13:
            self.bad_collateral_step()
        elif u < 0.14:
            self.pool_update_step()
        elif u < 0.15:
            self.pool_probe()
        else:
            super().step(k)

    def collateral_step(self) -> None:
        self.t += self.rng.randint(0, 2000)
        priced = sorted(a for a in INDEX_START if a not in self.late)
        if priced:
            asset = self.rng.choice(priced)
            self.move_index(asset)
            self.collateral_record(asset)

    def bad_collateral_step(self) -> None:
        """A price that is not positive or a haircut outside [0, 1): rejected."""
        rng = self.rng
        asset = rng.choice(sorted(INDEX_START))
        price, haircut = sig(self.index[asset], 8), HAIRCUTS[asset]
        if rng.random() < 0.5:
            price = rng.choice(["0", "-" + price, "-0.0001"])
        else:
            haircut = rng.choice(["1", "1.5", "-0.01", "-1", "1.0000"])
        self.emit(
            {
                "type": "collateral",
                "ts": self.t,
                "asset": asset,
                "price": self.dec(price),
                "haircut": self.dec(haircut),
            }
        )

    def pool_accounts(self) -> list[str]:
        return [a for a in self.accounts if a in POOL_NAMES or a.startswith("pool_edge")]

    def pool_balance_step(self) -> None:
        rng = self.rng
        if self.pool_wallets and rng.random() < 0.85:
            (account, asset), base = rng.choice(sorted(self.pool_wallets.items()))
            if base == 0:
                return
            wallet = sig(abs(float(base)) * rng.uniform(0.5, 2.0), 6)
            if base < 0:
                wallet = "-" + wallet
            if rng.random() < 0.05:
                wallet = "0"
        else:  # a wallet in a coin the pool did not hold (maybe one not priced yet)
            accounts = self.pool_accounts()
            if not accounts:
                return
            account = rng.choice(accounts)
            asset = rng.choice(sorted(INDEX_START))
            wallet = sig(rng.uniform(100, 10_000) / self.index[asset], 6)
            self.pool_wallets.setdefault((account, asset), Decimal(wallet))
        self.emit(self.balance_record(account, asset, wallet))

    def pool_update_step(self) -> None:
        """A multi-assets ACCOUNT_UPDATE: several wallets of a pool account (and maybe one
        position) at once."""
        rng = self.rng
        accounts = self.pool_accounts()
        if not accounts:
            return
        account = rng.choice(accounts)
        held = sorted(a for (acc, a) in self.pool_wallets if acc == account)
        assets = rng.sample(
            sorted({*held, "USDT", "BTC"}), rng.randint(2, min(3, len({*held, "USDT", "BTC"})))
        )
        balances = []
        for asset in assets:
            base = self.pool_wallets.get((account, asset), Decimal(1000 / self.index[asset]))
            text = sig(abs(float(base)) * rng.uniform(0.5, 1.3), 6) if base else "0"
            if base < 0:
                text = "-" + text
            self.pool_wallets[(account, asset)] = Decimal(text)
            balances.append({"asset": asset, "wallet": self.dec(text)})
        positions = []
        opened = [s for (acc, _, _), s in sorted(self.slots.items()) if acc == account and s.open]
        if opened and rng.random() < 0.5:
            record = self.size_position(rng.choice(opened), rng.uniform(0.3, 0.95))
            positions.append(_listed(record))
        if rng.random() < 0.15:  # an isolated position in it: the whole update is rejected
            slot = Slot(account, rng.choice(self.linear()).symbol, "both", "isolated")
            positions.append(_listed(self.size_position(slot, 0.5)))
        record = self.update_record(account, balances, positions)
        if rng.random() < 0.1:  # a snapshot instead: what it does not list is closed or 0
            record["type"] = "account_snapshot"
            listed = {(p["symbol"], p["side"]) for p in positions}
            for slot in opened:
                slot.open = (slot.symbol, slot.side) in listed
        self.emit(record)

    def pool_position_step(self) -> None:
        rng = self.rng
        accounts = self.pool_accounts()
        if not accounts:
            return
        account = rng.choice(accounts)
        opened = [s for (acc, _, _), s in sorted(self.slots.items()) if acc == account and s.open]
        op = rng.choice(["resize", "resize", "close", "new", "isolated", "inverse"])
        if op == "resize" and opened:
            self.emit(self.size_position(rng.choice(opened), rng.uniform(0.3, 0.95)))
        elif op == "close" and opened:
            self.emit(self.close_record(rng.choice(opened)))
        elif op == "new":
            slot = self.new_slot(account, rng.choice(self.linear()).symbol)
            if slot is not None:
                slot.mode = "cross"
                self.emit(self.size_position(slot, rng.uniform(0.3, 0.95)))
        elif op == "isolated":  # rejected while the account is a pool (a close too)
            market = rng.choice(self.linear())
            slot = Slot(account, market.symbol, "both", "isolated")
            if rng.random() < 0.3:
                record = self.close_record(slot)
            else:
                record = self.size_position(slot, 0.5)
            self.emit(record)
        elif op == "inverse":  # rejected while the account is a pool
            inverse = [m for _, m in sorted(self.markets.items()) if m.kind == "inverse"]
            if inverse:
                slot = Slot(account, rng.choice(inverse).symbol, "both", "cross")
                self.emit(self.size_position(slot, 0.5))

    def mode_step(self) -> None:
        rng = self.rng
        account = rng.choice(self.accounts)
        u = rng.random()
        if u < 0.15:  # the mode it is in (as far as the generator knows): a no-op
            self.emit(self.mode_record(account, account in self.multi))
        else:
            self.emit(self.mode_record(account, account not in self.multi))

    # -- pool probes ------------------------------------------------------------------------

    def pool_probe(self) -> None:
        """A fresh pool whose one ``account_update`` puts it exactly on a threshold: its USDT
        wallet is solved from the other wallets, the positions and the current prices."""
        rng = self.rng
        markets = [m for m in self.linear() if m.mark is not None]
        if not markets or not all(a in self.priced for a in ("USDT", "USDC", "BTC")):
            return
        if rng.random() < 0.5:  # USDT's index at exactly 1: the solved wallet is then often a
            self.index["USDT"] = 1.0  # finite decimal (below 0 the haircut plays no part)
            self.collateral_record("USDT", HAIRCUTS["USDT"])
        market = rng.choice(markets)
        sides = rng.choice([["both"], ["long"], ["short"], ["long", "short"]])
        legs = []
        for side in sides:
            qty, entry = self.size(market, side, usd_max=5e5)
            legs.append(Leg(market, side, qty, entry))
        others = [m for m in markets if m is not market]
        if others and rng.random() < 0.5:
            other = rng.choice(others)
            qty, entry = self.size(other, "both", usd_max=5e5)
            legs.append(Leg(other, "both", qty, entry))
        mm_usd = Fraction(0)
        upnl: dict[str, Fraction] = {}
        for leg in legs:
            mark = leg.market.mark
            assert mark is not None
            price = self.priced[leg.market.asset][0]
            mm_usd += leg.market.maintenance(leg.qty, mark) * price
            upnl[leg.market.asset] = upnl.get(leg.market.asset, Fraction(0)) + leg.market.upnl(
                leg.qty, leg.entry, mark
            )
        target = rng.choice(BOUNDARIES)
        want = Fraction(0) if target == "mb0" else mm_usd / _fr(target)
        btc_price, btc_haircut = self.priced["BTC"]
        btc = _fr(sig(float(want + mm_usd) * rng.uniform(0.5, 1.5) / float(btc_price), 6))
        rest = btc * btc_price * (1 - btc_haircut)
        if "USDC" in upnl:
            price, haircut = self.priced["USDC"]
            e = upnl["USDC"]
            rest += e * price * ((1 - haircut) if e >= 0 else 1)
        need = want - rest  # v_USDT(E_USDT) must be this
        price, haircut = self.priced["USDT"]
        equity = need / price if need < 0 else need / (price * (1 - haircut))
        wallet_exact = equity - upnl.get("USDT", Fraction(0))
        if _terminates(wallet_exact):
            wallet = _decimal_text(wallet_exact)
        else:
            wallet = _decimal_text(wallet_exact, rng.choice([18, 24, 32]), up=rng.random() < 0.5)
        account = f"pool_edge{self.probes}"
        self.probes += 1
        self.accounts.append(account)
        self.emit(self.mode_record(account, True))
        positions = []
        for leg in legs:
            self.styles[(account, leg.market.symbol)] = "oneway" if leg.side == "both" else "hedge"
            slot = Slot(account, leg.market.symbol, leg.side, "cross", open=True)
            self.slots[(account, leg.market.symbol, leg.side)] = slot
            record = self.position_record(slot, leg.qty, leg.entry, None)
            positions.append(_listed(record))
        balances = [
            {"asset": "USDT", "wallet": wallet},
            {"asset": "BTC", "wallet": self.dec(_decimal_text(btc))},
        ]
        self.pool_wallets[(account, "BTC")] = Decimal(_decimal_text(btc))
        self.emit(self.update_record(account, balances, positions))


def _listed(record: dict[str, Any]) -> dict[str, Any]:
    """A position record as an entry of an account record (without type, ts and account)."""
    return {k: v for k, v in record.items() if k not in ("type", "ts", "account")}


def generate(seed: int, steps: int = 300, *, pools: bool = True) -> str:
    """The normalized JSONL text of collateral scenario ``seed``; ``pools=False`` gives
    exactly :func:`tests.scenarios.generate`."""
    return CollateralGenerator(seed, steps, pools=pools).build()
