"""The trigger index is an optimisation only: the indexed :class:`Engine` emits exactly what a
full re-evaluation of every holder on every tick (``bench.naive.NaiveEngine``) emits.

Workloads are random but seeded, and built here: real Binance tier tables (BTCUSDT, ETHUSDT), a
toy linear table with small tiers (so positions change tier as marks move, and whose tiers are
re-published mid-stream), an inverse BTCUSD_PERP (contract size 100, continuous ``cum``, also
re-published), a table with a discontinuous ``cum`` under which MM can go negative, and a
symbol whose first tick comes late. Hundreds of accounts hold 1–4 positions, isolated, cross or
both, some as hedge-mode long/short legs. Balances, margin transfers and position changes are
interleaved with random-walk ticks with jumps, stale and equal-``ts`` ticks — and with records
aimed at the thresholds: ticks solved to land (to 12 digits) on a level, a re-arm point or
liquidation of one entity, and balances or margin transfers that put an entity on one.

The workload is generated with the naive engine in the loop (to aim at its live entities), the
record stream is kept, and the indexed engine replays it; every record's events (as
:func:`to_payload` dicts) or refusal must match, and so must every entity's final state.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal, localcontext
from functools import cache
from typing import Any

import pytest

from bench.naive import NaiveEngine
from feeds.brackets import load_brackets
from monitor import (
    BalanceRecord,
    Contract,
    ContractRecord,
    Engine,
    EngineConfig,
    MarginRecord,
    PositionRecord,
    Record,
    RecordRefused,
    TickRecord,
    Tier,
    make_contract,
    to_payload,
)
from monitor.views import EntityState as Entity
from tests.conftest import DATA

# -- instruments -------------------------------------------------------------------------------


def continuous(floors: Sequence[str], mmrs: Sequence[str], last_cap: str = "1e15") -> list[Tier]:
    """A tier table with ``cum`` derived by continuity (``cum_n = cum_{n−1} + floor_n·Δmmr``)."""
    tiers: list[Tier] = []
    caps = [*floors[1:], last_cap]
    cum = Decimal(0)
    for n, (floor, cap, mmr) in enumerate(zip(floors, caps, mmrs, strict=True)):
        if n:
            cum += Decimal(floor) * (Decimal(mmr) - Decimal(mmrs[n - 1]))
        tiers.append(Tier(Decimal(floor), Decimal(cap), Decimal(mmr), cum))
    return tiers


def toy_table(step: int) -> Contract:
    """TOYUSDT: small tiers; ``step`` alternates two rate schedules (a re-tier mid-stream)."""
    mmrs = ["0.01", "0.02", "0.05", "0.1"] if step % 2 == 0 else ["0.015", "0.025", "0.04", "0.12"]
    return make_contract(
        "TOYUSDT",
        "linear",
        "USDT",
        Decimal(1),
        continuous(["0", "2000", "10000", "50000"], mmrs),
    )


def inverse_table(step: int) -> Contract:
    """BTCUSD_PERP: coin-margined, 100 USD per contract, tiers in BTC."""
    mmrs = ["0.004", "0.005", "0.01", "0.025", "0.05", "0.1"]
    if step % 2:
        mmrs = ["0.005", "0.006", "0.012", "0.03", "0.05", "0.1"]
    return make_contract(
        "BTCUSD_PERP",
        "inverse",
        "BTC",
        Decimal(100),
        continuous(["0", "5", "10", "20", "50", "100"], mmrs),
    )


def contracts() -> dict[str, Contract]:
    loaded = load_brackets(DATA / "binance_leverage_brackets_major_symbols_2024-10.json")
    real = {c.symbol: c for c in loaded.contracts}
    late = make_contract(
        "LATEUSDT", "linear", "USDT", Decimal(1), continuous(["0", "5000"], ["0.02", "0.05"])
    )
    # published as is, not continuous: MM drops below 0 just above 1,000 (cum 25 > 1,000·0.02)
    # and jumps up at 5,000 (cum 100 < 25 + 5,000·0.03)
    odd = make_contract(
        "ODDUSDT",
        "linear",
        "USDT",
        Decimal(1),
        [
            Tier(Decimal(0), Decimal(1000), Decimal("0.01"), Decimal(0)),
            Tier(Decimal(1000), Decimal(5000), Decimal("0.02"), Decimal(25)),
            Tier(Decimal(5000), Decimal("1e15"), Decimal("0.05"), Decimal(100)),
        ],
    )
    return {
        "ODDUSDT": odd,
        "BTCUSDT": real["BTCUSDT"],
        "ETHUSDT": real["ETHUSDT"],
        "TOYUSDT": toy_table(0),
        "BTCUSD_PERP": inverse_table(0),
        "LATEUSDT": late,
    }


# (initial mark, grid step of the random walk, typical notional in the margin asset)
MARKETS: dict[str, tuple[Decimal, Decimal, float]] = {
    "BTCUSDT": (Decimal(60000), Decimal(5), 200_000.0),
    "ETHUSDT": (Decimal(3000), Decimal("0.25"), 100_000.0),
    "TOYUSDT": (Decimal(20), Decimal("0.01"), 3_000.0),
    "BTCUSD_PERP": (Decimal(60000), Decimal("0.5"), 3.0),
    "LATEUSDT": (Decimal(50), Decimal("0.01"), 2_000.0),
    "ODDUSDT": (Decimal(10), Decimal("0.001"), 1_500.0),
}
LATE_SYMBOL = "LATEUSDT"


def test_the_inverse_table_is_continuous() -> None:
    """The workloads' inverse contract has continuous ``cum`` (no warnings) and size 100."""
    contract = inverse_table(0)
    assert contract.warnings == ()
    assert inverse_table(1).warnings == ()
    assert contract.contract_size == 100
    assert toy_table(1).warnings == ()


