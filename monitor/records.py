"""Input records: the facts the engine is fed (see interfaces §1).

They are validated before they get here (``feeds.normalized`` for JSON Lines, the exchange
parsers for native feeds); the engine trusts their types and ranges. Quantities are exact
``Decimal`` values; a tick carries its mark as a float for the hot path plus the text it came
from, so the exact value can be recovered on the rare occasions a decision needs it.

Records are named tuples: immutable, and cheap to build (one per input line).

Timestamps: ``ts`` is the exchange-side event time in integer milliseconds since the Unix epoch.
Receive time, where a source has one, travels separately and never drives the engine.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NamedTuple

from monitor.contracts import Contract

Side = Literal["both", "long", "short"]
Mode = Literal["isolated", "cross"]


class ContractRecord(NamedTuple):
    """Defines (or re-tiers) an instrument."""

    contract: Contract


class BalanceRecord(NamedTuple):
    """Sets an account's cross wallet balance in one margin asset."""

    ts: int
    account: str
    asset: str
    wallet: Decimal


class PositionRecord(NamedTuple):
    """Upserts the position in slot (account, symbol, side); ``qty == 0`` closes it.

    ``qty`` is signed (+ long, − short); base units for linear contracts, contracts for inverse.
    ``isolated_wallet`` is set for isolated positions only.
    """

    ts: int
    account: str
    symbol: str
    side: Side
    mode: Mode
    qty: Decimal
    entry: Decimal
    leverage: Decimal
    isolated_wallet: Decimal | None


class MarginRecord(NamedTuple):
    """Adds (+) or removes (−) isolated margin of an open isolated position."""

    ts: int
    account: str
    symbol: str
    side: Side
    delta: Decimal


def decimal_of_float(value: float) -> Decimal:
    """The decimal a JSON number meant: the shortest text that reads back as ``value``.

    Exact for every literal of up to 15 significant digits; longer literals should be sent as
    strings (interfaces §1 prefers strings for exactly this reason).
    """
    return Decimal(repr(value))


class TickRecord(NamedTuple):
    """A mark price. ``mark`` is the float used on the hot path; ``mark_text`` is the decimal
    text it came from, or the float itself when the source was a JSON number."""

    ts: int
    symbol: str
    mark: float
    mark_text: str | float

    @property
    def mark_exact(self) -> Decimal:
        text = self.mark_text
        return Decimal(text) if isinstance(text, str) else decimal_of_float(text)


AccountRecord = BalanceRecord | PositionRecord | MarginRecord
Record = ContractRecord | BalanceRecord | PositionRecord | MarginRecord | TickRecord
