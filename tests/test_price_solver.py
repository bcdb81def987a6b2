"""The price solver visits tier pieces nearest the mark first and stops early; these tests prove
it finds exactly what an exhaustive scan of every piece finds (the same root, bit for bit, or
none), on random legs of real and synthetic tier tables, hedged and not, linear and inverse."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.contracts import Contract, Tier, make_contract
from monitor.margin import INF, Leg, _breakpoints, _piece_coefficients, solve_price


def exhaustive(
    legs: list[Leg], constant: float, reference: float, maintenance: bool
) -> float | None:
    """Every piece, every candidate, the nearest (the solver as it was before it stopped early)."""
    edges = [0.0, *_breakpoints(legs), INF] if maintenance else [0.0, INF]
    candidates: list[float] = []
    left_value: float | None = None
    for lo, hi in pairwise(edges):
        probe = (lo + hi) / 2.0 if hi < INF else (lo * 2.0 if lo > 0.0 else 1.0)
        a, b, c = _piece_coefficients(legs, probe, maintenance)
        a += constant
        if left_value is not None:
            right_value = a + b * lo + c / lo
            if (left_value < 0.0 < right_value) or (right_value < 0.0 < left_value):
                candidates.append(lo)
        if hi < INF:
            left_value = a + b * hi + c / hi
        root: float | None = None
        if b != 0.0:
            root = -a / b
        elif c != 0.0 and a != 0.0:
            root = -c / a
        if root is None or not root > 0.0 or root == INF:
            continue
        slack = 1e-12 * root
        if lo - slack <= root <= hi + slack:
            candidates.append(root)
    if not candidates:
        return None
    return min(candidates, key=lambda root: abs(root - reference))


def table(kind: str, mmrs: list[str], continuous: bool) -> Contract:
    floors = ["0", "5000", "25000", "100000", "500000", "2000000"][: len(mmrs)]
    tiers = []
    cum = Decimal(0)
    for n, mmr in enumerate(mmrs):
        if n:
            step = Decimal(floors[n]) * (Decimal(mmr) - Decimal(mmrs[n - 1]))
            cum += step if continuous else step * Decimal("0.7")
        cap = floors[n + 1] if n + 1 < len(mmrs) else "1e15"
        scale = Decimal("0.0001") if kind == "inverse" else Decimal(1)
        tiers.append(
            Tier(Decimal(floors[n]) * scale, Decimal(cap) * scale, Decimal(mmr), cum * scale)
        )
    return make_contract("X", kind, "USDT", Decimal(100 if kind == "inverse" else 1), tiers)  # type: ignore[arg-type]


legs_strategy = st.tuples(
    st.sampled_from(["linear", "inverse"]),
    st.lists(
        st.sampled_from(["0.004", "0.005", "0.01", "0.025", "0.05", "0.1"]), min_size=1, max_size=6
    ).map(sorted),
    st.booleans(),
    st.lists(
        st.tuples(st.sampled_from([1, -1]), st.floats(0.001, 50.0), st.floats(0.5, 2.0)),
        min_size=1,
        max_size=2,
    ),
    st.floats(-2e6, 2e6),
    st.floats(0.2, 5.0),
    st.booleans(),
)


@settings(max_examples=600, deadline=None)
@given(legs_strategy)
def test_nearest_first_solver_equals_the_exhaustive_scan(case: tuple) -> None:  # type: ignore[type-arg]
    """Same answer as scanning every tier piece, including no answer."""
    kind, mmrs, continuous, specs, constant, where, maintenance = case
    contract = table(kind, mmrs, continuous)
    price = 30000.0
    legs = []
    for sign, size, entry_factor in specs:
        qty = Decimal(str(round(size * sign, 3))) or Decimal("0.001")
        if kind == "inverse":
            qty = Decimal(max(1, round(size * 10))) * sign
        legs.append(Leg.of(qty, Decimal(str(round(price * entry_factor, 2))), contract))
    reference = price * where
    assert solve_price(legs, constant, reference, with_maintenance=maintenance) == exhaustive(
        legs, constant, reference, maintenance
    )
