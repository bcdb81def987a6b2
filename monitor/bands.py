"""Trigger bands: for each symbol of an entity, the mark interval in which no event can happen.

An entity changes state only when one of its *threshold functions* changes sign. Each is

    F = α·MM − β·MB = −β·wallet + Σ_symbols φ_j(P_j),    φ_j = α·MM_j − β·uPnL_j

* liquidation: ``α = 1, β = 1`` (``MB <= MM``), danger when F rises to 0;
* the next alert level ``L``: ``α = 1, β = L`` (ratio reaches ``L``), danger when F rises to 0;
* re-arm of the active level ``h``: ``α = 1, β = h − hysteresis``, danger when F falls below 0;
* a published state's ratio ± its step (state tracking), one of each direction;
* ``MB <= 0`` (``α = 0, β = 1``), needed only with tier tables that let MM go negative.

F is a sum of one term per symbol, so its distance to 0 (the *slack*) can be split into a budget
per symbol: while every symbol's term moves against us by less than its budget, F keeps its
sign. The split is proportional to each symbol's sensitivity ``|dφ_j/dP|·P`` at the current mark
(so that all symbols get the same *relative* price allowance).

Along one symbol's price axis the legs' tiers are constant between tier floors, and on each such
piece ``φ_j(P) = a + b·P`` (linear) or ``a + c/P`` (inverse) exactly. The budget edge is found by
walking outwards from the mark piece by piece — including the jump at a floor when a table's
``cum`` is not continuous — until the budget is used up; with continuous tables a band crosses
tier floors freely, so a position whose notional hovers around a floor is not re-evaluated for
that alone.

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
WALK_LIMIT = 2.0
"""Bands end where a mark would have halved or doubled at most: far enough that re-evaluating
then costs nothing, near enough that a far entity's edge search crosses only a few tier pieces."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One threshold function ``α·MM − β·MB`` and the direction in which it is dangerous.

    ``rising`` thresholds fire when F reaches 0 from below (slack ``−F``); falling ones fire
    when F drops below 0 (slack ``F``).
    """

    alpha: float
    beta: float
    rising: bool


_Basis = tuple[float, float, float, float, float, float]
"""``(a_mm, b_mm, c_mm, a_u, b_u, c_u)``: on one tier piece, ``MM = a_mm + b_mm·P + c_mm/P`` and
``uPnL = a_u + b_u·P + c_u/P``; every threshold term is ``α·MM − β·uPnL`` of these."""


def _basis(legs: Sequence[Leg], probe: float) -> _Basis:
    a_m = b_m = c_m = a_u = b_u = c_u = 0.0
    for leg in legs:
        contract, qcs, s = leg.contract, leg.qcs, leg.sign
        if contract.is_inverse:
            t = contract.tier_index(qcs / probe)
            a_m -= contract.cum_f[t]
            c_m += contract.mmr_f[t] * qcs
            a_u += s * qcs * leg.inv_entry_f
            c_u -= s * qcs
        else:
            t = contract.tier_index(qcs * probe)
            a_m -= contract.cum_f[t]
            b_m += contract.mmr_f[t] * qcs
            a_u -= s * qcs * leg.entry_f
            b_u += s * qcs
    return a_m, b_m, c_m, a_u, b_u, c_u


class SymbolCurve:
    """The legs of one symbol of an entity, as functions of that symbol's mark."""

    __slots__ = (
        "_breakpoints",
        "basis",
        "convex",
        "hi",
        "legs",
        "lo",
        "price",
        "symbol",
        "uniform",
    )

    def __init__(self, symbol: str, legs: Sequence[Leg], price: float) -> None:
        self.symbol = symbol
        self.legs = legs
        self.price = price
        self._breakpoints: list[float] | None = None
        lo, hi = 0.0, INF
        a_m = b_m = c_m = a_u = b_u = c_u = 0.0
        signs = 0
        continuous = True
        convex = True
        for leg in legs:
            contract, qcs, s = leg.contract, leg.qcs, leg.sign
            floors = contract.floors_f
            signs |= 1 if s > 0 else 2
            continuous = continuous and not contract.warnings
            # linear legs, and inverse longs, have convex terms on convex tables
            convex = convex and contract.convex and (s > 0 or not contract.is_inverse)
            if contract.is_inverse:
                t = contract.tier_index(qcs / price)
                # notional in [floor_t, floor_t+1)  <=>  P in (qcs/floor_t+1, qcs/floor_t]
                if t + 1 < len(floors):
                    lo = max(lo, qcs / floors[t + 1])
                if floors[t] > 0.0:
                    hi = min(hi, qcs / floors[t])
                a_m -= contract.cum_f[t]
                c_m += contract.mmr_f[t] * qcs
                a_u += s * qcs * leg.inv_entry_f
                c_u -= s * qcs
            else:
                t = contract.tier_index(qcs * price)
                lo = max(lo, floors[t] / qcs)
                if t + 1 < len(floors):
                    hi = min(hi, floors[t + 1] / qcs)
                a_m -= contract.cum_f[t]
                b_m += contract.mmr_f[t] * qcs
                a_u -= s * qcs * leg.entry_f
                b_u += s * qcs
        self.lo, self.hi = lo, hi  # the tier piece holding the current price
        self.basis: _Basis = (a_m, b_m, c_m, a_u, b_u, c_u)
        # every leg on one side, on continuous tables: a term's slope can only change sign
        # between tiers if some tier's rate sits on the other side of β (see monotone())
        self.uniform = continuous and signs != 3
        self.convex = convex

    def monotone(self, threshold: Threshold) -> bool:
        """Whether ``φ`` keeps the sign of its slope on every tier piece (then a search in the
        safe direction can stop at once)."""
        if not self.uniform:
            return False
        alpha, beta = threshold.alpha, threshold.beta
        s = self.legs[0].sign
        inverse = self.legs[0].contract.is_inverse
        for leg in self.legs:
            contract = leg.contract
            # slope per unit qcs: linear α·mmr − β·s (in P), inverse α·mmr + β·s (in 1/P)
            low = alpha * contract.mmr_min + (beta * s if inverse else -beta * s)
            high = alpha * contract.mmr_max + (beta * s if inverse else -beta * s)
            if low * high <= 0.0:
                return False
        return True

    def sensitivity(self, threshold: Threshold) -> float:
        """``|dφ/dP|·P`` at the current price."""
        _, b_m, c_m, _, b_u, c_u = self.basis
        alpha, beta, p0 = threshold.alpha, threshold.beta, self.price
        return abs((alpha * b_m - beta * b_u) * p0 - (alpha * c_m - beta * c_u) / p0)

    def breakpoints(self) -> list[float]:
        """Every price where some leg changes tier, sorted."""
        if self._breakpoints is None:
            points: set[float] = set()
            for leg in self.legs:
                for floor in leg.contract.floors_f[1:]:
                    points.add(leg.qcs / floor if leg.contract.is_inverse else floor / leg.qcs)
            self._breakpoints = sorted(p for p in points if 0.0 < p < INF)
        return self._breakpoints

    def edge(self, threshold: Threshold, budget: float, up: bool) -> float:
        """The nearest price above (``up``) or below the current one at which ``φ`` has moved
        by ``budget`` in the threshold's dangerous direction, searched at most a factor
        :data:`WALK_LIMIT` away (the limit itself is returned when the budget lasts that far)."""
        alpha, beta = threshold.alpha, threshold.beta
        sign = 1.0 if threshold.rising else -1.0
        p0 = self.price
        a_m, b_m, c_m, a_u, b_u, c_u = self.basis
        a, b, c = alpha * a_m - beta * a_u, alpha * b_m - beta * b_u, alpha * c_m - beta * c_u
        target = a + b * p0 + c / p0 + sign * budget  # where sign·(φ − target) reaches 0
        limit = p0 * WALK_LIMIT if up else p0 / WALK_LIMIT
        # dφ/dP is b − c/P²: does moving this way make φ more dangerous on this piece?
        worsening = sign * (b - c / (p0 * p0)) * (1.0 if up else -1.0) > 0.0
        if not worsening and self.monotone(threshold):
            return limit
        if threshold.rising and self.convex:
            # φ convex: on [p0, limit] it is at most its value at an end, so if it is still
            # short of the target at the limit, so it is everywhere before (what the walk below
            # would find, piece by piece)
            la_m, lb_m, lc_m, la_u, lb_u, lc_u = _basis(self.legs, limit)
            la, lb, lc = (
                alpha * la_m - beta * la_u,
                alpha * lb_m - beta * lb_u,
                alpha * lc_m - beta * lc_u,
            )
            if la + lb * limit + lc / limit - target < 0.0:
                return limit
        start = p0
        end = self.hi if up else self.lo
        while True:
            capped = end >= limit if up else end <= limit
            if capped:
                end = limit
            if sign * (a + b * end + c / end - target) >= 0.0:  # reached on this piece
                root = (target - a) / b if b != 0.0 else c / (target - a)
                low, high = (start, end) if up else (end, start)
                return min(max(root, low), high)
            if capped:
                return end
            start = end
            end = self._next_breakpoint(start, up)
            bounded = min(end, limit) if up else max(end, limit)
            a_m, b_m, c_m, a_u, b_u, c_u = _basis(self.legs, (start + bounded) / 2.0)
            a = alpha * a_m - beta * a_u
            b = alpha * b_m - beta * b_u
            c = alpha * c_m - beta * c_u
            if sign * (a + b * start + c / start - target) >= 0.0:
                return start  # a jump at the floor (discontinuous cum) used up the budget

    def _next_breakpoint(self, price: float, up: bool) -> float:
        points = self.breakpoints()
        if up:
            return next((p for p in points if p > price), INF)
        return next((p for p in reversed(points) if p < price), 0.0)


