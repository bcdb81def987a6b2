"""Trigger bands: for each symbol of an entity, the mark interval in which no event can happen.

An entity changes state only when one of its *threshold functions* changes sign. Each is

    F = α·MM − β·MB = −β·wallet + Σ_symbols φ_j(P_j),    φ_j = α·MM_j − β·uPnL_j

* liquidation: ``α = 1, β = 1`` (``MB <= MM``), danger when F rises to 0;
* the next alert level ``L``: ``α = 1, β = L`` (ratio reaches ``L``), danger when F rises to 0;
* re-arm of the active level ``h``: ``α = 1, β = h − hysteresis``, danger when F falls below 0;
* ``MB <= 0`` (``α = 0, β = 1``), needed only with tier tables that let MM go negative.

F is a sum of one term per symbol, so its distance to 0 (the *slack*) can be split into a budget
per symbol: while every symbol's term moves against us by less than its budget, F keeps its
sign. The split is proportional to each symbol's sensitivity ``|dφ_j/dP|·P`` (so that all
symbols get the same *relative* price allowance). Within the tier piece that holds the mark,
``φ_j(P) = const + b·P`` (linear) or ``const + c/P`` (inverse) exactly, so the price at which a
budget is used up has a closed form; bands never extend past the current tier piece.

For an isolated entity (one symbol) the band edges are exactly the marks at which the ratio
reaches the next level, the re-arm level, or liquidation. Bands are shrunk by a relative 1e-9
(and the slack by the valuation's float tolerance) so that a tick inside a band provably cannot
change the entity's state; a tick outside only means "re-evaluate".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from monitor.margin import INF, Leg

SHRINK = 1e-9
ULP_GUARD = 1e-15


@dataclass(frozen=True, slots=True)
class Threshold:
    """One threshold function ``α·MM − β·MB`` and the direction in which it is dangerous.

    ``rising`` thresholds fire when F reaches 0 from below (slack ``−F``); falling ones fire
    when F drops below 0 (slack ``F``).
    """

    alpha: float
    beta: float
    rising: bool


class SymbolResponse(NamedTuple):
    """How the entity's terms in one symbol respond to that symbol's mark near ``price``."""

    symbol: str
    price: float
    lo: float  # the tier piece holding ``price``
    hi: float
    mm_weight: float  # Σ mmr·qcs over the legs (tiers at ``price``)
    size_weight: float  # Σ s·qcs over the legs
    inverse: bool


def respond(symbol: str, legs: Iterable[Leg], price: float) -> SymbolResponse:
    """The tier piece around ``price`` and the weights of the legs' terms on it."""
    lo, hi = 0.0, INF
    mm_weight = size_weight = 0.0
    inverse = False
    for leg in legs:
        contract = leg.contract
        qcs = leg.qcs
        floors = contract.floors_f
        inverse = contract.is_inverse
        if inverse:
            t = contract.tier_index(qcs / price)
            # notional in [floor_t, floor_t+1)  <=>  P in (qcs/floor_t+1, qcs/floor_t]
            if t + 1 < len(floors):
                lo = max(lo, qcs / floors[t + 1])
            if floors[t] > 0.0:
                hi = min(hi, qcs / floors[t])
        else:
            t = contract.tier_index(qcs * price)
            lo = max(lo, floors[t] / qcs)
            if t + 1 < len(floors):
                hi = min(hi, floors[t + 1] / qcs)
        mm_weight += contract.mmr_f[t] * qcs
        size_weight += leg.sign * qcs
    return SymbolResponse(symbol, price, lo, hi, mm_weight, size_weight, inverse)


def _slope(r: SymbolResponse, threshold: Threshold) -> float:
    """``b`` (linear) or ``c`` (inverse) of ``φ = α·MM − β·uPnL`` on the piece."""
    if r.inverse:
        return threshold.alpha * r.mm_weight + threshold.beta * r.size_weight
    return threshold.alpha * r.mm_weight - threshold.beta * r.size_weight


def _budget_edge(r: SymbolResponse, slope: float, change: float) -> float:
    """The price at which ``φ`` has moved by ``change`` from its value at the current price."""
    if r.inverse:
        inv = 1.0 / r.price + change / slope
        return 1.0 / inv if inv > 0.0 else INF
    return r.price + change / slope


def _shrunk(p0: float, lo: float, hi: float) -> tuple[float, float]:
    guard = p0 * ULP_GUARD
    lo = min(p0, lo + (p0 - lo) * SHRINK + guard) if lo > 0.0 else 0.0
    hi = max(p0, hi - (hi - p0) * SHRINK - guard) if hi < INF else INF
    return lo, hi


def bands(
    responses: Sequence[SymbolResponse],
    thresholds: Sequence[tuple[Threshold, float]],
) -> list[tuple[str, float, float]]:
    """``(symbol, lo, hi)`` per marked symbol: the entity cannot change state while every mark
    stays within its band. ``thresholds`` pairs each function with its current slack (already
    reduced by the float tolerance; ``<= 0`` pins the band to the current price)."""
    if len(responses) == 1:
        return [_single_band(responses[0], thresholds)]
    edges = {r.symbol: [r.lo, r.hi] for r in responses}
    for threshold, slack in thresholds:
        if slack <= 0.0:
            return [(r.symbol, r.price, r.price) for r in responses]
        slopes = [_slope(r, threshold) for r in responses]
        sensitivities = [
            abs(slope) / r.price if r.inverse else abs(slope) * r.price
            for r, slope in zip(responses, slopes, strict=True)
        ]
        total = sum(sensitivities)
        if total == 0.0:
            continue
        for r, slope, sensitivity in zip(responses, slopes, sensitivities, strict=True):
            if sensitivity == 0.0:
                continue
            budget = slack * sensitivity / total
            edge = _budget_edge(r, slope, budget if threshold.rising else -budget)
            bounds = edges[r.symbol]
            if edge > r.price:
                bounds[1] = min(bounds[1], edge)
            else:
                bounds[0] = max(bounds[0], edge)
    return [(r.symbol, *_shrunk(r.price, *edges[r.symbol])) for r in responses]


def _single_band(
    r: SymbolResponse, thresholds: Sequence[tuple[Threshold, float]]
) -> tuple[str, float, float]:
    """One symbol gets the whole slack: its band edges are the threshold prices themselves."""
    lo, hi = r.lo, r.hi
    for threshold, slack in thresholds:
        if slack <= 0.0:
            return r.symbol, r.price, r.price
        slope = _slope(r, threshold)
        if slope == 0.0:
            continue
        edge = _budget_edge(r, slope, slack if threshold.rising else -slack)
        if edge > r.price:
            hi = min(hi, edge)
        else:
            lo = max(lo, edge)
    return (r.symbol, *_shrunk(r.price, lo, hi))
