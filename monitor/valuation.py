"""Valuing entities: margin balance and maintenance margin, in floats and exactly.

For an entity with wallet ``W`` and rows ``i`` (docs/margin.md):

* ``MB = W + Σ uPnL_i``, ``uPnL = s·qcs·(P − EP)`` (linear) or ``s·qcs·(1/EP − 1/P)`` (inverse);
* ``MM = Σ (N_i·mmr_i − cum_i)`` with ``N = qcs·P`` (linear) or ``qcs/P`` (inverse) and the
  tier that holds ``N`` at the mark (an unmarked symbol is valued at each row's entry).

Two float paths compute the same numbers: :func:`value_one` walks one entity's rows in Python,
:func:`value_many` values thousands of entities in one pass over arrays. They perform the same
IEEE operations in the same order (each entity's terms are added in its list order, its wallet
first), so they agree to the last bit: which path valued an entity never changes a decision or
a published number. Both also return ``tolerance``, :data:`FLOAT_TOLERANCE` times the sum of
the magnitudes entering the sums, a bound on their float error: a decision that clears it is
exact, one that does not is re-made by :func:`value_exact` in exact arithmetic (decimals for
linear contracts, rationals where ``1/P`` enters).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

import numpy as np

from monitor.book import NONE, Book
from monitor.exact import UNBOUNDED

FLOAT_TOLERANCE = 1e-12
"""Relative bound on the float error of a valuation: below it, decisions are made exactly."""

Valuation = tuple[float, float, float]


def value_one(book: Book, entity: int) -> Valuation:
    """``(MB, MM, tolerance)`` of one entity (see the module docstring)."""
    rows = book.rows
    symbols = book.symbols
    contracts = book.contracts
    price_of, inverse = symbols.v_price, symbols.v_inverse
    r_symbol, r_sign, r_qcs, r_entry, r_next = (
        rows.v_symbol,
        rows.v_sign,
        rows.v_qcs,
        rows.v_entry,
        rows.v_next,
    )
    mb: float = book.entities.v_wallet[entity]
    mm = 0.0
    scale = abs(mb)
    row = book.entities.v_first[entity]
    while row != NONE:
        sid = r_symbol[row]
        qcs = r_qcs[row]
        entry = r_entry[row]
        p: float = price_of[sid]
        if p != p:  # NaN: no mark yet, valued at entry
            p = entry
        if inverse[sid]:
            ip = 1.0 / p
            n = qcs * ip
            mb += r_sign[row] * qcs * (1.0 / entry - ip)
            term = qcs * (1.0 / entry + ip)
        else:
            n = qcs * p
            mb += r_sign[row] * qcs * (p - entry)
            term = qcs * (p + entry)
        contract = contracts[sid]
        assert contract is not None  # noqa: S101  # a row exists only with its contract
        t = bisect_right(contract.floors_f, n) - 1
        if t < 0:
            t = 0
        cum = contract.cum_f[t]
        mm += n * contract.mmr_f[t] - cum
        scale += term + cum
        row = r_next[row]
    return mb, mm, scale * FLOAT_TOLERANCE


class TierArrays:
    """Every contract's tiers as padded 2-D arrays by symbol id (``floor`` padded with +inf),
    rebuilt when a contract changes; :meth:`tiers` finds each row's tier with one
    ``searchsorted`` per contract."""

    def __init__(self) -> None:
        self.version = -1
        self.floor = np.zeros((0, 1))
        self.mmr = np.zeros((0, 1))
        self.cum = np.zeros((0, 1))
        self.mmr_min = np.zeros(0)
        self.mmr_max = np.zeros(0)
        self.warned = np.zeros(0, dtype=bool)  # a table whose cum is not continuous
        self.negative = np.zeros(0, dtype=bool)  # a table that lets MM go negative
        self.convex = np.zeros(0, dtype=bool)  # MM convex in the notional

    def refresh(self, book: Book, version: int) -> None:
        if version == self.version and len(self.floor) == len(book.contracts):
            return
        width = max((len(c.tiers) for c in book.contracts if c is not None), default=1)
        count = len(book.contracts)
        self.floor = np.full((count, width), np.inf)
        self.mmr = np.zeros((count, width))
        self.cum = np.zeros((count, width))
        self.mmr_min = np.zeros(count)
        self.mmr_max = np.zeros(count)
        self.warned = np.zeros(count, dtype=bool)
        self.negative = np.zeros(count, dtype=bool)
        self.convex = np.zeros(count, dtype=bool)
        for sid, contract in enumerate(book.contracts):
            if contract is None:
                continue
            self.mmr_min[sid] = contract.mmr_min
            self.mmr_max[sid] = contract.mmr_max
            self.warned[sid] = bool(contract.warnings)
            self.negative[sid] = contract.mm_can_be_negative
            self.convex[sid] = contract.convex
            k = len(contract.tiers)
            self.floor[sid, :k] = contract.floors_f
            self.mmr[sid, :k] = contract.mmr_f
            self.cum[sid, :k] = contract.cum_f
        self.version = version

    def tiers(self, book: Book, sid: np.ndarray, notional: np.ndarray) -> np.ndarray:
        """The tier index of each (symbol, notional): what ``bisect_right(floors, n) - 1``
        (at least 0) gives for one row. One ``searchsorted`` when every row is of one
        contract; otherwise the count of each row's floors at or below its notional, over the
        padded tier table (the same number, for rows of many contracts at once)."""
        if not len(sid):
            return np.zeros(0, dtype=np.int64)
        first = int(sid[0])
        if (sid == first).all():
            contract = book.contracts[first]
            assert contract is not None  # noqa: S101
            tier = np.searchsorted(contract.floors_np, notional, side="right") - 1
        else:
            tier = (self.floor[sid] <= notional[:, None]).sum(axis=1) - 1
        return np.maximum(tier, 0).astype(np.int64)


class RowTerms:
    """The per-row terms of a batch valuation (kept for the trigger bands of the same pass)."""

    __slots__ = ("inverse", "mm", "notional", "owner", "price", "rows", "sid", "tier", "upnl")

    def __init__(self) -> None:
        self.rows = self.owner = self.sid = self.price = self.notional = np.zeros(0)
        self.tier = self.upnl = self.mm = self.inverse = np.zeros(0)


def value_many(
    book: Book, tiers: TierArrays, entities: np.ndarray, marks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, RowTerms]:
    """``(MB, MM, tolerance)`` arrays for ``entities``, bit for bit what :func:`value_one`
    gives for each, and the row terms they were summed from. ``marks`` (by symbol id) values
    them at other marks than the book's (a what-if), without touching the book."""
    rows_t = book.rows
    rows, owner = book.gather(entities)
    sid = rows_t.symbol[rows].astype(np.int64)
    entry = rows_t.entry[rows]
    qcs = rows_t.qcs[rows]
    sign = rows_t.sign[rows]
    price = (book.symbols.price if marks is None else marks)[sid]
    price = np.where(np.isnan(price), entry, price)
    inverse = book.symbols.inverse[sid].astype(bool)
    notional = qcs * price
    upnl = sign * qcs * (price - entry)
    term = qcs * (price + entry)
    if inverse.any():
        ip = 1.0 / price[inverse]
        q_inv = qcs[inverse]
        e_inv = entry[inverse]
        notional[inverse] = q_inv * ip
        upnl[inverse] = sign[inverse] * q_inv * (1.0 / e_inv - ip)
        term[inverse] = q_inv * (1.0 / e_inv + ip)
    tier = tiers.tiers(book, sid, notional)
    cum = tiers.cum[sid, tier]
    mm_rows = notional * tiers.mmr[sid, tier] - cum
    count = len(entities)
    index = np.concatenate([np.arange(count), owner])
    wallet = book.entities.wallet[entities]
    mb = np.bincount(index, weights=np.concatenate([wallet, upnl]), minlength=count)
    mm = np.bincount(owner, weights=mm_rows, minlength=count)
    scale = np.bincount(
        index, weights=np.concatenate([np.abs(wallet), term + cum]), minlength=count
    )
    terms = RowTerms()
    terms.rows, terms.owner, terms.sid, terms.price = rows, owner, sid, price
    terms.notional, terms.tier, terms.upnl, terms.mm = notional, tier, upnl, mm_rows
    terms.inverse = inverse
    return mb, mm, scale * FLOAT_TOLERANCE, terms


