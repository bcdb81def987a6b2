"""The margin math against every published number listed in ``docs/margin.md``.

Sources: Binance's FAQ isolated examples (liquidation and bankruptcy prices), freqtrade's
``test_get_liquidation_price`` rows, Binance's COIN-M maintenance example and its tier
maintenance-amount example. Each number is checked in the float functions (the hot path), in
the ``*_exact`` functions (what events publish), in :func:`~monitor.margin.solve_price`, and,
for the liquidation prices, end to end through :class:`~monitor.Engine`: a mark one cent on the
safe side of the published LP raises a warning, one cent on the other side liquidates, and both
events carry the published prices.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction
from typing import NamedTuple

import pytest

from feeds.normalized import parse_line
from monitor import (
    BalanceRecord,
    Contract,
    ContractRecord,
    Engine,
    LiquidationTriggered,
    MarginWarningRaised,
    PositionRecord,
    TickRecord,
    Tier,
    make_contract,
    to_payload,
)
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
from tests.test_contracts import FAPI_2022, load_fapi

D = Decimal
FAQ_WALLET = D("1535443.01")


def _eth_faq_tiers() -> list[Tier]:
    """An ETHUSDT table whose tier at the FAQ's LP notional is exactly ``mmr 0.10, cum 135,365``.

    The FAQ example predates the 2022-02 table in ``tests/data`` (there, 4.1 M USDT falls in
    ``[4 M, 10 M)`` with ``cum 250,365``, which gives another LP). This table is built, not
    copied: Binance-like floors 0 / 10 k / 100 k / 500 k / 1 M / 2 M / 5 M and rates
    0.5 / 0.65 / 1 / 2 / 5 / 10 / 12.5 %. Only floors and rates are typed in: every ``cum``
    is derived by the continuity rule ``cum_n = cum_{n−1} + floor_n·(mmr_n − mmr_{n−1})``, so the
    FAQ's 135,365 for the 10 % tier is a result, not an input.
    """
    floors = ["0", "10000", "100000", "500000", "1000000", "2000000", "5000000"]
    caps = [*floors[1:], "10000000"]
    rates = ["0.005", "0.0065", "0.01", "0.02", "0.05", "0.10", "0.125"]
    tiers: list[Tier] = []
    cum = D(0)
    previous = D(0)
    for floor, cap, rate in zip(floors, caps, rates, strict=True):
        cum += D(floor) * (D(rate) - previous)
        previous = D(rate)
        tiers.append(Tier(D(floor), D(cap), D(rate), cum))
    return tiers


ETH_FAQ = make_contract("ETHUSDT", "linear", "USDT", D(1), _eth_faq_tiers())
BTC_2022 = make_contract("BTCUSDT", "linear", "USDT", D(1), load_fapi(FAPI_2022)["BTCUSDT"])


class FaqCase(NamedTuple):
    """One FAQ row: the position, the tier at its LP, and the published LP and BP (text)."""

    contract: Contract
    qty: Decimal
    entry: Decimal
    mmr: Decimal
    cum: Decimal
    lp: str
    bp: str


FAQ = {
    "ETHUSDT": FaqCase(
        ETH_FAQ, D("3683.979"), D("1456.84"), D("0.10"), D(135365), "1114.7849637", "1040.05"
    ),
    "BTCUSDT": FaqCase(
        BTC_2022, D("109.488"), D("32481.98"), D("0.025"), D(16300), "18778.7259322", "18458.13"
    ),
}


def _faq_leg(symbol: str) -> Leg:
    case = FAQ[symbol]
    return Leg.of(case.qty, case.entry, case.contract)


def _cents(value: float) -> str:
    return f"{value:.2f}"


# ---------------------------------------------------------------------------------------------
# Binance FAQ, isolated, one-way, long


def test_eth_faq_table_is_continuous_and_has_the_published_tier() -> None:
    """The reconstructed ETH table builds without warnings and its 2 M–5 M tier is 10 %/135,365."""
    assert ETH_FAQ.warnings == ()
    assert ETH_FAQ.tiers[5] == Tier(D(2_000_000), D(5_000_000), D("0.10"), D(135365))
    assert [t.cum for t in ETH_FAQ.tiers] == [0, 15, 365, 5365, 35365, 135365, 260365]


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_faq_liquidation_price_to_the_published_digits(symbol: str) -> None:
    """solve_price gives the FAQ's LP to all 7 published decimals (so to the cent)."""
    entry, lp_text = FAQ[symbol].entry, FAQ[symbol].lp
    lp = solve_price([_faq_leg(symbol)], float(FAQ_WALLET), float(entry))
    assert lp is not None
    assert f"{lp:.7f}" == lp_text
    assert _cents(lp) == f"{float(lp_text):.2f}"


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_faq_liquidation_price_matches_binance_closed_form(symbol: str) -> None:
    """solve_price equals ``(WB + cum − s·q·EP) / (q·mmr − s·q)`` evaluated exactly, and the
    tier that holds the notional at that LP is the FAQ's (mmr, cum): the LP is self-consistent."""
    contract, qty, entry, mmr, cum, _, _ = FAQ[symbol]
    with localcontext(EXACT):
        closed = (FAQ_WALLET + cum - qty * entry) / (qty * mmr - qty)
    lp = solve_price([_faq_leg(symbol)], float(FAQ_WALLET), float(entry))
    assert lp == pytest.approx(float(closed), rel=1e-13)
    tier = contract.tiers[contract.tier_index_exact(EXACT.multiply(qty, closed))]
    assert (tier.mmr, tier.cum) == (mmr, cum)
    assert contract.tiers[contract.tier_index(float(qty) * lp)] == tier


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_faq_bankruptcy_price(symbol: str) -> None:
    """Without maintenance the solver gives the FAQ's bankruptcy price ``EP − WB/q``."""
    qty, entry, bp_text = FAQ[symbol].qty, FAQ[symbol].entry, FAQ[symbol].bp
    bp = solve_price([_faq_leg(symbol)], float(FAQ_WALLET), float(entry), with_maintenance=False)
    assert bp is not None
    assert _cents(bp) == bp_text
    assert bp == pytest.approx(float(entry - EXACT.divide(FAQ_WALLET, qty)), rel=1e-13)


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_faq_margin_balance_equals_maintenance_at_the_lp(symbol: str) -> None:
    """At the published LP, WB + uPnL = MM (exact and float functions), and one cent either
    side flips the sign of MB − MM: the LP is right to the cent in the margin functions too."""
    leg = _faq_leg(symbol)
    lp = D(FAQ[symbol].lp)  # 7 decimals: within 5e-8 of the true LP
    mb = Fraction(FAQ_WALLET) + unrealized_pnl_exact(leg, lp)
    mm = maintenance_margin_exact(leg, lp)
    assert abs(mb - mm) < Fraction(5, 10**8) * leg.qcs_exact  # |d(MB − MM)/dP| < q
    lp_f = float(lp)
    mb_f = float(FAQ_WALLET) + unrealized_pnl(leg, lp_f)
    assert mb_f == pytest.approx(maintenance_margin(leg, lp_f), rel=1e-9)
    assert float(mb - mm) == pytest.approx(mb_f - maintenance_margin(leg, lp_f), abs=1e-3)
    above, below = lp + D("0.01"), lp - D("0.01")
    assert Fraction(FAQ_WALLET) + unrealized_pnl_exact(leg, above) > maintenance_margin_exact(
        leg, above
    )
    assert Fraction(FAQ_WALLET) + unrealized_pnl_exact(leg, below) < maintenance_margin_exact(
        leg, below
    )


