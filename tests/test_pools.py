"""Multi-asset pools and funding in the engine (docs/collateral.md): the rejection rules, the
properties the contract implies, and the trigger index routing pools exactly like a full
re-evaluation of every holder on every tick and every collateral price."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.naive import NaiveEngine
from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, RecordRefused, RecordRejected, to_payload
from monitor.events import EngineEvent, EntityRef
from monitor.records import Record

D = Decimal


def record(**fields: Any) -> Record:
    return parse_line(json.dumps(fields))


def contract(symbol: str, asset: str, kind: str = "linear", mmr: str = "0.01") -> Record:
    size = "100" if kind == "inverse" else "1"
    return record(
        type="contract",
        symbol=symbol,
        kind=kind,
        margin_asset=asset,
        contract_size=size,
        brackets=[
            {"floor": "0", "cap": "50000", "mmr": mmr, "cum": "0"},
            {"floor": "50000", "cap": "1e12", "mmr": str(D(mmr) * 2), "cum": str(D(mmr) * 50000)},
        ],
    )


def collateral(ts: int, asset: str, price: str, haircut: str = "0") -> Record:
    return record(type="collateral", ts=ts, asset=asset, price=price, haircut=haircut)


def mode(ts: int, account: str, on: bool) -> Record:
    return record(type="asset_mode", ts=ts, account=account, multi_assets=on)


def position(
    ts: int, account: str, symbol: str, qty: str, entry: str, mode: str = "cross", **extra: Any
) -> Record:
    return record(
        type="position",
        ts=ts,
        account=account,
        symbol=symbol,
        side="both",
        mode=mode,
        qty=qty,
        entry=entry,
        leverage="10",
        **extra,
    )


def balance(ts: int, account: str, asset: str, wallet: str) -> Record:
    return record(type="balance", ts=ts, account=account, asset=asset, wallet=wallet)


def tick(ts: int, symbol: str, mark: str, **funding: Any) -> Record:
    return record(type="tick", ts=ts, symbol=symbol, mark=mark, **funding)


def feed(engine: Engine, records: list[Record]) -> list[Any]:
    out: list[Any] = []
    for item in records:
        try:
            out.append([_plain(e) for e in engine.apply(item)])
        except RecordRefused as exc:
            out.append(("refused", exc.reason))
    return out


def _plain(event: EngineEvent) -> Any:
    return to_payload(event) if hasattr(event, "id") else event  # type: ignore[arg-type]


BASE = [
    contract("BTCUSDT", "USDT"),
    contract("ETHUSDC", "USDC"),
    contract("BTCUSD_PERP", "BTC", kind="inverse"),
    collateral(1, "USDT", "1", "0.0001"),
    collateral(1, "USDC", "1", "0.0001"),
    collateral(1, "BTC", "60000", "0.05"),
]


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "refused", "reason"),
    [
        (
            [mode(2, "a", True)],
            position(3, "a", "BTCUSDT", "1", "60000", "isolated", isolated_wallet="100"),
            "multi_assets_isolated",
        ),
        (
            [mode(2, "a", True)],
            position(3, "a", "BTCUSDT", "0", "60000", "isolated"),
            "multi_assets_isolated",
        ),
        (
            [mode(2, "a", True)],
            position(3, "a", "BTCUSD_PERP", "10", "60000"),
            "multi_assets_inverse",
        ),
        (
            [position(2, "a", "BTCUSDT", "1", "60000", "isolated", isolated_wallet="900")],
            mode(3, "a", True),
            "multi_assets_refused",
        ),
        (
            [position(2, "a", "BTCUSD_PERP", "10", "60000")],
            mode(3, "a", True),
            "multi_assets_refused",
        ),
        ([], collateral(3, "ETH", "0", "0.05"), "invalid_collateral_price"),
        ([], collateral(3, "ETH", "-1", "0.05"), "invalid_collateral_price"),
        ([], collateral(3, "ETH", "3000", "1"), "invalid_haircut"),
        ([], collateral(3, "ETH", "3000", "-0.01"), "invalid_haircut"),
    ],
)
def test_each_rejection_has_its_reason_and_changes_nothing(
    before: list[Record], refused: Record, reason: str
) -> None:
    """Every rule of docs/collateral.md §4 refuses with its reason, and the engine is left
    exactly as if the record had never come (the same events afterwards)."""
    engine, control = Engine(), Engine()
    for e in (engine, control):
        feed(e, [*BASE, balance(1, "a", "USDT", "5000"), balance(1, "a", "BTC", "1"), *before])
    with pytest.raises(RecordRejected) as caught:
        engine.apply(refused)
    assert caught.value.reason == reason
    after = [tick(10, "BTCUSDT", "55000"), tick(11, "BTCUSD_PERP", "50000")]
    assert feed(engine, after) == feed(control, after)


def test_a_pool_waits_for_every_price_it_needs_then_is_evaluated_at_once() -> None:
    """A pool whose wallet is in an asset without a price emits nothing; the price's record
    evaluates it at once, with that record's ts."""
    engine = Engine()
    feed(engine, [*BASE, mode(2, "a", True), balance(3, "a", "ETH", "1")])
    events = feed(engine, [position(4, "a", "BTCUSDT", "1", "60000"), tick(5, "BTCUSDT", "51000")])
    assert events == [[], []]  # waiting for ETH
    (out,) = feed(engine, [collateral(6, "ETH", "2000", "0.05")])
    assert [(e["event"], e["ts"], e["scope"], e["asset"]) for e in out] == [
        ("liquidation", 6, "pool", "USD")
    ]


