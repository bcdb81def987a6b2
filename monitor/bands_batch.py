"""Trigger bands for many entities in one pass over arrays (the method of :mod:`monitor.bands`).

The scalar module computes, per entity, one *curve* per marked symbol (the legs of that symbol
as functions of its mark), the slack of every threshold, each symbol's share of it, and for
every (curve, threshold, direction) the *edge*: the nearest price at which that symbol's term
has used up its budget, walking tier piece by tier piece at most a factor two away. Here every
such edge of every entity is a *lane* of flat arrays, and the walk advances all lanes together,
one tier piece per step, until each has found its edge; a lane's legs are summed per step with
``bincount``. The bands are then the tightest edges per curve, shrunk exactly as the scalar
path shrinks them. Both paths are conservative; a test compares them band for band.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from monitor.bands import SHRINK, ULP_GUARD, WALK_LIMIT
from monitor.book import INF
from monitor.config import STATE_RATIO_FLOOR

if TYPE_CHECKING:
    from monitor.evaluation import Evaluator
    from monitor.valuation import RowTerms

MAX_STEPS = 64


@dataclass(frozen=True, slots=True)
class BandRequest:
    """Entities to band, valued at the current marks (``level``: active level index, -1 for
    none; ``shown``: last published ratios, NaN for none, or ``None`` without state tracking)."""

    entities: np.ndarray
    mb: np.ndarray
    mm: np.ndarray
    tolerance: np.ndarray
    level: np.ndarray
    shown: np.ndarray | None


def _thresholds(
    evaluator: Evaluator, request: BandRequest, negative: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(alpha, beta, rising, slack)`` of shape (entities, slots); slots that do not apply
    have ``slack = +inf`` and ``alpha = beta = 0`` (they never constrain a band)."""
    mb, mm, tol, level = request.mb, request.mm, request.tolerance, request.level
    count = len(mb)
    slots = 6
    alpha = np.zeros((count, slots))
    beta = np.zeros((count, slots))
    rising = np.ones((count, slots), dtype=bool)
    slack = np.full((count, slots), np.inf)
    # liquidation
    alpha[:, 0], beta[:, 0], slack[:, 0] = 1.0, 1.0, mb - mm - tol
    # margin balance above 0 (tier tables that let MM go negative)
    if negative.any():
        alpha[negative, 1], beta[negative, 1] = 0.0, 1.0
        slack[negative, 1] = (mb - tol)[negative]
    levels = np.array([*evaluator.levels_f, 0.0])
    rearm = np.array([*evaluator.rearm_f, 0.0])
    nxt = level + 1
    warn = nxt < len(evaluator.levels_f)
    b_warn = levels[np.where(warn, nxt, len(levels) - 1)]
    alpha[warn, 2], beta[warn, 2] = 1.0, b_warn[warn]
    slack[warn, 2] = (b_warn * mb - mm - tol)[warn]
    b_rearm = rearm[np.where(level >= 0, level, len(rearm) - 1)]
    re = (level >= 0) & (b_rearm > 0.0)
    alpha[re, 3], beta[re, 3], rising[re, 3] = 1.0, b_rearm[re], False
    slack[re, 3] = (mm - b_rearm * mb - tol)[re]
    if request.shown is not None and evaluator.state_move is not None:
        shown = request.shown
        has = ~np.isnan(shown)
        step = evaluator.state_move * np.maximum(shown, STATE_RATIO_FLOOR)
        up, down = shown + step, shown - step
        alpha[has, 4], beta[has, 4] = 1.0, up[has]
        slack[has, 4] = (up * mb - mm - tol)[has]
        dn = has & (down > 0.0)
        alpha[dn, 5], beta[dn, 5], rising[dn, 5] = 1.0, down[dn], False
        slack[dn, 5] = (mm - down * mb - tol)[dn]
    # while MM cannot go negative, the rising function of the smallest β and the falling one of
    # the largest bound the entity (see Evaluator._thresholds); the others are dropped
    plain = ~negative
    choices: tuple[tuple[list[int], bool], ...] = (([0, 2, 4], True), ([3, 5], False))
    for columns, smallest in choices:
        applies = np.isfinite(slack[:, columns])
        if smallest:
            chosen = np.argmin(np.where(applies, beta[:, columns], np.inf), axis=1)
        else:
            chosen = np.argmax(np.where(applies, beta[:, columns], -np.inf), axis=1)
        for k, slot in enumerate(columns):
            drop = plain & (chosen != k)
            alpha[drop, slot] = beta[drop, slot] = 0.0
            slack[drop, slot] = np.inf
    return alpha, beta, rising, slack


