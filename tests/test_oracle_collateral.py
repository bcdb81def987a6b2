"""The oracle's pools and funding (``tests/oracle.py``) on hand-computed examples and properties.

The oracle is the reference the engine is checked against (``test_oracle_collateral_agreement``),
so it is itself checked here against arithmetic done by hand from ``docs/collateral.md`` (each
docstring shows it) and against the properties the contract states: a pool holding only USDT at
price 1 and haircut 0 is the single-asset cross entity, a haircut never raises the margin
balance, funding between a long and a short of equal size is zero-sum, and at a pool position's
liquidation (bankruptcy) price MB = MM (MB = 0) exactly.
"""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import POOL, USD, Oracle, Outcome

F = Fraction
POOL_KEY = ("p", POOL, USD, "", "")


def line(**fields: Any) -> str:
    return json.dumps(fields)


def contract(
    symbol: str = "BTCUSDT",
    asset: str = "USDT",
    *,
    kind: str = "linear",
    size: str = "1",
    tiers: tuple[tuple[str, str, str, str], ...] = (("0", "1000000000", "0.01", "0"),),
) -> str:
    brackets = [{"floor": f, "cap": c, "mmr": m, "cum": k} for f, c, m, k in tiers]
    return line(
        type="contract",
        symbol=symbol,
        kind=kind,
        margin_asset=asset,
        contract_size=size,
        brackets=brackets,
    )


def balance(ts: int, asset: str, wallet: str, account: str = "p") -> str:
    return line(type="balance", ts=ts, account=account, asset=asset, wallet=wallet)


def position(
    ts: int,
    qty: str,
    entry: str,
    *,
    symbol: str = "BTCUSDT",
    side: str = "both",
    mode: str = "cross",
    account: str = "p",
    wallet: str | None = None,
) -> str:
    fields: dict[str, Any] = {
        "type": "position",
        "ts": ts,
        "account": account,
        "symbol": symbol,
        "side": side,
        "mode": mode,
        "qty": qty,
        "entry": entry,
        "leverage": "10",
    }
    if wallet is not None:
        fields["isolated_wallet"] = wallet
    return line(**fields)


def collateral(ts: int, asset: str, price: str, haircut: str) -> str:
    return line(type="collateral", ts=ts, asset=asset, price=price, haircut=haircut)


def mode(ts: int, multi: bool, account: str = "p") -> str:
    return line(type="asset_mode", ts=ts, account=account, multi_assets=multi)


def tick(
    ts: int, mark: str, symbol: str = "BTCUSDT", funding: tuple[str, int] | None = None
) -> str:
    fields: dict[str, Any] = {"type": "tick", "ts": ts, "symbol": symbol, "mark": mark}
    if funding is not None:
        fields["funding_rate"], fields["funding_ts"] = funding
    return line(**fields)


def run(lines: list[str], **options: Any) -> tuple[Oracle, list[Outcome]]:
    oracle = Oracle(**options)
    return oracle, [oracle.apply_line(x) for x in lines]


