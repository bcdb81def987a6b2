"""Input records: the facts the engine is fed (see docs/records.md).

They are validated before they get here (``feeds.normalized`` for JSON Lines, the exchange
parsers for native feeds); the engine trusts their types and ranges. Quantities are exact
``Decimal`` values; a tick carries its mark as a float for the hot path plus the text it came
from, so the exact value can be recovered on the rare occasions a decision needs it.

Records are named tuples: immutable, and cheap to build (one per input line).

Timestamps: ``ts`` is the exchange-side event time in integer milliseconds since the Unix epoch.
Receive time, where a source has one, travels separately and never drives the engine.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Literal, NamedTuple

import numpy as np

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


MarkSource = str | float | bytes
"""What a tick's mark was, exactly: its decimal text (a JSON string), the float of a JSON number
(whose shortest round-trip decimal is taken as meant), or the raw JSON line it came from (whose
number text is then read exactly, only when needed)."""


def exact_mark_of(source: MarkSource) -> Fraction:
    """The exact value of a mark (see :data:`MarkSource`)."""
    return Fraction(exact_mark_decimal(source))


def exact_mark_decimal(source: MarkSource) -> Decimal:
    """The exact value of a mark as a decimal (see :data:`MarkSource`)."""
    if isinstance(source, str):
        return Decimal(source)
    if isinstance(source, bytes):
        value = json.loads(source, parse_float=Decimal, parse_int=Decimal)["mark"]
        return Decimal(value) if isinstance(value, str) else value
    return decimal_of_float(source)


def decimal_of_float(value: float) -> Decimal:
    """The decimal a JSON number meant: the shortest text that reads back as ``value``.

    Exact for every literal of up to 15 significant digits; longer literals should be sent as
    strings (docs/records.md prefers strings for exactly this reason).
    """
    return Decimal(repr(value))


class TickRecord(NamedTuple):
    """A mark price. ``mark`` is the float used on the hot path; ``mark_text`` is the decimal
    text it came from, or the float itself when the source was a JSON number.

    A tick may carry the symbol's current funding rate and the next funding time it applies to
    (``funding_ts``, ms), both or neither (docs/collateral.md §3): settled only with funding on.
    """

    ts: int
    symbol: str
    mark: float
    mark_text: MarkSource
    funding_rate: Decimal | None = None
    funding_ts: int | None = None

    @property
    def mark_exact(self) -> Fraction:
        return exact_mark_of(self.mark_text)


class AccountUpdateRecord(NamedTuple):
    """Several balances and positions of one account, applied atomically (validated as a whole,
    then every touched entity evaluated once, with ``ts``).

    ``replace``: a full account snapshot — balances not listed become 0 and open positions not
    listed are closed; a snapshot older than the last one applied to the account is rejected.
    Otherwise a merge (e.g. Binance ``ACCOUNT_UPDATE``, which lists only what changed).
    """

    ts: int
    account: str
    balances: tuple[tuple[str, Decimal], ...]  # (asset, wallet)
    positions: tuple[PositionRecord, ...]
    replace: bool


class AssetModeRecord(NamedTuple):
    """Switches an account between single-asset mode (the default: one cross entity per margin
    asset) and multi-assets mode (one pool of every linear cross position and every wallet,
    valued in USD); docs/collateral.md §1."""

    ts: int
    account: str
    multi_assets: bool


class CollateralRecord(NamedTuple):
    """One unit of ``asset`` is worth ``price`` USD (> 0); as pool collateral its positive
    equity counts at ``price × (1 − haircut)``, ``0 <= haircut < 1`` (docs/collateral.md §1).
    Not tied to an account: it re-values every pool holding the asset."""

    ts: int
    asset: str
    price: Decimal
    haircut: Decimal


AccountRecord = (
    BalanceRecord | PositionRecord | MarginRecord | AccountUpdateRecord | AssetModeRecord
)
Record = (
    ContractRecord
    | BalanceRecord
    | PositionRecord
    | MarginRecord
    | AccountUpdateRecord
    | AssetModeRecord
    | CollateralRecord
    | TickRecord
)


class DecimalArray(NamedTuple):
    """A column of exact decimals: the nearest float of each, and its exact value as
    ``mantissa·10^exponent`` (see :mod:`monitor.exact`)."""

    value: np.ndarray  # float64
    mantissa: np.ndarray  # int64
    exponent: np.ndarray  # int8


class AccountBatch(NamedTuple):
    """A run of consecutive ``balance`` and ``position`` records in columns, validated like
    single records: what :mod:`monitor.bulk` loads in one pass. Entry ``i`` of every column is
    record ``i`` of the run; balance records leave the position columns at 0 and ``""``.

    ``wallet`` is a balance's wallet or a position's ``isolated_wallet`` (``has_wallet`` says
    whether a position carried one); the ``*_text`` lists keep each decimal as it was written,
    for the records that take the record-by-record path.
    """

    is_position: np.ndarray  # bool
    ts: np.ndarray  # int64
    account: list[str]
    symbol: list[str]
    asset: list[str]
    side: np.ndarray  # int8: 0 both, 1 long, 2 short
    isolated: np.ndarray  # bool
    qty: DecimalArray
    entry: DecimalArray
    wallet: DecimalArray
    has_wallet: np.ndarray  # bool
    exact: np.ndarray  # bool: every decimal of the record is in the exact columns
    leverage: list[str]
    qty_text: list[str]
    entry_text: list[str]
    wallet_text: list[str]

    def __len__(self) -> int:
        return len(self.account)

    def take(self, indices: Sequence[int]) -> AccountBatch:
        """The records at ``indices``, in that order, as a batch."""
        picked = np.asarray(indices, dtype=np.intp)

        def decimals(column: DecimalArray) -> DecimalArray:
            return DecimalArray(
                column.value[picked], column.mantissa[picked], column.exponent[picked]
            )

        def texts(column: list[str]) -> list[str]:
            return [column[i] for i in indices]

        return AccountBatch(
            is_position=self.is_position[picked],
            ts=self.ts[picked],
            account=texts(self.account),
            symbol=texts(self.symbol),
            asset=texts(self.asset),
            side=self.side[picked],
            isolated=self.isolated[picked],
            qty=decimals(self.qty),
            entry=decimals(self.entry),
            wallet=decimals(self.wallet),
            has_wallet=self.has_wallet[picked],
            exact=self.exact[picked],
            leverage=texts(self.leverage),
            qty_text=texts(self.qty_text),
            entry_text=texts(self.entry_text),
            wallet_text=texts(self.wallet_text),
        )

    def record(self, i: int) -> BalanceRecord | PositionRecord:
        """Record ``i`` as a single record (for the record-by-record path)."""
        ts = int(self.ts[i])
        if not self.is_position[i]:
            return BalanceRecord(ts, self.account[i], self.asset[i], Decimal(self.wallet_text[i]))
        side: Side = ("both", "long", "short")[int(self.side[i])]
        isolated = bool(self.isolated[i])
        return PositionRecord(
            ts,
            self.account[i],
            self.symbol[i],
            side,
            "isolated" if isolated else "cross",
            Decimal(self.qty_text[i]),
            Decimal(self.entry_text[i]),
            Decimal(self.leverage[i]),
            Decimal(self.wallet_text[i]) if isolated and self.has_wallet[i] else None,
        )