def test_switching_modes_forgets_the_old_entities_and_evaluates_the_new_ones() -> None:
    """Cross entities per asset become one pool and back, with no event for the switch
    itself; a warned entity's level does not carry over; repeating a mode does nothing."""
    engine = Engine()
    feed(engine, [*BASE, balance(2, "a", "USDT", "1350"), balance(2, "a", "USDC", "5000")])
    feed(
        engine,
        [position(3, "a", "BTCUSDT", "1", "60000"), position(3, "a", "ETHUSDC", "1", "3000")],
    )
    (warned,) = feed(engine, [tick(4, "BTCUSDT", "59600")])
    assert [(e["event"], e["asset"]) for e in warned] == [("margin_warning", "USDT")]
    (switched,) = feed(engine, [mode(5, "a", True)])
    assert switched == []  # the pool (ratio ~0.1: the USDC wallet backs it) is calm
    assert engine.entity(EntityRef("a", "pool", "USD")) is not None
    assert engine.entity(EntityRef("a", "cross", "USDT")) is None
    assert feed(engine, [mode(6, "a", True)]) == [[]]
    (back,) = feed(engine, [mode(7, "a", False)])
    assert [(e["event"], e["asset"]) for e in back] == [("margin_warning", "USDT")]


def test_a_pool_liquidation_claims_every_wallet_and_loses_their_value() -> None:
    """Under close, a liquidated pool's positions go and every wallet of the account becomes
    0 (negative ones too); loss is the positive wallets at their prices, no haircut."""
    engine = Engine()
    feed(engine, BASE)
    outcomes = feed(
        engine,
        [
            mode(2, "a", True),
            balance(3, "a", "BTC", "0.02"),
            balance(3, "a", "USDC", "-50"),
            position(4, "a", "BTCUSDT", "1", "60000"),
            tick(5, "BTCUSDT", "59000"),
        ],
    )
    (event,) = outcomes[-1]
    assert event["event"] == "liquidation"
    assert event["loss"] == pytest.approx(1200.0)  # 0.02 BTC at 60,000; the USDC debt is none
    assert {a["asset"]: a["wallet"] for a in event["assets"]} == {
        "BTC": 0.02,
        "USDC": -50.0,
        "USDT": 0.0,
    }
    assert engine.balance("a", "BTC") == 0
    assert engine.balance("a", "USDC") == 0
    assert engine.position_count == 0


# -- properties --------------------------------------------------------------------------------