def batch_bands(
    evaluator: Evaluator, request: BandRequest, terms: RowTerms, picked: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, lo, hi)``: the new band of every row of the requested entities (``picked``:
    their indices in the batch that ``terms`` came from)."""
    book = evaluator.book
    tiers = evaluator.tiers
    index_of = np.full(int(terms.owner.max()) + 1 if len(terms.owner) else 1, -1, np.int64)
    index_of[picked] = np.arange(len(picked))
    mine = index_of[terms.owner] >= 0
    rows = terms.rows[mine]
    owner = index_of[terms.owner[mine]]  # index into the request
    sid = terms.sid[mine]
    price = book.symbols.price[sid]
    marked = ~np.isnan(price)
    lo_out = np.zeros(len(rows))
    hi_out = np.full(len(rows), INF)
    if not marked.any():
        return rows, lo_out, hi_out
    # -- curves: one per (entity, marked symbol), legs in list order ---------------------------
    m_rows, m_owner, m_sid = rows[marked], owner[marked], sid[marked]
    m_tier = terms.tier[mine][marked]
    key = m_owner * (len(book.contracts) + 1) + m_sid
    curve_keys, leg_curve = np.unique(key, return_inverse=True)
    n_curves = len(curve_keys)
    curve_owner = curve_keys // (len(book.contracts) + 1)
    curve_sid = curve_keys % (len(book.contracts) + 1)
    p0 = book.symbols.price[curve_sid]
    r = book.rows
    qcs = r.qcs[m_rows]
    s = r.sign[m_rows].astype(np.float64)
    entry = r.entry[m_rows]
    inv_entry = 1.0 / entry
    inverse = book.symbols.inverse[m_sid].astype(bool)
    mmr_t = tiers.mmr[m_sid, m_tier]
    cum_t = tiers.cum[m_sid, m_tier]
    floor_t = tiers.floor[m_sid, m_tier]
    width = tiers.floor.shape[1]
    floor_next = np.where(
        m_tier + 1 < width, tiers.floor[m_sid, np.minimum(m_tier + 1, width - 1)], np.inf
    )
    # the tier piece holding the current price
    piece_lo = np.where(
        inverse, np.where(np.isfinite(floor_next), qcs / floor_next, 0.0), floor_t / qcs
    )
    piece_hi = np.where(
        inverse,
        np.where(floor_t > 0.0, qcs / np.where(floor_t > 0.0, floor_t, 1.0), np.inf),
        np.where(np.isfinite(floor_next), floor_next / qcs, np.inf),
    )
    c_lo = np.zeros(n_curves)
    np.maximum.at(c_lo, leg_curve, piece_lo)
    c_hi = np.full(n_curves, np.inf)
    np.minimum.at(c_hi, leg_curve, piece_hi)
    basis = _basis_sums(leg_curve, n_curves, inverse, qcs, s, entry, inv_entry, mmr_t, cum_t)
    # uniform curves: continuous tables, every leg on one side
    leg_warned = tiers.warned[m_sid]
    curve_warned = np.zeros(n_curves, dtype=bool)
    np.logical_or.at(curve_warned, leg_curve, leg_warned)
    signs = np.zeros(n_curves, dtype=np.int64)
    np.bitwise_or.at(signs, leg_curve, np.where(s > 0, 1, 2))
    uniform = ~curve_warned & (signs != 3)
    # convex curves: linear legs and inverse longs on convex tables (see SymbolCurve)
    convex = np.ones(n_curves, dtype=bool)
    np.logical_and.at(convex, leg_curve, tiers.convex[m_sid] & ((s > 0) | ~inverse))
    # -- thresholds, slacks, budgets -----------------------------------------------------------
    negative = np.zeros(len(request.mb), dtype=bool)
    if evaluator.negative_mm_possible:
        np.logical_or.at(negative, owner, tiers.negative[sid])
    alpha, beta, rising, slack = _thresholds(evaluator, request, negative)
    pinned: np.ndarray = np.asarray((slack <= 0.0).any(axis=1))
    curves_per_owner = np.bincount(curve_owner, minlength=len(request.mb))
    single = curves_per_owner[curve_owner] == 1
    n_slots = alpha.shape[1]
    _, b_m, c_m, _, b_u, c_u = basis
    al = alpha[curve_owner]  # (curves, slots)
    be = beta[curve_owner]
    sens = np.abs(
        ((al * b_m[:, None] - be * b_u[:, None]) * p0[:, None])
        - (al * c_m[:, None] - be * c_u[:, None]) / p0[:, None]
    )
    total = np.zeros((len(request.mb), n_slots))
    for k in range(n_slots):  # the scalar path adds sensitivities in curve order
        np.add.at(total[:, k], curve_owner, sens[:, k])
    tot = total[curve_owner]
    n_c = curves_per_owner[curve_owner][:, None].astype(np.float64)
    share = np.where(tot > 0.0, sens / np.where(tot > 0.0, tot, 1.0), 1.0 / n_c)
    share[single] = 1.0
    budget = slack[curve_owner] * share
    # -- lanes: (curve, slot, direction) for applicable slots ------------------------------------
    applies = np.isfinite(slack[curve_owner]) & ~pinned[curve_owner][:, None]
    lane_curve, lane_slot = np.nonzero(applies)
    lane_curve = np.repeat(lane_curve, 2)
    lane_slot = np.repeat(lane_slot, 2)
    lane_up = np.tile(np.array([False, True]), len(lane_curve) // 2)
    edges = _walk(
        lane_curve,
        lane_up,
        al[lane_curve, lane_slot],
        be[lane_curve, lane_slot],
        rising[curve_owner[lane_curve], lane_slot],
        budget[lane_curve, lane_slot],
        p0,
        c_lo,
        c_hi,
        basis,
        uniform,
        convex,
        leg_curve,
        m_sid,
        inverse,
        qcs,
        s,
        entry,
        inv_entry,
        tiers,
        book,
    )
    c_band_lo = np.zeros(n_curves)
    c_band_hi = np.full(n_curves, np.inf)
    down = ~lane_up
    np.maximum.at(c_band_lo, lane_curve[down], edges[down])
    np.minimum.at(c_band_hi, lane_curve[lane_up], edges[lane_up])
    lo_c, hi_c = _shrunk(p0, c_band_lo, c_band_hi)
    pin = pinned[curve_owner]
    lo_c[pin] = p0[pin]
    hi_c[pin] = p0[pin]
    where = np.flatnonzero(marked)
    lo_out[where] = lo_c[leg_curve]
    hi_out[where] = hi_c[leg_curve]
    return rows, lo_out, hi_out


def _basis_sums(
    leg_curve: np.ndarray,
    count: int,
    inverse: np.ndarray,
    qcs: np.ndarray,
    s: np.ndarray,
    entry: np.ndarray,
    inv_entry: np.ndarray,
    mmr: np.ndarray,
    cum: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """``(a_m, b_m, c_m, a_u, b_u, c_u)`` per curve: on the tier piece of each leg,
    ``MM = a_m + b_m·P + c_m/P`` and ``uPnL = a_u + b_u·P + c_u/P``."""
    lin = ~inverse
    parts = (
        -cum,
        np.where(lin, mmr * qcs, 0.0),
        np.where(inverse, mmr * qcs, 0.0),
        np.where(inverse, s * qcs * inv_entry, -(s * qcs * entry)),
        np.where(lin, s * qcs, 0.0),
        np.where(inverse, -(s * qcs), 0.0),
    )
    return tuple(np.bincount(leg_curve, weights=part, minlength=count) for part in parts)


def _walk(
    lane_curve: np.ndarray,
    up: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    rising: np.ndarray,
    budget: np.ndarray,
    p0_curve: np.ndarray,
    lo_curve: np.ndarray,
    hi_curve: np.ndarray,
    basis: tuple[np.ndarray, ...],
    uniform: np.ndarray,
    convex: np.ndarray,
    leg_curve: np.ndarray,
    leg_sid: np.ndarray,
    inverse: np.ndarray,
    qcs: np.ndarray,
    s: np.ndarray,
    entry: np.ndarray,
    inv_entry: np.ndarray,
    tiers: object,
    book: object,
) -> np.ndarray:
    """The edge of every lane (see :meth:`monitor.bands.SymbolCurve.edge`)."""
    from monitor.valuation import TierArrays

    assert isinstance(tiers, TierArrays)  # noqa: S101
    n = len(lane_curve)
    edge = np.zeros(n)
    if not n:
        return edge
    sign = np.where(rising, 1.0, -1.0)
    p0 = p0_curve[lane_curve]
    a_m, b_m, c_m, a_u, b_u, c_u = (x[lane_curve] for x in basis)
    a = alpha * a_m - beta * a_u
    b = alpha * b_m - beta * b_u
    c = alpha * c_m - beta * c_u
    target = a + b * p0 + c / p0 + sign * budget
    limit = np.where(up, p0 * WALK_LIMIT, p0 / WALK_LIMIT)
    direction = np.where(up, 1.0, -1.0)
    worsening = sign * (b - c / (p0 * p0)) * direction > 0.0
    # monotone: every leg's slope keeps its sign over all its tiers
    mono = uniform[lane_curve].copy()
    if mono.any():
        mono &= _monotone(lane_curve, alpha, beta, leg_curve, leg_sid, inverse, s, tiers)
    done = ~worsening & mono
    # a rising threshold on a convex curve still short of its target at the limit stays short
    # all the way there (SymbolCurve.edge)
    check = np.flatnonzero(~done & rising & convex[lane_curve])
    if len(check):
        la, lb, lc = _piece(
            check,
            lane_curve,
            limit[check],
            alpha[check],
            beta[check],
            leg_curve,
            leg_sid,
            inverse,
            qcs,
            s,
            entry,
            inv_entry,
            tiers,
        )
        lim = limit[check]
        short = la + lb * lim + lc / lim - target[check] < 0.0
        done[check[short]] = True
    edge[done] = limit[done]
    start = p0.copy()
    end = np.where(up, hi_curve[lane_curve], lo_curve[lane_curve])
    active = np.flatnonzero(~done)
    for _ in range(MAX_STEPS):
        if not len(active):
            break
        u = up[active]
        e = end[active]
        lim = limit[active]
        capped = np.where(u, e >= lim, e <= lim)
        e = np.where(capped, lim, e)
        aa, bb, cc, tt = a[active], b[active], c[active], target[active]
        sg = sign[active]
        reached = sg * (aa + bb * e + cc / e - tt) >= 0.0
        st = start[active]
        if reached.any():
            safe_b = np.where(bb != 0.0, bb, 1.0)
            root = np.where(bb != 0.0, (tt - aa) / safe_b, cc / (tt - aa))
            low = np.where(u, st, e)
            high = np.where(u, e, st)
            hit = active[reached]
            edge[hit] = np.minimum(np.maximum(root[reached], low[reached]), high[reached])
        stop = capped & ~reached
        edge[active[stop]] = e[stop]
        going = ~reached & ~capped
        active = active[going]
        if not len(active):
            break
        new_start = e[going]
        start[active] = new_start
        nxt = _next_breakpoint(
            active, lane_curve, up, new_start, leg_curve, leg_sid, inverse, qcs, tiers
        )
        end[active] = nxt
        u = up[active]
        bounded = np.where(u, np.minimum(nxt, limit[active]), np.maximum(nxt, limit[active]))
        probe = (new_start + bounded) / 2.0
        na, nb, nc = _piece(
            active,
            lane_curve,
            probe,
            alpha[active],
            beta[active],
            leg_curve,
            leg_sid,
            inverse,
            qcs,
            s,
            entry,
            inv_entry,
            tiers,
        )
        a[active], b[active], c[active] = na, nb, nc
        jump = sign[active] * (na + nb * new_start + nc / new_start - target[active]) >= 0.0
        edge[active[jump]] = new_start[jump]
        active = active[~jump]
    else:  # pragma: no cover - tier tables have far fewer pieces than MAX_STEPS
        edge[active] = start[active]
    return edge


def _lane_legs(
    active: np.ndarray, lane_curve: np.ndarray, leg_curve: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(pair_lane, pair_leg)``: every (active lane index, leg of its curve) pair."""
    order = np.argsort(leg_curve, kind="stable")
    counts = np.bincount(leg_curve, minlength=int(lane_curve.max()) + 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    curves = lane_curve[active]
    reps = counts[curves]
    pair_lane = np.repeat(np.arange(len(active)), reps)
    offsets = np.arange(len(pair_lane)) - np.repeat(np.cumsum(reps) - reps, reps)
    pair_leg = order[starts[curves][pair_lane] + offsets]
    return pair_lane, pair_leg


def _piece(
    active: np.ndarray,
    lane_curve: np.ndarray,
    probe: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    leg_curve: np.ndarray,
    leg_sid: np.ndarray,
    inverse: np.ndarray,
    qcs: np.ndarray,
    s: np.ndarray,
    entry: np.ndarray,
    inv_entry: np.ndarray,
    tiers: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, c)`` of each active lane's term on the tier piece holding ``probe``."""
    from monitor.valuation import TierArrays

    assert isinstance(tiers, TierArrays)  # noqa: S101
    pair_lane, pair_leg = _lane_legs(active, lane_curve, leg_curve)
    p = probe[pair_lane]
    inv = inverse[pair_leg]
    q = qcs[pair_leg]
    sid = leg_sid[pair_leg]
    notional = np.where(inv, q / p, q * p)
    width = tiers.floor.shape[1]
    tier = (tiers.floor[sid] <= notional[:, None]).sum(axis=1) - 1
    tier = np.clip(tier, 0, width - 1)
    mmr = tiers.mmr[sid, tier]
    cum = tiers.cum[sid, tier]
    sg = s[pair_leg]
    parts = (
        -cum,
        np.where(inv, 0.0, mmr * q),
        np.where(inv, mmr * q, 0.0),
        np.where(inv, sg * q * inv_entry[pair_leg], -(sg * q * entry[pair_leg])),
        np.where(inv, 0.0, sg * q),
        np.where(inv, -(sg * q), 0.0),
    )
    count = len(active)
    a_m, b_m, c_m, a_u, b_u, c_u = (
        np.bincount(pair_lane, weights=part, minlength=count) for part in parts
    )
    return alpha * a_m - beta * a_u, alpha * b_m - beta * b_u, alpha * c_m - beta * c_u


def _next_breakpoint(
    active: np.ndarray,
    lane_curve: np.ndarray,
    up: np.ndarray,
    start: np.ndarray,
    leg_curve: np.ndarray,
    leg_sid: np.ndarray,
    inverse: np.ndarray,
    qcs: np.ndarray,
    tiers: object,
) -> np.ndarray:
    """The nearest price beyond ``start`` (in each lane's direction) where a leg of its curve
    changes tier (``inf`` / ``0`` when none)."""
    from monitor.valuation import TierArrays

    assert isinstance(tiers, TierArrays)  # noqa: S101
    pair_lane, pair_leg = _lane_legs(active, lane_curve, leg_curve)
    floors = tiers.floor[leg_sid[pair_leg], 1:]  # (pairs, width-1); +inf pads
    q = qcs[pair_leg][:, None]
    with np.errstate(divide="ignore"):
        points = np.where(inverse[pair_leg][:, None], q / floors, floors / q)
    valid = (points > 0.0) & np.isfinite(points)
    st = start[pair_lane][:, None]
    going_up = up[active][pair_lane][:, None]
    beyond = valid & np.where(going_up, points > st, points < st)
    best_up = np.where(beyond & going_up, points, np.inf).min(axis=1, initial=np.inf)
    best_dn = np.where(beyond & ~going_up, points, -np.inf).max(axis=1, initial=-np.inf)
    count = len(active)
    nearest_up = np.full(count, np.inf)
    np.minimum.at(nearest_up, pair_lane, best_up)
    nearest_dn = np.full(count, -np.inf)
    np.maximum.at(nearest_dn, pair_lane, best_dn)
    result = np.where(up[active], nearest_up, np.maximum(nearest_dn, 0.0))
    return np.asarray(result, dtype=np.float64)


def _monotone(
    lane_curve: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    leg_curve: np.ndarray,
    leg_sid: np.ndarray,
    inverse: np.ndarray,
    s: np.ndarray,
    tiers: object,
) -> np.ndarray:
    """Per lane: does every leg's slope keep its sign over all its tiers (see
    :meth:`monitor.bands.SymbolCurve.monotone`)."""
    from monitor.valuation import TierArrays

    assert isinstance(tiers, TierArrays)  # noqa: S101
    active = np.arange(len(lane_curve))
    pair_lane, pair_leg = _lane_legs(active, lane_curve, leg_curve)
    sid = leg_sid[pair_leg]
    mmr_min, mmr_max = tiers.mmr_min[sid], tiers.mmr_max[sid]
    sg = s[pair_leg]
    be = beta[pair_lane]
    al = alpha[pair_lane]
    turn = np.where(inverse[pair_leg], be * sg, -be * sg)
    low = al * mmr_min + turn
    high = al * mmr_max + turn
    bad = low * high <= 0.0
    any_bad = np.zeros(len(lane_curve), dtype=bool)
    np.logical_or.at(any_bad, pair_lane, bad)
    return ~any_bad


def _shrunk(p0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    guard = p0 * ULP_GUARD
    new_lo = np.where(lo > 0.0, np.minimum(p0, lo + (p0 - lo) * SHRINK + guard), 0.0)
    finite = hi < INF
    new_hi = np.where(finite, np.maximum(p0, hi - (hi - p0) * SHRINK - guard), INF)
    return new_lo, new_hi
