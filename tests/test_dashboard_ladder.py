"""``liqmon.dashboard.ladder``: buckets of liquidation prices below and above the mark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqmon.dashboard.ladder import LadderEntry, ladder


def _find(result: dict, side: str, index: int) -> dict:
    return result[side][index]


def test_prices_land_in_the_bucket_of_their_distance_from_the_mark() -> None:
    """With 1 % buckets around a mark of 100: 99.5 is 0–1 % below, 97 is 3–4 % below, 100 (due
    now) is the first bucket below, 101.5 is 1–2 % above; the far ends are open-ended."""
    entries = [
        LadderEntry(1, 99.5, 10.0),
        LadderEntry(2, 97.0, 20.0),
        LadderEntry(3, 100.0, 5.0),
        LadderEntry(4, 101.5, 7.0),
        LadderEntry(5, 50.0, 1.0),
        LadderEntry(6, 500.0, 2.0),
    ]
    result = ladder("BTCUSDT", 100.0, entries, step_pct=1.0, buckets=5)
    assert _find(result, "below", 0)["notional"] == 15.0
    assert _find(result, "below", 0)["entities"] == 2
    assert _find(result, "below", 3)["notional"] == 20.0
    assert _find(result, "above", 1)["notional"] == 7.0
    assert _find(result, "below", 4)["notional"] == 1.0
    assert _find(result, "below", 4)["to_pct"] is None
    assert _find(result, "above", 4)["notional"] == 2.0
    first = _find(result, "below", 0)
    assert (first["near"], first["far"]) == (100.0, 99.0)
    assert _find(result, "above", 1)["near"] == pytest.approx(101.0)
    assert result["total"] == {"notional": 45.0, "entities": 6, "positions": 6}


def test_no_price_and_liquidating_positions_are_counted_apart() -> None:
    """A position with no liquidation price and one of an entity already liquidating are not
    in any bucket but are in the total; an entity with two legs at one price counts once."""
    entries = [
        LadderEntry(1, None, 3.0),
        LadderEntry(2, 99.0, 4.0, liquidating=True),
        LadderEntry(3, 98.5, 1.0),
        LadderEntry(3, 98.5, 2.0),
        LadderEntry(4, 99.0, None),
    ]
    result = ladder("X", 100.0, entries, step_pct=1.0, buckets=3)
    assert result["no_price"] == {"notional": 3.0, "entities": 1, "positions": 1}
    assert result["liquidating"] == {"notional": 4.0, "entities": 1, "positions": 1}
    bucket = _find(result, "below", 1)
    assert (bucket["entities"], bucket["positions"], bucket["notional"]) == (2, 3, 3.0)
    assert bucket["notional_unknown"] == 1
    assert result["total"]["entities"] == 4
    assert result["total"]["notional"] == 10.0


def test_a_ladder_needs_a_mark_and_a_step() -> None:
    """No mark (or a non-positive one) and no step are refused, not silently drawn."""
    with pytest.raises(ValueError, match="positive mark"):
        ladder("X", 0.0, [])
    with pytest.raises(ValueError, match="step"):
        ladder("X", 1.0, [], step_pct=0.0)


@given(
    st.floats(min_value=0.01, max_value=1e6),
    st.lists(
        st.tuples(
            st.integers(0, 20),
            st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e7)),
            st.floats(min_value=0, max_value=1e9),
            st.booleans(),
        ),
        max_size=60,
    ),
    st.sampled_from([0.25, 1.0, 2.5]),
    st.integers(1, 12),
)
def test_every_position_is_in_exactly_one_place_and_the_total_is_their_sum(
    mark: float,
    rows: list[tuple[int, float | None, float, bool]],
    step: float,
    buckets: int,
) -> None:
    """Whatever the prices: the notional of the buckets, the no-price group and the
    liquidating group adds up to the total, which is the sum of every position's notional;
    no bucket holds more positions than have their price inside its range (a position put in
    the wrong bucket would make one)."""
    entries = [LadderEntry(e, p, n, liq) for e, p, n, liq in rows]
    result = ladder("X", mark, entries, step_pct=step, buckets=buckets)
    groups = [*result["below"], *result["above"], result["no_price"], result["liquidating"]]
    assert sum(g["positions"] for g in groups) == len(entries)
    assert sum(g["notional"] for g in groups) == pytest.approx(sum(n for _, _, n, _ in rows))
    assert result["total"]["notional"] == pytest.approx(sum(n for _, _, n, _ in rows))
    assert result["total"]["entities"] == len({e for e, *_ in rows})
    for side in ("below", "above"):
        for bucket in result[side]:
            lo = min(bucket["near"], bucket["far"] if bucket["far"] is not None else 0.0)
            hi = max(bucket["near"], bucket["far"] if bucket["far"] is not None else 1e300)
            members = [
                e
                for e in entries
                if not e.liquidating
                and e.liquidation_price is not None
                and (e.liquidation_price <= mark) == (side == "below")
                and lo * (1 - 1e-9) <= e.liquidation_price <= hi * (1 + 1e-9)
            ]
            assert bucket["positions"] <= len(members)