money = st.decimals(min_value=D("100"), max_value=D("100000"), places=2)
marks = st.lists(st.integers(min_value=-1500, max_value=1500), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(wallet=money, size=st.integers(min_value=1, max_value=40), steps=marks)
def test_a_usdt_pool_at_price_one_without_haircut_is_the_cross_entity(
    wallet: Decimal, size: int, steps: list[int]
) -> None:
    """A pool holding only USDT, at price 1 and haircut 0, gives the events of the single-asset
    cross entity of the same account: the same events with the same numbers, and the positions'
    solved prices to 1e-12 (the pool's solver sums its terms in another order)."""
    qty = str(D(size) / 10)
    common = [contract("BTCUSDT", "USDT"), collateral(1, "USDT", "1", "0")]
    cross, pool = Engine(), Engine()
    feed(cross, [*common, balance(2, "a", "USDT", str(wallet))])
    feed(pool, [*common, mode(1, "a", True), balance(2, "a", "USDT", str(wallet))])
    prices = [60000 + 2 * sum(steps[: i + 1]) for i in range(len(steps))]
    records = [position(3, "a", "BTCUSDT", qty, "60000")]
    records += [tick(10 + i, "BTCUSDT", str(p)) for i, p in enumerate(prices)]
    got_cross = feed(cross, records)
    got_pool = feed(pool, records)

    def strip(outcome: Any) -> Any:
        if not isinstance(outcome, list):
            return outcome
        return [
            {k: v for k, v in e.items() if k not in ("id", "scope", "asset", "assets")}
            for e in outcome
        ]

    assert _same(strip_all(got_pool, strip), strip_all(got_cross, strip))


def strip_all(outcomes: list[Any], strip: Any) -> list[Any]:
    return [strip(o) for o in outcomes]


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-12 relative (only solved prices differ at all, by an ulp)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12)
    return bool(a == b)


@settings(max_examples=60, deadline=None)
@given(
    wallets=st.lists(
        st.decimals(min_value=D("-2"), max_value=D("5"), places=3), min_size=3, max_size=3
    ),
    haircuts=st.lists(
        st.decimals(min_value=D("0"), max_value=D("0.5"), places=3), min_size=3, max_size=3
    ),
    mark=st.integers(min_value=40000, max_value=80000),
)
def test_a_haircut_never_raises_the_margin_balance(
    wallets: list[Decimal], haircuts: list[Decimal], mark: int
) -> None:
    """The same pool valued with haircuts has a margin balance no higher than without."""

    def margin_balance(cuts: list[Decimal]) -> float:
        engine = Engine()
        feed(engine, [contract("BTCUSDT", "USDT"), mode(1, "a", True)])
        for asset, price, cut in zip(
            ("USDT", "BTC", "ETH"), ("1", "60000", "3000"), cuts, strict=True
        ):
            feed(engine, [collateral(2, asset, price, str(cut))])
        for asset, wallet in zip(("USDT", "BTC", "ETH"), wallets, strict=True):
            feed(engine, [balance(3, "a", asset, str(wallet))])
        feed(engine, [position(4, "a", "BTCUSDT", "0.5", "60000"), tick(5, "BTCUSDT", str(mark))])
        states = engine.book_states()
        return states[0].margin_balance if states else 0.0

    assert margin_balance(haircuts) <= margin_balance([D(0)] * 3) + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=1, max_value=50),
    rates=st.lists(
        st.decimals(min_value=D("-0.003"), max_value=D("0.003"), places=6), min_size=1, max_size=6
    ),
    inverse=st.booleans(),
)
def test_funding_is_zero_sum_between_a_long_and_a_short(
    size: int, rates: list[Decimal], inverse: bool
) -> None:
    """A long and a short of equal size: what one pays the other receives, every settlement,
    to the last digit (wallets stay exact decimals)."""
    symbol = "BTCUSD_PERP" if inverse else "BTCUSDT"
    asset = "BTC" if inverse else "USDT"
    qty = str(size) if inverse else str(D(size) / 10)
    engine = Engine(EngineConfig(funding=True))
    feed(
        engine, [*BASE, balance(1, "long", asset, "1000000"), balance(1, "short", asset, "1000000")]
    )
    feed(
        engine,
        [
            position(2, "long", symbol, qty, "60000"),
            position(2, "short", symbol, "-" + qty, "60000"),
        ],
    )
    ts = 10
    for n, rate in enumerate(rates):
        funding_ts = 1000 * (n + 1)
        feed(engine, [tick(ts, symbol, "60000", funding_rate=str(rate), funding_ts=funding_ts)])
        ts = funding_ts
        feed(engine, [tick(ts, symbol, str(60000 + 7 * n))])
    total = engine.balance("long", asset) + engine.balance("short", asset)
    assert total == 2000000
    assert engine.funding_paid == engine.funding_received


