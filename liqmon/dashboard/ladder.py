"""Liquidation ladders: per symbol, how much notional (and how many entities) liquidates in each
price bucket below and above the mark, from the positions' liquidation prices.

Buckets are bands of distance from the mark, ``step_pct`` wide: below the mark, bucket ``i``
holds the liquidation prices ``P`` with ``i·s ≤ (mark − P)/mark < (i+1)·s`` (``P = mark``, due
now, is bucket 0); above, ``i·s ≤ (P − mark)/mark < (i+1)·s`` with ``P > mark``. The last bucket
on each side is open-ended (everything further away). Positions with no liquidation price (a
fully collateralised long, say) and positions of entities already liquidating (the ``hold``
policy) are counted apart, so the ladder's total is every position of the symbol:
``total = Σ below + Σ above + no_price + liquidating``.

Notional is each position's own, at its mark, in the margin asset (see the ``notional`` field of
the retained state). An entity is counted once per bucket (hedged legs of one symbol share
their liquidation price).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_STEP_PCT = 1.0
DEFAULT_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class LadderEntry:
    """One position of the symbol, as the ladder sees it."""

    entity: int
    liquidation_price: float | None
    notional: float | None
    liquidating: bool = False


class _Bucket:
    __slots__ = ("entities", "notional", "positions", "unknown")

    def __init__(self) -> None:
        self.notional = 0.0
        self.entities: set[int] = set()
        self.positions = 0
        self.unknown = 0  # positions whose notional is not published

    def add(self, entry: LadderEntry) -> None:
        self.positions += 1
        self.entities.add(entry.entity)
        if entry.notional is None:
            self.unknown += 1
        else:
            self.notional += entry.notional

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "notional": self.notional,
            "entities": len(self.entities),
            "positions": self.positions,
        }
        if self.unknown:
            out["notional_unknown"] = self.unknown
        return out


def ladder(
    symbol: str,
    mark: float,
    entries: Iterable[LadderEntry],
    *,
    step_pct: float = DEFAULT_STEP_PCT,
    buckets: int = DEFAULT_BUCKETS,
) -> dict[str, Any]:
    """The ladder of ``symbol`` around ``mark`` (see the module docstring)."""
    if not (mark > 0 and math.isfinite(mark)):
        raise ValueError(f"{symbol}: a ladder needs a positive mark, got {mark!r}")
    if not (step_pct > 0 and math.isfinite(step_pct)) or buckets < 1:
        raise ValueError("a ladder needs a positive step and at least one bucket")
    step = step_pct / 100.0
    below = [_Bucket() for _ in range(buckets)]
    above = [_Bucket() for _ in range(buckets)]
    no_price, liquidating, total = _Bucket(), _Bucket(), _Bucket()
    last = buckets - 1
    for entry in entries:
        total.add(entry)
        price = entry.liquidation_price
        if entry.liquidating:
            liquidating.add(entry)
        elif price is None or not math.isfinite(price):
            no_price.add(entry)
        elif price <= mark:
            below[min(last, int((mark - price) / mark / step))].add(entry)
        else:
            above[min(last, int((price - mark) / mark / step))].add(entry)

    def side(rows: list[_Bucket], sign: int) -> list[dict[str, Any]]:
        out = []
        for i, bucket in enumerate(rows):
            near = mark * (1 + sign * i * step)
            far = None if i == last else mark * (1 + sign * (i + 1) * step)
            out.append(
                {
                    "from_pct": i * step_pct,
                    "to_pct": None if i == last else (i + 1) * step_pct,
                    "near": near,
                    "far": None if far is not None and far <= 0 else far,
                    **bucket.as_dict(),
                }
            )
        return out

    return {
        "symbol": symbol,
        "mark": mark,
        "step_pct": step_pct,
        "buckets": buckets,
        "below": side(below, -1),
        "above": side(above, +1),
        "no_price": no_price.as_dict(),
        "liquidating": liquidating.as_dict(),
        "total": total.as_dict(),
    }
