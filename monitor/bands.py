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

from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class SymbolResponse:
    """How the entity's terms in one symbol respond to that symbol's mark near ``price``."""

    symbol: str
    price: float
    lo: float  # the tier piece holding ``price``
    hi: float
    mm_weight: float  # Σ mmr·qcs over the legs (tiers at ``price``)
    size_weight: float  # Σ s·qcs over the legs
    inverse: bool

    def slope(self, threshold: Threshold) -> float:
        """``b`` (linear) or ``c`` (inverse) of ``φ`` for this threshold on the piece."""
        if self.inverse:
            return threshold.alpha * self.mm_weight + threshold.beta * self.size_weight
        return threshold.alpha * self.mm_weight - threshold.beta * self.size_weight

    def sensitivity(self, coefficient: float) -> float:
        """``|dφ/dP|·P`` at the current price."""
        if self.inverse:
            return abs(coefficient) / self.price
        return abs(coefficient) * self.price


def respond(symbol: str, legs: Sequence[Leg], price: float) -> SymbolResponse:
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


def _budget_edge(response: SymbolResponse, coefficient: float, change: float) -> float:
    """The price at which ``φ`` has moved by ``change`` from its value at the current price."""
    p0 = response.price
    if response.inverse:
        inv = 1.0 / p0 + change / coefficient
        return 1.0 / inv if inv > 0.0 else INF
    return p0 + change / coefficient


def bands(
    responses: Sequence[SymbolResponse],
    thresholds: Sequence[tuple[Threshold, float]],
) -> list[tuple[str, float, float]]:
    """``(symbol, lo, hi)`` per marked symbol: the entity cannot change state while every mark
    stays within its band. ``thresholds`` pairs each function with its current slack (already
    reduced by the float tolerance; ``<= 0`` pins the band to the current price)."""
    edges = {r.symbol: [r.lo, r.hi] for r in responses}
    for threshold, slack in thresholds:
        if slack <= 0.0:
            for r in responses:
                edges[r.symbol] = [r.price, r.price]
            break
        slopes = [r.slope(threshold) for r in responses]
        sensitivities = [r.sensitivity(s) for r, s in zip(responses, slopes, strict=True)]
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
    result: list[tuple[str, float, float]] = []
    for r in responses:
        lo, hi = edges[r.symbol]
        p0 = r.price
        guard = p0 * ULP_GUARD
        lo = min(p0, lo + (p0 - lo) * SHRINK + guard) if lo > 0.0 else 0.0
        hi = max(p0, hi - (hi - p0) * SHRINK - guard) if hi < INF else INF
        result.append((r.symbol, lo, hi))
    return result