ExactMark = Callable[[int], Decimal | None]


def value_exact(book: Book, entity: int, exact_mark: ExactMark) -> tuple[Fraction, Fraction]:
    """``(MB, MM)`` of one entity in exact arithmetic: decimals (exact, unbounded precision)
    for linear rows, rationals where an inverse row divides by the mark."""
    rows = book.rows
    mb_dec = book.wallet(entity)
    mm_dec = Decimal(0)
    mb_frac: Fraction | None = None
    mm_frac = Fraction(0)
    add, mul, sub = UNBOUNDED.add, UNBOUNDED.multiply, UNBOUNDED.subtract
    for row in book.entity_rows(entity):
        sid = rows.v_symbol[row]
        contract = book.contracts[sid]
        assert contract is not None  # noqa: S101
        qty = rows.qty.get(row)
        entry = rows.entry_exact.get(row)
        mark = exact_mark(sid)
        price = entry if mark is None else mark
        qcs = mul(abs(qty), contract.contract_size)
        if contract.is_inverse:
            q, p, e = Fraction(qcs), Fraction(price), Fraction(entry)
            upnl = q * (1 / e - 1 / p)
            n = q / p
            _, mmr, cum = contract.tiers_exact[contract.tier_index_exact(n)]
            mb_frac = (mb_frac or Fraction(0)) + (upnl if qty > 0 else -upnl)
            mm_frac += n * mmr - cum
        else:
            upnl_d = mul(qcs, sub(price, entry))
            mb_dec = add(mb_dec, upnl_d) if qty > 0 else sub(mb_dec, upnl_d)
            n_d = mul(qcs, price)
            tier = contract.tiers[contract.tier_index_decimal(n_d)]
            mm_dec = add(mm_dec, sub(mul(n_d, tier.mmr), tier.cum))
    if mb_frac is None:  # linear rows only: the decimals are the exact values
        return Fraction(mb_dec), Fraction(mm_dec)
    return Fraction(mb_dec) + mb_frac, Fraction(mm_dec) + mm_frac
