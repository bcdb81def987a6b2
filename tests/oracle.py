"""Exact reference implementation of liqmon's public contract, used as a test oracle.

Written from the contract alone (``docs/records.md``, ``docs/margin.md``, ``docs/alerts.md``
and, for multi-asset collateral pools and funding, ``docs/collateral.md``: records, entities,
the alert state machine, events), plus the implementation's documented choices where the
contract is silent (``docs/choices.md``), and deliberately independent of ``monitor/``. Every
quantity is a :class:`fractions.Fraction`: no rounding happens anywhere until a payload number
is converted to a float at the very end. Correctness and readability come before speed.

The documented choices followed here (the contract is silent on them; see ``docs/choices.md``):

* events caused by one record are ordered by entity key: account, then cross before isolated
  before the pool, then asset, symbol, side (plain string order); a cross entity has no
  symbol/side, a pool neither (its asset is ``USD``);
* ``positions`` are sorted by (symbol, side); a position's ``mark`` is the price it is valued
  at (its own entry price while its symbol has had no tick);
* the top-level ``liquidation_price`` appears only on isolated ``margin_warning`` events;
* ``margin_ratio`` is null when the margin balance MB <= 0; an entity is liquidated when
  MB <= MM or MB <= 0;
* liquidation (bankruptcy) price of a symbol: the mark of that symbol at which MB = MM (MB = 0)
  with every other symbol of the entity held at its current price; all legs of the symbol move
  together, each leg uses the tier holding its own notional at the solution, only
  self-consistent solutions count, the one nearest the symbol's current mark (the first leg's
  entry while unmarked) wins, and no solution or a solution <= 0 is null;
* a ``margin`` record on a slot that is not an open isolated position is rejected; a removal
  larger than the isolated wallet is applied;
* a ``position`` record with qty 0 on an empty slot is a no-op; qty of the wrong sign for a
  hedge slot is rejected (so is a position in a symbol with no contract); an isolated record
  sets the isolated wallet (required unless qty is 0; a negative one is applied like any
  other fact, as the engine does; the scenarios never send one); a cross entity's wallet is
  the account's balance in the margin asset (0 if never set);
* ``account_snapshot`` (replace) and ``account_update`` (merge) are validated whole (an asset or
  a slot listed twice is malformed; a position a ``position`` record would be refused for, or a
  position in a symbol with no contract whatever its qty, rejects the whole record; a snapshot
  older than the account's last applied snapshot is rejected), then applied at once: every
  entity one of its balances or positions touches (for a snapshot also every wallet it resets
  to 0 and every position it closes) is evaluated once, with the record's ``ts``;
* an update inside the same entity keeps its level ``h``; an entity left without positions is
  forgotten without an event;
* ``close`` policy: a liquidated entity's positions are removed, and a cross liquidation sets
  the account's wallet in that asset to 0; ``hold`` policy: the liquidation is emitted once, the
  positions stay and the entity is silent until a balance/position/margin/account record
  changes it, when it is re-evaluated at once from ``h`` cleared;
* a tick older than the symbol's last accepted tick, or for a symbol with no contract, is
  dropped; a tick of equal ``ts`` is applied; every accepted tick (the first one included)
  re-evaluates every entity holding the symbol.

Multi-asset collateral (``docs/collateral.md``):

* an account in multi-assets mode has one **pool** entity (key ``(account, "pool", "USD", "",
  "")``) holding all its positions (which are all linear and cross: an isolated or inverse
  ``position`` of a pool account is rejected, a close included, and so is ``asset_mode`` true
  while one is open) and all its wallets; per asset ``E_a`` = wallet + uPnL of the positions
  margined in ``a``; ``MB = Σ v_a(E_a)`` with ``v_a(x) = x·price·(1 − haircut)`` for ``x >= 0``
  and ``x·price`` below; ``MM = Σ MM_i·price_{a(i)}``;
* a pool needs a ``collateral`` price for every margin asset of its positions and every asset
  of a nonzero wallet; until it has them it emits nothing and keeps ``h``;
* a ``collateral`` record (price > 0, haircut in [0, 1), else rejected) re-evaluates every pool
  that needs its asset, at once; it does not wake a pool liquidated under ``hold`` (like a
  tick, it is market data, not a report of the trading system);
* a pool liquidation's ``loss`` is the USD value at price of every positive wallet, ``shortfall``
  is ``max(0, −MB)``; under ``close`` every position of the account is removed and every wallet
  set to 0, negative ones included;
* pool liquidation/bankruptcy prices: ``MB`` is piecewise linear in the symbol's mark (the
  haircut of its margin asset on where that asset's equity is >= 0, off below); every branch
  and tier combination is solved, only self-consistent solutions kept, then as above;
* an ``asset_mode`` that changes the mode forgets the account's entities (``h`` and the hold
  mark, no event) and evaluates the new ones at once; one that repeats the mode is a no-op.

Funding (``Oracle(funding=True)``, ``docs/collateral.md`` §3): per symbol the latest
``(funding_rate, funding_ts)`` of an accepted tick is stored; the first accepted tick with
``ts >= funding_ts`` settles it at its own mark before it is evaluated (then its own pair is
stored): each open position pays ``s·N(P)·rate`` from its wallet (isolated wallet, or the
account's wallet in the margin asset). A ``funding_ts`` settles at most once per symbol.
:attr:`Oracle.funding_by_asset` and :attr:`Position.funding` hold what was booked to wallets
(negative: paid), per asset and per open position (cumulative while the slot stays open).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from itertools import product
from typing import Any

Payload = dict[str, Any]
# (account, scope, asset, symbol, side): scope "cross" < "isolated" < "pool" in string order,
# and a cross or pool key has symbol = side = "", so plain tuple order is the event order.
EntityKey = tuple[str, str, str, str, str]

SIDES = ("both", "long", "short")
MODES = ("isolated", "cross")
KINDS = ("linear", "inverse")
POOL = "pool"
USD = "USD"
ZERO = Fraction(0)


class Refused(Exception):
    """The record was not applied. ``kind`` is ``malformed``, ``rejected`` or ``dropped``."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind
        self.why = why