# -- exact valuation (the generator's own, straight from docs/margin.md) -----------------------


def _tier(contract: Contract, notional: Decimal) -> Tier:
    chosen = contract.tiers[0]
    for tier in contract.tiers:
        if tier.floor <= notional:
            chosen = tier
    return chosen


def valuation(entity: Entity, marks: dict[str, Decimal]) -> tuple[Decimal, Decimal]:
    """``(MB, MM)`` of an entity at ``marks`` (entry for an unmarked symbol), in Decimal."""
    mb, mm = entity.wallet, Decimal(0)
    for symbol, slots in entity.exposures.items():
        for pos in slots.values():
            leg = pos.leg
            contract = leg.contract
            price = marks.get(symbol, leg.entry)
            qcs = abs(leg.qty) * contract.contract_size
            sign = 1 if leg.qty > 0 else -1
            if contract.kind == "inverse":
                n = qcs / price
                mb += sign * qcs * (1 / leg.entry - 1 / price)
            else:
                n = qcs * price
                mb += sign * qcs * (price - leg.entry)
            tier = _tier(contract, n)
            mm += n * tier.mmr - tier.cum
    return mb, mm


def aim_price(
    entity: Entity, symbol: str, marks: dict[str, Decimal], ratio: Decimal
) -> Decimal | None:
    """A mark of ``symbol`` (12 significant digits) where the entity's ``MM − ratio·MB``
    changes sign, nearest the current mark; ``None`` if none within 3 %."""
    p0 = marks[symbol]

    def sign(price: Decimal) -> int:
        mb, mm = valuation(entity, {**marks, symbol: price})
        value = mm - ratio * mb
        return (value > 0) - (value < 0)

    s0 = sign(p0)
    for factor in ("1.002", "1.01", "1.03"):
        for far in (p0 * Decimal(factor), p0 / Decimal(factor)):
            if sign(far) != s0:
                lo, hi = p0, far
                for _ in range(60):
                    mid = (lo + hi) / 2
                    if sign(mid) == s0:
                        lo = mid
                    else:
                        hi = mid
                return +hi
    return None


# -- workloads ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    seed: int
    accounts: int
    steps: int
    levels: str = "0.7,0.8,0.9"
    hysteresis: str = "0.05"
    policy: str = "close"

    def config(self) -> EngineConfig:
        return EngineConfig.from_values(self.levels, self.hysteresis, self.policy)

    def __str__(self) -> str:
        return (
            f"seed{self.seed}-{self.accounts}acc-{self.steps}steps-{self.policy}"
            f"-h{self.hysteresis}-L{self.levels}"
        )


Outcome = list[Any]


