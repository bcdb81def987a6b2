"""Exact numbers in the book: decimals kept as scaled integers, arithmetic without rounding.

An exact input (a quantity, an entry price, a wallet) is stored in two integer columns, a
mantissa ``m`` and an exponent ``e``, meaning ``m·10^e``; ``Decimal('1.50')`` is ``(150, -2)``,
so the decimal comes back with its exponent (and its ``repr``) intact. A value whose mantissa
does not fit in 64 bits, or a negative zero, is marked by the exponent :data:`OVERFLOW` and
kept as a :class:`~decimal.Decimal` beside the table (the rare exact fallback).

Arithmetic on them is exact: sums and products of decimals are computed in a decimal context
of unbounded precision (:data:`UNBOUNDED`), and only where a division enters (inverse
contracts, ``1/P``) in :class:`~fractions.Fraction`.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from monitor.columns import Cells

OVERFLOW = -128
"""Exponent marking a value kept outside the columns."""
_INT64_MAX = (1 << 63) - 1

UNBOUNDED = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
"""A context in which sums and products of decimals are exact."""

EXACT = Context(prec=60)
"""The context of wallet bookkeeping (wallet plus margin transfers), as before columns: its
results, and so their exponents, are what event ids were always computed from."""


def split(value: Decimal) -> tuple[int, int] | None:
    """``(mantissa, exponent)`` of ``value``, or ``None`` when it does not fit the columns."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or not -127 <= exponent <= 127:
        return None
    mantissa = 0
    for digit in digits:
        mantissa = mantissa * 10 + digit
    if mantissa > _INT64_MAX or (sign and mantissa == 0):
        return None
    return (-mantissa if sign else mantissa), exponent


def join(mantissa: int, exponent: int) -> Decimal:
    """The decimal ``mantissa·10^exponent``, with that exponent."""
    return Decimal(mantissa).scaleb(exponent, UNBOUNDED)


class ExactColumn:
    """Write and read one exact decimal column pair (``<name>_m``, ``<name>_e``) of a table,
    with the overflow values kept in a dict by row."""

    __slots__ = ("overflow", "v_e", "v_m")

    def __init__(self) -> None:
        self.overflow: dict[int, Decimal] = {}
        self.v_m: Cells | None = None
        self.v_e: Cells | None = None

    def bind(self, v_m: Cells, v_e: Cells) -> None:
        """Point at the (possibly re-allocated) columns."""
        self.v_m, self.v_e = v_m, v_e

    def set(self, row: int, value: Decimal) -> None:
        assert self.v_m is not None  # noqa: S101  # bound when the table is made
        assert self.v_e is not None  # noqa: S101
        parts = split(value)
        if parts is None:
            self.v_m[row] = 0
            self.v_e[row] = OVERFLOW
            self.overflow[row] = value
            return
        self.v_m[row], self.v_e[row] = parts
        if self.overflow:
            self.overflow.pop(row, None)

    def set_many(
        self,
        m: np.ndarray,
        e: np.ndarray,
        rows: np.ndarray,
        mantissa: np.ndarray,
        exponent: np.ndarray,
    ) -> None:
        """Write many values given as scaled integers (bulk loading); ``m`` and ``e`` are the
        table's mantissa and exponent columns."""
        m[rows] = mantissa
        e[rows] = exponent
        if self.overflow:
            for row in rows.tolist():
                self.overflow.pop(row, None)

    def get(self, row: int) -> Decimal:
        assert self.v_m is not None  # noqa: S101
        assert self.v_e is not None  # noqa: S101
        exponent = self.v_e[row]
        if exponent == OVERFLOW:
            return self.overflow[row]
        return join(self.v_m[row], exponent)

    def clear(self, row: int) -> None:
        if self.overflow:
            self.overflow.pop(row, None)
