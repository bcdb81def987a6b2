"""Parser of liqmon's normalized records (``docs/records.md``): one JSON object per line.

Pure: text in, :mod:`monitor.records` out, or :class:`~monitor.errors.MalformedRecord` with a
stable ``reason``:

``invalid_json``     the line is not strict JSON (or not UTF-8, or over 1 MiB)
``not_an_object``    the JSON value is not an object
``unknown_type``     ``type`` is missing or not one of contract/balance/position/margin/tick/
                     account_snapshot/account_update/asset_mode/collateral
``missing_field``    a required field is absent
``invalid_field``    a field has the wrong type or an impossible value (bool for a number,
                     non-integer ``ts``, negative entry, unknown side, ...)
``invalid_price``    a tick's mark is not a finite positive number
``invalid_brackets`` a contract's tier table is inconsistent (gaps, overlaps, ...)
``non_finite_number`` a decimal is ``"NaN"``, ``"Infinity"``, ``"inf"``, ...
``non_ascii_digits`` a decimal string holds digits of another script (``"١٢"``, ``"１２"``): never
                     read as a number
``number_out_of_range`` a non-zero decimal outside ``[1e-30, 1e30)`` in magnitude

Ticks are the hot path and are validated by hand; the other records go through pydantic
models (the boundary where their schema lives). Decimal quantities may be JSON strings (exact)
or numbers (taken as their shortest round-trip decimal). Unknown extra fields are ignored, so
producers can add fields without breaking older monitors.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    ValidationError,
    WithJsonSchema,
)

from monitor.contracts import Tier, make_contract
from monitor.errors import MalformedRecord, TierTableError
from monitor.errors import NumberError as NumberError
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    BalanceRecord,
    CollateralRecord,
    ContractRecord,
    MarginRecord,
    PositionRecord,
    Record,
    TickRecord,
    decimal_of_float,
)

MAX_LINE_BYTES = 1 << 20
"""Longer lines are rejected unparsed (a tier table is a few KiB; nothing needs a megabyte)."""


MAX_MAGNITUDE = 1e30
MIN_MAGNITUDE = 1e-30
"""Non-zero numbers (and marks) outside ``[1e-30, 1e30)`` in magnitude are refused: no real
quantity comes near either bound, and beyond them floats overflow, underflow to zero (a price
of ``1e-400`` is ``0.0``) or turn ratios infinite."""
_MAX_MAGNITUDE_EXACT = Decimal("1e30")
_MIN_MAGNITUDE_EXACT = Decimal("1e-30")
_MAX_DIGITS_TEXT = 64
_NON_FINITE = frozenset({"nan", "snan", "inf", "infinity"})
"""What ``Decimal()`` and ``float()`` read as non-finite (refused: ``non_finite_number``)."""
_DECIMAL_TEXT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", re.ASCII)
"""A decimal in plain JSON-like notation: no spaces, underscores, signs on both ends, or words."""


def to_decimal(value: object) -> Decimal:
    """A finite decimal from a JSON string or number; anything else is a :class:`NumberError`
    (a ``ValueError``). Strings are plain ASCII decimal text (``docs/records.md``, Numbers):
    ``Decimal()`` and ``float()`` would read ``"١٢"`` as 12, which is never meant."""
    if isinstance(value, Decimal):  # a JSON number read from its text (see exact_numbers)
        if not value.is_finite():
            raise NumberError("number_out_of_range", "expected a finite number")
        number = value
    elif isinstance(value, str):  # the preferred form
        if value.lstrip("+-").lower() in _NON_FINITE:
            raise NumberError("non_finite_number", f"{value!r} is not a finite number")
        if not value.isascii():
            if any(c.isdigit() or c.isnumeric() for c in value if not c.isascii()):
                raise NumberError(
                    "non_ascii_digits", f"{value[:40]!r} has digits that are not ASCII 0-9"
                )
            raise NumberError("invalid_field", f"{value[:40]!r} is not a decimal number")
        if len(value) > _MAX_DIGITS_TEXT:
            raise NumberError(
                "invalid_field", f"a number of more than {_MAX_DIGITS_TEXT} characters"
            )
        if not _DECIMAL_TEXT.fullmatch(value):
            raise NumberError("invalid_field", f"{value[:40]!r} is not a decimal number")
        number = Decimal(value)
    elif isinstance(value, bool):
        raise NumberError("invalid_field", "expected a decimal number, got a boolean")
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NumberError("number_out_of_range", "expected a finite number")
        number = decimal_of_float(value)
    else:
        raise NumberError(
            "invalid_field",
            f"expected a decimal number (string or number), got {type(value).__name__}",
        )
    magnitude = abs(number)
    if magnitude >= _MAX_MAGNITUDE_EXACT or (magnitude and magnitude < _MIN_MAGNITUDE_EXACT):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise NumberError(
            "number_out_of_range", f"{shown} is out of range (1e-30 <= |x| < 1e30, or 0)"
        )
    return number


ExactDecimal = Annotated[
    Decimal,
    PlainValidator(to_decimal),
    WithJsonSchema({"type": ["string", "number"], "description": "decimal (string preferred)"}),
]
MAX_TS = (1 << 63) - 1
Timestamp = Annotated[
    StrictInt, Field(ge=0, le=MAX_TS, description="exchange time, ms since the epoch")
]
Name = Annotated[str, Field(min_length=1, max_length=256)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class BracketIn(_Model):
    floor: ExactDecimal
    cap: ExactDecimal
    mmr: ExactDecimal
    cum: ExactDecimal


class ContractIn(_Model):
    type: Literal["contract"]
    symbol: Name
    kind: Literal["linear", "inverse"]
    margin_asset: Name
    contract_size: ExactDecimal
    brackets: list[BracketIn] = Field(min_length=1, max_length=100)


class BalanceIn(_Model):
    type: Literal["balance"]
    ts: Timestamp
    account: Name
    asset: Name
    wallet: ExactDecimal


class PositionIn(_Model):
    type: Literal["position"]
    ts: Timestamp
    account: Name
    symbol: Name
    side: Literal["both", "long", "short"]
    mode: Literal["isolated", "cross"]
    qty: ExactDecimal
    entry: ExactDecimal
    leverage: ExactDecimal
    isolated_wallet: ExactDecimal | None = None


class SnapshotBalanceIn(_Model):
    asset: Name
    wallet: ExactDecimal


class SnapshotPositionIn(_Model):
    symbol: Name
    side: Literal["both", "long", "short"]
    mode: Literal["isolated", "cross"]
    qty: ExactDecimal
    entry: ExactDecimal
    leverage: ExactDecimal
    isolated_wallet: ExactDecimal | None = None


class AccountSnapshotIn(_Model):
    """liqmon's whole-account record: every balance and open position of one account."""

    type: Literal["account_snapshot"]
    ts: Timestamp
    account: Name
    balances: list[SnapshotBalanceIn] = Field(max_length=1_000)
    positions: list[SnapshotPositionIn] = Field(max_length=10_000)