class Generator:
    """Builds a record stream while applying it to the reference engine."""

    def __init__(self, workload: Workload) -> None:
        self.w = workload
        self.rng = random.Random(workload.seed)
        self.reference = NaiveEngine(workload.config())
        self.records: list[Record] = []
        self.outcomes: list[Outcome] = []
        self.ts = 1_700_000_000_000
        self.marks: dict[str, Decimal] = {}
        self.last_tick: dict[str, int] = {}
        self.contracts = contracts()
        self.retiers = 0
        levels = [Decimal(v) for v in workload.levels.split(",")]
        hysteresis = Decimal(workload.hysteresis)
        self.targets = [*levels, *(v - hysteresis for v in levels), Decimal(1)]
        self.slot_kind: dict[tuple[str, str], str] = {}  # (account, symbol) -> oneway|hedge

    # plumbing

    def emit(self, record: Record) -> None:
        try:
            outcome: Outcome = [to_payload(e) for e in self.reference.apply(record)]
        except RecordRefused as exc:
            outcome = [("refused", type(exc).__name__, exc.reason)]
        self.records.append(record)
        self.outcomes.append(outcome)

    def advance(self) -> int:
        self.ts += self.rng.choice((0, 1, 1, 2, 5))
        return self.ts

    def tick(self, symbol: str, mark: Decimal, *, as_number: bool = False) -> None:
        ts = self.advance()
        self.last_tick[symbol] = max(ts, self.last_tick.get(symbol, ts))
        self.marks[symbol] = mark
        text: str | float = float(mark) if as_number else str(mark)
        self.emit(TickRecord(ts, symbol, float(mark), text))

    # building blocks

    def size(self, symbol: str) -> Decimal:
        """A random position size (base units, or contracts for the inverse symbol)."""
        mark, _, notional = MARKETS[symbol]
        target = notional * math.exp(self.rng.uniform(-3.0, 2.5))
        if self.contracts[symbol].kind == "inverse":
            return Decimal(max(1, round(target * float(mark) / 100)))
        return Decimal(str(round(target / float(mark), 3) or 0.001))

    def margin_for(self, symbol: str, size: Decimal, entry: Decimal) -> Decimal:
        contract = self.contracts[symbol]
        notional = (
            size * contract.contract_size / entry if contract.kind == "inverse" else size * entry
        )
        # no more leverage than keeps the initial ratio below about 0.5
        ceiling = 0.5 / float(_tier(contract, notional).mmr)
        choices = [v for v in (1, 2, 3, 5, 5, 10, 10, 20, 25, 50) if v <= ceiling] or [1]
        leverage = Decimal(self.rng.choice(choices))
        return (notional / leverage).quantize(Decimal("0.00000001"))

    def entry_near(self, symbol: str) -> Decimal:
        mark = self.marks.get(symbol, MARKETS[symbol][0])
        grid = MARKETS[symbol][1]
        steps = (mark * Decimal(str(1 + self.rng.gauss(0, 0.005))) / grid).quantize(1)
        return max(grid, steps * grid)

    def plan(self, account: str, symbol: str, mode: str) -> list[PositionRecord]:
        """Position records opening ``symbol`` for ``account`` (two legs for a hedged pair)."""
        kind = self.slot_kind.setdefault(
            (account, symbol), "hedge" if self.rng.random() < 0.25 else "oneway"
        )
        if kind == "hedge":
            both = self.rng.random() < 0.6
            sides = ["long", "short"] if both else [self.rng.choice(["long", "short"])]
        else:
            sides = ["both"]
        out = []
        for side in sides:
            size = self.size(symbol)
            direction = {"long": 1, "short": -1}.get(side) or self.rng.choice((1, -1))
            entry = self.entry_near(symbol)
            wallet = self.margin_for(symbol, size, entry)
            out.append(
                PositionRecord(
                    self.ts,
                    account,
                    symbol,
                    side,  # type: ignore[arg-type]
                    mode,  # type: ignore[arg-type]
                    direction * size,
                    entry,
                    Decimal(10),
                    wallet,
                )
            )
        return out

    def open(self, account: str, symbols: Sequence[str], modes: Sequence[str]) -> None:
        """Open positions; a cross wallet is first topped up to roughly what they need."""
        planned = [p for s, m in zip(symbols, modes, strict=True) for p in self.plan(account, s, m)]
        needs: dict[str, Decimal] = {}
        for p in planned:
            if p.mode == "cross" and p.isolated_wallet is not None:
                asset = self.contracts[p.symbol].margin_asset
                needs[asset] = needs.get(asset, Decimal(0)) + p.isolated_wallet
        for asset, need in sorted(needs.items()):
            current = self.reference.balance(account, asset)
            if current < need:
                wallet = (need * Decimal(str(self.rng.uniform(1.0, 3.0)))).quantize(
                    Decimal("0.000001")
                )
                self.emit(BalanceRecord(self.advance(), account, asset, wallet))
        for p in planned:
            wallet = p.isolated_wallet if p.mode == "isolated" else None
            self.emit(
                PositionRecord(
                    self.advance(),
                    p.account,
                    p.symbol,
                    p.side,
                    p.mode,
                    p.qty,
                    p.entry,
                    p.leverage,
                    wallet,
                )
            )

    def live(self) -> list[Entity]:
        return self.reference.entities()

    # the workload

    def build(self) -> None:
        rng = self.rng
        for contract in self.contracts.values():
            self.emit(ContractRecord(contract))
        for symbol, (mark, _, _) in MARKETS.items():
            if symbol != LATE_SYMBOL:
                self.tick(symbol, mark)
        symbols = list(MARKETS)
        for n in range(self.w.accounts):
            account = f"acct{n:04}"
            style = rng.choice(("isolated", "cross", "mixed"))
            held = rng.sample(symbols, rng.randint(1, 4))
            modes = [style if style != "mixed" else rng.choice(("isolated", "cross")) for _ in held]
            self.open(account, held, modes)
            if rng.random() < 0.2:
                self.aim_at(account_filter=account)
        late_at = self.w.steps // 3
        for step in range(self.w.steps):
            if step == late_at:
                self.tick(LATE_SYMBOL, MARKETS[LATE_SYMBOL][0])
            self.step()

    def step(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.62:
            self.random_tick()
        elif roll < 0.72:
            self.aim_tick()
        elif roll < 0.77:
            self.odd_tick()
        elif roll < 0.82:
            self.aim_at()
        elif roll < 0.87:
            self.balance()
        elif roll < 0.91:
            self.margin()
        elif roll < 0.985:
            self.change_position()
        else:
            self.retier()

    def random_tick(self) -> None:
        rng = self.rng
        symbol = rng.choice([s for s in MARKETS if s in self.marks])
        mark = self.marks[symbol]
        grid = MARKETS[symbol][1]
        pull = -0.1 * math.log(float(mark / MARKETS[symbol][0]))  # back towards the start
        if rng.random() < 0.015:
            move = Decimal(str(pull + rng.choice((-1, 1)) * rng.uniform(0.02, 0.08)))
        else:
            move = Decimal(str(pull + rng.gauss(0, 0.003)))
        steps = (mark * move / grid).quantize(1)
        new = max(grid, mark + steps * grid)
        self.tick(symbol, new, as_number=rng.random() < 0.1)

    def odd_tick(self) -> None:
        """A stale tick, an equal-``ts`` tick, or a tick for an unknown symbol."""
        rng = self.rng
        symbol = rng.choice(list(self.last_tick))
        last = self.last_tick[symbol]
        mark = self.marks[symbol] * Decimal(str(rng.uniform(0.8, 1.2)))
        mark = mark.quantize(MARKETS[symbol][1])
        roll = rng.random()
        if roll < 0.4:
            self.emit(TickRecord(last - rng.randint(1, 50), symbol, float(mark), str(mark)))
        elif roll < 0.8:
            self.marks[symbol] = mark
            self.emit(TickRecord(last, symbol, float(mark), str(mark)))
        else:
            self.emit(TickRecord(self.advance(), "NOPEUSDT", 1.0, "1"))

    def pick(self, account_filter: str | None = None) -> Entity | None:
        entities = self.live()
        if account_filter is not None:
            entities = [e for e in entities if e.ref.account == account_filter]
        return self.rng.choice(entities) if entities else None

    def aim_tick(self) -> None:
        """A tick of one of an entity's symbols that lands on one of its thresholds."""
        entity = self.pick()
        if entity is None:
            return
        marked = [s for s in entity.exposures if s in self.marks]
        if not marked:
            return
        symbol = self.rng.choice(marked)
        target = self.rng.choice(self.targets)
        price = aim_price(entity, symbol, self.marks, target)
        if price is None or price <= 0:
            return
        with localcontext() as ctx:
            ctx.prec = 12
            price = +price
            # one unit in the 12th digit either way, or (below) in the 28th, where the float
            # mark no longer changes but the exact one does
            nudge = self.rng.choice((0, 0, 0, 1, -1))
            if nudge:
                price = price.next_plus() if nudge > 0 else price.next_minus()
        nudge = self.rng.choice((0, 0, 0, 1, -1))
        if nudge:
            price = price.next_plus() if nudge > 0 else price.next_minus()
        self.tick(symbol, price)

    def aim_at(self, account_filter: str | None = None) -> None:
        """A balance (cross) or margin transfer (isolated) that puts an entity on a threshold."""
        entity = self.pick(account_filter)
        if entity is None:
            return
        target = self.rng.choice(self.targets)
        mb, mm = valuation(entity, self.marks)
        if target <= 0 or mm <= 0:
            return
        wallet = (entity.wallet + (mm / target - mb)).quantize(Decimal("1e-10"))
        if wallet < 0:
            return
        ref = entity.ref
        if ref.scope == "cross":
            self.emit(BalanceRecord(self.advance(), ref.account, ref.asset, wallet))
        elif ref.symbol is not None and ref.side is not None:
            delta = wallet - entity.wallet
            self.emit(MarginRecord(self.advance(), ref.account, ref.symbol, ref.side, delta))  # type: ignore[arg-type]

    def balance(self) -> None:
        rng = self.rng
        entities = [e for e in self.live() if e.ref.scope == "cross"]
        if entities and rng.random() < 0.8:
            ref = rng.choice(entities).ref
            account, asset = ref.account, ref.asset
        else:
            account = f"acct{rng.randrange(self.w.accounts):04}"
            asset = rng.choice(("USDT", "BTC"))
        current = self.reference.balance(account, asset)
        wallet = (current * Decimal(str(rng.uniform(0.6, 1.4)))).quantize(Decimal("0.000001"))
        self.emit(BalanceRecord(self.advance(), account, asset, wallet))

    def margin(self) -> None:
        rng = self.rng
        entities = self.live()
        if not entities:
            return
        entity = rng.choice(entities)
        ref = entity.ref
        if ref.scope == "isolated" and ref.symbol is not None and ref.side is not None:
            delta = (entity.wallet * Decimal(str(rng.uniform(-0.5, 0.8)))).quantize(
                Decimal("0.000001")
            )
            self.emit(MarginRecord(self.advance(), ref.account, ref.symbol, ref.side, delta))  # type: ignore[arg-type]
        else:  # rejected: margin for a cross position or an empty slot
            symbol = next(iter(entity.exposures))
            self.emit(MarginRecord(self.advance(), ref.account, symbol, "both", Decimal(1)))

    def change_position(self) -> None:
        rng = self.rng
        entities = self.live()
        roll = rng.random()
        if not entities or roll < 0.4:
            account = f"acct{rng.randrange(self.w.accounts):04}"
            self.open(account, [rng.choice(list(MARKETS))], [rng.choice(("isolated", "cross"))])
            return
        entity = rng.choice(entities)
        symbol = rng.choice(list(entity.exposures))
        side, pos = rng.choice(list(entity.exposures[symbol].items()))
        leg = pos.leg
        mode = pos.mode
        if roll < 0.55:
            qty = Decimal(0)  # close
        elif roll < 0.67:
            mode = "cross" if mode == "isolated" else "isolated"  # move between entities
            qty = leg.qty
        else:
            qty = leg.qty * Decimal(str(round(rng.uniform(0.3, 2.0), 2)))
            if leg.contract.kind == "inverse":
                qty = qty.quantize(1) or leg.qty
            else:
                qty = qty.quantize(Decimal("0.001")) or leg.qty
        wallet = None
        if mode == "isolated":
            wallet = self.margin_for(symbol, abs(qty) or abs(leg.qty), leg.entry)
        entry = self.entry_near(symbol) if rng.random() < 0.5 else leg.entry
        self.emit(
            PositionRecord(
                self.advance(),
                pos.account,
                symbol,
                side,
                mode,
                qty,
                entry,
                Decimal(10),
                wallet,  # type: ignore[arg-type]
            )
        )

    def retier(self) -> None:
        self.retiers += 1
        table = toy_table if self.rng.random() < 0.6 else inverse_table
        self.emit(ContractRecord(table(self.retiers)))


def final_state(engine: Engine) -> dict[Any, Any]:
    return {
        e.ref: (e.level, e.liquidating, e.wallet, sorted(p.leg.qty for p in e.positions()))
        for e in engine.entities()
    }


def replay(engine: Engine, records: Sequence[Record]) -> Iterator[Outcome]:
    for item in records:
        try:
            yield [to_payload(e) for e in engine.apply(item)]
        except RecordRefused as exc:
            yield [("refused", type(exc).__name__, exc.reason)]


@cache
def generated(workload: Workload) -> Generator:
    """The workload's record stream and the naive engine's outcomes, built once per session:
    the equivalence test and the batched-ticks test replay the same workloads, and building
    one (the naive engine in the loop) is four fifths of either test. Nothing mutates it: the
    tests replay its records through fresh engines and only read the reference engine."""
    generator = Generator(workload)
    generator.build()
    return generator


def check_equivalence(workload: Workload) -> tuple[Generator, int, int]:
    """Build the workload, replay it through the indexed engine, compare everything; return
    the generator and how many entity evaluations each engine made."""
    generator = generated(workload)
    engine = Engine(workload.config())
    for n, (item, got, want) in enumerate(
        zip(generator.records, replay(engine, generator.records), generator.outcomes, strict=True)
    ):
        assert got == want, f"{workload}: record {n} {item!r}: indexed {got} != naive {want}"
    assert final_state(engine) == final_state(generator.reference)
    return generator, engine.evaluations, generator.reference.evaluations


def kinds(generator: Generator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in generator.outcomes:
        for item in outcome:
            key = item["event"] if isinstance(item, dict) else item[2]
            counts[key] = counts.get(key, 0) + 1
    return counts


VARIANTS: list[dict[str, Any]] = [
    {"seed": 1},
    {"seed": 2, "policy": "hold"},
    {"seed": 3, "hysteresis": "0"},
    {"seed": 4, "hysteresis": "0.001", "policy": "hold"},
    {"seed": 5, "hysteresis": "0.001"},
    {"seed": 6, "hysteresis": "0", "policy": "hold"},
    {"seed": 7, "levels": "0.5,0.75,0.95", "hysteresis": "0.1"},
]
"""The policies, hystereses and level sets every equivalence test covers."""

FAST = [Workload(accounts=200, steps=1200, **v) for v in VARIANTS]
"""Every variant at 200 accounts x 1,200 steps (1-3 s each): the default run. Each still makes
well over a hundred warnings, recoveries and liquidations, and over ten stale ticks and
refused margin transfers, and the indexed engine evaluates 20x less than the naive one."""

MEDIUM = [
    Workload(accounts=600 if n < 2 else 500, steps=4000 if n < 2 else 3000, **v)
    for n, v in enumerate(VARIANTS)
]
"""The same variants at 500-600 accounts x 3,000-4,000 steps (6-18 s each): with ``-m slow``."""


def _with_slow(fast: Sequence[Workload], slow: Sequence[Workload]) -> list[Any]:
    return [*fast, *(pytest.param(w, marks=pytest.mark.slow) for w in slow)]


@pytest.mark.parametrize("workload", _with_slow(FAST, MEDIUM), ids=str)
def test_indexed_engine_equals_full_reevaluation(workload: Workload) -> None:
    """Replaying a seeded random workload through the indexed engine gives, record by record,
    exactly the naive engine's events (payloads, ids, order) and refusals, and the same final
    state of every entity, while running an order of magnitude fewer evaluations; the workload
    really exercises every kind of event and refusal."""
    generator, indexed, naive = check_equivalence(workload)
    assert indexed * 10 < naive, (indexed, naive)
    counts = kinds(generator)
    for key in ("margin_warning", "margin_recovered", "liquidation", "stale_tick"):
        assert counts.get(key, 0) > 0, (key, counts)
    assert counts.get("margin_not_open_isolated", 0) > 0, counts


SLOW = [
    Workload(seed=100 + n, accounts=2000, steps=12000, policy=policy, hysteresis=hysteresis)
    for n, (policy, hysteresis) in enumerate(
        [(p, h) for p in ("close", "hold") for h in ("0.05", "0.001", "0")]
    )
]


@pytest.mark.slow
@pytest.mark.parametrize("workload", SLOW, ids=str)
def test_indexed_engine_equals_full_reevaluation_sweep(workload: Workload) -> None:
    """The same equivalence on larger and more numerous workloads."""
    check_equivalence(workload)


# -- the index does less work ------------------------------------------------------------------


def crowd(engine: Engine, accounts: int, near: int) -> None:
    """``accounts`` isolated BTCUSDT longs at 2x (far from any threshold) and ``near`` longs at
    ratio ≈ 0.69, just below the first level, all at mark 60,000."""
    btc = contracts()["BTCUSDT"]
    engine.apply(ContractRecord(btc))
    engine.apply(TickRecord(1, "BTCUSDT", 60000.0, "60000"))
    for n in range(accounts):
        engine.apply(
            PositionRecord(
                2,
                f"far{n:05}",
                "BTCUSDT",
                "both",
                "isolated",
                Decimal("0.5"),
                Decimal(60000),
                Decimal(2),
                Decimal(15000),
            )
        )
    # 1 BTC at 60,000: MM = 60,000·0.005 − 50 = 250; MB = W at entry: W = 250/0.69 ≈ 362.3
    for n in range(near):
        engine.apply(
            PositionRecord(
                2,
                f"near{n:02}",
                "BTCUSDT",
                "both",
                "isolated",
                Decimal(1),
                Decimal(60000),
                Decimal(100),
                Decimal("362.3"),
            )
        )


def test_a_tick_that_crosses_nothing_evaluates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small move of a symbol held by 3,000 far-from-threshold entities evaluates none of them
    in the indexed engine; the naive engine evaluates all 3,000 — to the same (empty) result."""
    indexed, naive = Engine(), NaiveEngine()
    for engine in (indexed, naive):
        crowd(engine, 3000, 0)
    indexed_before, naive_before = indexed.evaluations, naive.evaluations
    for ts, mark in enumerate(("60010", "59990.5", "60300", "59700"), start=3):
        tick = TickRecord(ts, "BTCUSDT", float(mark), mark)
        assert list(indexed.apply(tick)) == list(naive.apply(tick)) == []
    assert indexed.evaluations - indexed_before == 0
    assert naive.evaluations - naive_before == 4 * 3000


def test_a_tick_that_crosses_evaluates_only_the_entities_it_crosses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Among 3,000 far entities and 5 near ones, a drop that takes the near ones over 0.7
    evaluates only those 5 in the indexed engine, with the naive engine's exact events."""
    indexed, naive = Engine(), NaiveEngine()
    for engine in (indexed, naive):
        crowd(engine, 3000, 5)
    indexed_before = indexed.evaluations
    tick = TickRecord(3, "BTCUSDT", 59990.0, "59990")  # near: MM ≈ 249.95 / MB 352.3 ≈ 0.709
    events = [to_payload(e) for e in indexed.apply(tick)]
    assert events == [to_payload(e) for e in naive.apply(tick)]
    assert [(e["event"], e["account"], e["level"]) for e in events] == [
        ("margin_warning", f"near{n:02}", 0.7) for n in range(5)
    ]
    assert indexed.evaluations - indexed_before == 5


def test_generator_is_deterministic() -> None:
    """The same seed builds the same record stream (so a failure can be replayed)."""
    first = Generator(Workload(seed=9, accounts=20, steps=100))
    first.build()
    second = Generator(Workload(seed=9, accounts=20, steps=100))
    second.build()
    assert first.records == second.records
    assert json.dumps(first.outcomes, default=str) == json.dumps(second.outcomes, default=str)


def replay_grouped(engine: Engine, records: Sequence[Record]) -> list[Any]:
    """The records through the engine with consecutive ticks applied in one ``apply_ticks``
    call (as a replay does), each outcome a (events, refusals) pair per group or record."""
    out: list[Any] = []
    ticks: list[TickRecord] = []

    def flush() -> None:
        if ticks:
            events, dropped = engine.apply_ticks(
                [t.symbol for t in ticks],
                [t.mark for t in ticks],
                [t.mark_text for t in ticks],
                [t.ts for t in ticks],
            )
            out.append(([to_payload(e) for e in events], [(i, d.reason) for i, d in dropped]))
            ticks.clear()

    for item in records:
        if isinstance(item, TickRecord):
            ticks.append(item)
            continue
        flush()
        try:
            out.append(([to_payload(e) for e in engine.apply(item)], []))
        except RecordRefused as exc:
            out.append(([], [("refused", exc.reason)]))
    flush()
    return out


def replay_one_by_one_grouped(engine: Engine, records: Sequence[Record]) -> list[Any]:
    """The same grouping, every tick applied on its own (the reference)."""
    out: list[Any] = []
    group: tuple[list[Any], list[Any]] | None = None
    index = 0
    for item in records:
        if isinstance(item, TickRecord):
            if group is None:
                group, index = ([], []), 0
            try:
                group[0].extend(to_payload(e) for e in engine.apply(item))
            except RecordRefused as exc:
                group[1].append((index, exc.reason))
            index += 1
            continue
        if group is not None:
            out.append(group)
            group = None
        try:
            out.append(([to_payload(e) for e in engine.apply(item)], []))
        except RecordRefused as exc:
            out.append(([], [("refused", exc.reason)]))
    if group is not None:
        out.append(group)
    return out


@pytest.mark.parametrize("workload", _with_slow(FAST[:4], MEDIUM[:4]), ids=str)
def test_batches_of_ticks_equal_ticks_one_by_one(workload: Workload) -> None:
    """A replay applies runs of ticks in one call, where the entities the array path finds
    quiet at first marks are banded once for the run: every run gives exactly the events and
    drops the naive engine gives tick by tick."""
    generator = generated(workload)
    grouped = replay_grouped(Engine(workload.config()), generator.records)
    reference = replay_one_by_one_grouped(NaiveEngine(workload.config()), generator.records)
    assert grouped == reference


def test_a_frame_of_first_marks_then_moves_equals_ticks_one_by_one() -> None:
    """The live first frame: thousands of entities loaded, then one frame with every symbol's
    first mark, then frames of moves (with jumps): the indexed engine applying each frame in
    one call gives, frame for frame, what the naive engine gives tick by tick."""
    rng = random.Random(5)
    book = contracts()
    records: list[Record] = [ContractRecord(c) for c in book.values()]
    for n in range(1500):
        symbol = rng.choice(list(MARKETS))
        mark, _, notional = MARKETS[symbol]
        inverse = book[symbol].kind == "inverse"
        size = notional / float(mark) if not inverse else notional * float(mark) / 100
        qty = Decimal(str(round(size * rng.uniform(0.2, 3.0), 3 if not inverse else 0) or 1))
        qty = -qty if rng.random() < 0.4 else qty
        leverage = rng.choice((2, 5, 10, 20, 40))
        value = abs(qty) * (100 / mark if inverse else mark)
        wallet = (value / leverage * Decimal(str(rng.uniform(0.8, 1.6)))).quantize(Decimal("1e-6"))
        mode = rng.choice(("isolated", "cross"))
        account = f"a{n % 900:04}"
        if mode == "cross":
            asset = book[symbol].margin_asset
            records.append(BalanceRecord(1, account, asset, wallet * 2))
        records.append(
            PositionRecord(
                2,
                account,
                symbol,
                "both",
                mode,
                qty,
                mark,
                Decimal(leverage),
                wallet if mode == "isolated" else None,  # type: ignore[arg-type]
            )
        )
    frames: list[list[Record]] = []
    marks = {s: m for s, (m, _, _) in MARKETS.items()}
    for frame in range(40):
        ticks: list[Record] = []
        for symbol in MARKETS:
            # the frame right after the first marks moves every symbol a lot: what the first
            # frame left pending must be judged at the marks it was valued at
            jump = frame == 1 or rng.random() < 0.05
            move = rng.gauss(0, 0.004) + (rng.choice((-0.05, 0.05)) if jump else 0.0)
            if frame:
                grid = MARKETS[symbol][1]
                marks[symbol] = (marks[symbol] * (1 + Decimal(str(move)))).quantize(grid)
            ticks.append(TickRecord(10 + frame, symbol, float(marks[symbol]), str(marks[symbol])))
        frames.append(ticks)
    indexed, naive = Engine(), NaiveEngine()
    for record in records:
        with suppress(RecordRefused):
            assert [to_payload(e) for e in indexed.apply(record)] == [
                to_payload(e) for e in naive.apply(record)
            ]
    events = 0
    # the first three frames in one call (the first marks, then moves of the same symbols, as
    # in a file), the others a call each (as a live feed delivers them)
    for ticks in [[t for f in frames[:3] for t in f], *frames[3:]]:
        got = replay_grouped(indexed, ticks)
        want = replay_one_by_one_grouped(naive, ticks)
        assert got == want
        events += len(got[0][0])
    assert events > 50
    assert final_state(indexed) == final_state(naive)