def test_faq_margin_functions_at_entry_exact_values() -> None:
    """The per-position formulas at the ETH entry price, in exact decimals and floats."""
    leg = _faq_leg("ETHUSDT")
    entry = D("1456.84")
    # N = 3683.979 × 1456.84 = 5,366,967.96636: tier [5 M, 10 M), 12.5 %, cum 260,365
    assert notional_exact(leg, entry) == D("5366967.96636")
    assert unrealized_pnl_exact(leg, entry) == 0
    assert maintenance_margin_exact(leg, entry) == D("5366967.96636") * D("0.125") - 260365
    assert notional(leg, 1456.84) == pytest.approx(5366967.96636, rel=1e-15)
    assert maintenance_margin(leg, 1456.84) == pytest.approx(410505.995795, rel=1e-13)
    assert unrealized_pnl_exact(leg, D("1114.78")) == D("3683.979") * (D("1114.78") - entry)


def test_eth_faq_lp_differs_with_the_2022_table() -> None:
    """Why the ETH example needs its own table: in the 2022-02 ETHUSDT table 4.1 M USDT is in
    ``[4 M, 10 M)`` at 10 % / 250,365, not 135,365. With that table the same position
    liquidates at 1,080.40, where its notional (3.98 M) sits in the 5 % / 50,365 tier."""
    eth_2022 = make_contract("ETHUSDT", "linear", "USDT", D(1), load_fapi(FAPI_2022)["ETHUSDT"])
    faq_notional = D("3683.979") * D(FAQ["ETHUSDT"].lp)
    tier = eth_2022.tiers[eth_2022.tier_index_exact(faq_notional)]
    assert (tier.mmr, tier.cum) == (D("0.1"), D(250365))
    leg = Leg.of(D("3683.979"), D("1456.84"), eth_2022)
    lp = solve_price([leg], float(FAQ_WALLET), 1456.84)
    assert lp is not None
    assert _cents(lp) == "1080.40"
    tier = eth_2022.tiers[eth_2022.tier_index(3683.979 * lp)]
    assert (tier.mmr, tier.cum) == (D("0.05"), D(50365))


