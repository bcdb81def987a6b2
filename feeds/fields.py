"""The checks every venue parser shares: decoding a frame, and its symbol, timestamps and mark.

Each check raises :class:`~monitor.errors.MalformedRecord` carrying one of the stable reject
reasons of :mod:`feeds.ticks`; a parser catches it at its own boundary and returns
:func:`refused` (a :class:`~feeds.ticks.Parsed` reject) instead, so nothing escapes a parser.
Details are short and never echo more than a few dozen characters of the input.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext

import orjson

from feeds.normalized import MAX_TS, price_of, to_decimal
from feeds.ticks import MAX_FRAME_BYTES, Parsed
from monitor.errors import MalformedRecord

MAX_SYMBOL_CHARS = 256
"""Longer "symbols" are refused (the longest real ones, option names, are about 30)."""
_MAX_DIGITS = 19  # 2**63 - 1 has 19 digits


def refused(exc: MalformedRecord) -> Parsed:
    """The :class:`Parsed` reject for a refused frame."""
    return Parsed.reject(exc.reason, exc.detail)


def short(value: object) -> str:
    """``repr(value)`` cut to 40 characters, for reject details."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(value: object) -> str:
    """What a JSON value looks like, for ``unknown_shape`` details."""
    if type(value) is dict:
        keys = ", ".join(short(key) for key in list(value)[:6])
        return f"an object with keys {keys}" if keys else "an empty object"
    if type(value) is list:
        return f"a list of {len(value)}"
    return f"a JSON {type(value).__name__} {short(value)}"


def unknown_shape(what: str) -> MalformedRecord:
    return MalformedRecord("unknown_shape", what)


def venue_error(venue: str, message: object) -> MalformedRecord:
    """An error reply of the venue (a refused subscription, an invalid request)."""
    return MalformedRecord("venue_error", f"venue error from {venue}: {short(message)}")


def frame_size_ok(raw: str | bytes) -> bool:
    """Whether ``raw`` is at most :data:`MAX_FRAME_BYTES` bytes (UTF-8 for text)."""
    if len(raw) > MAX_FRAME_BYTES:
        return False
    if isinstance(raw, str) and len(raw) * 4 > MAX_FRAME_BYTES:
        # the exact UTF-8 size; "surrogatepass" so that a lone surrogate cannot raise here
        return len(raw.encode("utf-8", "surrogatepass")) <= MAX_FRAME_BYTES
    return True


def decode_frame(raw: str | bytes) -> object:
    """The JSON value of one frame: ``oversized`` before decoding, ``invalid_json`` after."""
    if not frame_size_ok(raw):
        raise MalformedRecord("oversized", f"a frame of more than {MAX_FRAME_BYTES} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:  # also: not UTF-8, nesting deeper than 1024
        raise MalformedRecord("invalid_json", str(exc)[:120]) from None


def parse_frame(
    raw: str | bytes, receive_ts_ns: int | None, message: Callable[[object, int | None], Parsed]
) -> Parsed:
    """The ticks of one raw frame: decoded (or refused), then read by a venue's ``message``."""
    try:
        obj = decode_frame(raw)
    except MalformedRecord as exc:
        return refused(exc)
    return message(obj, receive_ts_ns)


def symbol_of(value: object, name: str) -> str:
    """A symbol: a non-empty string of printable characters without spaces.

    Not only ASCII: Binance lists contracts named in Chinese (``币安人生USDT``, 2025).
    """
    if value is None:
        raise MalformedRecord("invalid_field", f"{name} is required")
    if (
        type(value) is not str
        or not 0 < len(value) <= MAX_SYMBOL_CHARS
        or not value.isprintable()
        or " " in value
    ):
        raise MalformedRecord("invalid_field", f"{name} is not a symbol: {short(value)}")
    return value


def ms_of(value: object, name: str) -> int:
    """A timestamp sent as a JSON integer (milliseconds), within ``[0, 2**63)``."""
    if value is None:
        raise MalformedRecord("invalid_field", f"{name} is required")
    if type(value) is not int or not 0 <= value <= MAX_TS:
        raise MalformedRecord(
            "invalid_field", f"{name} must be a non-negative integer, got {short(value)}"
        )
    return value


def int_of_text(value: object, name: str) -> int:
    """A non-negative integer sent as a string of ASCII digits (OKX's ``ts``, Tardis' columns)."""
    if value is None or value == "":
        raise MalformedRecord("invalid_field", f"{name} is required")
    if (
        type(value) is not str
        or not 0 < len(value) <= _MAX_DIGITS
        or not value.isascii()
        or not value.isdigit()
    ):
        raise MalformedRecord(
            "invalid_field", f"{name} must be a string of digits, got {short(value)}"
        )
    number = int(value)
    if number > MAX_TS:
        raise MalformedRecord("invalid_field", f"{name} is out of range: {short(value)}")
    return number


def mark_of(value: object, name: str) -> tuple[float, str]:
    """``(mark, mark_text)`` from a decimal string (or a JSON number): finite, positive and in
    ``[1e-30, 1e30)`` (:func:`feeds.normalized.price_of`), written in ASCII."""
    if value is None:
        raise MalformedRecord("invalid_field", f"{name} is required")
    if isinstance(value, str) and not value.isascii():
        # float() reads "١٢٣" and fullwidth digits; no venue writes prices that way
        raise MalformedRecord("invalid_price", f"{name} {short(value)} is not a decimal number")
    mark = price_of(value)
    if isinstance(value, str):
        return mark, value
    return mark, repr(value)  # a JSON number: its shortest round-trip text


def decimal_text_of(value: object, name: str) -> str:
    """The exact text of a decimal of any sign (a funding rate): a plain decimal string, or a
    JSON number (its shortest round-trip text), within the magnitudes of
    :func:`feeds.normalized.to_decimal`."""
    if value is None:
        raise MalformedRecord("invalid_field", f"{name} is required")
    if isinstance(value, str) and not value.isascii():
        raise MalformedRecord("invalid_field", f"{name} {short(value)} is not a decimal number")
    try:
        to_decimal(value)
    except ValueError as exc:
        raise MalformedRecord("invalid_field", f"{name}: {exc}") from None
    return value if isinstance(value, str) else repr(value)


def mid_of(bid: object, ask: object, names: tuple[str, str] = ("b", "a")) -> tuple[float, str]:
    """The mid ``(bid + ask) / 2`` of two valid prices, computed exactly in decimal."""
    _, bid_text = mark_of(bid, names[0])
    _, ask_text = mark_of(ask, names[1])
    with localcontext() as context:
        context.prec = 80  # exact for any real quote (both sides share their few digits)
        try:
            mid = (Decimal(bid_text) + Decimal(ask_text)) / 2
        except InvalidOperation:  # defensive: both texts already passed price_of
            raise MalformedRecord("invalid_price", "bid or ask is not a decimal") from None
    text = format(mid, "f")
    return mark_of(text, "mid")
