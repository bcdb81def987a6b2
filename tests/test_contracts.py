"""Tier tables (``monitor.contracts``): validation, warnings and tier selection.

Real Binance tables (``tests/data``, see its ``PROVENANCE.md``) must build as published; broken
tables must fail with a message that names the problem; a table whose ``cum`` is not continuous
is usable but flagged. The table loaders at the top are shared with ``test_margin`` and
``test_properties``.
"""

from __future__ import annotations

import gzip
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor import Contract, Tier, TierTableError, make_contract
from monitor.contracts import build_tiers
from monitor.margin import EXACT
from tests.conftest import DATA

FAPI_2022 = DATA / "binance_leverage_brackets_major_symbols_2022-02.json"
FAPI_2024 = DATA / "binance_leverage_brackets_major_symbols_2024-10.json"
CCXT_2024 = DATA / "binance_leverage_tiers_ccxt_shape_2024-10.json.gz"


def _number(value: float | int | str) -> Decimal:
    """The decimal a JSON value meant (floats by their shortest round-trip text)."""
    return Decimal(value if isinstance(value, str) else repr(value))


def load_fapi(path: Path) -> dict[str, list[Tier]]:
    """Tiers by symbol from a ``GET /fapi/v1/leverageBracket`` response."""
    tables: dict[str, list[Tier]] = {}
    for entry in json.loads(path.read_text()):
        tables[entry["symbol"]] = [
            Tier(
                floor=_number(b["notionalFloor"]),
                cap=_number(b["notionalCap"]),
                mmr=_number(b["maintMarginRatio"]),
                cum=_number(b["cum"]),
            )
            for b in entry["brackets"]
        ]
    return tables


def load_ccxt(path: Path = CCXT_2024) -> dict[str, tuple[str, list[Tier]]]:
    """``(margin asset, tiers)`` by market from a gzipped ccxt ``fetch_leverage_tiers`` result.

    ccxt's own fields give floor, cap and rate; ``cum`` is only in Binance's raw ``info``.
    """
    with gzip.open(path, "rt") as handle:
        raw = json.load(handle)
    return {
        market: (
            rows[0]["currency"],
            [
                Tier(
                    floor=_number(r["minNotional"]),
                    cap=_number(r["maxNotional"]),
                    mmr=_number(r["maintenanceMarginRate"]),
                    cum=_number(r["info"]["cum"]),
                )
                for r in rows
            ],
        )
        for market, rows in raw.items()
    }


def real_contracts() -> list[Contract]:
    """Every real table in ``tests/data`` as a linear contract (2022-02, 2024-10, ccxt)."""
    contracts = [
        make_contract(f"{symbol}@{path.stem[-7:]}", "linear", "USDT", Decimal(1), tiers)
        for path in (FAPI_2022, FAPI_2024)
        for symbol, tiers in load_fapi(path).items()
    ]
    contracts.extend(
        make_contract(market, "linear", asset, Decimal(1), tiers)
        for market, (asset, tiers) in load_ccxt().items()
    )
    return contracts


def _tiers(*rows: tuple[str, str, str, str]) -> list[Tier]:
    return [Tier(*(Decimal(v) for v in row)) for row in rows]


GOOD = (
    ("0", "100", "0.01", "0"),
    ("100", "1000", "0.02", "1"),
    ("1000", "5000", "0.05", "31"),
)
"""A small continuous table: ``cum_2 = 100·0.01 = 1``, ``cum_3 = 1 + 1000·0.03 = 31``."""


# ---------------------------------------------------------------------------------------------
# Real tables


@pytest.mark.parametrize("path", [FAPI_2022, FAPI_2024], ids=["2022-02", "2024-10"])
def test_real_fapi_tables_build_without_errors_or_warnings(path: Path) -> None:
    """Binance's published brackets pass validation untouched, with continuous ``cum``."""
    tables = load_fapi(path)
    assert len(tables) == (5 if path == FAPI_2022 else 11)
    for symbol, tiers in tables.items():
        contract = make_contract(symbol, "linear", "USDT", Decimal(1), tiers)
        assert contract.warnings == (), symbol
        assert contract.tiers == tuple(tiers), symbol
        assert contract.tiers[0].floor == 0
        assert not contract.mm_can_be_negative


def test_real_ccxt_tables_build_without_errors_or_warnings() -> None:
    """All 349 markets (2,805 tiers) of the ccxt-shaped file build cleanly."""
    tables = load_ccxt()
    assert len(tables) == 349
    assert sum(len(tiers) for _, tiers in tables.values()) == 2805
    assert {asset for asset, _ in tables.values()} == {"USDT", "USDC", "BTC"}
    for market, (asset, tiers) in tables.items():
        contract = make_contract(market, "linear", asset, Decimal(1), tiers)
        assert contract.warnings == (), market
        assert not contract.mm_can_be_negative, market