def _engine_with(contract: Contract, qty: Decimal, entry: Decimal, wallet: Decimal) -> Engine:
    """An engine holding one isolated one-way position (and an unrelated cross wallet of 1000)."""
    engine = Engine()
    engine.apply(ContractRecord(contract))
    engine.apply(BalanceRecord(1, "acct", contract.margin_asset, D(1000)))
    events = engine.apply(
        PositionRecord(2, "acct", contract.symbol, "both", "isolated", qty, entry, D(10), wallet)
    )
    assert events == []
    return engine


def _tick(engine: Engine, symbol: str, ts: int, mark: str) -> list[dict[str, object]]:
    return [to_payload(e) for e in engine.apply(TickRecord(ts, symbol, float(mark), mark))]


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_faq_engine_warns_a_cent_above_and_liquidates_a_cent_below_the_lp(symbol: str) -> None:
    """Through the engine: the mark rounded up to the cent from the LP raises a 0.9 warning,
    rounded down liquidates; both events carry the published LP and BP, the isolated wallet
    is the loss, and the account's cross wallet is untouched."""
    contract, qty, entry, _, _, lp_text, bp_text = FAQ[symbol]
    engine = _engine_with(contract, qty, entry, FAQ_WALLET)
    lp = D(lp_text)
    up = str(lp.quantize(D("0.01"), rounding=ROUND_CEILING))
    down = str(lp.quantize(D("0.01"), rounding=ROUND_FLOOR))

    (warning,) = _tick(engine, symbol, 3, up)
    assert warning["event"] == "margin_warning"
    assert warning["level"] == 0.9
    assert warning["scope"] == "isolated"
    assert warning["ts"] == 3
    assert 0.9999 < warning["margin_ratio"] < 1  # type: ignore[operator]
    assert warning["liquidation_price"] == pytest.approx(float(lp), abs=5e-8)
    (view,) = warning["positions"]  # type: ignore[misc]
    assert view["liquidation_price"] == warning["liquidation_price"]
    assert _cents(view["bankruptcy_price"]) == bp_text
    assert view["mark"] == float(up)

    (liquidation,) = _tick(engine, symbol, 4, down)
    assert liquidation["event"] == "liquidation"
    assert liquidation["ts"] == 4
    assert 1 < liquidation["margin_ratio"] < 1.0001  # type: ignore[operator]
    assert liquidation["loss"] == float(FAQ_WALLET)
    assert liquidation["shortfall"] == 0.0
    (view,) = liquidation["positions"]  # type: ignore[misc]
    assert view["liquidation_price"] == pytest.approx(float(lp), abs=5e-8)
    assert _cents(view["bankruptcy_price"]) == bp_text
    assert engine.balance("acct", "USDT") == D(1000)
    assert engine.entity_count == 0


def test_faq_engine_gap_through_bankruptcy_price_reports_the_shortfall() -> None:
    """A mark gapping from entry to 1,040.00 (below the ETH BP 1,040.05) liquidates with
    shortfall = −MB = −(1,535,443.01 + 3,683.979 × (1,040.00 − 1,456.84)) = 186.79636."""
    engine = _engine_with(ETH_FAQ, D("3683.979"), D("1456.84"), FAQ_WALLET)
    (liquidation,) = _tick(engine, "ETHUSDT", 3, "1040.00")
    assert liquidation["event"] == "liquidation"
    assert liquidation["margin_balance"] == -186.79636
    assert liquidation["shortfall"] == 186.79636
    assert liquidation["margin_ratio"] is None  # MB <= 0: no ratio
    assert liquidation["loss"] == float(FAQ_WALLET)