def test_funding_settles_once_per_funding_time_before_the_move_is_evaluated() -> None:
    """The stored pair settles on the first tick at or past its time (a dropped tick settles
    nothing); a position pays notional at that tick's mark times the rate; the liquidation
    it causes carries the tick's ts."""
    engine = Engine(EngineConfig(funding=True))
    feed(engine, [*BASE, balance(1, "a", "USDT", "1000")])
    feed(engine, [position(1, "a", "BTCUSDT", "0.5", "60000")])
    feed(engine, [tick(10, "BTCUSDT", "60000", funding_rate="0.01", funding_ts=100)])
    feed(engine, [tick(50, "BTCUSDT", "59000", funding_rate="0.02", funding_ts=100)])
    assert feed(engine, [tick(40, "BTCUSDT", "59500")]) == [("refused", "stale_tick")]
    assert engine.balance("a", "USDT") == 1000
    (out,) = feed(engine, [tick(100, "BTCUSDT", "59500", funding_rate="0.001", funding_ts=200)])
    assert engine.funding_paid == {"USDT": D("595.000")}  # 0.5 × 59,500 × 0.02
    assert [(e["event"], e["ts"], e["loss"]) for e in out] == [("liquidation", 100, 405.0)]
    feed(engine, [tick(150, "BTCUSDT", "59600")])
    assert engine.funding_paid == {"USDT": D("595.000")}  # 200 has not come yet


# -- the index ---------------------------------------------------------------------------------


def _pool_workload(seed: int) -> list[Record]:
    """Pools and single-asset accounts on two linear contracts, BTC and USDC collateral with
    moving prices and haircuts, wallets in four assets, random walks with jumps."""
    rng = random.Random(seed)
    out = [
        contract("BTCUSDT", "USDT"),
        contract("ETHUSDC", "USDC", mmr="0.02"),
        collateral(1, "USDT", "1", "0.0001"),
        collateral(1, "USDC", "1", "0.0001"),
        collateral(1, "BTC", "60000", "0.05"),
        collateral(1, "ETH", "3000", "0.05"),
    ]
    for n in range(160):
        account = f"a{n:03}"
        pool = rng.random() < 0.6
        if pool:
            out.append(mode(1, account, True))
        # pools keep most of their margin in coins, whose prices move them as marks do
        coin = 20 if pool else 1
        for asset, scale in (
            ("USDT", 400),
            ("USDC", 400),
            ("BTC", 0.01 * coin),
            ("ETH", 0.2 * coin),
        ):
            if rng.random() < 0.6:
                wallet = D(str(round(rng.uniform(-0.2, 1.0) * scale, 4)))
                out.append(balance(2, account, asset, str(wallet)))
        for symbol, price in (("BTCUSDT", 60000), ("ETHUSDC", 3000)):
            if rng.random() < 0.7:
                qty = round(rng.uniform(-1, 1) * (200000 if pool else 20000) / price, 3) or 0.001
                out.append(position(3, account, symbol, str(qty), str(price)))
    prices = {"BTCUSDT": 60000.0, "ETHUSDC": 3000.0, "BTC": 60000.0, "ETH": 3000.0}
    ts = 10
    for _ in range(3000):
        ts += 1
        key = rng.choice(list(prices))
        step = rng.gauss(0, 0.002) + (rng.choice((-0.04, 0.04)) if rng.random() < 0.01 else 0.0)
        prices[key] *= 1 + step
        text = f"{prices[key]:.2f}"
        if key in ("BTC", "ETH"):
            haircut = "0.05" if rng.random() < 0.97 else rng.choice(("0.1", "0.02"))
            out.append(collateral(ts, key, text, haircut))
        else:
            out.append(tick(ts, key, text))
        if rng.random() < 0.02:
            account = f"a{rng.randrange(160):03}"
            asset = rng.choice(("USDT", "USDC", "BTC"))
            out.append(balance(ts, account, asset, str(round(rng.uniform(0, 500), 2))))
    return out


