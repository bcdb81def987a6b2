"""Instruments and their maintenance-margin tiers.

A contract is ``linear`` (USDⓈ-M: quantity in base units, PnL in the quote/margin asset) or
``inverse`` (COIN-M: quantity in contracts of ``contract_size`` USD, PnL in the coin).

Tiers (Binance calls them brackets) select a maintenance margin rate by the position's notional
*in the margin asset* at the mark price: tier ``t`` holds notional ``N`` when
``floor_t <= N < cap_t``. The maintenance amount ``cum`` makes ``MM = N * mmr - cum`` continuous
across tiers: ``cum_n = cum_{n-1} + floor_n * (mmr_n - mmr_{n-1})`` with ``cum_1 = 0``.

Validation splits problems in two:

* *fatal* ones make tier selection ambiguous or meaningless (gaps or overlaps between tiers,
  floors that are not increasing, a first floor other than 0, a rate outside ``[0, 1)``,
  negative numbers): :func:`build_tiers` raises :class:`TierTableError`;
* *suspicious* ones keep the table usable exactly as published (``cum`` not continuous, so the
  maintenance margin jumps at a tier floor): they are returned as warnings for the caller to
  show. liqmon then uses the published ``cum`` (that is what the exchange computes with).

Notional above the last cap stays in the last tier.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Literal

import numpy as np

from monitor.errors import TierTableError

ContractKind = Literal["linear", "inverse"]


@dataclass(frozen=True, slots=True)
class Tier:
    """One maintenance tier: ``floor <= notional < cap`` uses ``MM = notional * mmr - cum``."""

    floor: Decimal
    cap: Decimal
    mmr: Decimal
    cum: Decimal


@dataclass(frozen=True, slots=True)
class Contract:
    """An instrument spec with its tier table, in exact decimals and in floats for the hot path.

    ``floors_f`` / ``mmr_f`` / ``cum_f`` mirror ``tiers`` as floats so that the per-tick code can
    select a tier with one ``bisect`` and never touch a ``Decimal``.
    """

    symbol: str
    kind: ContractKind
    margin_asset: str
    contract_size: Decimal
    tiers: tuple[Tier, ...]
    warnings: tuple[str, ...] = ()
    contract_size_f: float = 0.0
    floors_f: tuple[float, ...] = ()
    mmr_f: tuple[float, ...] = ()
    cum_f: tuple[float, ...] = ()
    mm_can_be_negative: bool = False
    convex: bool = False
    """``MM`` is convex in the notional: ``cum`` continuous and rates not decreasing by tier (every
    real table); a position's threshold terms are then convex in its mark (see
    :mod:`monitor.bands`)."""
    is_inverse: bool = False
    mmr_min: float = 0.0
    mmr_max: float = 0.0
    tiers_exact: tuple[tuple[Fraction, Fraction, Fraction], ...] = ()
    """``(floor, mmr, cum)`` per tier as fractions, for the exact path."""
    floors_np: np.ndarray = field(default_factory=lambda: np.zeros(1), compare=False)
    """``floors_f`` as an array, searched with ``searchsorted`` by the batch path."""

    def tier_index(self, notional: float) -> int:
        """Index of the tier that holds ``notional`` (float fast path)."""
        i = bisect_right(self.floors_f, notional) - 1
        return i if i > 0 else 0

    def tier_index_exact(self, notional: Fraction | Decimal) -> int:
        """Index of the tier that holds ``notional``, compared exactly."""
        index = 0
        for i, (floor, _, _) in enumerate(self.tiers_exact):
            if floor <= notional:
                index = i
            else:
                break
        return index

    def tier_index_decimal(self, notional: Decimal) -> int:
        """Index of the tier that holds ``notional``, compared exactly (decimal notional)."""
        index = 0
        for i, tier in enumerate(self.tiers):
            if tier.floor <= notional:
                index = i
            else:
                break
        return index

    def same_instrument(self, other: Contract) -> bool:
        """True when only the tier table differs (positions rely on kind, asset and size)."""
        return (
            self.kind == other.kind
            and self.margin_asset == other.margin_asset
            and self.contract_size == other.contract_size
        )


def build_tiers(symbol: str, tiers: Sequence[Tier]) -> tuple[tuple[Tier, ...], tuple[str, ...]]:
    """Check a tier table; return it sorted with the list of non-fatal warnings.

    Raises :class:`TierTableError` for tables whose tier selection would be ambiguous.
    """
    if not tiers:
        raise TierTableError(f"{symbol}: the tier table is empty")
    ordered = tuple(sorted(tiers, key=lambda t: t.floor))
    problems: list[str] = []
    for n, tier in enumerate(ordered, start=1):
        if tier.floor < 0 or tier.cum < 0:
            problems.append(f"tier {n}: negative floor or cum")
        if not (Decimal(0) <= tier.mmr < Decimal(1)):
            problems.append(f"tier {n}: mmr {tier.mmr} is outside [0, 1)")
        if tier.cap <= tier.floor:
            problems.append(f"tier {n}: cap {tier.cap} is not above floor {tier.floor}")
    if ordered[0].floor != 0:
        problems.append(f"the first tier starts at {ordered[0].floor}, not 0")
    for n in range(1, len(ordered)):
        previous, tier = ordered[n - 1], ordered[n]
        if tier.floor == previous.floor:
            problems.append(f"tiers {n} and {n + 1} share the floor {tier.floor}")
        elif previous.cap < tier.floor:
            problems.append(
                f"gap between tier {n} (cap {previous.cap}) and tier {n + 1} (floor {tier.floor})"
            )
        elif previous.cap > tier.floor:
            problems.append(
                f"tier {n} (cap {previous.cap}) overlaps tier {n + 1} (floor {tier.floor})"
            )
    if problems:
        raise TierTableError(f"{symbol}: inconsistent tier table: " + "; ".join(problems))
    return ordered, tuple(_continuity_warnings(symbol, ordered))


def _continuity_warnings(symbol: str, tiers: Sequence[Tier]) -> list[str]:
    warnings: list[str] = []
    if tiers[0].cum != 0:
        warnings.append(f"{symbol}: tier 1 has cum {tiers[0].cum}, expected 0")
    for n in range(1, len(tiers)):
        previous, tier = tiers[n - 1], tiers[n]
        expected = previous.cum + tier.floor * (tier.mmr - previous.mmr)
        if tier.cum != expected:
            warnings.append(
                f"{symbol}: tier {n + 1} has cum {tier.cum}, continuity needs {expected} "
                "(maintenance margin jumps at its floor)"
            )
    return warnings


def make_contract(
    symbol: str,
    kind: ContractKind,
    margin_asset: str,
    contract_size: Decimal,
    tiers: Sequence[Tier],
) -> Contract:
    """Validate and build a :class:`Contract` (raises :class:`TierTableError`)."""
    if kind not in ("linear", "inverse"):
        raise TierTableError(f"{symbol}: kind must be linear or inverse, not {kind!r}")
    if not contract_size.is_finite() or contract_size <= 0:
        raise TierTableError(f"{symbol}: contract_size must be positive, not {contract_size}")
    ordered, warnings = build_tiers(symbol, tiers)
    return Contract(
        symbol=symbol,
        kind=kind,
        margin_asset=margin_asset,
        contract_size=contract_size,
        tiers=ordered,
        warnings=warnings,
        contract_size_f=float(contract_size),
        floors_f=tuple(float(t.floor) for t in ordered),
        mmr_f=tuple(float(t.mmr) for t in ordered),
        cum_f=tuple(float(t.cum) for t in ordered),
        mm_can_be_negative=any(t.cum > t.floor * t.mmr for t in ordered),
        convex=not warnings and all(a.mmr <= b.mmr for a, b in pairwise(ordered)),
        is_inverse=kind == "inverse",
        mmr_min=float(min(t.mmr for t in ordered)),
        mmr_max=float(max(t.mmr for t in ordered)),
        tiers_exact=tuple((Fraction(t.floor), Fraction(t.mmr), Fraction(t.cum)) for t in ordered),
        floors_np=np.array([float(t.floor) for t in ordered]),
    )
