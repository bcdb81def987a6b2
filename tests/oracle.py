"""Exact reference implementation of liqmon's public contract, used as a test oracle.

Written from the contract alone (``docs/records.md``, ``docs/margin.md`` and ``docs/alerts.md``:
records, entities, the alert state machine, events), plus the implementation's documented
choices where the contract is silent (``docs/choices.md``), and deliberately independent of
``monitor/``. Every quantity is a :class:`fractions.Fraction`: no rounding happens anywhere
until a payload number is converted to a float at the very end. Correctness and readability
come before speed.

The documented choices followed here (the contract is silent on them; see ``docs/choices.md``):

* events caused by one record are ordered by entity key: account, then cross before isolated,
  then asset, symbol, side (plain string order); a cross entity has no symbol/side;
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
* an update inside the same entity keeps its level ``h``; an entity left without positions is
  forgotten without an event;
* ``close`` policy: a liquidated entity's positions are removed, and a cross liquidation sets
  the account's wallet in that asset to 0; ``hold`` policy: the liquidation is emitted once, the
  positions stay and the entity is silent until a balance/position/margin record changes it,
  when it is re-evaluated at once from ``h`` cleared;
* a tick older than the symbol's last accepted tick, or for a symbol with no contract, is
  dropped; a tick of equal ``ts`` is applied; every accepted tick (the first one included)
  re-evaluates every entity holding the symbol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from itertools import product
from typing import Any

Payload = dict[str, Any]
# (account, scope, asset, symbol, side): scope "cross" < "isolated" in string order, and a
# cross key has symbol = side = "", so plain tuple order is the documented event order.
EntityKey = tuple[str, str, str, str, str]

SIDES = ("both", "long", "short")
MODES = ("isolated", "cross")
KINDS = ("linear", "inverse")


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


def _ts(rec: dict[str, Any]) -> int:
    value = rec.get("ts")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused("malformed", "ts missing or not an integer")
    return value


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

    def holds(self, notional: Fraction) -> bool:
        return self.floor <= notional < self.cap


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


@dataclass
class Outcome:
    """What one line did: ``status`` is applied/noop/malformed/rejected/dropped."""

    status: str
    events: list[Payload] = field(default_factory=list)
    why: str = ""


# ---------------------------------------------------------------------------------------------
# The engine


class Oracle:
    """Applies normalized records one line at a time and returns the payloads (minus ``id``)."""

    def __init__(
        self, levels: str = "0.7,0.8,0.9", hysteresis: str = "0.05", policy: str = "close"
    ) -> None:
        assert policy in ("close", "hold")
        self.levels = sorted(Fraction(Decimal(x.strip())) for x in levels.split(","))
        self.hysteresis = Fraction(Decimal(hysteresis))
        self.policy = policy
        self.contracts: dict[str, Contract] = {}
        self.marks: dict[str, tuple[int, Fraction]] = {}  # symbol -> (ts, mark)
        self.wallets: dict[tuple[str, str], Fraction] = {}  # (account, asset) -> cross wallet
        self.slots: dict[tuple[str, str, str], Position] = {}  # (account, symbol, side)
        self.h: dict[EntityKey, Fraction] = {}
        self.held: set[EntityKey] = set()  # hold policy: liquidated, silent

    # -- public -----------------------------------------------------------------------------

    def apply_line(self, line: str) -> Outcome:
        try:
            return self._apply(parse(line))
        except Refused as refused:
            return Outcome(refused.kind, why=refused.why)

    def replay(self, text: str) -> list[Outcome]:
        return [self.apply_line(line) for line in text.splitlines()]

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
        self.contracts[symbol] = Contract(symbol, kind, asset, size, tuple(tiers))
        return Outcome("applied")

    def _balance(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        account = _text(rec, "account")
        asset = _text(rec, "asset")
        wallet = _number(rec, "wallet")
        self.wallets[(account, asset)] = wallet
        return Outcome("applied", self._touch([(account, "cross", asset, "", "")], ts))

    def _position(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        account = _text(rec, "account")
        symbol = _text(rec, "symbol")
        side = _text(rec, "side", SIDES)
        mode = _text(rec, "mode", MODES)
        qty = _number(rec, "qty")
        entry = _number(rec, "entry")
        if entry <= 0:
            raise Refused("malformed", "entry <= 0")
        _number(rec, "leverage")  # required by the record, irrelevant to the margin math
        # the isolated wallet of an isolated position (a close does not need one)
        wallet = _number(rec, "isolated_wallet") if mode == "isolated" and qty != 0 else None
        if (side == "long" and qty < 0) or (side == "short" and qty > 0):
            raise Refused("rejected", "qty sign contradicts the hedge side")
        slot = (account, symbol, side)
        old = self.slots.get(slot)
        if qty == 0:
            if old is None:
                return Outcome("noop")
            del self.slots[slot]
            return Outcome("applied", self._touch([self._key(old)], ts))
        if symbol not in self.contracts:
            raise Refused("rejected", "position in a symbol with no contract")
        new = Position(account, symbol, side, mode, qty, entry, wallet)
        self.slots[slot] = new
        touched = [self._key(new)]
        if old is not None and self._key(old) != touched[0]:
            touched.append(self._key(old))
        return Outcome("applied", self._touch(touched, ts))

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

    def _tick(self, rec: dict[str, Any]) -> Outcome:
        ts = _ts(rec)
        symbol = _text(rec, "symbol")
        mark = _number(rec, "mark")
        if mark <= 0:
            raise Refused("malformed", "mark <= 0")
        if symbol not in self.contracts:
            raise Refused("dropped", "no contract")
        if symbol in self.marks and ts < self.marks[symbol][0]:
            raise Refused("dropped", "stale")
        self.marks[symbol] = (ts, mark)
        keys = {self._key(p) for p in self.slots.values() if p.symbol == symbol}
        events: list[Payload] = []
        for key in sorted(keys):
            events.extend(self._evaluate(key, ts))
        return Outcome("applied", events)

    def _touch(self, keys: list[EntityKey], ts: int) -> list[Payload]:
        """A balance/position/margin record changed these entities: re-evaluate them now."""
        events: list[Payload] = []
        for key in sorted(keys):
            self.held.discard(key)
            events.extend(self._evaluate(key, ts))
        return events

    # -- entities ---------------------------------------------------------------------------

    def _key(self, pos: Position) -> EntityKey:
        asset = self.contracts[pos.symbol].asset
        if pos.mode == "isolated":
            return (pos.account, "isolated", asset, pos.symbol, pos.side)
        return (pos.account, "cross", asset, "", "")

    def _members(self, key: EntityKey) -> list[Position]:
        found = [p for p in self.slots.values() if self._key(p) == key]
        return sorted(found, key=lambda p: (p.symbol, p.side))

    def _wallet(self, key: EntityKey, members: list[Position]) -> Fraction:
        if key[1] == "isolated":
            wallet = members[0].isolated_wallet
            assert wallet is not None
            return wallet
        return self.wallets.get((key[0], key[2]), Fraction(0))

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
        wallet = self._wallet(key, members)
        mb = wallet + sum((self._upnl(p) for p in members), Fraction(0))
        mm = sum((self._mm(p) for p in members), Fraction(0))
        if mb <= mm or mb <= 0:
            event = self._payload("liquidation", key, ts, mb, mm)
            event["loss"] = float(wallet)
            event["shortfall"] = float(max(Fraction(0), -mb))
            event["positions"] = self._positions(members, wallet)
            self.h.pop(key, None)
            if self.policy == "close":
                for p in members:
                    del self.slots[(p.account, p.symbol, p.side)]
                if key[1] == "cross":
                    self.wallets[(key[0], key[2])] = Fraction(0)
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
            positions = self._positions(members, wallet)
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

    def _positions(self, members: list[Position], wallet: Fraction) -> list[Payload]:
        prices: dict[str, tuple[Fraction | None, Fraction | None]] = {}
        for symbol in sorted({p.symbol for p in members}):
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
        rest = wallet + sum((self._upnl(p) for p in others), Fraction(0))
        if maintenance:
            rest -= sum((self._mm(p) for p in others), Fraction(0))
        contract = self.contracts[symbol]
        cs = contract.size
        combos: list[tuple[Tier | None, ...]]
        if maintenance:
            combos = list(product(contract.tiers, repeat=len(legs)))
        else:
            combos = [tuple(None for _ in legs)]
        solutions: set[Fraction] = set()
        for combo in combos:
            mmr = [t.mmr if t is not None else Fraction(0) for t in combo]
            cum = sum((t.cum for t in combo if t is not None), Fraction(0))
            if contract.kind == "linear":
                a = sum((cs * (p.qty - abs(p.qty) * m) for p, m in zip(legs, mmr, strict=True)))
                b = rest - sum((p.qty * cs * p.entry for p in legs), Fraction(0)) + cum
                if a == 0:
                    continue
                price = -b / a
            else:
                a = sum((cs * (p.qty + abs(p.qty) * m) for p, m in zip(legs, mmr, strict=True)))
                b = rest + sum((p.qty * cs / p.entry for p in legs), Fraction(0)) + cum
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
