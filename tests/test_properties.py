"""Properties of the margin math and the engine (hypothesis), from ``docs/margin.md``.

(a) MM / MB = 1 at the liquidation price; (b) MM is continuous at every tier floor of real
tables; (c) a cross entity holding one position with wallet W behaves exactly like an isolated
position with isolated wallet W; (d) long/short mirror symmetry (linear: reflection about EP;
inverse: reflection about 1/EP, and an inverse position *is* a linear one in the reciprocal
price); (e) an isolated liquidation costs exactly the isolated wallet and touches nothing else.

Tier tables are the real Binance tables in ``tests/data`` (every USDⓈ-M table in the two fapi
files and the ccxt file). No real COIN-M table is in ``tests/data``, so inverse contracts use
*coin versions* of the fapi tables: floors, caps and ``cum`` divided by 20,000 (as if quoted at
BTC = 20,000 USD), rates unchanged. Scaling floors and ``cum`` together keeps every table exactly
continuous (checked below), so these have the shape of a real COIN-M table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

from hypothesis import event, given, settings
from hypothesis import strategies as st

from monitor import (
    BalanceRecord,
    Contract,
    ContractRecord,
    Engine,
    EngineConfig,
    EngineEvent,
    EntityRef,
    LiquidationTriggered,
    MarginRecord,
    MarginWarningRaised,
    PositionRecord,
    PositionView,
    Record,
    RecordRefused,
    TickRecord,
    Tier,
    make_contract,
    to_payload,
)
from monitor.config import Policy
from monitor.margin import (
    EXACT,
    Leg,
    maintenance_margin,
    maintenance_margin_exact,
    notional,
    notional_exact,
    solve_price,
    unrealized_pnl,
    unrealized_pnl_exact,
)
from monitor.records import Mode
from tests.test_contracts import FAPI_2022, FAPI_2024, load_fapi, real_contracts

D = Decimal
PROPERTY_SETTINGS = settings(deadline=None, max_examples=200)
COIN_SCALE = D("0.00005")  # 1 / 20,000


def _coin_version(symbol: str, tiers: list[Tier]) -> Contract:
    size = D(100) if symbol.startswith("BTC") else D(10)
    coin_tiers = [
        Tier(t.floor * COIN_SCALE, t.cap * COIN_SCALE, t.mmr, t.cum * COIN_SCALE) for t in tiers
    ]
    return make_contract(symbol.replace("USDT", "USD_PERP"), "inverse", "COIN", size, coin_tiers)


LINEAR = real_contracts()
INVERSE = [
    _coin_version(symbol, tiers)
    for path in (FAPI_2022, FAPI_2024)
    for symbol, tiers in load_fapi(path).items()
    if symbol.endswith("USDT")
]
assert all(not c.warnings for c in INVERSE)  # the coin versions stay continuous


# ---------------------------------------------------------------------------------------------
# Strategies


@dataclass(frozen=True)
class Case:
    """One position: ``qty`` signed (base units, or contracts for inverse), and its wallet."""

    contract: Contract
    qty: Decimal
    entry: Decimal
    wallet: Decimal
    leverage: float

    @property
    def leg(self) -> Leg:
        return Leg.of(self.qty, self.entry, self.contract)

    @property
    def sign(self) -> int:
        return 1 if self.qty > 0 else -1

    def mirrored(self) -> Case:
        """The same position on the other side."""
        return Case(self.contract, -self.qty, self.entry, self.wallet, self.leverage)


@st.composite
def cases(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = ("linear", "inverse"),
    min_leverage: float = 1.05,
    max_leverage: float = 125.0,
) -> Case:
    """A position whose entry notional lands anywhere from tiny to beyond the last floor, with
    wallet ``notional / leverage`` (leverage > 1, so every position has a liquidation price)."""
    kind = draw(st.sampled_from(kinds))
    contract = draw(st.sampled_from(LINEAR if kind == "linear" else INVERSE))
    sign = draw(st.sampled_from((1, -1)))
    entry = D(draw(st.integers(min_value=100, max_value=10**8))) / 100  # 1.00 … 1,000,000.00
    smallest = 10.0 if kind == "linear" else 0.001
    largest = 2.0 * float(contract.tiers[-1].floor)
    target = 10 ** draw(st.floats(math.log10(smallest), math.log10(largest)))
    if kind == "linear":
        size = max(D("0.001"), D(target / float(entry)).quantize(D("0.001")))
        entry_notional = size * entry
    else:
        size = D(max(1, round(target * float(entry) / float(contract.contract_size))))
        entry_notional = EXACT.divide(size * contract.contract_size, entry)
    leverage = draw(st.floats(min_leverage, max_leverage))
    wallet = EXACT.divide(entry_notional, D(leverage)).quantize(D("1e-8"))
    return Case(contract, sign * size, entry, wallet, leverage)


def _exact(value: float) -> Decimal:
    return Decimal(value)  # the float's exact binary value


def _mb_mm(case: Case, price: Decimal) -> tuple[Decimal, Decimal]:
    leg = case.leg
    mb = Fraction(case.wallet) + unrealized_pnl_exact(leg, price)
    return mb, maintenance_margin_exact(leg, price)


# ---------------------------------------------------------------------------------------------
# (a) MM / MB = 1 at the liquidation price


@PROPERTY_SETTINGS
@given(case=cases())
def test_margin_ratio_is_one_at_the_liquidation_price(case: Case) -> None:
    """For an isolated position (linear or inverse, long or short, any real tier), the price
    solve_price returns exists and there MM / MB = 1 to 1e-9, exactly and in floats."""
    lp = solve_price([case.leg], float(case.wallet), float(case.entry))
    assert lp is not None
    assert lp > 0
    mb, mm = _mb_mm(case, _exact(lp))
    assert mb > 0
    assert abs(mm / mb - 1) <= Fraction(1, 10**9)
    mb_f = float(case.wallet) + unrealized_pnl(case.leg, lp)
    assert math.isclose(maintenance_margin(case.leg, lp) / mb_f, 1.0, rel_tol=1e-9)


@PROPERTY_SETTINGS
@given(case=cases())
def test_bankruptcy_price_zeroes_the_margin_balance(case: Case) -> None:
    """Without maintenance the solver gives the price where MB = 0 (the bankruptcy price);
    for an inverse short it exists only while W < q·CS/EP, which leverage > 1 guarantees."""
    bp = solve_price([case.leg], float(case.wallet), float(case.entry), with_maintenance=False)
    assert bp is not None
    mb, _ = _mb_mm(case, _exact(bp))
    scale = Fraction(case.wallet) + abs(unrealized_pnl_exact(case.leg, _exact(bp)))
    assert abs(mb) <= Fraction(1, 10**12) * scale


# ---------------------------------------------------------------------------------------------
# (b) MM is continuous at every tier floor


@PROPERTY_SETTINGS
@given(
    contract=st.sampled_from(LINEAR + INVERSE),
    tier=st.integers(min_value=1, max_value=40),
    size=st.integers(min_value=1, max_value=10**6),
    sign=st.sampled_from((1, -1)),
)
def test_maintenance_margin_is_continuous_at_every_tier_floor(
    contract: Contract, tier: int, size: int, sign: int
) -> None:
    """At the mark where a position's notional crosses a tier floor, MM just below (previous
    tier) and at/above (new tier) agree to 1e-9 relative, in exact and float arithmetic."""
    assert len(contract.tiers) >= 2  # true of every real table
    n = 1 + (tier - 1) % (len(contract.tiers) - 1)
    floor = contract.tiers[n].floor
    qty = D(size) / 1000 * sign if not contract.is_inverse else D(size) * sign
    leg = Leg.of(qty, D(1), contract)
    qcs = leg.qcs_exact
    at = qcs / Fraction(floor) if contract.is_inverse else Fraction(floor) / qcs
    nudge = Fraction(1, 10**20)
    # a higher mark means more notional for linear, less for inverse
    up, down = at * (1 + nudge), at * (1 - nudge)
    above, below = (down, up) if contract.is_inverse else (up, down)
    assert contract.tier_index_exact(notional_exact(leg, above)) == n
    assert contract.tier_index_exact(notional_exact(leg, below)) == n - 1
    right = maintenance_margin_exact(leg, above)
    left = maintenance_margin_exact(leg, below)
    assert right > 0
    assert abs(right - left) <= Fraction(1, 10**9) * right

    at_f = float(at)
    up_f, down_f = at_f * (1 + 1e-12), at_f * (1 - 1e-12)
    above_f, below_f = (down_f, up_f) if contract.is_inverse else (up_f, down_f)
    assert contract.tier_index(notional(leg, above_f)) == n
    assert contract.tier_index(notional(leg, below_f)) == n - 1
    assert math.isclose(
        maintenance_margin(leg, above_f), maintenance_margin(leg, below_f), rel_tol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# Engine helpers

SYMBOL_TS0 = 10


def _marks(case: Case, moves: list[float]) -> list[str]:
    """Marks placed in units of the way to the liquidation price, on a log scale: 0 is the
    entry, 1 the LP, so a path visits the safe zone, the warning levels and beyond the LP."""
    entry = float(case.entry)
    lp = solve_price([case.leg], float(case.wallet), entry)
    assert lp is not None
    distance = math.log(lp / entry)
    return [f"{entry * math.exp(distance * y):.10g}" for y in moves]


def _ticks(symbol: str, marks: list[str], steps: list[int]) -> list[TickRecord]:
    ts = SYMBOL_TS0
    ticks = []
    for mark, step in zip(marks, steps, strict=False):
        ts += step
        ticks.append(TickRecord(ts, symbol, float(mark), mark))
    return ticks


Outcome = list[EngineEvent] | str
"""What one record did: its events, or the reason code it was refused with."""


def _run(engine: Engine, records: list[Record]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for record in records:
        try:
            outcomes.append(list(engine.apply(record)))
        except RecordRefused as refused:
            outcomes.append(refused.reason)
    return outcomes


def _events(outcome: Outcome) -> list[EngineEvent]:
    return [] if isinstance(outcome, str) else outcome


def _facts(event: EngineEvent, *, drop: tuple[str, ...] = ()) -> dict[str, object]:
    payload = to_payload(event)
    for key in ("id", *drop):
        payload.pop(key, None)
    return payload


moves = st.lists(
    st.one_of(
        st.floats(min_value=-0.5, max_value=0.8),  # safe
        st.floats(min_value=0.8, max_value=1.0),  # the warning levels
        st.floats(min_value=1.0, max_value=1.3),  # past the LP
    ),
    min_size=1,
    max_size=14,
)
steps = st.lists(st.sampled_from((0, 1, 7)), min_size=14, max_size=14)
policies = st.sampled_from(("close", "hold"))


# ---------------------------------------------------------------------------------------------
# (c) cross with one position == isolated with the same wallet


def _single_entity_run(
    case: Case, mode: Mode, ticks: list[TickRecord], policy: Policy
) -> list[list[dict[str, object]] | str]:
    """Events of one position in ``mode`` (cross: the account's wallet is ``case.wallet``)."""
    contract = case.contract
    engine = Engine(EngineConfig(policy=policy))
    engine.apply(ContractRecord(contract))
    if mode == "cross":
        assert not engine.apply(BalanceRecord(1, "acct", contract.margin_asset, case.wallet))
    wallet = case.wallet if mode == "isolated" else None
    position = PositionRecord(
        2, "acct", contract.symbol, "both", mode, case.qty, case.entry, D(10), wallet
    )
    # what differs by construction: the entity's name, and the isolated-only top-level LP
    drop = ("scope", "symbol", "side", "liquidation_price")
    return [
        outcome if isinstance(outcome, str) else [_facts(e, drop=drop) for e in outcome]
        for outcome in _run(engine, [position, *ticks])
    ]


@PROPERTY_SETTINGS
@given(case=cases(min_leverage=2.0), moves=moves, steps=steps, policy=policies)
def test_cross_with_one_position_behaves_like_isolated(
    case: Case, moves: list[float], steps: list[int], policy: Policy
) -> None:
    """Over the same random mark path, a cross entity whose only position is P with wallet W
    emits the same events (kind, ts, level, ratio, MB, MM, loss, shortfall, positions with
    their LP/BP) as P isolated with isolated wallet W, under both policies."""
    ticks = _ticks(case.contract.symbol, _marks(case, moves), steps)
    cross = _single_entity_run(case, "cross", ticks, policy)
    isolated = _single_entity_run(case, "isolated", ticks, policy)
    assert cross == isolated
    event(_kinds(cross))


def _kinds(outcomes: list[list[dict[str, object]] | str]) -> str:
    """The set of event kinds in a run (reported in hypothesis' statistics)."""
    kinds = {e["event"] for o in outcomes if not isinstance(o, str) for e in o}
    return "events: " + (", ".join(sorted(map(str, kinds))) or "none")


def test_cross_equals_isolated_through_every_event_kind() -> None:
    """The property above on a path that warns (0.7, 0.8), recovers, warns again (0.8, 0.9) and
    liquidates: the two scopes agree event by event (real 2022-02 BTCUSDT tiers)."""
    btc = next(c for c in LINEAR if c.symbol == "BTCUSDT@2022-02")
    case = Case(btc, D(1), D(30000), D(1500), 20.0)
    marks = ["29000", "28660", "28640", "28700", "28630", "28620", "28600", "28000"]
    ticks = _ticks(btc.symbol, marks, [1] * len(marks))
    cross = _single_entity_run(case, "cross", ticks, "close")
    assert cross == _single_entity_run(case, "isolated", ticks, "close")
    kinds = [(e["event"], e.get("level")) for events in cross for e in events]
    assert kinds == [
        ("margin_warning", 0.7),
        ("margin_warning", 0.8),
        ("margin_recovered", None),
        ("margin_warning", 0.8),
        ("margin_warning", 0.9),
        ("liquidation", None),
    ]
    liquidation = cross[-2]
    assert isinstance(liquidation, list)
    assert liquidation[0]["loss"] == 1500.0  # the whole cross wallet, as the isolated one


# ---------------------------------------------------------------------------------------------
# (d) long/short mirror symmetry


def _opposite(a: Decimal, b: Decimal) -> None:
    """``a = −b`` exactly."""
    assert a + b == 0


@PROPERTY_SETTINGS
@given(case=cases(kinds=("linear",)), ratio=st.floats(min_value=0.2, max_value=5.0))
def test_linear_long_and_short_mirror_about_the_entry(case: Case, ratio: float) -> None:
    """Linear long and short of the same size, entry and wallet:

    * at every mark P, uPnL(long, P) = −uPnL(short, P) and MM(long, P) = MM(short, P) (same
      notional), in floats bit for bit and in decimals exactly — so both have the same ratio
      at EP;
    * bankruptcy prices reflect about EP: BP_long + BP_short = 2·EP;
    * liquidation prices sit on mirrored sides: if healthy at EP (W > MM(EP)), LP_long < EP <
      LP_short; if W < MM(EP), both are already past it (LP_long > EP > LP_short); if W equals
      MM(EP) exactly, both are EP (hypothesis found that boundary: a 1 % tier, 10 at 1, W 0.1);
    * Binance's formula for both sides, added: q·LP_L·(1 − m_L) + q·LP_S·(1 + m_S)
      = 2·q·EP + c_S − c_L, with (m, c) the tier at each LP.
    """
    long = case if case.sign > 0 else case.mirrored()
    short = long.mirrored()
    price = EXACT.multiply(case.entry, _exact(ratio))
    _opposite(unrealized_pnl_exact(long.leg, price), unrealized_pnl_exact(short.leg, price))
    assert maintenance_margin_exact(long.leg, price) == maintenance_margin_exact(short.leg, price)
    p = float(price)
    assert unrealized_pnl(long.leg, p) == -unrealized_pnl(short.leg, p)
    assert maintenance_margin(long.leg, p) == maintenance_margin(short.leg, p)

    w, ep = float(case.wallet), float(case.entry)
    bp_long = solve_price([long.leg], w, ep, with_maintenance=False)
    bp_short = solve_price([short.leg], w, ep, with_maintenance=False)
    assert bp_long is not None
    assert bp_short is not None
    assert math.isclose(bp_long + bp_short, 2 * ep, rel_tol=1e-12)

    lp_long = solve_price([long.leg], w, ep)
    lp_short = solve_price([short.leg], w, ep)
    assert lp_long is not None
    assert lp_short is not None
    mm_at_entry = maintenance_margin_exact(long.leg, case.entry)
    if case.wallet > mm_at_entry:
        assert lp_long < ep < lp_short
    elif case.wallet < mm_at_entry:
        assert lp_long > ep > lp_short
    else:  # exactly at the threshold at EP: both liquidate there
        assert math.isclose(lp_long, ep, rel_tol=1e-12)
        assert math.isclose(lp_short, ep, rel_tol=1e-12)

    contract, q = case.contract, float(abs(case.qty))
    t_long = contract.tier_index(q * lp_long)
    t_short = contract.tier_index(q * lp_short)
    lhs = q * lp_long * (1 - contract.mmr_f[t_long]) + q * lp_short * (1 + contract.mmr_f[t_short])
    rhs = 2 * q * ep + contract.cum_f[t_short] - contract.cum_f[t_long]
    assert math.isclose(lhs, rhs, rel_tol=1e-9)


@PROPERTY_SETTINGS
@given(case=cases(kinds=("inverse",)), ratio=st.floats(min_value=0.2, max_value=5.0))
def test_inverse_long_and_short_mirror_about_the_reciprocal_entry(case: Case, ratio: float) -> None:
    """Inverse long and short of the same size, entry and wallet:

    * uPnL(long, P) = −uPnL(short, P) and MM(long, P) = MM(short, P), exactly;
    * bankruptcy prices reflect about 1/EP: 1/BP_long + 1/BP_short = 2/EP;
    * if healthy at EP, LP_long < EP < LP_short; if not, LP_long > EP > LP_short.
    """
    long = case if case.sign > 0 else case.mirrored()
    short = long.mirrored()
    price = EXACT.multiply(case.entry, _exact(ratio))
    _opposite(unrealized_pnl_exact(long.leg, price), unrealized_pnl_exact(short.leg, price))
    assert maintenance_margin_exact(long.leg, price) == maintenance_margin_exact(short.leg, price)

    w, ep = float(case.wallet), float(case.entry)
    bp_long = solve_price([long.leg], w, ep, with_maintenance=False)
    bp_short = solve_price([short.leg], w, ep, with_maintenance=False)
    assert bp_long is not None
    assert bp_short is not None
    assert math.isclose(1 / bp_long + 1 / bp_short, 2 / ep, rel_tol=1e-9)

    lp_long = solve_price([long.leg], w, ep)
    lp_short = solve_price([short.leg], w, ep)
    assert lp_long is not None
    assert lp_short is not None
    if case.wallet > maintenance_margin_exact(long.leg, case.entry):
        assert lp_long < ep < lp_short
    else:
        assert lp_long > ep > lp_short


def _as_linear(contract: Contract) -> Contract:
    return make_contract(contract.symbol + "_1/P", "linear", "COIN", D(1), contract.tiers)


def _reciprocal(mark: str) -> str:
    return str(EXACT.divide(1, D(mark)))


@PROPERTY_SETTINGS
@given(case=cases(kinds=("inverse",), min_leverage=2.0), moves=moves, steps=steps)
def test_inverse_position_is_the_opposite_linear_position_in_reciprocal_price(
    case: Case, moves: list[float], steps: list[int]
) -> None:
    """With x = 1/P, an inverse position of q contracts (size CS) entered at EP is a linear
    position of the *opposite* side, size q·CS, entered at 1/EP, on the same tier table:
    uPnL = s·q·CS·(1/EP − 1/P) = −s·q·CS·(x − 1/EP) and N = q·CS·x. So over mark path P_t and
    path 1/P_t the two emit the same events (kind, ts, level, ratio, MB, MM, loss, shortfall),
    and every published liquidation or bankruptcy price of one is the reciprocal of the other."""
    inverse, linear = case.contract, _as_linear(case.contract)
    marks = _marks(case, moves)
    runs = []
    for contract, qty, entry, path in (
        (inverse, case.qty, case.entry, marks),
        (
            linear,
            -case.qty * inverse.contract_size,
            EXACT.divide(1, case.entry),
            [_reciprocal(m) for m in marks],
        ),
    ):
        engine = Engine()
        engine.apply(ContractRecord(contract))
        position = PositionRecord(
            2, "acct", contract.symbol, "both", "isolated", qty, entry, D(10), case.wallet
        )
        runs.append(_run(engine, [position, *_ticks(contract.symbol, path, steps)]))
    inverse_run, linear_run = runs
    event(
        "events: "
        + (", ".join(sorted({e.kind for o in inverse_run for e in _events(o)})) or "none")
    )
    assert [len(_events(o)) for o in inverse_run] == [len(_events(o)) for o in linear_run]
    for outcome_inv, outcome_lin in zip(inverse_run, linear_run, strict=True):
        for inv, lin in zip(_events(outcome_inv), _events(outcome_lin), strict=True):
            assert (inv.kind, inv.ts) == (lin.kind, lin.ts)
            a, b = _facts(inv), _facts(lin)
            assert a.get("level") == b.get("level")
            for key in ("margin_ratio", "margin_balance", "maintenance_margin", "loss"):
                _close(a.get(key), b.get(key))
            _close(a.get("shortfall"), b.get("shortfall"), absolute=1e-12 * float(case.wallet))
            for view_inv, view_lin in zip(_views(inv), _views(lin), strict=True):
                for key in ("liquidation_price", "bankruptcy_price"):
                    x, y = getattr(view_inv, key), getattr(view_lin, key)
                    assert (x is None) == (y is None)
                    if x is not None:
                        assert math.isclose(x * y, 1.0, rel_tol=1e-9)


def _views(item: EngineEvent) -> tuple[PositionView, ...]:
    return item.positions if isinstance(item, LiquidationTriggered | MarginWarningRaised) else ()


def _close(x: object, y: object, absolute: float = 0.0) -> None:
    if x is None or y is None:
        assert x is y
        return
    assert isinstance(x, float)
    assert isinstance(y, float)
    assert math.isclose(x, y, rel_tol=1e-9, abs_tol=absolute)


# ---------------------------------------------------------------------------------------------
# (e) an isolated liquidation costs the isolated wallet, and nothing else


def _gap_mark(case: Case, wallet: Decimal) -> str:
    """A mark well past the bankruptcy price of ``case`` with ``wallet`` (a gap move)."""
    q = abs(case.qty)
    with localcontext(EXACT):
        if case.contract.is_inverse:
            reciprocal = 1 / case.entry + case.sign * wallet / (q * case.contract.contract_size)
            bankruptcy = 1 / reciprocal
        else:
            bankruptcy = case.entry - case.sign * wallet / q
        gap = bankruptcy / 2 if case.sign > 0 else bankruptcy * 2
    return f"{gap:.12g}"


@PROPERTY_SETTINGS
@given(
    case=cases(min_leverage=2.0),
    cross_table=st.sampled_from(LINEAR),
    delta=st.floats(min_value=-0.5, max_value=0.5),
    moves=moves,
    steps=steps,
)
def test_isolated_liquidation_loses_exactly_the_isolated_wallet(
    case: Case, cross_table: Contract, delta: float, moves: list[float], steps: list[int]
) -> None:
    """An isolated position (after a margin add/remove of up to ±50 %) is driven by a random
    path and then a gap through its bankruptcy price. It is liquidated once; its ``loss`` is
    exactly its isolated wallet (never more: what the gap costs beyond it is the ``shortfall``
    = −MB at that mark); and nothing else is touched: the same account's cross wallet keeps its
    value and its cross position, and that cross entity and another account's opposite
    isolated position in the same symbol emit exactly the events they emit without it."""
    symbol, asset = case.contract.symbol, case.contract.margin_asset
    cross_contract = make_contract("CROSSY", "linear", asset, D(1), cross_table.tiers)
    margin = EXACT.multiply(case.wallet, _exact(delta)).quantize(D("1e-8"))
    wallet = case.wallet + margin
    ticks = _ticks(symbol, [*_marks(case, moves), _gap_mark(case, wallet)], [*steps, 1])
    cross_wallet = D(10**12)
    contract: list[Record] = [ContractRecord(case.contract)]
    others: list[Record] = [
        ContractRecord(cross_contract),
        BalanceRecord(1, "a", asset, cross_wallet),
        PositionRecord(2, "a", "CROSSY", "both", "cross", D(1), D(100), D(10), None),
        PositionRecord(
            3, "b", symbol, "both", "isolated", -case.qty, case.entry, D(10), case.wallet
        ),
    ]
    subject: list[Record] = [
        PositionRecord(
            4, "a", symbol, "both", "isolated", case.qty, case.entry, D(10), case.wallet
        ),
        MarginRecord(5, "a", symbol, "both", margin),
    ]
    engine = Engine()
    composite = _run(engine, [*contract, *others, *subject, *ticks])
    alone = _run(Engine(), [*contract, *subject, *ticks])
    without = _run(Engine(), [*contract, *others, *ticks])

    # record by record, the composite engine emits the union, in canonical entity order
    nothing: list[Outcome] = [[]]
    aligned_alone = alone[:1] + nothing * len(others) + alone[1:]
    split = 1 + len(others)
    aligned_without = without[:split] + nothing * len(subject) + without[split:]
    for got, mine, theirs in zip(composite, aligned_alone, aligned_without, strict=True):
        if isinstance(mine, str):  # only the subject's own records can be refused
            assert got == mine
            continue
        expected = sorted(mine + _events(theirs), key=lambda e: e.entity.sort_key)
        assert [_facts(e) for e in _events(got)] == [_facts(e) for e in expected]
    assert engine.balance("a", asset) == cross_wallet
    cross = engine.entity(EntityRef("a", "cross", asset))
    assert cross is not None
    assert cross.wallet == cross_wallet
    assert [p.symbol for p in cross.positions()] == ["CROSSY"]

    # the subject alone: exactly one liquidation, costing its wallet
    margin_refused = alone[2] == "margin_not_open_isolated"  # liquidated on creation
    lost = case.wallet if margin_refused else wallet
    liquidations = []
    price = case.entry
    for record, outcome in zip([*contract, *subject, *ticks], alone, strict=True):
        if isinstance(record, TickRecord):
            price = record.mark_exact
        liquidations.extend(
            (e, price) for e in _events(outcome) if isinstance(e, LiquidationTriggered)
        )
    assert len(liquidations) == 1
    ((liquidation, price),) = liquidations
    assert liquidation.loss == float(lost)
    mb = Fraction(lost) + unrealized_pnl_exact(case.leg, price)
    assert liquidation.margin_balance == float(mb)
    assert liquidation.shortfall == (float(-mb) if mb < 0 else 0.0)
    assert liquidation.positions[0].mark == float(price)
    if liquidation.ts == ticks[-1].ts and price == ticks[-1].mark_exact:
        assert liquidation.shortfall > 0  # the gap went through the bankruptcy price