def test_btc_faq_example_as_normalized_json_lines() -> None:
    """The BTC FAQ example fed as normalized JSON Lines (decimals as strings, the real
    2022-02 tiers as ``brackets``) warns at 18,778.73 and liquidates at 18,778.72, with the
    published LP and BP in the events."""
    brackets = [
        {"floor": str(t.floor), "cap": str(t.cap), "mmr": str(t.mmr), "cum": str(t.cum)}
        for t in BTC_2022.tiers
    ]
    lines = [
        {"type": "contract", "symbol": "BTCUSDT", "kind": "linear", "margin_asset": "USDT",
         "contract_size": "1", "brackets": brackets},
        {"type": "position", "ts": 1, "account": "faq", "symbol": "BTCUSDT", "side": "both",
         "mode": "isolated", "qty": "109.488", "entry": "32481.98", "leverage": "20",
         "isolated_wallet": "1535443.01"},
        {"type": "tick", "ts": 2, "symbol": "BTCUSDT", "mark": "18778.73"},
        {"type": "tick", "ts": 3, "symbol": "BTCUSDT", "mark": "18778.72"},
    ]  # fmt: skip
    engine = Engine()
    events = [to_payload(e) for line in lines for e in engine.apply(parse_line(json.dumps(line)))]
    assert [(e["event"], e["ts"]) for e in events] == [("margin_warning", 2), ("liquidation", 3)]
    for event in events:
        (view,) = event["positions"]  # type: ignore[misc]
        assert f"{view['liquidation_price']:.7f}" == "18778.7259322"
        assert _cents(view["bankruptcy_price"]) == "18458.13"


# ---------------------------------------------------------------------------------------------
# freqtrade test_get_liquidation_price: mmr 0.01, cum 0.01, WB = q·EP/leverage

FREQTRADE_TIER = Tier(D(0), D(1_000_000), D("0.01"), D("0.01"))

FREQTRADE_ROWS = [
    pytest.param(-1, 5, "10", "1.0", 11.89108910891089, id="short-5x-10-1"),
    pytest.param(-1, 3, "10", "1.0", 13.2112211221122, id="short-3x-10-1"),
    pytest.param(-1, 5, "8", "1.0", 9.514851485148514, id="short-5x-8-1"),
    pytest.param(-1, 5, "10", "0.6", 11.897689768976898, id="short-5x-10-0.6"),
    pytest.param(1, 5, "10", "1.0", 8.070707070707071, id="long-5x-10-1"),
    pytest.param(1, 5, "8", "1.0", 6.454545454545454, id="long-5x-8-1"),
    pytest.param(1, 3, "10", "1.0", 6.723905723905723, id="long-3x-10-1"),
    pytest.param(1, 5, "10", "0.6", 8.063973063973064, id="long-5x-10-0.6"),
]


def _freqtrade_contract() -> Contract:
    return make_contract("FTUSDT", "linear", "USDT", D(1), [FREQTRADE_TIER])


def test_freqtrade_tier_breaks_continuity_and_warns() -> None:
    """freqtrade's ``cum_1 = 0.01`` is not Binance-shaped: make_contract accepts it with a
    warning (and notes that MM can go negative, below 1 USDT of notional)."""
    contract = _freqtrade_contract()
    assert contract.warnings == ("FTUSDT: tier 1 has cum 0.01, expected 0",)
    assert contract.mm_can_be_negative
    leg = Leg.of(D("0.5"), D(1), contract)
    assert maintenance_margin_exact(leg, D(1)) == D("-0.005")


