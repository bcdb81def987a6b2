"""Margin math for one position and for the legs of one symbol (Binance USDⓈ-M / COIN-M).

Notation (``docs/margin.md``): ``s`` is +1 long / −1 short, ``q`` the absolute size (base
units for linear, contracts for inverse), ``CS`` the contract size, ``EP`` the entry price, ``P``
the mark price. ``qcs = q * CS``.

========================  ==========================  ==============================
per position              linear                      inverse
========================  ==========================  ==============================
notional ``N(P)``         ``qcs * P``                 ``qcs / P``
unrealized PnL            ``s * qcs * (P - EP)``      ``s * qcs * (1/EP - 1/P)``
maintenance margin        ``N * mmr - cum``           ``N * mmr - cum``
========================  ==========================  ==============================

``(mmr, cum)`` come from the tier that holds ``N`` at the mark.

Two arithmetics live side by side. The float functions serve the hot path; the ``*_exact``
functions recompute the same quantities in exact rational arithmetic (:class:`Fraction`, from
the exact decimal inputs), which stays exact for inverse contracts too, where ``1/EP`` has no
finite decimal expansion. The engine uses the exact path for every decision that falls within
float error of a threshold and for every number it publishes in an event.

Prices that solve an equation (liquidation and bankruptcy prices) are found piece by piece:
along the price axis each leg's tier is constant between tier floors, so on every piece the
entity's ``margin balance − maintenance`` is ``a + b·P`` (linear) or ``a + c/P`` (inverse); the
root of each piece is kept only if it lies inside that piece, which is what "the tier must be
the one that holds the notional at LP" means.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from decimal import Context, Decimal
from fractions import Fraction
from typing import NamedTuple

from monitor.contracts import Contract

EXACT = Context(prec=60)
"""The context of decimal bookkeeping (wallet plus margin transfers): exact for any realistic
input. Everything derived from prices is computed in :class:`Fraction` instead."""

INF = math.inf


class Leg(NamedTuple):
    """One open position as the math sees it (immutable; replaced on every update).

    ``qty`` is signed. The float fields are derived once, at construction, for the hot path
    (``qcs`` is rounded once; the exact path recomputes ``|qty|·CS`` from the decimals).
    """

    qty: Decimal
    entry: Decimal
    contract: Contract
    sign: int
    qcs: float
    entry_f: float
    inv_entry_f: float

    @classmethod
    def of(cls, qty: Decimal, entry: Decimal, contract: Contract) -> Leg:
        entry_f = float(entry)
        return cls(
            qty,
            entry,
            contract,
            1 if qty > 0 else -1,
            abs(float(qty)) * contract.contract_size_f,
            entry_f,
            1.0 / entry_f,
        )

    def with_contract(self, contract: Contract) -> Leg:
        return Leg.of(self.qty, self.entry, contract)

    @property
    def qcs_exact(self) -> Fraction:
        return abs(Fraction(self.qty)) * Fraction(self.contract.contract_size)


# ---------------------------------------------------------------------------------------------
# Per position, float


def notional(leg: Leg, price: float) -> float:
    """``N = qcs·P`` (linear) or ``qcs/P`` (inverse), in the margin asset."""
    return leg.qcs / price if leg.contract.is_inverse else leg.qcs * price


def unrealized_pnl(leg: Leg, price: float) -> float:
    """``s·qcs·(P − EP)`` (linear) or ``s·qcs·(1/EP − 1/P)`` (inverse)."""
    if leg.contract.is_inverse:
        return leg.sign * leg.qcs * (leg.inv_entry_f - 1.0 / price)
    return leg.sign * leg.qcs * (price - leg.entry_f)


def maintenance_margin(leg: Leg, price: float) -> float:
    """``N·mmr − cum`` with the tier that holds ``N`` at ``price``."""
    contract = leg.contract
    n = leg.qcs / price if contract.is_inverse else leg.qcs * price
    t = contract.tier_index(n)
    return n * contract.mmr_f[t] - contract.cum_f[t]


# ---------------------------------------------------------------------------------------------
# Per position, exact


ExactNumber = Fraction | Decimal


def notional_exact(leg: Leg, price: ExactNumber) -> Fraction:
    """Exact notional at ``price`` (a :class:`Fraction` or an exact :class:`Decimal`)."""
    qcs, p = leg.qcs_exact, Fraction(price)
    return qcs / p if leg.contract.is_inverse else qcs * p


def unrealized_pnl_exact(leg: Leg, price: ExactNumber) -> Fraction:
    """Exact unrealized PnL at ``price``."""
    qcs, p, entry = leg.qcs_exact, Fraction(price), Fraction(leg.entry)
    value = qcs * (1 / entry - 1 / p) if leg.contract.is_inverse else qcs * (p - entry)
    return value if leg.sign > 0 else -value


def maintenance_margin_exact(leg: Leg, price: ExactNumber) -> Fraction:
    """Exact maintenance margin at ``price``, with the tier chosen by the exact notional."""
    n = notional_exact(leg, price)
    contract = leg.contract
    _, mmr, cum = contract.tiers_exact[contract.tier_index_exact(n)]
    return n * mmr - cum


# ---------------------------------------------------------------------------------------------
# Prices that solve an equation for the legs of one symbol


def _breakpoints(legs: Sequence[Leg]) -> list[float]:
    """Prices where some leg changes tier (tier floors mapped onto the price axis)."""
    points: set[float] = set()
    for leg in legs:
        for floor in leg.contract.floors_f[1:]:
            points.add(leg.qcs / floor if leg.contract.is_inverse else floor / leg.qcs)
    return sorted(p for p in points if 0.0 < p < INF)


def _piece_coefficients(
    legs: Sequence[Leg], price: float, with_maintenance: bool
) -> tuple[float, float, float]:
    """``(a, b, c)`` of ``Σ legs (uPnL − MM) = a + b·P + c/P`` on the piece holding ``price``."""
    a = b = c = 0.0
    for leg in legs:
        s, qcs = leg.sign, leg.qcs
        contract = leg.contract
        if with_maintenance:
            t = contract.tier_index(qcs / price if contract.is_inverse else qcs * price)
            mmr, cum = contract.mmr_f[t], contract.cum_f[t]
        else:
            mmr = cum = 0.0
        if contract.is_inverse:
            # s·qcs/EP − s·qcs/P − (mmr·qcs/P − cum)
            a += s * qcs * leg.inv_entry_f + cum
            c -= s * qcs + mmr * qcs
        else:
            # s·qcs·P − s·qcs·EP − (mmr·qcs·P − cum)
            a += cum - s * qcs * leg.entry_f
            b += s * qcs - mmr * qcs
    return a, b, c


def solve_price(
    legs: Sequence[Leg],
    constant: float,
    reference: float,
    *,
    with_maintenance: bool = True,
) -> float | None:
    """The mark of this symbol at which ``constant + Σ legs (uPnL − MM) = 0``.

    ``constant`` carries everything else of the entity, held fixed: the wallet plus the other
    symbols' ``uPnL − MM`` (so with ``with_maintenance`` this is the liquidation price, where
    margin balance = maintenance margin, and without it the bankruptcy price, where margin
    balance = 0). All legs of the symbol move together (hedge mode).

    In closed form for one linear leg this is Binance's
    ``LP = (WB − TMM1 + UPNL1 + cum − s·q·EP) / (q·mmr − s·q)`` and for one inverse leg
    ``LP = q·(mmr + s) / ((WB − TMM1 + UPNL1 + cum)/CS + s·q/EP)``.

    Every tier combination is tried and only self-consistent roots are kept. A tier floor where
    the function jumps across zero (a table whose ``cum`` is not continuous, accepted with a
    warning) is a solution too: the condition flips there. When more than one solution exists
    (possible only for hedged legs, whose net slope can change sign between tiers, or at such
    jumps) the one nearest ``reference`` (the current mark) is returned: that is the price the
    market meets first. Returns ``None`` when there is no positive solution.
    """
    if not legs:
        return None
    edges = [0.0, *_breakpoints(legs), INF] if with_maintenance else [0.0, INF]
    pieces = len(edges) - 1
    coefficients: dict[int, tuple[float, float, float]] = {}

    def piece(i: int) -> tuple[float, float, float]:
        found = coefficients.get(i)
        if found is None:
            lo, hi = edges[i], edges[i + 1]
            probe = (lo + hi) / 2.0 if hi < INF else (lo * 2.0 if lo > 0.0 else 1.0)
            a, b, c = _piece_coefficients(legs, probe, with_maintenance)
            found = coefficients[i] = (a + constant, b, c)
        return found

    def distance(i: int) -> float:
        lo, hi = edges[i], edges[i + 1]
        return lo - reference if reference < lo else (reference - hi if reference > hi else 0.0)

    # (distance to the reference, order of the exhaustive scan, price): the pieces are visited
    # nearest first, and the scan stops once no unvisited piece can hold a nearer solution
    candidates: list[tuple[float, int, float]] = []
    best = INF
    down = max(0, min(pieces - 1, bisect_right(edges, reference) - 1))
    up = down + 1
    while down >= 0 or up < pieces:
        near_down = distance(down) if down >= 0 else INF
        near_up = distance(up) if up < pieces else INF
        nearest = min(near_down, near_up)
        if nearest > best + 1e-11 * (abs(reference) + nearest):  # beyond any root's slack
            break
        if near_down <= near_up:
            i, down = down, down - 1
        else:
            i, up = up, up + 1
        lo, hi = edges[i], edges[i + 1]
        a, b, c = piece(i)
        if i > 0:  # a jump across zero at this piece's floor (a discontinuous cum) flips it too
            pa, pb, pc = piece(i - 1)
            left_value = pa + pb * lo + pc / lo
            right_value = a + b * lo + c / lo
            if (left_value < 0.0 < right_value) or (right_value < 0.0 < left_value):
                candidates.append((abs(lo - reference), 2 * i, lo))
                best = min(best, abs(lo - reference))
        root: float | None = None
        if b != 0.0:
            root = -a / b
        elif c != 0.0 and a != 0.0:
            root = -c / a
        if root is None or not root > 0.0 or root == INF:
            continue
        slack = 1e-12 * root
        if lo - slack <= root <= hi + slack:
            candidates.append((abs(root - reference), 2 * i + 1, root))
            best = min(best, abs(root - reference))
    if not candidates:
        return None
    return min(candidates)[2]