class OutOfTable(Exception):
    """A notional beyond the contract's last tier: outside the contract, a generator bug."""


# ---------------------------------------------------------------------------------------------
# Parsing (the oracle's own, strict, exact)


def _number(rec: dict[str, Any], name: str) -> Fraction:
    if name not in rec:
        raise Refused("malformed", f"missing {name}")
    value = rec[name]
    if isinstance(value, bool):
        raise Refused("malformed", f"{name} is a bool")
    if isinstance(value, int | Fraction):
        return Fraction(value)
    if isinstance(value, str):
        try:
            dec = Decimal(value)
        except InvalidOperation:
            raise Refused("malformed", f"{name} is not a decimal") from None
        if not dec.is_finite():
            raise Refused("malformed", f"{name} is not finite")
        return Fraction(dec)
    raise Refused("malformed", f"{name} has type {type(value).__name__}")


def _text(rec: dict[str, Any], name: str, choices: tuple[str, ...] | None = None) -> str:
    value = rec.get(name)
    if not isinstance(value, str) or not value:
        raise Refused("malformed", f"{name} missing or not a string")
    if choices is not None and value not in choices:
        raise Refused("malformed", f"{name} = {value!r}")
    return value


def _int(rec: dict[str, Any], name: str) -> int:
    value = rec.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused("malformed", f"{name} missing or not a non-negative integer")
    return value


def _ts(rec: dict[str, Any]) -> int:
    return _int(rec, "ts")


def _json_number(text: str) -> Fraction:
    """JSON numbers are read exactly from their text (``1.1`` is 11/10, not a binary float)."""
    return Fraction(Decimal(text))


def parse(line: str) -> dict[str, Any]:
    """One JSON line -> a dict whose decimal JSON numbers are exact Fractions."""
    try:
        rec = json.loads(line, parse_float=_json_number)
    except ValueError:
        raise Refused("malformed", "invalid JSON") from None
    if not isinstance(rec, dict):
        raise Refused("malformed", "not an object")
    return rec


# ---------------------------------------------------------------------------------------------
# Contracts and positions


@dataclass(frozen=True)
class Tier:
    floor: Fraction
    cap: Fraction
    mmr: Fraction
    cum: Fraction

    open_ended: bool = False
    """The table's last tier: it holds every notional from its floor up (docs/margin.md: above
    the last cap the last tier applies, to valuation and solved prices alike)."""

    def holds(self, notional: Fraction) -> bool:
        return self.floor <= notional and (self.open_ended or notional < self.cap)


@dataclass(frozen=True)
class Contract:
    symbol: str
    kind: str
    asset: str
    size: Fraction
    tiers: tuple[Tier, ...]

    def notional(self, qty: Fraction, price: Fraction) -> Fraction:
        """N(P): q·P·CS (linear), q·CS/P (inverse), in the margin asset."""
        if self.kind == "linear":
            return abs(qty) * self.size * price
        return abs(qty) * self.size / price

    def upnl(self, qty: Fraction, entry: Fraction, price: Fraction) -> Fraction:
        """s·q·CS·(P − EP) (linear), s·q·CS·(1/EP − 1/P) (inverse); ``qty`` is s·q."""
        if self.kind == "linear":
            return qty * self.size * (price - entry)
        return qty * self.size * (1 / entry - 1 / price)

    def tier(self, notional: Fraction) -> Tier:
        for tier in self.tiers:
            if tier.holds(notional):
                return tier
        raise OutOfTable(f"{self.symbol}: notional {float(notional)} is in no tier")

    def maintenance(self, qty: Fraction, price: Fraction) -> Fraction:
        """N·mmr − cum with the tier holding N at ``price``."""
        n = self.notional(qty, price)
        tier = self.tier(n)
        return n * tier.mmr - tier.cum