@pytest.mark.parametrize(("sign", "leverage", "entry", "size", "expected"), FREQTRADE_ROWS)
def test_freqtrade_liquidation_price(
    sign: int, leverage: int, entry: str, size: str, expected: float
) -> None:
    """solve_price and the exact closed form reproduce freqtrade's LP (to its float digits),
    and at that LP the exact margin balance equals the exact maintenance margin."""
    qty = D(size) * sign
    wallet = EXACT.divide(D(size) * D(entry), D(leverage))
    leg = Leg.of(qty, D(entry), _freqtrade_contract())
    lp = solve_price([leg], float(wallet), float(entry))
    assert lp == pytest.approx(expected, rel=1e-14)
    q, mmr, cum = D(size), FREQTRADE_TIER.mmr, FREQTRADE_TIER.cum
    with localcontext(EXACT):
        closed = (wallet + cum - sign * q * D(entry)) / (q * mmr - sign * q)
        mb = Fraction(wallet) + unrealized_pnl_exact(leg, closed)
    assert float(closed) == pytest.approx(expected, rel=1e-14)
    assert abs(mb - maintenance_margin_exact(leg, closed)) < Fraction(1, 10**50)
    assert float(mb) == pytest.approx(
        float(wallet) + unrealized_pnl(leg, lp), rel=1e-12
    )  # float path agrees
    assert maintenance_margin(leg, lp) == pytest.approx(float(mb), rel=1e-12)


@pytest.mark.parametrize(("sign", "leverage", "entry", "size", "expected"), FREQTRADE_ROWS)
def test_freqtrade_engine_liquidates_just_beyond_the_lp(
    sign: int, leverage: int, entry: str, size: str, expected: float
) -> None:
    """Through the engine: a mark 1e-9 (relative) on the safe side of freqtrade's LP warns,
    1e-9 beyond it liquidates; both events carry that LP and the bankruptcy price
    ``EP − s·WB/q``."""
    wallet = EXACT.divide(D(size) * D(entry), D(leverage))
    engine = _engine_with(_freqtrade_contract(), D(size) * sign, D(entry), wallet)
    safe = repr(expected * (1 + sign * 1e-9))
    beyond = repr(expected * (1 - sign * 1e-9))
    bankruptcy = float(D(entry) - sign * EXACT.divide(wallet, D(size)))

    (warning,) = _tick(engine, "FTUSDT", 3, safe)
    assert (warning["event"], warning["level"]) == ("margin_warning", 0.9)
    assert warning["liquidation_price"] == pytest.approx(expected, rel=1e-14)
    assert warning["positions"][0]["bankruptcy_price"] == pytest.approx(bankruptcy, rel=1e-14)  # type: ignore[index]

    (liquidation,) = _tick(engine, "FTUSDT", 4, beyond)
    assert liquidation["event"] == "liquidation"
    (view,) = liquidation["positions"]  # type: ignore[misc]
    assert view["liquidation_price"] == pytest.approx(expected, rel=1e-14)
    assert view["bankruptcy_price"] == pytest.approx(bankruptcy, rel=1e-14)
    assert liquidation["loss"] == float(wallet)


# ---------------------------------------------------------------------------------------------
# COIN-M

BTCUSD = make_contract(
    "BTCUSD_PERP",
    "inverse",
    "BTC",
    D(100),
    [
        Tier(D(0), D(5), D("0.004"), D(0)),
        Tier(D(5), D(10), D("0.005"), D("0.005")),
    ],
)
"""Tier 1 as in the FAQ (0.4 %, cum 0); a continuous tier 2 so the selection has a choice."""


@pytest.mark.parametrize("qty", [D(100), D(-100)])
def test_coinm_notional_and_maintenance_margin(qty: Decimal) -> None:
    """100 BTCUSD contracts (CS 100) at mark 25,000: N = 0.4 BTC, tier 1, MM = 0.0016 BTC,
    for a long and a short alike."""
    leg = Leg.of(qty, D(20000), BTCUSD)
    assert notional_exact(leg, D(25000)) == D("0.4")
    assert BTCUSD.tier_index_exact(D("0.4")) == 0
    assert maintenance_margin_exact(leg, D(25000)) == D("0.0016")
    assert notional(leg, 25000.0) == pytest.approx(0.4, rel=1e-15)
    assert maintenance_margin(leg, 25000.0) == pytest.approx(0.0016, rel=1e-15)


def test_coinm_unrealized_pnl_exact() -> None:
    """Inverse uPnL is ``s·q·CS·(1/EP − 1/P)``: long 100 from 20,000 to 25,000 earns 0.1 BTC."""
    long = Leg.of(D(100), D(20000), BTCUSD)
    short = Leg.of(D(-100), D(20000), BTCUSD)
    assert unrealized_pnl_exact(long, D(25000)) == D("0.1")
    assert unrealized_pnl_exact(short, D(25000)) == D("-0.1")
    assert unrealized_pnl(long, 25000.0) == pytest.approx(0.1, rel=1e-14)