class AccountUpdateRecordIn(_Model):
    """liqmon's whole-account merge (``account_update``): the balances and positions it lists
    change, the rest of the account stays (the shape of Binance's ACCOUNT_UPDATE). Read as an
    ``account_snapshot`` is, fields and limits alike."""

    type: Literal["account_update"]
    ts: Timestamp
    account: Name
    balances: list[SnapshotBalanceIn] = Field(max_length=1_000)
    positions: list[SnapshotPositionIn] = Field(max_length=10_000)


class AssetModeIn(_Model):
    """docs/collateral.md §1: single-asset (false) or multi-assets (true) mode."""

    type: Literal["asset_mode"]
    ts: Timestamp
    account: Name
    multi_assets: StrictBool


class CollateralIn(_Model):
    """docs/collateral.md §1: a collateral asset's USD price and haircut (checked by the
    engine: a price that is not positive, or a haircut outside [0, 1), is rejected)."""

    type: Literal["collateral"]
    ts: Timestamp
    asset: Name
    price: ExactDecimal
    haircut: ExactDecimal


class MarginIn(_Model):
    type: Literal["margin"]
    ts: Timestamp
    account: Name
    symbol: Name
    side: Literal["both", "long", "short"]
    delta: ExactDecimal


def malformed(error: ValidationError, what: str = "") -> MalformedRecord:
    """The :class:`MalformedRecord` of a model's first validation error: ``missing_field``,
    the reason of a :class:`NumberError`, or ``invalid_field``; ``what`` prefixes the place."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    where = f"{what} {where}" if what else where
    if first["type"] == "missing":
        return MalformedRecord("missing_field", f"{where} is required")
    cause = first.get("ctx", {}).get("error")
    reason = cause.reason if isinstance(cause, NumberError) else "invalid_field"
    message = first["msg"].removeprefix("Value error, ")
    return MalformedRecord(reason, f"{where}: {message}")


def _positive(name: str, value: Decimal) -> None:
    if value <= 0:
        raise MalformedRecord("invalid_field", f"{name} must be positive, got {value}")


def parse_contract(obj: dict[str, Any]) -> ContractRecord:
    try:
        spec = ContractIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    _positive("contract_size", spec.contract_size)
    tiers = [Tier(b.floor, b.cap, b.mmr, b.cum) for b in spec.brackets]
    try:
        contract = make_contract(
            spec.symbol, spec.kind, spec.margin_asset, spec.contract_size, tiers
        )
    except TierTableError as exc:
        raise MalformedRecord("invalid_brackets", str(exc)) from None
    return ContractRecord(contract)


def parse_balance(obj: dict[str, Any]) -> BalanceRecord:
    try:
        spec = BalanceIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    return BalanceRecord(spec.ts, spec.account, spec.asset, spec.wallet)


def parse_position(obj: dict[str, Any]) -> PositionRecord:
    try:
        spec = PositionIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    return _position(spec, spec.ts, spec.account)


def _position(spec: PositionIn | SnapshotPositionIn, ts: int, account: str) -> PositionRecord:
    if spec.qty != 0:  # a close (qty 0) needs no meaningful entry or leverage
        _positive("entry", spec.entry)
        if spec.leverage < 0:  # 0: not reported, the previous position's leverage is kept
            raise MalformedRecord(
                "invalid_field", f"leverage must not be negative: {spec.leverage}"
            )
    wallet = spec.isolated_wallet if spec.mode == "isolated" else None
    if spec.mode == "isolated" and wallet is None and spec.qty != 0:
        raise MalformedRecord("missing_field", "isolated_wallet is required for isolated positions")
    return PositionRecord(
        ts,
        account,
        spec.symbol,
        spec.side,
        spec.mode,
        spec.qty,
        spec.entry,
        spec.leverage,
        wallet,
    )


def parse_account_snapshot(obj: dict[str, Any]) -> AccountUpdateRecord:
    """``account_snapshot`` (replace) or ``account_update`` (merge): same fields."""
    replace = obj.get("type") == "account_snapshot"
    try:
        spec = AccountSnapshotIn.model_validate({**obj, "type": "account_snapshot"})
    except ValidationError as exc:
        raise malformed(exc) from None
    slots = [(p.symbol, p.side) for p in spec.positions]
    if len(set(slots)) != len(slots):
        raise MalformedRecord("invalid_field", "positions: a slot (symbol, side) appears twice")
    assets = [b.asset for b in spec.balances]
    if len(set(assets)) != len(assets):
        raise MalformedRecord("invalid_field", "balances: an asset appears twice")
    return AccountUpdateRecord(
        spec.ts,
        spec.account,
        tuple((b.asset, b.wallet) for b in spec.balances),
        tuple(_position(p, spec.ts, spec.account) for p in spec.positions),
        replace=replace,
    )


def parse_asset_mode(obj: dict[str, Any]) -> AssetModeRecord:
    try:
        spec = AssetModeIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    return AssetModeRecord(spec.ts, spec.account, spec.multi_assets)


def parse_collateral(obj: dict[str, Any]) -> CollateralRecord:
    try:
        spec = CollateralIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    return CollateralRecord(spec.ts, spec.asset, spec.price, spec.haircut)


def parse_margin(obj: dict[str, Any]) -> MarginRecord:
    try:
        spec = MarginIn.model_validate(obj)
    except ValidationError as exc:
        raise malformed(exc) from None
    return MarginRecord(spec.ts, spec.account, spec.symbol, spec.side, spec.delta)


def tick_fields(obj: dict[str, Any]) -> tuple[str, float, str | float | int, int]:
    """``(symbol, mark, mark_text, ts)`` of a tick object, validated by hand.

    This is the hot path: no model, no record object; :meth:`Engine.apply_tick` takes the
    tuple as it is.
    """
    try:
        ts = obj["ts"]
        symbol = obj["symbol"]
        raw = obj["mark"]
    except KeyError as exc:
        raise MalformedRecord("missing_field", f"{exc.args[0]} is required") from None
    if type(ts) is not int or not 0 <= ts <= MAX_TS:
        raise MalformedRecord("invalid_field", f"ts must be a non-negative integer, got {ts!r}")
    if type(symbol) is not str or not symbol or len(symbol) > 256:
        raise MalformedRecord("invalid_field", "symbol must be a non-empty string")
    return symbol, price_of(raw), raw, ts


def funding_fields(obj: dict[str, Any]) -> tuple[Decimal | None, int | None]:
    """A tick's optional ``(funding_rate, funding_ts)`` (docs/collateral.md §3): both or
    neither; the rate a decimal (it may be negative), the time in ms."""
    rate = obj.get("funding_rate")
    when = obj.get("funding_ts")
    if rate is None and when is None:
        return None, None
    if rate is None or when is None:
        raise MalformedRecord(
            "invalid_field", "funding_rate and funding_ts come together (one is missing)"
        )
    try:
        exact = to_decimal(rate)
    except NumberError as exc:
        raise MalformedRecord(exc.reason, f"funding_rate: {exc}") from None
    if type(when) is not int or not 0 <= when <= MAX_TS:
        raise MalformedRecord(
            "invalid_field", f"funding_ts must be a non-negative integer, got {when!r}"
        )
    return exact, when


def parse_tick(obj: dict[str, Any]) -> TickRecord:
    """A validated :class:`TickRecord` (see :func:`tick_fields`)."""
    symbol, mark, raw, ts = tick_fields(obj)
    rate, when = funding_fields(obj)
    return TickRecord(ts, symbol, mark, raw, rate, when)


def price_of(raw: object) -> float:
    """A mark price from a JSON string or number: finite, positive, within ``[1e-30, 1e30)``."""
    if isinstance(raw, str):
        # float() also reads "1_000", " 1.5 ", "nan" and non-ASCII digits ("١٢٣"): refuse what
        # is not plain decimal text
        if len(raw) > _MAX_DIGITS_TEXT or "_" in raw or raw != raw.strip() or not raw.isascii():
            raise MalformedRecord("invalid_price", f"mark {raw[:40]!r} is not a decimal number")
        try:
            mark = float(raw)
        except ValueError:
            raise MalformedRecord(
                "invalid_price", f"mark {raw[:40]!r} is not a decimal number"
            ) from None
    elif isinstance(raw, float | int) and not isinstance(raw, bool):
        try:
            mark = float(raw)
        except OverflowError:
            raise MalformedRecord("invalid_price", "mark is out of range") from None
    else:
        raise MalformedRecord(
            "invalid_price", f"mark must be a number or a string, got {type(raw).__name__}"
        )
    if not MIN_MAGNITUDE <= mark < MAX_MAGNITUDE:
        raise MalformedRecord(
            "invalid_price", f"mark must be finite, positive and in [1e-30, 1e30): {raw!r}"
        )
    return mark


_PARSERS = {
    "tick": parse_tick,
    "position": parse_position,
    "balance": parse_balance,
    "margin": parse_margin,
    "contract": parse_contract,
    "account_snapshot": parse_account_snapshot,
    "account_update": parse_account_snapshot,
    "asset_mode": parse_asset_mode,
    "collateral": parse_collateral,
}


RECORD_TYPES = frozenset(_PARSERS)
"""Every ``type`` of a normalized record."""


def parse_object(obj: object) -> Record:
    """A record from an already decoded JSON value."""
    if type(obj) is not dict:
        raise MalformedRecord("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        raise MalformedRecord("unknown_type", f"unknown record type {obj.get('type')!r}")
    return parser(obj)  # type: ignore[return-value]


def parse_line(line: str | bytes) -> Record:
    """A record from one line of normalized JSON Lines, every number read exactly."""
    obj = decode(line)
    record = parse_object(exact_numbers(obj, line))
    if isinstance(record, TickRecord) and not isinstance(record.mark_text, str):
        # keep the line: the mark's exact text is read from it if a decision ever needs it
        return record._replace(mark_text=line if isinstance(line, bytes) else line.encode())
    return record


def holds_float(obj: object) -> bool:
    """Whether a decoded JSON value holds a number the fast decoder read as a double, at any
    depth (walked without recursion)."""
    pending = [obj]
    while pending:
        value = pending.pop()
        kind = type(value)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(value.values())  # type: ignore[attr-defined]
        elif kind is list:
            pending.extend(value)  # type: ignore[arg-type]
    return False


def exact_json(text: str | bytes) -> object:
    """``text`` decoded with every JSON number exact: fractions and exponents as
    :class:`Decimal`, integers as ``int``. For text the fast decoder already accepted (so
    nested at most 1,024 deep, and its integers no longer than a double's range)."""
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
        raise MalformedRecord("invalid_json", str(exc)[:120]) from None


def exact_numbers(obj: object, line: str | bytes) -> object:
    """``obj``, or when it is a non-tick record holding JSON numbers with a fraction or an
    exponent, the same line decoded again with those numbers kept as exact :class:`Decimal`
    (the fast decoder reads them as doubles; a double cannot hold ``0.1`` or 20 digits).
    Ticks keep the fast path: their exact value is recovered lazily (see
    :data:`monitor.records.MarkSource`)."""
    if type(obj) is dict and obj.get("type") != "tick" and holds_float(obj):
        return exact_json(line)
    return obj


def decode(line: str | bytes) -> object:
    """The JSON value of one line (orjson: strict JSON, so ``NaN`` literals are invalid JSON)."""
    if len(line) > MAX_LINE_BYTES:
        raise MalformedRecord("invalid_json", f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedRecord("invalid_json", str(exc)[:120]) from None


# ---------------------------------------------------------------------------------------------
# Records back to normalized JSON (the service's journal; parse_line reads them again)


def _position_json(p: PositionRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "symbol": p.symbol,
        "side": p.side,
        "mode": p.mode,
        "qty": str(p.qty),
        "entry": str(p.entry),
        "leverage": str(p.leverage),
    }
    if p.isolated_wallet is not None:
        out["isolated_wallet"] = str(p.isolated_wallet)
    return out


def record_json(record: Record, mark_text: str | None = None) -> bytes:
    """One normalized JSON line (without newline) that :func:`parse_line` reads back as an
    equal record. ``mark_text`` gives a tick's exact decimal text when its ``mark_text`` is not
    a string (a JSON number kept as its source line)."""
    if isinstance(record, TickRecord):
        text = record.mark_text if isinstance(record.mark_text, str) else mark_text
        if text is None:
            raise ValueError("a tick without its mark text needs mark_text=")
        body: dict[str, Any] = {
            "type": "tick",
            "ts": record.ts,
            "symbol": record.symbol,
            "mark": text,
        }
        if record.funding_rate is not None:
            body["funding_rate"] = str(record.funding_rate)
            body["funding_ts"] = record.funding_ts
    elif isinstance(record, BalanceRecord):
        body = {
            "type": "balance",
            "ts": record.ts,
            "account": record.account,
            "asset": record.asset,
            "wallet": str(record.wallet),
        }
    elif isinstance(record, PositionRecord):
        body = {
            "type": "position",
            "ts": record.ts,
            "account": record.account,
            **_position_json(record),
        }
    elif isinstance(record, MarginRecord):
        body = {
            "type": "margin",
            "ts": record.ts,
            "account": record.account,
            "symbol": record.symbol,
            "side": record.side,
            "delta": str(record.delta),
        }
    elif isinstance(record, AssetModeRecord):
        body = {
            "type": "asset_mode",
            "ts": record.ts,
            "account": record.account,
            "multi_assets": record.multi_assets,
        }
    elif isinstance(record, CollateralRecord):
        body = {
            "type": "collateral",
            "ts": record.ts,
            "asset": record.asset,
            "price": str(record.price),
            "haircut": str(record.haircut),
        }
    elif isinstance(record, AccountUpdateRecord):
        body = {
            "type": "account_snapshot" if record.replace else "account_update",
            "ts": record.ts,
            "account": record.account,
            "balances": [{"asset": a, "wallet": str(w)} for a, w in record.balances],
            "positions": [_position_json(p) for p in record.positions],
        }
    else:
        c = record.contract
        body = {
            "type": "contract",
            "symbol": c.symbol,
            "kind": c.kind,
            "margin_asset": c.margin_asset,
            "contract_size": str(c.contract_size),
            "brackets": [
                {"floor": str(t.floor), "cap": str(t.cap), "mmr": str(t.mmr), "cum": str(t.cum)}
                for t in c.tiers
            ],
        }
    return orjson.dumps(body)