def events(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    return [e for o in outcomes for e in o.events]


# ---------------------------------------------------------------------------------------------
# Valuation, waiting for prices, liquidation


def test_a_pool_waits_for_every_price_then_warns_with_the_hand_computed_numbers() -> None:
    """Wallets USDT −27,700 and BTC 0.5, a long of 1 BTCUSDT at 60,000 (mmr 1 %, unmarked:
    valued at its entry). With only USDT priced the pool needs BTC too, so nothing happens;
    the BTC price (60,000, haircut 5 %) evaluates it at once, with that record's ts 5:

        E_USDT = −27,700 + 0 < 0   → v = −27,700 · 1        = −27,700
        E_BTC  = 0.5 ≥ 0           → v = 0.5 · 60,000 · 0.95 =  28,500
        MB = 800, MM = 60,000 · 0.01 · 1 = 600, ratio 0.75  → warning at 0.7

    Its liquidation price (BTC's value held at 28,500): on the branch E_USDT < 0,
    28,500 + (P − 87,700) − 0.01·P = 0 → P = 59,200 / 0.99 = 59,797.98 (< 87,700: consistent);
    the branch E_USDT ≥ 0 (haircut 0.0001 on) needs P ≥ 87,700 and is not. Bankruptcy:
    28,500 + P − 87,700 = 0 → P = 59,200."""
    _, out = run(
        [
            contract(),
            mode(1, True),
            balance(2, "USDT", "-27700"),
            balance(2, "BTC", "0.5"),
            collateral(3, "USDT", "1", "0.0001"),
            position(4, "1", "60000"),
            collateral(5, "BTC", "60000", "0.05"),
        ]
    )
    assert [o.status for o in out] == ["applied"] * 7
    assert events(out[:6]) == []
    assert out[6].events == [
        {
            "event": "margin_warning",
            "ts": 5,
            "account": "p",
            "scope": "pool",
            "asset": "USD",
            "margin_ratio": 0.75,
            "margin_balance": 800.0,
            "maintenance_margin": 600.0,
            "level": 0.7,
            "positions": [
                {
                    "symbol": "BTCUSDT",
                    "side": "both",
                    "qty": 1.0,
                    "entry": 60000.0,
                    "mark": 60000.0,
                    "liquidation_price": float(F(5920000, 99)),
                    "bankruptcy_price": 59200.0,
                }
            ],
        }
    ]


def test_a_collateral_crash_liquidates_a_pool_with_shortfall_and_clears_every_wallet() -> None:
    """The pool above; BTC's index falls to 50,000 (a collateral record, ts 6):

        v_BTC = 0.5 · 50,000 · 0.95 = 23,750;  MB = 23,750 − 27,700 = −3,950 ≤ MM = 600
        loss = the positive wallets at price, no haircut = 0.5 · 50,000 = 25,000
        shortfall = max(0, −MB) = 3,950;  margin_ratio null (MB ≤ 0)

    Under ``close`` the position goes and every wallet, the negative USDT one too, is 0."""
    oracle, out = run(
        [
            contract(),
            mode(1, True),
            balance(2, "USDT", "-27700"),
            balance(2, "BTC", "0.5"),
            collateral(3, "USDT", "1", "0.0001"),
            collateral(3, "BTC", "60000", "0.05"),
            position(4, "1", "60000"),
            collateral(6, "BTC", "50000", "0.05"),
        ]
    )
    (event,) = out[-1].events
    assert event["event"] == "liquidation"
    assert (event["ts"], event["scope"], event["asset"]) == (6, "pool", "USD")
    assert event["margin_ratio"] is None
    assert (event["margin_balance"], event["maintenance_margin"]) == (-3950.0, 600.0)
    assert (event["loss"], event["shortfall"]) == (25000.0, 3950.0)
    assert [p["symbol"] for p in event["positions"]] == ["BTCUSDT"]
    assert oracle.slots == {}
    assert oracle.wallets == {("p", "USDT"): 0, ("p", "BTC"): 0}


def test_a_tick_liquidates_a_pool_without_shortfall() -> None:
    """The warned pool of the first example, then a BTCUSDT mark of 59,500 (BTC's collateral
    price stays 60,000: the two are separate inputs):

        E_USDT = −27,700 − 500 = −28,200; MB = 28,500 − 28,200 = 300 ≤ MM = 595
        loss = 0.5 · 60,000 = 30,000 (the negative USDT wallet is no loss); shortfall 0."""
    _, out = run(
        [
            contract(),
            mode(1, True),
            balance(2, "USDT", "-27700"),
            balance(2, "BTC", "0.5"),
            collateral(3, "USDT", "1", "0.0001"),
            collateral(3, "BTC", "60000", "0.05"),
            position(4, "1", "60000"),
            tick(7, "59500"),
        ]
    )
    assert [e["event"] for e in events(out)] == ["margin_warning", "liquidation"]
    event = out[-1].events[0]
    assert (event["ts"], event["margin_balance"], event["maintenance_margin"]) == (7, 300.0, 595.0)
    assert event["margin_ratio"] == 595 / 300
    assert (event["loss"], event["shortfall"]) == (30000.0, 0.0)


def test_a_pool_under_hold_keeps_its_positions_and_wakes_on_a_balance_not_a_price() -> None:
    """Under ``hold`` the crash above emits one liquidation and keeps everything; a further
    collateral record (market data, like a tick: BTC 49,000) leaves it silent; a balance record
    of any of its assets wakes it: USDT −17,700 gives MB = 0.5 · 49,000 · 0.95 − 17,700 = 5,575,
    ratio 600 / 5,575 = 0.11, healthy and quiet; BTC at 30,000 then liquidates it again
    (MB = 14,250 − 17,700 = −3,450)."""
    oracle, out = run(
        [
            contract(),
            mode(1, True),
            balance(2, "USDT", "-27700"),
            balance(2, "BTC", "0.5"),
            collateral(3, "USDT", "1", "0.0001"),
            collateral(3, "BTC", "60000", "0.05"),
            position(4, "1", "60000"),
            collateral(6, "BTC", "50000", "0.05"),
            collateral(7, "BTC", "49000", "0.05"),
            balance(8, "USDT", "-17700"),
            collateral(9, "BTC", "30000", "0.05"),
        ],
        policy="hold",
    )
    assert [[e["event"] for e in o.events] for o in out[7:]] == [
        ["liquidation"],
        [],
        [],
        ["liquidation"],
    ]
    assert oracle.pool_numbers("p") == (F(30000) * F("0.95") / 2 - 17700, F(600))
    assert len(oracle.slots) == 1


# ---------------------------------------------------------------------------------------------
# Liquidation and bankruptcy prices: the haircut branch


def _pool(lines: list[str]) -> Oracle:
    oracle, out = run([contract(), mode(1, True), *lines])
    assert all(o.status == "applied" for o in out), out
    return oracle


def _prices(oracle: Oracle, symbol: str = "BTCUSDT") -> tuple[Fraction | None, Fraction | None]:
    members = oracle._members(POOL_KEY)
    return (
        oracle.solve_pool("p", members, symbol, maintenance=True),
        oracle.solve_pool("p", members, symbol, maintenance=False),
    )


def test_a_long_whose_liquidation_price_lies_where_the_haircut_is_off() -> None:
    """USDT wallet 1,000 at price 1 with a (hypothetical) haircut of 10 %, BTC 0.2 at 50,000
    (5 %, worth 9,500), long 1 BTCUSDT at 50,000, mmr 1 %. E_USDT(P) = P − 49,000.

        E ≥ 0:  0.9·(P − 49,000) + 9,500 = 0.01·P → P = 34,600 / 0.89 = 38,876  (< 49,000: no)
        E < 0:  (P − 49,000) + 9,500 = 0.01·P     → P = 39,500 / 0.99 = 39,899  (yes)
        bankruptcy, E < 0: P − 49,000 + 9,500 = 0 → P = 39,500 (E ≥ 0 gives 38,444: no)"""
    oracle = _pool(
        [
            collateral(2, "USDT", "1", "0.1"),
            collateral(2, "BTC", "50000", "0.05"),
            balance(3, "USDT", "1000"),
            balance(3, "BTC", "0.2"),
            position(4, "1", "50000"),
        ]
    )
    assert _prices(oracle) == (F(39500) / F("0.99"), F(39500))


def test_a_long_whose_liquidation_price_lies_where_the_haircut_is_on() -> None:
    """USDT wallet 20,000 (haircut 10 %) and nothing else, long 1 BTCUSDT at 50,000, mmr 1 %:
    E_USDT(P) = P − 30,000.

        E ≥ 0:  0.9·(P − 30,000) = 0.01·P → P = 27,000 / 0.89 = 30,337 (≥ 30,000: yes)
        E < 0:  P − 30,000 = 0.01·P       → P = 30,303               (< 30,000? no)
        bankruptcy: E = 0 at P = 30,000, which belongs to the branch E ≥ 0."""
    oracle = _pool(
        [
            collateral(2, "USDT", "1", "0.1"),
            balance(3, "USDT", "20000"),
            position(4, "1", "50000"),
        ]
    )
    assert _prices(oracle) == (F(27000) / F("0.89"), F(30000))


def test_a_short_solved_on_its_own_tier() -> None:
    """USDT 10,000 at price 1 (haircut 0), short 2 BTCUSDT at 50,000 with tiers mmr 1 % below a
    notional of 100,000 and 2 % (cum 1,000) above: E(P) = 10,000 − 2·(P − 50,000) = 110,000 − 2P.

        tier 1: 110,000 − 2P = 0.02·P        → P = 54,455.4, notional 108,911 (not < 100,000)
        tier 2: 110,000 − 2P = 0.04·P − 1,000 → P = 111,000 / 2.04 = 54,411.8, notional
                108,824 (≥ 100,000: yes)
        bankruptcy: 110,000 − 2P = 0 → P = 55,000"""
    oracle, out = run(
        [
            contract(
                tiers=(("0", "100000", "0.01", "0"), ("100000", "1000000000", "0.02", "1000"))
            ),
            mode(1, True),
            collateral(2, "USDT", "1", "0"),
            balance(3, "USDT", "10000"),
            position(4, "-2", "50000"),
        ]
    )
    assert all(o.status == "applied" for o in out)
    assert _prices(oracle) == (F(111000) / F("2.04"), F(55000))


def test_no_liquidation_price_for_a_long_backed_by_enough_other_collateral() -> None:
    """A long of 1 BTCUSDT at 50,000 with 2 BTC of collateral (95,000 USD after the haircut):
    MB(P) = 95,000 + P − 50,000 stays above 0.01·P for every P > 0, so both prices are null."""
    oracle = _pool(
        [
            collateral(2, "USDT", "1", "0.0001"),
            collateral(2, "BTC", "50000", "0.05"),
            balance(3, "BTC", "2"),
            position(4, "1", "50000"),
        ]
    )
    assert _prices(oracle) == (None, None)


def test_hedge_legs_of_a_pool_share_one_price() -> None:
    """A hedged pool (long 3, short 1 BTCUSDT, both at 50,000; USDT 4,000, haircut 0) moves both
    legs together: E(P) = 4,000 + 2·(P − 50,000), MM = 0.01·(3 + 1)·P.

        MB = MM: 2P − 96,000 = 0.04·P → P = 96,000 / 1.96 = 48,979.6;  MB = 0: P = 48,000

    At 49,500 MB = 3,000 and MM = 1,980 (ratio 0.66: quiet); at 49,100 MB = 2,200 and
    MM = 1,964 (0.893): one warning at 0.8, both legs showing the one price."""
    oracle, out = run(
        [
            contract(),
            mode(1, True),
            collateral(2, "USDT", "1", "0"),
            balance(3, "USDT", "4000"),
            position(4, "3", "50000", side="long"),
            position(4, "-1", "50000", side="short"),
            tick(5, "49500"),
            tick(6, "49100"),
        ]
    )
    (warning,) = events(out)
    assert (warning["ts"], warning["level"]) == (6, 0.8)
    assert (warning["margin_balance"], warning["maintenance_margin"]) == (2200.0, 1964.0)
    lp = float(F(96000) / F("1.96"))
    assert [
        (p["side"], p["liquidation_price"], p["bankruptcy_price"]) for p in warning["positions"]
    ] == [
        ("long", lp, 48000.0),
        ("short", lp, 48000.0),
    ]
    assert _prices(oracle) == (F(96000) / F("1.96"), F(48000))


# ---------------------------------------------------------------------------------------------
# Switching modes


def test_switching_modes_forgets_the_old_entity_and_evaluates_the_new_one_at_once() -> None:
    """A cross account (USDT 800, long 1 BTCUSDT at 60,000: MM 600, ratio 0.75) warns at 0.7.
    ``asset_mode`` true forgets that entity without an event; its pool needs a USDT price and
    waits; the price (1, haircut 0) evaluates it: the same numbers, a new warning, scope pool.
    Repeating the mode does nothing; ``false`` gives the cross entity back, evaluated at once
    from no level: a new cross warning at the switch's ts."""
    _, out = run(
        [
            contract(),
            balance(1, "USDT", "800"),
            position(2, "1", "60000"),
            mode(3, True),
            collateral(4, "USDT", "1", "0"),
            mode(5, True),
            mode(6, False),
        ]
    )
    assert [o.status for o in out] == ["applied"] * 5 + ["noop", "applied"]
    got = [(e["event"], e["ts"], e["scope"], e["asset"], e["margin_ratio"]) for e in events(out)]
    assert got == [
        ("margin_warning", 2, "cross", "USDT", 0.75),
        ("margin_warning", 4, "pool", "USD", 0.75),
        ("margin_warning", 6, "cross", "USDT", 0.75),
    ]


def test_an_account_without_positions_switches_freely_and_has_no_entity() -> None:
    """No position, no entity: switching on and off is applied and emits nothing, and a
    collateral record finds no pool to evaluate."""
    oracle, out = run([mode(1, True), balance(2, "BTC", "1"), collateral(3, "BTC", "1", "0")])
    assert [o.status for o in out] == ["applied"] * 3
    assert events(out) == []
    assert oracle.apply_line(mode(4, False)).status == "applied"


def test_a_pool_of_usdt_and_usdc_contracts_values_each_in_its_own_asset() -> None:
    """USDT- and USDC-margined contracts share one pool. USDT 300 (price 1, haircut 0.0001),
    USDC 1,500 (price 0.9998, haircut 0.0001); long 1 BTCUSDT at 50,000 marked 50,000, then
    short 10 ETHUSDC at 2,500 marked 2,600 (uPnL −1,000 USDC):

        E_USDT = 300              → v = 300 · 0.9999                   = 299.97
        E_USDC = 1,500 − 1,000    → v = 500 · 0.9998 · 0.9999          = 499.85001
        MM = 50,000 · 0.01 · 1 + 26,000 · 0.01 · 0.9998 = 500 + 259.948 = 759.948
        MB = 799.82001, ratio 0.9502 → warning at 0.9 (the first position alone: 0.28)"""
    _, out = run(
        [
            contract(),
            contract("ETHUSDC", "USDC"),
            tick(1, "50000"),
            tick(1, "2600", "ETHUSDC"),
            mode(1, True),
            collateral(2, "USDT", "1", "0.0001"),
            collateral(2, "USDC", "0.9998", "0.0001"),
            balance(3, "USDT", "300"),
            balance(3, "USDC", "1500"),
            position(4, "1", "50000"),
            position(5, "-10", "2500", symbol="ETHUSDC"),
        ]
    )
    assert events(out[:-1]) == []
    (event,) = out[-1].events
    mb = F("299.97") + F("499.85001")
    mm = F("759.948")
    assert (event["event"], event["level"]) == ("margin_warning", 0.9)
    assert (event["margin_balance"], event["maintenance_margin"]) == (float(mb), float(mm))
    assert event["margin_ratio"] == float(mm / mb)
    assert [p["symbol"] for p in event["positions"]] == ["BTCUSDT", "ETHUSDC"]


# ---------------------------------------------------------------------------------------------
# Rejections: nothing changes


REJECTED = {
    "isolated position": position(5, "1", "60000", mode="isolated", wallet="100"),
    "isolated close of an empty slot": position(5, "0", "60000", mode="isolated"),
    "inverse position": position(5, "10", "60000", symbol="BTCUSD_PERP"),
    "inverse close of an empty slot": position(5, "0", "60000", symbol="BTCUSD_PERP"),
    "collateral price 0": collateral(5, "BTC", "0", "0.05"),
    "collateral price below 0": collateral(5, "BTC", "-60000", "0.05"),
    "haircut 1": collateral(5, "BTC", "60000", "1"),
    "haircut above 1": collateral(5, "BTC", "60000", "1.5"),
    "haircut below 0": collateral(5, "BTC", "60000", "-0.01"),
    "margin on a pool position": line(
        type="margin", ts=5, account="p", symbol="BTCUSDT", side="both", delta="10"
    ),
    "account_update with an isolated position": line(
        type="account_update",
        ts=5,
        account="p",
        balances=[{"asset": "USDT", "wallet": "5"}],
        positions=[
            {
                "symbol": "ETHUSDT",
                "side": "both",
                "mode": "isolated",
                "qty": "1",
                "entry": "2500",
                "leverage": "10",
                "isolated_wallet": "100",
            }
        ],
    ),
    "account_snapshot with an inverse position": line(
        type="account_snapshot",
        ts=5,
        account="p",
        balances=[],
        positions=[
            {
                "symbol": "BTCUSD_PERP",
                "side": "both",
                "mode": "cross",
                "qty": "1",
                "entry": "60000",
                "leverage": "10",
            }
        ],
    ),
}


def _pool_state() -> Oracle:
    oracle, out = run(
        [
            contract(),
            contract("ETHUSDT"),
            contract("BTCUSD_PERP", "BTC", kind="inverse", size="100"),
            mode(1, True),
            collateral(2, "USDT", "1", "0.0001"),
            collateral(2, "BTC", "60000", "0.05"),
            balance(3, "USDT", "800"),
            position(4, "1", "60000"),
        ]
    )
    assert all(o.status == "applied" for o in out)
    return oracle


@pytest.mark.parametrize("record", REJECTED.values(), ids=REJECTED.keys())
def test_every_rejection_of_collateral_md_changes_nothing(record: str) -> None:
    """A pool account (USDT 800, long 1 BTCUSDT) refuses isolated and inverse positions (a close
    of an empty slot included), a ``margin`` record, account records listing such a position;
    ``collateral`` refuses a price ≤ 0 and a haircut outside [0, 1). The state is untouched."""
    oracle = _pool_state()
    before = copy.deepcopy(vars(oracle))
    outcome = oracle.apply_line(record)
    assert (outcome.status, outcome.events) == ("rejected", [])
    assert vars(oracle) == before


@pytest.mark.parametrize(
    "opened",
    [
        position(2, "1", "60000", mode="isolated", wallet="100"),
        position(2, "10", "60000", symbol="BTCUSD_PERP"),
    ],
    ids=["isolated", "inverse"],
)
def test_multi_assets_mode_is_refused_while_an_isolated_or_inverse_position_is_open(
    opened: str,
) -> None:
    """``asset_mode`` true is rejected while the account holds an isolated or an inverse
    position (kept open by ``hold``, though liquidated), and accepted once it is closed."""
    oracle, _ = run(
        [contract(), contract("BTCUSD_PERP", "BTC", kind="inverse", size="100"), opened],
        policy="hold",
    )
    before = copy.deepcopy(vars(oracle))
    assert oracle.apply_line(mode(3, True)).status == "rejected"
    assert vars(oracle) == before
    closing = json.loads(opened) | {"ts": 4, "qty": "0"}
    assert oracle.apply_line(json.dumps(closing)).status == "applied"
    assert oracle.apply_line(mode(5, True)).status == "applied"


def test_haircut_bounds_zero_and_just_below_one_are_accepted() -> None:
    """The haircut interval is [0, 1): 0 and 0.9999 are valid."""
    oracle = Oracle()
    assert oracle.apply_line(collateral(1, "BTC", "60000", "0")).status == "applied"
    assert oracle.apply_line(collateral(1, "BTC", "60000", "0.9999")).status == "applied"
    assert oracle.collateral["BTC"] == (F(60000), F("0.9999"))


def test_a_multi_balance_account_update_applies_atomically_to_a_pool() -> None:
    """Binance's multi-assets ACCOUNT_UPDATE carries several wallets at once. USDT 800 backs a
    long (MM 600, ratio 0.75: warned). One update moves USDT to −27,700 and adds BTC 0.5 (worth
    28,500): one evaluation of the final state, MB = 800 again, so no event. Applied as two
    balance records, the first alone (MB = −27,700) would liquidate."""
    prefix = [
        contract(),
        mode(1, True),
        collateral(2, "USDT", "1", "0.0001"),
        collateral(2, "BTC", "60000", "0.05"),
        balance(3, "USDT", "800"),
        position(4, "1", "60000"),
    ]
    update = line(
        type="account_update",
        ts=5,
        account="p",
        balances=[{"asset": "USDT", "wallet": "-27700"}, {"asset": "BTC", "wallet": "0.5"}],
        positions=[],
    )
    oracle, out = run([*prefix, update])
    assert [e["event"] for e in events(out)] == ["margin_warning"]
    assert oracle.pool_numbers("p") == (F(800), F(600))
    _, apart = run([*prefix, balance(5, "USDT", "-27700"), balance(5, "BTC", "0.5")])
    assert [e["event"] for e in events(apart)] == ["margin_warning", "liquidation"]


def test_a_snapshot_replaces_the_pool_account_and_a_stale_one_is_rejected() -> None:
    """A pool account with USDT 800 and BTC 0.5 behind long 1 BTCUSDT and short 1 ETHUSDT gets
    a snapshot listing USDT 900 and the BTCUSDT long only: BTC becomes 0, the ETHUSDT short is
    closed, one evaluation (MB = 900 · 0.9999 = 899.91, MM 600: ratio 0.667, quiet). A snapshot
    older than it is rejected; one of the same ts is applied."""
    snapshot = {
        "type": "account_snapshot",
        "account": "p",
        "balances": [{"asset": "USDT", "wallet": "900"}],
        "positions": [
            {
                "symbol": "BTCUSDT",
                "side": "both",
                "mode": "cross",
                "qty": "1",
                "entry": "60000",
                "leverage": "10",
            }
        ],
    }
    oracle, out = run(
        [
            contract(),
            contract("ETHUSDT"),
            mode(1, True),
            collateral(2, "USDT", "1", "0.0001"),
            collateral(2, "BTC", "60000", "0.05"),
            balance(3, "USDT", "800"),
            balance(3, "BTC", "0.5"),
            position(4, "1", "60000"),
            position(4, "-1", "2500", symbol="ETHUSDT"),
            json.dumps({**snapshot, "ts": 10}),
            json.dumps({**snapshot, "ts": 9}),
            json.dumps({**snapshot, "ts": 10}),
        ]
    )
    assert [o.status for o in out[-3:]] == ["applied", "rejected", "applied"]
    assert events(out[-3:]) == []
    assert oracle.wallets == {("p", "USDT"): 900, ("p", "BTC"): 0}
    assert list(oracle.slots) == [("p", "BTCUSDT", "both")]
    assert oracle.pool_numbers("p") == (900 * F("0.9999"), F(600))


# ---------------------------------------------------------------------------------------------
# Funding


def _funding_lines() -> list[str]:
    return [
        contract(),
        balance(1, "USDT", "10000", account="long"),
        balance(1, "USDT", "10000", account="short"),
        position(2, "2", "50000", account="long"),
        position(2, "-2", "50000", account="short"),
        tick(100, "50000", funding=("0.0001", 1000)),
        tick(500, "50500", funding=("0.0002", 1000)),
        tick(400, "10", funding=("0.05", 450)),  # stale: dropped, neither settles nor stores
        tick(1000, "51000", funding=("0.0003", 2000)),
        tick(1000, "51000", funding=("0.0003", 2000)),  # equal ts: applied; 1000 is settled
        tick(2500, "52000"),
    ]


def test_funding_settles_the_stored_pair_on_the_first_due_tick_once() -> None:
    """Long 2 BTCUSDT (wallet 10,000). The pair (0.0001, 1000) is replaced by (0.0002, 1000); a
    stale tick is dropped and changes nothing; the tick at ts 1000 (mark 51,000) settles the
    stored pair before storing its own: 2 · 51,000 · 0.0002 = 20.4 paid; its twin at the same
    ts settles nothing more (ts 1000 is settled); the tick at 2500 settles (0.0003, 2000) at
    52,000: 2 · 52,000 · 0.0003 = 31.2. The long pays 51.6, the short of equal size is paid
    51.6, and the asset's total is 0."""
    oracle, out = run(_funding_lines(), funding=True)
    assert [o.status for o in out] == ["applied"] * 7 + ["dropped"] + ["applied"] * 3
    assert oracle.wallets[("long", "USDT")] == 10000 - F("51.6")
    assert oracle.wallets[("short", "USDT")] == 10000 + F("51.6")
    assert oracle.position_funding() == {
        ("long", "BTCUSDT", "both"): F("-51.6"),
        ("short", "BTCUSDT", "both"): F("51.6"),
    }
    assert oracle.funding_by_asset == {"USDT": 0}
    assert oracle.settled == {("BTCUSDT", 1000), ("BTCUSDT", 2000)}


def test_a_funding_ts_settles_once_even_when_later_ticks_repeat_it() -> None:
    """A feed that keeps sending the funding time just passed (the pair (0.001, 1000) on the
    ticks at 1000 and 1200) settles it once: long 1 at mark 100 pays 100 · 0.001 = 0.1, not
    0.3; a new funding time (2000) settles again on its first due tick: 0.1 more."""
    oracle, _ = run(
        [
            contract(),
            balance(1, "USDT", "1000"),
            position(1, "1", "100"),
            tick(500, "100", funding=("0.001", 1000)),
            tick(1000, "100", funding=("0.001", 1000)),
            tick(1200, "100", funding=("0.001", 1000)),
            tick(1300, "100", funding=("0.001", 2000)),
            tick(2000, "100"),
            tick(2100, "100"),
        ],
        funding=True,
    )
    assert oracle.wallets[("p", "USDT")] == F("999.8")
    assert oracle.settled == {("BTCUSDT", 1000), ("BTCUSDT", 2000)}


def test_without_funding_the_fields_are_ignored() -> None:
    """The same lines with funding off: no wallet moves."""
    oracle, _ = run(_funding_lines())
    assert oracle.wallets == {("long", "USDT"): 10000, ("short", "USDT"): 10000}
    assert oracle.funding_by_asset == {}


def test_inverse_isolated_funding_goes_to_the_isolated_wallet() -> None:
    """Short 100 BTCUSD_PERP (CS 100) isolated with 0.1 BTC: at mark 40,000 its notional is
    100 · 100 / 40,000 = 0.25 BTC; at rate 0.0001 it pays s·N·rate = −0.25 · 0.0001, i.e. it
    receives 0.000025 BTC into its isolated wallet; the account's cross wallet is untouched."""
    oracle, out = run(
        [
            contract("BTCUSD_PERP", "BTC", kind="inverse", size="100"),
            position(1, "-100", "50000", symbol="BTCUSD_PERP", mode="isolated", wallet="0.1"),
            tick(10, "41000", "BTCUSD_PERP", funding=("0.0001", 20)),
            tick(20, "40000", "BTCUSD_PERP"),
        ],
        funding=True,
    )
    assert all(o.status == "applied" for o in out)
    pos = oracle.slots[("p", "BTCUSD_PERP", "both")]
    assert pos.isolated_wallet == F("0.100025")
    assert pos.funding == F("0.000025")
    assert oracle.wallets == {}
    assert oracle.funding_by_asset == {"BTC": F("0.000025")}


def test_funding_and_the_move_are_one_evaluation() -> None:
    """USDT 720 behind long 1 BTCUSDT at 50,000 (MM 500, ratio 0.694: no warning). The settling
    tick leaves the mark at 50,000 and charges 50,000 · 0.0004 = 20: wallet 700, ratio 0.714 →
    one warning at that tick's ts, with MB 700 (the funding already booked)."""
    _, out = run(
        [
            contract(),
            balance(1, "USDT", "720"),
            position(1, "1", "50000"),
            tick(2, "50000", funding=("0.0004", 10)),
            tick(10, "50000"),
        ],
        funding=True,
    )
    assert events(out[:4]) == []
    (warning,) = out[4].events
    assert (warning["event"], warning["ts"], warning["margin_balance"]) == (
        "margin_warning",
        10,
        700.0,
    )


def test_funding_is_paid_from_a_pool_wallet_of_the_margin_asset() -> None:
    """A pool's USDC contract pays its funding from the account's USDC wallet: short 10 ETHUSDC
    at mark 2,500, rate −0.001 (shorts pay): 10 · 2,500 · 0.001 = 25 USDC."""
    oracle, _ = run(
        [
            contract("ETHUSDC", "USDC"),
            mode(1, True),
            collateral(1, "USDC", "1", "0.0001"),
            balance(1, "USDC", "5000"),
            balance(1, "USDT", "100"),
            collateral(1, "USDT", "1", "0.0001"),
            position(2, "-10", "2500", symbol="ETHUSDC"),
            tick(3, "2500", "ETHUSDC", funding=("-0.001", 4)),
            tick(4, "2500", "ETHUSDC"),
        ],
        funding=True,
    )
    assert oracle.wallets == {("p", "USDC"): 4975, ("p", "USDT"): 100}


def test_funding_still_settles_into_a_liquidating_entity_under_hold() -> None:
    """Under ``hold`` a liquidated cross entity (USDT 400 behind long 1 at 50,000: MB ≤ MM 500)
    is silent, but its wallet still pays: 50,000 · 0.001 = 50 → 350, no event. The next
    position record wakes it and the liquidation it reports has MB 350."""
    oracle, out = run(
        [
            contract(),
            balance(1, "USDT", "400"),
            position(1, "1", "50000"),
            tick(2, "50000", funding=("0.001", 3)),
            tick(3, "50000"),
            position(4, "1", "50000"),
        ],
        policy="hold",
        funding=True,
    )
    assert [[e["event"] for e in o.events] for o in out[2:]] == [
        ["liquidation"],
        [],
        [],
        ["liquidation"],
    ]
    assert oracle.wallets[("p", "USDT")] == 350
    assert out[-1].events[0]["margin_balance"] == 350.0


def test_a_malformed_funding_pair_is_a_malformed_tick() -> None:
    """``funding_rate`` without ``funding_ts`` (or the reverse, or a bad value) refuses the
    line as malformed, funding on or off."""
    for fields in (
        {"funding_rate": "0.1"},
        {"funding_ts": 5},
        {"funding_rate": "x", "funding_ts": 5},
    ):
        bad = line(type="tick", ts=1, symbol="BTCUSDT", mark="1", **fields)
        for funding in (False, True):
            _, (_, out) = run([contract(), bad], funding=funding)
            assert out.status == "malformed"


# ---------------------------------------------------------------------------------------------
# Properties

MONEY = st.integers(-(10**6), 10**6).map(lambda n: F(n, 100))
PRICE = st.integers(1, 10**6).map(lambda n: F(n, 10))
QTY = st.integers(-1000, 1000).filter(bool).map(lambda n: F(n, 100))
HAIRCUT = st.integers(0, 9999).map(lambda n: F(n, 10000))


def _text(x: Fraction) -> str:
    """An exact decimal text of a Fraction whose denominator divides a power of 10."""
    whole, digits = divmod(abs(x.numerator) * 10**12 // x.denominator, 10**12)
    return f"{'-' if x < 0 else ''}{whole}.{digits:012d}"


TIERS = (("0", "100000", "0.01", "0"), ("100000", "1000000000000", "0.025", "1500"))
# per symbol: absent, one-way (qty), or hedged (long qty, short qty)
STYLE = st.one_of(
    st.none(),
    st.tuples(st.just("both"), QTY),
    st.tuples(st.just("hedge"), QTY.map(abs), QTY.map(abs)),
)


def _positions(symbols: tuple[str, ...], styles: list[Any]) -> list[str]:
    out = []
    for symbol, style in zip(symbols, styles, strict=True):
        if style is None:
            continue
        if style[0] == "both":
            out.append(position(2, _text(style[1]), "1000", symbol=symbol))
        else:
            out.append(position(2, _text(style[1]), "1000", symbol=symbol, side="long"))
            out.append(position(2, _text(-style[2]), "1000", symbol=symbol, side="short"))
    return out


def _book(styles: list[Any], wallet: Fraction, marks: list[Fraction]) -> list[str]:
    """Two USDT contracts, a USDT wallet, positions, then marks alternating between them."""
    out = [
        contract("XUSDT", tiers=TIERS),
        contract("YUSDT", tiers=TIERS),
        balance(1, "USDT", _text(wallet)),
        *_positions(("XUSDT", "YUSDT"), styles),
    ]
    out.extend(tick(10 + i, _text(m), ("XUSDT", "YUSDT")[i % 2]) for i, m in enumerate(marks))
    return out


@settings(max_examples=60, deadline=None)
@given(
    styles=st.lists(STYLE, min_size=2, max_size=2).filter(any),
    wallet=st.integers(0, 10**6).map(lambda n: F(n, 100)),
    marks=st.lists(st.integers(500, 1500).map(lambda n: F(n)), max_size=6),
    policy=st.sampled_from(["close", "hold"]),
)
def test_a_usdt_pool_at_price_1_and_haircut_0_is_the_cross_entity(
    styles: list[Any], wallet: Fraction, marks: list[Fraction], policy: str
) -> None:
    """The same account run in single-asset mode and as a pool holding only USDT at price 1,
    haircut 0 gives the same events with the same numbers (liquidation and bankruptcy prices
    included), scope and asset aside. (With a wallet ≥ 0: a cross entity's ``loss`` is its
    whole wallet even when negative, a pool's is the value of its positive wallets.)"""
    book = _book(styles, wallet, marks)
    _, single = run(book, policy=policy, levels="0.3,0.6,0.9")
    _, pooled = run(
        [mode(0, True), collateral(0, "USDT", "1", "0"), *book], policy=policy, levels="0.3,0.6,0.9"
    )
    want = [e | {"scope": "pool", "asset": "USD"} for e in events(single)]
    assert events(pooled) == want


def _multi_book(wallets: dict[str, Fraction], styles: list[Any], mark: Fraction) -> Oracle:
    """A pool with USDT, USDC and BTC wallets (any sign), positions in a USDT contract (marked
    at ``mark``) and a USDC one (unmarked), haircuts 0 (the tests set them); under ``hold`` so
    that a liquidation leaves the book as it is."""
    lines = [
        contract("XUSDT", tiers=TIERS),
        contract("YUSDC", "USDC", tiers=TIERS),
        mode(0, True),
        *(balance(1, asset, _text(w)) for asset, w in wallets.items()),
        collateral(1, "USDT", "1", "0"),
        collateral(1, "USDC", "0.9998", "0"),
        collateral(1, "BTC", "60000", "0"),
        *_positions(("XUSDT", "YUSDC"), styles),
        tick(3, _text(mark), "XUSDT"),
    ]
    oracle, out = run(lines, policy="hold")
    assert all(o.status == "applied" for o in out)
    return oracle


WALLETS = st.fixed_dictionaries(
    {"USDT": MONEY, "USDC": MONEY, "BTC": MONEY.map(lambda x: x / 1000)}
)
POOL_STYLES = st.lists(STYLE, min_size=2, max_size=2).filter(any)


@settings(max_examples=80, deadline=None)
@given(
    wallets=WALLETS,
    styles=POOL_STYLES,
    mark=st.integers(500, 1500).map(F),
    low=st.tuples(HAIRCUT, HAIRCUT, HAIRCUT),
    extra=st.tuples(HAIRCUT, HAIRCUT, HAIRCUT),
)
def test_a_haircut_never_raises_the_margin_balance(
    wallets: dict[str, Fraction],
    styles: list[Any],
    mark: Fraction,
    low: tuple[Fraction, ...],
    extra: tuple[Fraction, ...],
) -> None:
    """Raising any haircut (from ``low`` towards 1 by ``extra``) never raises MB, and MB never
    exceeds the unhaircut value Σ E_a · price_a; MM does not depend on haircuts."""
    oracle = _multi_book(wallets, styles, mark)
    assets = ("USDT", "USDC", "BTC")

    def numbers(haircuts: tuple[Fraction, ...]) -> tuple[Fraction, Fraction]:
        for asset, h in zip(assets, haircuts, strict=True):
            oracle.collateral[asset] = (oracle.collateral[asset][0], h)
        got = oracle.pool_numbers("p")
        assert got is not None
        return got

    high = tuple(h + (1 - h) * e for h, e in zip(low, extra, strict=True))
    zero_mb, zero_mm = numbers((F(0),) * 3)
    low_mb, low_mm = numbers(low)
    high_mb, high_mm = numbers(high)
    assert high_mb <= low_mb <= zero_mb
    assert zero_mm == low_mm == high_mm


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(["linear", "inverse"]),
    qty=st.integers(1, 10**5),
    mark=PRICE,
    rate=st.integers(-(10**5), 10**5).map(lambda n: F(n, 10**7)),
    hedge=st.booleans(),
)
def test_funding_is_zero_sum_between_a_long_and_a_short_of_equal_size(
    kind: str, qty: int, mark: Fraction, rate: Fraction, hedge: bool
) -> None:
    """A long and a short of the same size in the same symbol (two accounts, or the two hedge
    legs of one) pay and receive exactly opposite amounts, s·N(P)·rate each."""
    symbol, asset = ("XUSDT", "USDT") if kind == "linear" else ("XUSD_PERP", "X")
    accounts = ("a", "a") if hedge else ("a", "b")
    sides = ("long", "short") if hedge else ("both", "both")
    oracle, out = run(
        [
            contract(symbol, asset, kind=kind, size="1" if kind == "linear" else "10"),
            position(1, str(qty), "100", symbol=symbol, side=sides[0], account=accounts[0]),
            position(1, str(-qty), "100", symbol=symbol, side=sides[1], account=accounts[1]),
            tick(2, _text(mark), symbol, funding=(_text(rate), 3)),
            tick(3, _text(mark), symbol),
        ],
        funding=True,
        policy="hold",
    )
    assert all(o.status == "applied" for o in out)
    paid = oracle.position_funding()
    long_side, short_side = (
        paid[(accounts[0], symbol, sides[0])],
        paid[(accounts[1], symbol, sides[1])],
    )
    notional = qty * mark if kind == "linear" else F(qty * 10) / mark
    assert long_side == -notional * rate
    assert long_side + short_side == 0
    assert oracle.funding_by_asset == {asset: 0}


@settings(max_examples=80, deadline=None)
@given(wallets=WALLETS, styles=POOL_STYLES, mark=st.integers(500, 1500).map(F), haircut=HAIRCUT)
def test_at_a_pool_liquidation_price_mb_equals_mm_and_at_its_bankruptcy_price_mb_is_zero(
    wallets: dict[str, Fraction], styles: list[Any], mark: Fraction, haircut: Fraction
) -> None:
    """Whatever the wallets (of any sign) and the haircut, each pool symbol's solved prices are
    exact roots: with the mark moved there (everything else held), MB = MM, resp. MB = 0."""
    oracle = _multi_book(wallets, styles, mark)
    for asset in ("USDT", "USDC", "BTC"):
        oracle.collateral[asset] = (oracle.collateral[asset][0], haircut)
    members = oracle._members(POOL_KEY)
    for symbol in sorted({p.symbol for p in members}):
        saved = oracle.marks.get(symbol)
        for maintenance in (True, False):
            price = oracle.solve_pool("p", members, symbol, maintenance=maintenance)
            if price is None:
                continue
            oracle.marks[symbol] = (0, price)
            numbers = oracle.pool_numbers("p")
            assert numbers is not None
            mb, mm = numbers
            assert mb == (mm if maintenance else 0)
            if saved is None:
                del oracle.marks[symbol]
            else:
                oracle.marks[symbol] = saved