def test_coinm_engine_reports_the_maintenance_margin() -> None:
    """Through the engine: a cross BTC wallet of 0.002 holding that position at mark 25,000
    has ratio 0.0016 / 0.002 = 0.8, so it raises the 0.8 warning with MM 0.0016."""
    engine = Engine()
    engine.apply(ContractRecord(BTCUSD))
    engine.apply(BalanceRecord(1, "acct", "BTC", D("0.002")))
    engine.apply(TickRecord(2, "BTCUSD_PERP", 25000.0, "25000"))
    (event,) = engine.apply(
        PositionRecord(3, "acct", "BTCUSD_PERP", "both", "cross", D(100), D(25000), D(20), None)
    )
    assert isinstance(event, MarginWarningRaised)
    assert event.level == 0.8
    assert event.maintenance_margin == 0.0016
    assert event.margin_balance == 0.002
    assert event.margin_ratio == 0.8
    assert event.liquidation_price is None  # cross: only per position
    # LP (inverse closed form): q·(mmr + s) / (WB/CS + s·q/EP) = 100·1.004 / (0.002/100 + 1/250)
    (view,) = event.positions
    expected = EXACT.divide(D("100.4"), D("0.00002") + D("0.004"))
    assert view.liquidation_price == pytest.approx(float(expected), rel=1e-13)


# ---------------------------------------------------------------------------------------------
# Tier maintenance amount: 50 × (5 % − 2.5 %) + 0.56 = 1.81

TIER_AMOUNT_ROWS = [
    Tier(D(0), D(28), D("0.005"), D(0)),
    Tier(D(28), D(50), D("0.025"), D("0.56")),  # 28 × (2.5 % − 0.5 %) = 0.56
    Tier(D(50), D(100), D("0.05"), D("1.81")),
]


def test_tier_amount_example() -> None:
    """The FAQ's maintenance amount: ``50 × (5 % − 2.5 %) + 0.56 = 1.81``; a COIN-M table with
    those tiers is continuous (no warning) and MM agrees on both sides of the 50 BTC floor."""
    assert D(50) * (D("0.05") - D("0.025")) + D("0.56") == D("1.81")
    contract = make_contract("BTCUSD_PERP", "inverse", "BTC", D(100), TIER_AMOUNT_ROWS)
    assert contract.warnings == ()
    # notional 50 BTC at mark 20,000 needs 10,000 contracts of 100 USD
    leg = Leg.of(D(10000), D(20000), contract)
    at_floor = maintenance_margin_exact(leg, D(20000))
    assert at_floor == D("0.69")  # 50 × 5 % − 1.81
    just_below = maintenance_margin_exact(leg, D("20000.000001"))  # N a hair under 50
    assert contract.tier_index_exact(notional_exact(leg, D("20000.000001"))) == 1
    assert abs(just_below - Fraction("0.69")) < Fraction(1, 10**9)


def test_tier_amount_off_by_a_cent_warns() -> None:
    """Publishing 1.80 instead of 1.81 is caught: the warning names the continuous value."""
    rows = [*TIER_AMOUNT_ROWS[:2], Tier(D(50), D(100), D("0.05"), D("1.80"))]
    contract = make_contract("BTCUSD_PERP", "inverse", "BTC", D(100), rows)
    (warning,) = contract.warnings
    assert "tier 3 has cum 1.80" in warning
    needed = D(warning.split("continuity needs ")[1].split()[0])
    assert needed == D("1.81")


# ---------------------------------------------------------------------------------------------
# Regressions: edge cases that were once wrong, each pinned by its test


def test_liquidation_price_at_a_maintenance_jump() -> None:
    """With ``cum_2 = 3`` where continuity needs 1, MM drops by 2 at N = 100. A long of 1 at
    EP 150 with wallet 50.5 is liquidated at every mark below 100 (MB = 0.5 + (P − 100) ≤
    P·0.01) and safe at 100 and above (MM = P·0.02 − 3 < MB): its liquidation price is 100.
    No tier piece has a self-consistent root there; solve_price still finds 100, the tier floor
    where ``MB − MM`` jumps across zero (docs/choices.md: such a floor counts)."""
    contract = make_contract(
        "XUSDT",
        "linear",
        "USDT",
        D(1),
        [Tier(D(0), D(100), D("0.01"), D(0)), Tier(D(100), D(1000), D("0.02"), D(3))],
    )
    assert contract.warnings  # accepted, flagged
    leg = Leg.of(D(1), D(150), contract)
    wallet = D("50.5")
    below, at = D("99.99"), D(100)
    assert Fraction(wallet) + unrealized_pnl_exact(leg, below) <= maintenance_margin_exact(
        leg, below
    )
    assert Fraction(wallet) + unrealized_pnl_exact(leg, at) > maintenance_margin_exact(leg, at)
    lp = solve_price([leg], float(wallet), 150.0)
    assert lp is not None
    assert math.isclose(lp, 100.0, rel_tol=1e-12)