def _shrunk(p0: float, lo: float, hi: float) -> tuple[float, float]:
    guard = p0 * ULP_GUARD
    lo = min(p0, lo + (p0 - lo) * SHRINK + guard) if lo > 0.0 else 0.0
    hi = max(p0, hi - (hi - p0) * SHRINK - guard) if hi < INF else INF
    return lo, hi


def bands(
    curves: Sequence[SymbolCurve],
    thresholds: Sequence[tuple[Threshold, float]],
) -> list[tuple[str, float, float]]:
    """``(symbol, lo, hi)`` per marked symbol: the entity cannot change state while every mark
    stays within its band. ``thresholds`` pairs each function with its current slack (already
    reduced by the float tolerance; ``<= 0`` pins the band to the current price)."""
    edges = [[0.0, INF] for _ in curves]
    single = len(curves) == 1
    for threshold, slack in thresholds:
        if slack <= 0.0:
            return [(c.symbol, c.price, c.price) for c in curves]
        if single:
            shares = [1.0]
        else:
            # the shares sum to 1: a symbol insensitive here gets none, and its band then ends
            # where its term first turns dangerous (a farther tier piece)
            sensitivities = [c.sensitivity(threshold) for c in curves]
            total = sum(sensitivities)
            shares = (
                [s / total for s in sensitivities]
                if total > 0.0
                else [1.0 / len(curves)] * len(curves)
            )
        for curve, share, bounds in zip(curves, shares, edges, strict=True):
            budget = slack * share
            bounds[0] = max(bounds[0], curve.edge(threshold, budget, up=False))
            bounds[1] = min(bounds[1], curve.edge(threshold, budget, up=True))
    return [
        (c.symbol, *_shrunk(c.price, lo, hi)) for c, (lo, hi) in zip(curves, edges, strict=True)
    ]
