"""Many decimal texts at once: validated, as floats, and exactly as scaled integers.

:func:`parse_decimals` takes the texts of one column of a batch of records (``"123.45"``,
``"-0.001"``, ``"7"``) and returns, for each, its float (exactly what ``float(text)`` gives: the
nearest double), its exact value as a mantissa and a base-10 exponent (``"1.50"`` is
``(150, -2)``, the exponent kept as written), and whether it took the fast path. The column is
checked for stray characters in one pass over its joined text, the floats come from one numpy
conversion, and the mantissas from ``int`` on the text without its dot: no ``Decimal`` per text.

The fast path takes plain decimal text only: an optional ``-``, digits with at most one ``.``
and at least one digit, at most 18 digits (so the mantissa fits 64 bits), and a magnitude
clearly inside ``[1e-30, 1e30)`` (or zero). Anything else (exponents, long texts, non-ASCII,
magnitudes near the bounds, garbage) is flagged ``slow``: its record goes through the
record-by-record parser (``feeds.normalized``), which gives the exact verdict and, for bad input,
the error that says why.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_CHARACTERS = 20  # a sign, 18 digits and a dot
_MANTISSA_LIMIT = 10**18
_PLAIN = frozenset("0123456789.-\n")


class DecimalColumn(NamedTuple):
    """One parsed column (see the module docstring); arrays of the column's length."""

    value: np.ndarray  # float64
    mantissa: np.ndarray  # int64
    exponent: np.ndarray  # int8
    slow: np.ndarray  # bool: not parsed here (send the record to the exact parser)


def parse_decimals(texts: list[str]) -> DecimalColumn:
    """See the module docstring."""
    count = len(texts)
    if count and not set("\n".join(texts)) <= _PLAIN:
        # a stray character somewhere: find the texts that hold one (rare)
        bad = [not set(t) <= _PLAIN for t in texts]
        column = parse_decimals(["0" if b else t for t, b in zip(texts, bad, strict=True)])
        column.slow[np.array(bad)] = True
        column.mantissa[column.slow] = 0
        return column
    mantissas: list[int] = []
    exponents: list[int] = []
    slow = np.zeros(count, dtype=bool)
    for i, text in enumerate(texts):
        dot = text.find(".")
        try:
            if len(text) > MAX_CHARACTERS:
                raise ValueError(text)
            if dot < 0:
                mantissa, exponent = int(text), 0
            else:
                mantissa, exponent = int(text[:dot] + text[dot + 1 :]), dot + 1 - len(text)
        except ValueError:  # "", "-", ".", "1.2.3", "5-", ...
            mantissa, exponent = 0, 0
            slow[i] = True
        if not -_MANTISSA_LIMIT < mantissa < _MANTISSA_LIMIT:
            mantissa, exponent = 0, 0
            slow[i] = True
        elif mantissa == 0 and text.startswith("-"):
            slow[i] = True  # a negative zero: its sign would be lost in a mantissa
        mantissas.append(mantissa)
        exponents.append(exponent)
    mantissa_array = np.array(mantissas, dtype=np.int64)
    exponent_array = np.array(exponents, dtype=np.int8)
    value = np.zeros(count, dtype=np.float64)
    if slow.any():
        fast = ~slow
        value[fast] = np.array([t for t, s in zip(texts, slow.tolist(), strict=True) if not s])
    elif count:
        value[:] = np.array(texts, dtype=np.float64)
    magnitude = np.abs(value)
    # clearly inside the accepted range (the bounds themselves are decided exactly)
    slow |= (magnitude != 0.0) & ((magnitude >= 0.999999e30) | (magnitude < 1.000001e-30))
    mantissa_array[slow] = 0
    exponent_array[slow] = 0
    value[slow] = 0.0
    return DecimalColumn(value, mantissa_array, exponent_array, slow)