def test_ccxt_fields_carry_binance_numbers() -> None:
    """ccxt's ``minNotional``/``maintenanceMarginRate`` equal Binance's raw ``info`` strings.

    (So building tiers from the ccxt fields plus ``info.cum`` loses nothing.)
    """
    with gzip.open(CCXT_2024, "rt") as handle:
        raw = json.load(handle)
    for market, rows in raw.items():
        for row in rows:
            info = row["info"]
            assert _number(row["minNotional"]) == Decimal(info["notionalFloor"]), market
            assert _number(row["maintenanceMarginRate"]) == Decimal(info["maintMarginRatio"])


def test_real_2022_btcusdt_table_contents() -> None:
    """The 2022-02 BTCUSDT table has the tier the FAQ example uses (1M–7.5M, 2.5 %, 16,300)."""
    contract = make_contract(
        "BTCUSDT", "linear", "USDT", Decimal(1), load_fapi(FAPI_2022)["BTCUSDT"]
    )
    assert len(contract.tiers) == 10
    assert contract.tiers[3] == Tier(
        Decimal(1_000_000), Decimal(7_500_000), Decimal("0.025"), Decimal(16300)
    )
    assert contract.tiers[-1].mmr == Decimal("0.5")


# ---------------------------------------------------------------------------------------------
# Fatal problems


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param(
            (("0", "100", "0.01", "0"), ("200", "1000", "0.02", "2")),
            "gap between tier 1 (cap 100) and tier 2 (floor 200)",
            id="gap",
        ),
        pytest.param(
            (("0", "300", "0.01", "0"), ("200", "1000", "0.02", "2")),
            "tier 1 (cap 300) overlaps tier 2 (floor 200)",
            id="overlap",
        ),
        pytest.param(
            (("0", "100", "0.01", "0"), ("0", "100", "0.02", "0")),
            "tiers 1 and 2 share the floor 0",
            id="duplicate-floor",
        ),
        pytest.param(
            (("10", "100", "0.01", "0"), ("100", "1000", "0.02", "1")),
            "the first tier starts at 10, not 0",
            id="first-floor-not-zero",
        ),
        pytest.param(
            (("0", "100", "1", "0"),),
            "tier 1: mmr 1 is outside [0, 1)",
            id="mmr-one",
        ),
        pytest.param(
            (("0", "100", "0.01", "0"), ("100", "1000", "1.5", "149")),
            "tier 2: mmr 1.5 is outside [0, 1)",
            id="mmr-above-one",
        ),
        pytest.param(
            (("0", "100", "-0.01", "0"),),
            "tier 1: mmr -0.01 is outside [0, 1)",
            id="mmr-negative",
        ),
        pytest.param(
            (("0", "100", "0.01", "0"), ("100", "100", "0.02", "1")),
            "tier 2: cap 100 is not above floor 100",
            id="cap-equals-floor",
        ),
        pytest.param(
            (("0", "100", "0.01", "0"), ("100", "50", "0.02", "1")),
            "tier 2: cap 50 is not above floor 100",
            id="cap-below-floor",
        ),
        pytest.param(
            (("0", "100", "0.01", "-1"),),
            "tier 1: negative floor or cum",
            id="negative-cum",
        ),
        pytest.param((), "the tier table is empty", id="empty"),
    ],
)
def test_broken_tables_raise_with_a_clear_message(
    rows: tuple[tuple[str, str, str, str], ...], message: str
) -> None:
    """Each fatal problem raises TierTableError naming the symbol, the tier and the numbers."""
    with pytest.raises(TierTableError, match=re.escape(message)) as info:
        make_contract("XYZUSDT", "linear", "USDT", Decimal(1), _tiers(*rows))
    assert str(info.value).startswith("XYZUSDT: ")


def test_every_problem_of_a_table_is_reported_at_once() -> None:
    """One error lists all problems, so a bad table is fixed in one round trip."""
    rows = (("5", "100", "1", "0"), ("200", "150", "0.02", "1"))
    with pytest.raises(TierTableError) as info:
        make_contract("XYZUSDT", "linear", "USDT", Decimal(1), _tiers(*rows))
    text = str(info.value)
    for part in (
        "tier 1: mmr 1 is outside [0, 1)",
        "tier 2: cap 150 is not above floor 200",
        "the first tier starts at 5, not 0",
        "gap between tier 1 (cap 100) and tier 2 (floor 200)",
    ):
        assert part in text


@pytest.mark.parametrize(
    ("kind", "size", "message"),
    [
        ("futures", "1", "kind must be linear or inverse, not 'futures'"),
        ("linear", "0", "contract_size must be positive, not 0"),
        ("inverse", "-100", "contract_size must be positive, not -100"),
        ("inverse", "Infinity", "contract_size must be positive, not Infinity"),
    ],
)
def test_bad_instrument_fields_raise(kind: str, size: str, message: str) -> None:
    """make_contract refuses an unknown kind and a non-positive or infinite contract size."""
    with pytest.raises(TierTableError, match=re.escape(message)):
        make_contract("X", kind, "USDT", Decimal(size), _tiers(*GOOD))  # type: ignore[arg-type]