@dataclass
class Position:
    account: str
    symbol: str
    side: str
    mode: str
    qty: Fraction  # signed: + long, − short
    entry: Fraction
    isolated_wallet: Fraction | None  # isolated only
    funding: Fraction = ZERO  # funding booked to its wallet while open (negative: paid)


@dataclass(frozen=True)
class Upsert:
    """One position of a ``position``, ``account_snapshot`` or ``account_update`` record."""

    symbol: str
    side: str
    mode: str
    qty: Fraction
    entry: Fraction
    wallet: Fraction | None  # isolated only, None for a close


@dataclass
class Outcome:
    """What one line did: ``status`` is applied/noop/malformed/rejected/dropped."""

    status: str
    events: list[Payload] = field(default_factory=list)
    why: str = ""


def _upsert_fields(rec: dict[str, Any]) -> Upsert:
    symbol = _text(rec, "symbol")
    side = _text(rec, "side", SIDES)
    mode = _text(rec, "mode", MODES)
    qty = _number(rec, "qty")
    entry = _number(rec, "entry")
    if entry <= 0 and qty != 0:
        raise Refused("malformed", "entry <= 0")
    if _number(rec, "leverage") < 0 and qty != 0:  # not used by the margin math
        raise Refused("malformed", "leverage < 0")
    # the isolated wallet of an isolated position (a close does not need one)
    wallet = _number(rec, "isolated_wallet") if mode == "isolated" and qty != 0 else None
    return Upsert(symbol, side, mode, qty, entry, wallet)


# ---------------------------------------------------------------------------------------------
# The engine