def test_engine_publishes_the_lp_of_a_maintenance_jump() -> None:
    """End to end: the engine liquidates the position above at 99.9, and its event carries
    the liquidation price 100 (the jump's floor, not ``null``) and the bankruptcy price
    99.5."""
    contract = make_contract(
        "XUSDT",
        "linear",
        "USDT",
        D(1),
        [Tier(D(0), D(100), D("0.01"), D(0)), Tier(D(100), D(1000), D("0.02"), D(3))],
    )
    engine = _engine_with(contract, D(1), D(150), D("50.5"))
    assert _tick(engine, "XUSDT", 3, "100") == []
    (liquidation,) = engine.apply(TickRecord(4, "XUSDT", 99.9, "99.9"))
    assert isinstance(liquidation, LiquidationTriggered)
    assert liquidation.positions[0].bankruptcy_price == pytest.approx(99.5, rel=1e-14)
    lp = liquidation.positions[0].liquidation_price
    assert lp is not None
    assert math.isclose(lp, 100.0, rel_tol=1e-12)


EXACT_LP_CONTRACT = make_contract(
    "XUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.01"), D(0))]
)
"""One tier, 1 %: ``MB = MM`` has a closed form whose wallet can be written exactly."""
EXACT_LP_QTY = D("1.234567890123")


def test_unrealized_pnl_exact_of_a_short_is_exact() -> None:
    """Long and short uPnL are exact negatives: here ``q·(P − EP)`` needs 32 significant
    digits, and both keep all of them (the short's was once rounded to 28)."""
    mark = D("99.0000000000000000013")
    long = Leg.of(EXACT_LP_QTY, D(100), EXACT_LP_CONTRACT)
    short = Leg.of(-EXACT_LP_QTY, D(100), EXACT_LP_CONTRACT)
    assert unrealized_pnl_exact(long, mark) == D("-1.2345678901229999983950617428401")
    assert unrealized_pnl_exact(short, mark) == D("1.2345678901229999983950617428401")


def test_long_at_exactly_its_liquidation_price_is_liquidated() -> None:
    """``MB = MM`` exactly counts as liquidated (``MB <= MM``): long q at EP 100, wallet
    ``q·(EP − 0.99·P)`` (35 digits, exact), mark P, so MB = MM to the last digit. (The control
    of the short case below.)"""
    mark = D("99.0000000000000000013")
    with localcontext(EXACT):
        wallet = EXACT_LP_QTY * (100 - mark * D("0.99"))
    leg = Leg.of(EXACT_LP_QTY, D(100), EXACT_LP_CONTRACT)
    assert Fraction(wallet) + unrealized_pnl_exact(leg, mark) == maintenance_margin_exact(leg, mark)
    engine = _engine_with(EXACT_LP_CONTRACT, EXACT_LP_QTY, D(100), wallet)
    assert [e["event"] for e in _tick(engine, "XUSDT", 3, str(mark))] == ["liquidation"]


def test_short_at_exactly_its_liquidation_price_is_liquidated() -> None:
    """Mirror of the control: short q at EP 100, wallet ``q·(1.01·P − EP)``, mark P, so
    ``W − q·(P − EP) = 0.01·q·P`` exactly. The engine liquidates: the short's uPnL is computed
    exactly (a uPnL rounded to 28 digits once left MB 1.6e-28 above MM, and gave a 0.9 warning
    with margin ratio 1.0 instead)."""
    mark = D("101.0000000000000000013")
    with localcontext(EXACT):
        wallet = EXACT_LP_QTY * (mark * D("1.01") - 100)
    engine = _engine_with(EXACT_LP_CONTRACT, -EXACT_LP_QTY, D(100), wallet)
    assert [e["event"] for e in _tick(engine, "XUSDT", 3, str(mark))] == ["liquidation"]
