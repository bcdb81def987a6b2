"""Many decimal texts at once: validated, as floats, and exactly as scaled integers.

:func:`parse_decimals` takes the texts of one column of a batch of records (``"123.45"``,
``"-0.001"``, ``"7"``) and returns, for each, its float (exactly what ``float(text)`` gives: the
nearest double), its exact value as a mantissa and a base-10 exponent (``"1.50"`` is
``(150, -2)``, the exponent kept as written), and whether it took the fast path.

It works on the column as a whole: one check of the characters of the joined text, one numpy
conversion to floats (which also rejects malformed numbers), the dots located with array
operations, and the mantissa recovered from the float: a decimal of at most 15 significant
digits is within half a unit of ``value·10^k`` (``k`` digits after the dot), so rounding that
product gives the mantissa exactly. No ``Decimal`` and no Python work per text.

The fast path takes plain decimal text only: an optional ``-``, digits with at most one ``.``
and at least one digit, at most 15 digits, and a magnitude clearly inside ``[1e-30, 1e30)``
(or zero). Anything else (exponents, long texts, non-ASCII, magnitudes near the bounds,
garbage) is flagged ``slow``: its record goes through the record-by-record parser
(``feeds.normalized``), which gives the exact verdict and, for bad input, the error that says
why.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_DIGITS = 15
_PLAIN = frozenset("0123456789.-")
_JOINED = _PLAIN | {"\n"}
_POW10 = 10.0 ** np.arange(MAX_DIGITS + 2)


class DecimalColumn(NamedTuple):
    """One parsed column (see the module docstring); arrays of the column's length."""

    value: np.ndarray  # float64
    mantissa: np.ndarray  # int64
    exponent: np.ndarray  # int8
    slow: np.ndarray  # bool: not parsed here (send the record to the exact parser)


def parse_decimals(texts: list[str]) -> DecimalColumn:
    """See the module docstring."""
    count = len(texts)
    value = np.zeros(count)
    mantissa = np.zeros(count, dtype=np.int64)
    exponent = np.zeros(count, dtype=np.int8)
    if not count:
        return DecimalColumn(value, mantissa, exponent, np.zeros(0, dtype=bool))
    joined = "\n".join(texts) + "\n"
    if not set(joined) <= _JOINED or joined.count("\n") != count:  # a text holds a newline
        return _one_by_one(texts)
    try:
        value = np.array(texts, dtype=np.float64)
    except ValueError:  # "", "-", "5-", "1.2.3", ...
        return _one_by_one(texts)
    data = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    dots = np.flatnonzero(data == 46)
    first_dot = np.searchsorted(dots, starts)
    dots_in = np.searchsorted(dots, ends) - first_dot
    has_dot = dots_in > 0
    dot_at = dots[np.minimum(first_dot, max(len(dots) - 1, 0))] if len(dots) else starts
    after = np.where(has_dot, ends - dot_at - 1, 0)
    negative = data[starts] == 45
    digits = ends - starts - has_dot - negative
    slow = (dots_in > 1) | (digits > MAX_DIGITS) | (digits < 1)
    slow |= negative & (value == 0.0)  # a negative zero: its sign would be lost in a mantissa
    magnitude = np.abs(value)
    # clearly inside the accepted range (the bounds themselves are decided exactly)
    slow |= (magnitude != 0.0) & ((magnitude >= 0.999999e30) | (magnitude < 1.000001e-30))
    fast = ~slow
    scale = _POW10[np.minimum(after[fast], MAX_DIGITS + 1)]
    mantissa[fast] = np.rint(value[fast] * scale).astype(np.int64)
    exponent[fast] = -after[fast]
    value[slow] = 0.0
    return DecimalColumn(value, mantissa, exponent, slow)


def _one_by_one(texts: list[str]) -> DecimalColumn:
    """The column with its bad texts found one by one (a column that holds any is rare)."""
    good = []
    slow = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        if set(text) <= _PLAIN and text:  # float() would also take spaces and newlines
            try:
                float(text)
            except ValueError:
                slow[i] = True
        else:
            slow[i] = True
        good.append("0" if slow[i] else text)
    column = parse_decimals(good)
    column.slow[slow] = True
    return column