class Oracle:
    """Applies normalized records one line at a time and returns the payloads (minus ``id``)."""

    def __init__(
        self,
        levels: str = "0.7,0.8,0.9",
        hysteresis: str = "0.05",
        policy: str = "close",
        *,
        funding: bool = False,
    ) -> None:
        assert policy in ("close", "hold")
        self.levels = sorted(Fraction(Decimal(x.strip())) for x in levels.split(","))
        self.hysteresis = Fraction(Decimal(hysteresis))
        self.policy = policy
        self.funding = funding
        self.contracts: dict[str, Contract] = {}
        self.marks: dict[str, tuple[int, Fraction]] = {}  # symbol -> (ts, mark)
        self.wallets: dict[tuple[str, str], Fraction] = {}  # (account, asset) -> cross wallet
        self.slots: dict[tuple[str, str, str], Position] = {}  # (account, symbol, side)
        self.h: dict[EntityKey, Fraction] = {}
        self.held: set[EntityKey] = set()  # hold policy: liquidated, silent
        self.snapshots: dict[str, int] = {}  # account -> ts of its last applied snapshot
        self.multi: set[str] = set()  # accounts in multi-assets mode
        self.collateral: dict[str, tuple[Fraction, Fraction]] = {}  # asset -> (price, haircut)
        self.funding_pairs: dict[str, tuple[Fraction, int]] = {}  # symbol -> (rate, funding_ts)
        self.settled: set[tuple[str, int]] = set()  # (symbol, funding_ts) already settled
        self.funding_by_asset: dict[str, Fraction] = {}  # booked to wallets (negative: paid)

    # -- public -----------------------------------------------------------------------------

    def apply_line(self, line: str) -> Outcome:
        try:
            return self._apply(parse(line))
        except Refused as refused:
            return Outcome(refused.kind, why=refused.why)

    def replay(self, text: str) -> list[Outcome]:
        return [self.apply_line(line) for line in text.splitlines()]

    def pool_numbers(self, account: str) -> tuple[Fraction, Fraction] | None:
        """``(MB, MM)`` in USD of ``account``'s pool now; None when it has no pool or waits for
        a collateral price."""
        if account not in self.multi:
            return None
        members = self._members((account, POOL, USD, "", ""))
        if not members or not self._priced(account, members):
            return None
        return self._pool_mb(account, members), self._pool_mm(members)

    def position_funding(self) -> dict[tuple[str, str, str], Fraction]:
        """The cumulative funding booked to each open position, by slot."""
        return {slot: p.funding for slot, p in sorted(self.slots.items())}

    # -- records ----------------------------------------------------------------------------

    def _apply(self, rec: dict[str, Any]) -> Outcome:
        kind = rec.get("type")
        if kind == "contract":
            return self._contract(rec)
        if kind == "balance":
            return self._balance(rec)
        if kind == "position":
            return self._position(rec)
        if kind == "margin":
            return self._margin(rec)
        if kind == "tick":
            return self._tick(rec)
        if kind in ("account_snapshot", "account_update"):
            return self._account(rec, replace=kind == "account_snapshot")
        if kind == "asset_mode":
            return self._asset_mode(rec)
        if kind == "collateral":
            return self._collateral(rec)
        raise Refused("malformed", f"unknown type {kind!r}")

    def _contract(self, rec: dict[str, Any]) -> Outcome:
        symbol = _text(rec, "symbol")
        kind = _text(rec, "kind", KINDS)
        asset = _text(rec, "margin_asset")
        size = _number(rec, "contract_size")
        brackets = rec.get("brackets")
        if not isinstance(brackets, list) or not brackets:
            raise Refused("malformed", "brackets")
        tiers = []
        for b in brackets:
            if not isinstance(b, dict):
                raise Refused("malformed", "bracket")
            tiers.append(Tier(*(_number(b, f) for f in ("floor", "cap", "mmr", "cum"))))
        tiers.sort(key=lambda t: t.floor)
        tiers[-1] = replace(tiers[-1], open_ended=True)
        self.contracts[symbol] = Contract(symbol, kind, asset, size, tuple(tiers))
        return Outcome("applied")

    def _balance(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        account = _text(rec, "account")
        asset = _text(rec, "asset")
        wallet = _number(rec, "wallet")
        self.wallets[(account, asset)] = wallet
        return Outcome("applied", self._touch([self._wallet_key(account, asset)], ts))

    def _check(self, account: str, up: Upsert) -> None:
        """Refuse (``rejected``) a position no record may set (docs/records.md,
        docs/collateral.md's rejections): before ``qty`` 0 on an empty slot is a no-op."""
        if (up.side == "long" and up.qty < 0) or (up.side == "short" and up.qty > 0):
            raise Refused("rejected", "qty sign contradicts the hedge side")
        if account in self.multi:
            if up.mode == "isolated":
                raise Refused("rejected", "an isolated position in a multi-assets account")
            contract = self.contracts.get(up.symbol)
            if contract is not None and contract.kind == "inverse":
                raise Refused("rejected", "an inverse position in a multi-assets account")

    def _position(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        account = _text(rec, "account")
        up = _upsert_fields(rec)
        self._check(account, up)
        if up.qty == 0 and (account, up.symbol, up.side) not in self.slots:
            return Outcome("noop")
        if up.qty != 0 and up.symbol not in self.contracts:
            raise Refused("rejected", "position in a symbol with no contract")
        return Outcome("applied", self._touch(self._upsert(account, up), ts))

    def _upsert(self, account: str, up: Upsert) -> list[EntityKey]:
        """Set the slot (qty 0 closes it); the entities it touched (old and new)."""
        slot = (account, up.symbol, up.side)
        old = self.slots.get(slot)
        if up.qty == 0:
            if old is None:
                return []
            del self.slots[slot]
            return [self._key(old)]
        funding = old.funding if old is not None else ZERO
        new = Position(account, up.symbol, up.side, up.mode, up.qty, up.entry, up.wallet, funding)
        self.slots[slot] = new
        touched = [self._key(new)]
        if old is not None and self._key(old) != touched[0]:
            touched.append(self._key(old))
        return touched

    def _account(self, rec: dict[str, Any], *, replace: bool) -> Outcome:
        """``account_snapshot`` (replace) or ``account_update`` (merge): validated whole, then
        applied with one evaluation per touched entity."""
        ts = _ts(rec)
        account = _text(rec, "account")
        balances, positions = rec.get("balances"), rec.get("positions")
        if not isinstance(balances, list) or not isinstance(positions, list):
            raise Refused("malformed", "balances and positions must be lists")
        if len(balances) > 1_000 or len(positions) > 10_000:
            raise Refused("malformed", "too many balances or positions")
        wallets: dict[str, Fraction] = {}
        for b in balances:
            if not isinstance(b, dict):
                raise Refused("malformed", "a balance is not an object")
            asset = _text(b, "asset")
            if asset in wallets:
                raise Refused("malformed", "an asset listed twice")
            wallets[asset] = _number(b, "wallet")
        ups: list[Upsert] = []
        for p in positions:
            if not isinstance(p, dict):
                raise Refused("malformed", "a position is not an object")
            ups.append(_upsert_fields(p))
        if len({(u.symbol, u.side) for u in ups}) != len(ups):
            raise Refused("malformed", "a slot listed twice")
        if replace and ts < self.snapshots.get(account, ts):
            raise Refused("rejected", "a snapshot older than the last one")
        for up in ups:
            self._check(account, up)
            if up.symbol not in self.contracts:
                raise Refused("rejected", "position in a symbol with no contract")
        if replace:
            self.snapshots[account] = ts
            for acc, asset in list(self.wallets):
                if acc == account:
                    wallets.setdefault(asset, ZERO)
            listed = {(u.symbol, u.side) for u in ups}
            for (acc, symbol, side), pos in sorted(self.slots.items()):
                if acc == account and (symbol, side) not in listed:
                    ups.append(Upsert(symbol, side, pos.mode, ZERO, pos.entry, None))
        touched: set[EntityKey] = set()
        for asset, wallet in wallets.items():
            self.wallets[(account, asset)] = wallet
            touched.add(self._wallet_key(account, asset))
        for up in ups:
            touched.update(self._upsert(account, up))
        return Outcome("applied", self._touch(list(touched), ts))

    def _margin(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        account = _text(rec, "account")
        symbol = _text(rec, "symbol")
        side = _text(rec, "side", SIDES)
        delta = _number(rec, "delta")
        pos = self.slots.get((account, symbol, side))
        if pos is None or pos.mode != "isolated":
            raise Refused("rejected", "no open isolated position in that slot")
        assert pos.isolated_wallet is not None
        pos.isolated_wallet += delta
        return Outcome("applied", self._touch([self._key(pos)], ts))

    def _asset_mode(self, rec: dict[str, Any]) -> Outcome:
        """Switch single-asset <-> multi-assets mode (docs/collateral.md, "Switching modes")."""
        ts = _ts(rec)
        account = _text(rec, "account")
        multi = rec.get("multi_assets")
        if not isinstance(multi, bool):
            raise Refused("malformed", "multi_assets missing or not a boolean")
        if multi == (account in self.multi):
            return Outcome("noop")
        held = [p for p in self.slots.values() if p.account == account]
        if multi and any(
            p.mode == "isolated" or self.contracts[p.symbol].kind == "inverse" for p in held
        ):
            raise Refused("rejected", "multi-assets mode with an isolated or inverse position")
        for key in {self._key(p) for p in held}:  # forgotten without an event
            self.h.pop(key, None)
            self.held.discard(key)
        if multi:
            self.multi.add(account)
        else:
            self.multi.discard(account)
        events: list[Payload] = []
        for key in sorted({self._key(p) for p in held}):
            events.extend(self._evaluate(key, ts))
        return Outcome("applied", events)

    def _collateral(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        asset = _text(rec, "asset")
        price = _number(rec, "price")
        haircut = _number(rec, "haircut")
        if price <= 0:
            raise Refused("rejected", "collateral price <= 0")
        if not 0 <= haircut < 1:
            raise Refused("rejected", "haircut outside [0, 1)")
        self.collateral[asset] = (price, haircut)
        keys = {self._key(p) for p in self.slots.values() if p.account in self.multi}
        events: list[Payload] = []
        for key in sorted(keys):  # every pool that needs the asset; a held one stays silent
            if asset in self._needs(key[0], self._members(key)):
                events.extend(self._evaluate(key, ts))
        return Outcome("applied", events)

    def _tick(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        symbol = _text(rec, "symbol")
        mark = _number(rec, "mark")
        if mark <= 0:
            raise Refused("malformed", "mark <= 0")
        pair = self._funding_fields(rec)
        if symbol not in self.contracts:
            raise Refused("dropped", "no contract")
        if symbol in self.marks and ts < self.marks[symbol][0]:
            raise Refused("dropped", "stale")
        self.marks[symbol] = (ts, mark)
        if self.funding:
            self._settle(symbol, ts, mark)
            if pair is not None:
                self.funding_pairs[symbol] = pair
        keys = {self._key(p) for p in self.slots.values() if p.symbol == symbol}
        events: list[Payload] = []
        for key in sorted(keys):
            events.extend(self._evaluate(key, ts))
        return Outcome("applied", events)

    @staticmethod
    def _funding_fields(rec: dict[str, Any]) -> tuple[Fraction, int] | None:
        """A tick's ``(funding_rate, funding_ts)``: both or neither."""
        has_rate = rec.get("funding_rate") is not None
        has_ts = rec.get("funding_ts") is not None
        if not has_rate and not has_ts:
            return None
        if has_rate != has_ts:
            raise Refused("malformed", "funding_rate and funding_ts come together")
        return _number(rec, "funding_rate"), _int(rec, "funding_ts")

    def _settle(self, symbol: str, ts: int, mark: Fraction) -> None:
        """Settle the stored funding of ``symbol`` if this accepted tick is due for it: each
        open position pays s·N(P)·rate (N at this tick's mark P) from its wallet."""
        pair = self.funding_pairs.get(symbol)
        if pair is None:
            return
        rate, when = pair
        if ts < when or (symbol, when) in self.settled:
            return
        self.settled.add((symbol, when))
        contract = self.contracts[symbol]
        for (account, sym, _), pos in sorted(self.slots.items()):
            if sym != symbol:
                continue
            sign = 1 if pos.qty > 0 else -1
            booked = -sign * contract.notional(pos.qty, mark) * rate
            if pos.mode == "isolated":
                assert pos.isolated_wallet is not None
                pos.isolated_wallet += booked
            else:
                wallet = (account, contract.asset)
                self.wallets[wallet] = self.wallets.get(wallet, ZERO) + booked
            pos.funding += booked
            self.funding_by_asset[contract.asset] = (
                self.funding_by_asset.get(contract.asset, ZERO) + booked
            )

    def _touch(self, keys: list[EntityKey], ts: int) -> list[Payload]:
        """An account record changed these entities: re-evaluate them now."""
        events: list[Payload] = []
        for key in sorted(set(keys)):
            self.held.discard(key)
            events.extend(self._evaluate(key, ts))
        return events

    # -- entities ---------------------------------------------------------------------------

    def _key(self, pos: Position) -> EntityKey:
        if pos.account in self.multi:
            return (pos.account, POOL, USD, "", "")
        asset = self.contracts[pos.symbol].asset
        if pos.mode == "isolated":
            return (pos.account, "isolated", asset, pos.symbol, pos.side)
        return (pos.account, "cross", asset, "", "")

    def _wallet_key(self, account: str, asset: str) -> EntityKey:
        """The entity a wallet of ``account`` backs."""
        if account in self.multi:
            return (account, POOL, USD, "", "")
        return (account, "cross", asset, "", "")

    def _members(self, key: EntityKey) -> list[Position]:
        found = [p for p in self.slots.values() if self._key(p) == key]
        return sorted(found, key=lambda p: (p.symbol, p.side))

    def _wallet(self, key: EntityKey, members: list[Position]) -> Fraction:
        if key[1] == "isolated":
            wallet = members[0].isolated_wallet
            assert wallet is not None
            return wallet
        return self.wallets.get((key[0], key[2]), ZERO)

    def _price(self, pos: Position) -> Fraction:
        return self.marks[pos.symbol][1] if pos.symbol in self.marks else pos.entry

    def _upnl(self, pos: Position) -> Fraction:
        return self.contracts[pos.symbol].upnl(pos.qty, pos.entry, self._price(pos))

    def _mm(self, pos: Position) -> Fraction:
        return self.contracts[pos.symbol].maintenance(pos.qty, self._price(pos))

    def _evaluate(self, key: EntityKey, ts: int) -> list[Payload]:
        """The alert state machine (``docs/alerts.md``) for one entity."""
        members = self._members(key)
        if not members:  # forgotten, without an event
            self.h.pop(key, None)
            self.held.discard(key)
            return []
        if key in self.held:
            return []
        pool = key[1] == POOL
        if pool:
            if not self._priced(key[0], members):
                return []  # waits for a collateral price, h kept
            mb, mm = self._pool_mb(key[0], members), self._pool_mm(members)
        else:
            wallet = self._wallet(key, members)
            mb = wallet + sum((self._upnl(p) for p in members), ZERO)
            mm = sum((self._mm(p) for p in members), ZERO)
        if mb <= mm or mb <= 0:
            event = self._payload("liquidation", key, ts, mb, mm)
            event["loss"] = float(self._pool_loss(key[0]) if pool else wallet)
            event["shortfall"] = float(max(ZERO, -mb))
            event["positions"] = self._positions(key, members)
            self.h.pop(key, None)
            if self.policy == "close":
                for p in members:
                    del self.slots[(p.account, p.symbol, p.side)]
                if pool:
                    for wallet_key in self.wallets:
                        if wallet_key[0] == key[0]:
                            self.wallets[wallet_key] = ZERO
                elif key[1] == "cross":
                    self.wallets[(key[0], key[2])] = ZERO
            else:
                self.held.add(key)
            return [event]
        ratio = mm / mb
        top = max((lv for lv in self.levels if lv <= ratio), default=None)
        h = self.h.get(key)
        if top is not None and (h is None or top > h):
            self.h[key] = top
            event = self._payload("margin_warning", key, ts, mb, mm)
            event["level"] = float(top)
            positions = self._positions(key, members)
            if key[1] == "isolated":
                event["liquidation_price"] = positions[0]["liquidation_price"]
            event["positions"] = positions
            return [event]
        if h is not None and ratio < h - self.hysteresis:
            if top is None:
                del self.h[key]
                return [self._payload("margin_recovered", key, ts, mb, mm)]
            self.h[key] = top
        return []

    # -- pools ------------------------------------------------------------------------------

    def _needs(self, account: str, members: list[Position]) -> set[str]:
        """The assets a pool must have a price for: its positions' margin assets and every
        asset of a nonzero wallet."""
        needs = {self.contracts[p.symbol].asset for p in members}
        needs.update(a for (acc, a), w in self.wallets.items() if acc == account and w != 0)
        return needs

    def _priced(self, account: str, members: list[Position]) -> bool:
        return all(a in self.collateral for a in self._needs(account, members))

    def _value(self, asset: str, equity: Fraction) -> Fraction:
        """v_a(x): x·price·(1 − haircut) for x >= 0, x·price below (USD)."""
        if equity == 0:
            return ZERO
        price, haircut = self.collateral[asset]
        return equity * price * (1 - haircut) if equity > 0 else equity * price

    def _equities(self, account: str, members: list[Position]) -> dict[str, Fraction]:
        """E_a = wallet_a + Σ uPnL of the members margined in a, for every asset of the pool."""
        equity = {a: w for (acc, a), w in self.wallets.items() if acc == account}
        for p in members:
            asset = self.contracts[p.symbol].asset
            equity[asset] = equity.get(asset, ZERO) + self._upnl(p)
        return equity

    def _pool_mb(self, account: str, members: list[Position]) -> Fraction:
        """MB = Σ_a v_a(E_a), USD."""
        equity = self._equities(account, members)
        return sum((self._value(a, e) for a, e in sorted(equity.items())), ZERO)

    def _pool_mm(self, members: list[Position]) -> Fraction:
        """MM = Σ_i MM_i · price_{a(i)}, USD (no haircut)."""
        return sum(
            (self._mm(p) * self.collateral[self.contracts[p.symbol].asset][0] for p in members),
            ZERO,
        )

    def _pool_loss(self, account: str) -> Fraction:
        """The USD value, at price and without haircut, of every positive wallet."""
        return sum(
            (
                w * self.collateral[a][0]
                for (acc, a), w in sorted(self.wallets.items())
                if acc == account and w > 0
            ),
            ZERO,
        )

    def solve_pool(
        self, account: str, members: list[Position], symbol: str, *, maintenance: bool
    ) -> Fraction | None:
        """The mark P of ``symbol`` at which the pool's MB(P) = MM(P) (or MB(P) = 0).

        With A the symbol's margin asset (linear: a pool holds no inverse position), every other
        mark and every collateral price held, and ``C`` = wallet_A + uPnL of the pool's other
        positions in A, ``rest`` = Σ_{a≠A} v_a(E_a) − (MM of the other positions, USD, when
        solving MB = MM)::

            E_A(P) = C + Σ_legs qty·CS·(P − EP)
            rest + k·E_A(P) − price_A · Σ_legs (|qty|·CS·P·mmr − cum) = 0

        with k = price_A·(1 − haircut_A) on the branch E_A >= 0 and k = price_A below. Each
        branch and each tier combination gives one linear equation; a solution counts when
        E_A(P) lies on its branch and every leg's notional in its tier.
        """
        legs = [p for p in members if p.symbol == symbol]
        others = [p for p in members if p.symbol != symbol]
        contract = self.contracts[symbol]
        assert contract.kind == "linear", "a pool holds linear positions only"
        asset, cs = contract.asset, contract.size
        price_a, haircut_a = self.collateral[asset]
        equity = self._equities(account, others)
        fixed = equity.pop(asset, ZERO)
        rest = sum((self._value(a, e) for a, e in sorted(equity.items())), ZERO)
        if maintenance:
            rest -= self._pool_mm(others)
        combos: list[tuple[Tier | None, ...]]
        if maintenance:
            combos = list(product(contract.tiers, repeat=len(legs)))
        else:
            combos = [tuple(None for _ in legs)]
        solutions: set[Fraction] = set()
        for positive, combo in product((True, False), combos):
            k = price_a * (1 - haircut_a) if positive else price_a
            mmr = [t.mmr if t is not None else ZERO for t in combo]
            cum = sum((t.cum for t in combo if t is not None), ZERO)
            a = sum(
                (
                    k * p.qty * cs - price_a * abs(p.qty) * cs * m
                    for p, m in zip(legs, mmr, strict=True)
                )
            )
            b = rest + k * (fixed - sum((p.qty * cs * p.entry for p in legs), ZERO))
            b += price_a * cum
            if a == 0:
                continue
            price = -b / a
            if price <= 0:
                continue
            e_a = fixed + sum((p.qty * cs * (price - p.entry) for p in legs), ZERO)
            if (e_a >= 0) != positive:
                continue
            if all(
                t is None or t.holds(contract.notional(p.qty, price))
                for p, t in zip(legs, combo, strict=True)
            ):
                solutions.add(price)
        if not solutions:
            return None
        ref = self.marks[symbol][1] if symbol in self.marks else legs[0].entry
        return min(solutions, key=lambda s: (abs(s - ref), s))

    # -- payloads ---------------------------------------------------------------------------

    def _payload(self, event: str, key: EntityKey, ts: int, mb: Fraction, mm: Fraction) -> Payload:
        account, scope, asset, symbol, side = key
        out: Payload = {"event": event, "ts": ts, "account": account, "scope": scope}
        out["asset"] = asset
        if scope == "isolated":
            out["symbol"] = symbol
            out["side"] = side
        out["margin_ratio"] = float(mm / mb) if mb > 0 else None
        out["margin_balance"] = float(mb)
        out["maintenance_margin"] = float(mm)
        return out

    def _positions(self, key: EntityKey, members: list[Position]) -> list[Payload]:
        prices: dict[str, tuple[Fraction | None, Fraction | None]] = {}
        for symbol in sorted({p.symbol for p in members}):
            if key[1] == POOL:
                prices[symbol] = (
                    self.solve_pool(key[0], members, symbol, maintenance=True),
                    self.solve_pool(key[0], members, symbol, maintenance=False),
                )
            else:
                wallet = self._wallet(key, members)
                prices[symbol] = (
                    self.solve(members, wallet, symbol, maintenance=True),
                    self.solve(members, wallet, symbol, maintenance=False),
                )
        out = []
        for p in members:
            lp, bp = prices[p.symbol]
            out.append(
                {
                    "symbol": p.symbol,
                    "side": p.side,
                    "qty": float(p.qty),
                    "entry": float(p.entry),
                    "mark": float(self._price(p)),
                    "liquidation_price": None if lp is None else float(lp),
                    "bankruptcy_price": None if bp is None else float(bp),
                }
            )
        return out

    # -- liquidation / bankruptcy price -----------------------------------------------------

    def solve(
        self, members: list[Position], wallet: Fraction, symbol: str, *, maintenance: bool
    ) -> Fraction | None:
        """The mark P of ``symbol`` at which MB(P) = MM(P) (``maintenance``) or MB(P) = 0.

        All legs of ``symbol`` take the mark P; the entity's other positions stay at their
        current prices and contribute the constant ``rest`` (their uPnL, minus their MM when
        solving for MB = MM). For one tier per leg the equation is linear in P (linear
        contracts) or in x = 1/P (inverse contracts):

          linear:  rest + Σ qty·CS·(P − EP) − Σ (|qty|·CS·P·mmr − cum) = 0
          inverse: rest + Σ qty·CS·(1/EP − x) − Σ (|qty|·CS·x·mmr − cum) = 0

        Each combination of tiers is solved and kept only if every leg's notional at the
        solution lies in the tier assumed for it. Bankruptcy has mmr = cum = 0 and no tiers.
        """
        legs = [p for p in members if p.symbol == symbol]
        others = [p for p in members if p.symbol != symbol]
        rest = wallet + sum((self._upnl(p) for p in others), ZERO)
        if maintenance:
            rest -= sum((self._mm(p) for p in others), ZERO)
        contract = self.contracts[symbol]
        cs = contract.size
        combos: list[tuple[Tier | None, ...]]
        if maintenance:
            combos = list(product(contract.tiers, repeat=len(legs)))
        else:
            combos = [tuple(None for _ in legs)]
        solutions: set[Fraction] = set()
        for combo in combos:
            mmr = [t.mmr if t is not None else ZERO for t in combo]
            cum = sum((t.cum for t in combo if t is not None), ZERO)
            if contract.kind == "linear":
                a = sum((cs * (p.qty - abs(p.qty) * m) for p, m in zip(legs, mmr, strict=True)))
                b = rest - sum((p.qty * cs * p.entry for p in legs), ZERO) + cum
                if a == 0:
                    continue
                price = -b / a
            else:
                a = sum((cs * (p.qty + abs(p.qty) * m) for p, m in zip(legs, mmr, strict=True)))
                b = rest + sum((p.qty * cs / p.entry for p in legs), ZERO) + cum
                if a == 0 or b / a <= 0:
                    continue
                price = a / b
            if price <= 0:
                continue
            if all(
                t is None or t.holds(contract.notional(p.qty, price))
                for p, t in zip(legs, combo, strict=True)
            ):
                solutions.add(price)
        if not solutions:
            return None
        ref = self.marks[symbol][1] if symbol in self.marks else legs[0].entry
        return min(solutions, key=lambda s: (abs(s - ref), s))