@pytest.mark.parametrize("policy", ["close", "hold"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pools_are_routed_like_a_full_reevaluation(seed: int, policy: str) -> None:
    """The indexed engine, which evaluates a pool only when a mark or a collateral price
    leaves its band, gives record for record what the naive engine gives by evaluating every
    holder on every tick (collateral records re-evaluate every holding pool in both) — and
    evaluates far fewer entities."""
    records = _pool_workload(seed)
    config = EngineConfig.from_values(policy=policy)
    indexed, naive = Engine(config), NaiveEngine(config)
    got, want = feed(indexed, records), feed(naive, records)
    for n, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, f"record {n}: {records[n]}"
    kinds = {e["event"] for outcome in got if isinstance(outcome, list) for e in outcome}
    assert {"margin_warning", "liquidation"} <= kinds
    collateral_events = sum(
        1
        for item, outcome in zip(records, got, strict=True)
        if type(item).__name__ == "CollateralRecord" and isinstance(outcome, list) and outcome
    )
    assert collateral_events >= 3  # collateral prices, not only marks, move pools
    assert indexed.evaluations * 3 < naive.evaluations


def test_events_of_a_pool_equal_after_a_snapshot_round_trip() -> None:
    """A pool, its collateral prices and its bands on them survive export and restore: the
    rest of a workload gives the same events."""
    from monitor.snapshot import export_state, restore_state

    records = _pool_workload(7)
    cut = len(records) // 2
    original = Engine()
    feed(original, records[:cut])
    restored = restore_state(export_state(original))
    assert feed(restored, records[cut:]) == feed(original, records[cut:])


def test_collateral_prices_alone_are_routed_like_a_full_reevaluation() -> None:
    """With marks still and one haircut, only collateral prices move: pools are re-evaluated
    when a price leaves their band on it, with the naive engine's exact events."""
    rng = random.Random(11)
    records: list[Record] = [
        contract("BTCUSDT", "USDT"),
        collateral(1, "USDT", "1", "0"),
        collateral(1, "BTC", "60000", "0.05"),
        tick(1, "BTCUSDT", "60000"),
    ]
    for n in range(300):
        account = f"p{n:03}"
        coins = round(rng.uniform(0.05, 0.5), 4)
        qty = round(rng.uniform(-1.5, 1.5), 3) or 0.001
        notional = abs(qty) * 60000
        mm = notional * 0.01 if notional < 50000 else notional * 0.02 - 500
        # a USDT debt that leaves the pool at a ratio of about 0.45 to 0.95
        debt = 0.95 * coins * 60000 - mm / rng.uniform(0.45, 0.95)
        records.append(mode(2, account, True))
        records.append(balance(2, account, "BTC", str(coins)))
        records.append(balance(2, account, "USDT", f"{-debt:.2f}"))
        records.append(position(3, account, "BTCUSDT", str(qty), "60000"))
    price = 60000.0
    for ts in range(10, 2010):
        price *= 1 + rng.gauss(0, 0.004) + (rng.choice((-0.05, 0.05)) if rng.random() < 0.01 else 0)
        records.append(collateral(ts, "BTC", f"{price:.2f}", "0.05"))
    indexed, naive = Engine(), NaiveEngine()
    got, want = feed(indexed, records), feed(naive, records)
    assert got == want
    assert sum(1 for outcome in got[-2000:] if isinstance(outcome, list) and outcome) > 20
    assert indexed.evaluations * 2 < naive.evaluations