def test_tiers_given_out_of_order_are_sorted_not_refused() -> None:
    """Order of the input rows does not matter: the table is sorted by floor, then checked."""
    shuffled = _tiers(GOOD[2], GOOD[0], GOOD[1])
    ordered, warnings = build_tiers("X", shuffled)
    assert ordered == tuple(_tiers(*GOOD))
    assert warnings == ()


# ---------------------------------------------------------------------------------------------
# Suspicious but usable: discontinuous cum


def test_discontinuous_cum_is_a_warning_not_an_error() -> None:
    """A ``cum`` off the continuity rule builds, keeps the published value, and warns once."""
    rows = (GOOD[0], ("100", "1000", "0.02", "1.5"), GOOD[2])
    contract = make_contract("XYZUSDT", "linear", "USDT", Decimal(1), _tiers(*rows))
    assert contract.tiers[1].cum == Decimal("1.5")
    assert len(contract.warnings) == 2  # tier 2 is off, and so tier 3 no longer continues it
    first = contract.warnings[0]
    assert first.startswith("XYZUSDT: tier 2 has cum 1.5, continuity needs 1.00")
    assert "maintenance margin jumps" in first
    assert "tier 3 has cum 31, continuity needs 31.50" in contract.warnings[1]


def test_nonzero_first_cum_is_a_warning() -> None:
    """``cum_1 != 0`` (freqtrade's test fixture uses 0.01) is flagged and lets MM go negative."""
    contract = make_contract(
        "FT", "linear", "USDT", Decimal(1), _tiers(("0", "1000000", "0.01", "0.01"))
    )
    assert contract.warnings == ("FT: tier 1 has cum 0.01, expected 0",)
    assert contract.mm_can_be_negative


def test_clean_table_has_no_warnings() -> None:
    """The hand-made continuous table is accepted silently (the control for the two above)."""
    contract = make_contract("X", "inverse", "BTC", Decimal(100), _tiers(*GOOD))
    assert contract.warnings == ()
    assert contract.is_inverse
    assert contract.floors_f == (0.0, 100.0, 1000.0)
    assert contract.cum_f == (0.0, 1.0, 31.0)


# ---------------------------------------------------------------------------------------------
# Tier selection


BTC_2022 = make_contract("BTCUSDT", "linear", "USDT", Decimal(1), load_fapi(FAPI_2022)["BTCUSDT"])


@pytest.mark.parametrize(
    ("notional", "index"),
    [
        ("0", 0),
        ("49999.99", 0),
        ("50000", 1),  # floor <= N: a floor belongs to the tier it starts
        ("50000.000001", 1),
        ("249999.999999", 1),
        ("250000", 2),
        ("1000000", 3),
        ("2000000", 3),
        ("7499999", 3),
        ("7500000", 4),
        ("599999999", 8),
        ("600000000", 9),
        ("1000000000", 9),  # the last cap itself
        ("5000000000", 9),  # far beyond it: the last tier extends
    ],
)
def test_tier_index_picks_floor_le_n_lt_cap(notional: str, index: int) -> None:
    """Both selectors pick the tier with ``floor <= N < cap``; beyond the last cap, the last."""
    assert BTC_2022.tier_index(float(notional)) == index
    assert BTC_2022.tier_index_exact(Decimal(notional)) == index


def test_tier_index_exact_separates_a_floor_from_its_neighbours() -> None:
    """Exactly: a notional 1e-40 below a floor is in the tier below it (no float rounding)."""
    floor = BTC_2022.tiers[4].floor
    assert BTC_2022.tier_index_exact(EXACT.subtract(floor, Decimal("1e-40"))) == 3
    assert BTC_2022.tier_index_exact(floor) == 4


@settings(deadline=None, max_examples=300)
@given(
    contract=st.sampled_from(real_contracts()),
    fraction=st.floats(min_value=0.0, max_value=2.0),
    on_floor=st.booleans(),
    floor_index=st.integers(min_value=0, max_value=20),
)
def test_tier_index_and_tier_index_exact_agree(
    contract: Contract, fraction: float, on_floor: bool, floor_index: int
) -> None:
    """On real tables (integer floors, exact in float) the fast and exact selectors agree,
    anywhere and exactly on floors, and the tier they pick holds N."""
    last = contract.tiers[-1]
    if on_floor:
        notional = float(contract.tiers[floor_index % len(contract.tiers)].floor)
    else:
        notional = fraction * float(last.cap)
    index = contract.tier_index(notional)
    assert index == contract.tier_index_exact(Decimal(notional))
    tier = contract.tiers[index]
    exact = Decimal(notional)
    assert tier.floor <= exact
    assert exact < tier.cap or index == len(contract.tiers) - 1
