"""Collateral prices from Binance's multi-assets index, and the haircut table that goes with them.

Binance publishes the USD index price of every asset that can back a Multi-Assets Mode account,
on the market stream ``!assetIndex@arr`` (or ``<assetSymbol>@assetIndex``, every second) and at
``GET /fapi/v1/assetIndex``::

    {"e":"assetIndexUpdate","E":1686749230000,"s":"ADAUSD","i":"0.27462452","b":"0.10000000",
     "a":"0.10000000","B":"0.24716207","A":"0.30208698",...}                     stream event
    {"symbol":"ADAUSD","time":1635740268004,"index":"1.92957370","bidBuffer":"0.10000000",...}
                                                                  REST (one object, or a list)

Each becomes a ``collateral`` record (docs/collateral.md §1): the asset is the index symbol
without its ``USD`` suffix (``ADAUSD`` is ADA), the price is the index price (``i``, ``index``),
``ts`` is the event time (``E``, ``time``). The bid/ask buffers and rates are Binance's prices
for automatic asset exchange, not for the margin balance, and are not read.

The haircut is not in the message: it comes from a :class:`HaircutTable`, by default
:func:`binance_haircuts` (the collateral value ratios Binance publishes: BTC, ETH, BNB 95 %;
XRP, ADA, DOT, SOL 90 %; USDT, USDC 99.99 %; haircut = 1 − ratio), or a file of the same form
(:func:`load_haircuts`, ``liqmon replay --haircuts FILE``)::

    default = "0.9"   # optional (before the table): the ratio of every asset not listed
    [ratios]
    BTC = "0.95"      # a string or a number; 0 < ratio <= 1
    USDT = "0.9999"

An asset the table does not list (and no ``default``) is not collateral: its index price gives
no record (Binance's index covers assets that are not collateral, such as ``BFUSDUSD``). A bad
index item is refused with a stable reason (:mod:`feeds.ticks`); in an array, the others still
give their records.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Any

from feeds.fields import decode_frame, describe, mark_of, ms_of, refused, symbol_of
from feeds.normalized import to_decimal
from feeds.ticks import NOTHING, Parsed
from monitor.errors import ConfigError, MalformedRecord
from monitor.records import CollateralRecord

DEFAULT_TABLE = "binance_collateral_ratios.toml"
"""The packaged table (``feeds/binance_collateral_ratios.toml``)."""
INDEX_SUFFIX = "USD"


@dataclass(frozen=True, slots=True)
class HaircutTable:
    """The haircut of each collateral asset (``1 − collateral value ratio``), and the one of the
    assets not listed (``None``: they are not collateral)."""

    haircuts: Mapping[str, Decimal] = field(default_factory=dict)
    default: Decimal | None = None
    source: str = ""

    def haircut(self, asset: str) -> Decimal | None:
        """``asset``'s haircut, or ``None`` when it is not collateral."""
        return self.haircuts.get(asset, self.default)


def _haircut(where: str, ratio: object) -> Decimal:
    """``1 − ratio`` for a collateral value ratio in ``(0, 1]`` (a string, or a number)."""
    if isinstance(ratio, float):
        ratio = repr(ratio)  # TOML 0.95 means the decimal 0.95
    try:
        value = to_decimal(ratio)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not Decimal(0) < value <= Decimal(1):
        raise ConfigError(f"{where}: a collateral value ratio lies in (0, 1], got {ratio!r}")
    return Decimal(1) - value


def parse_haircuts(text: str, source: str = "") -> HaircutTable:
    """A :class:`HaircutTable` from the TOML text of a ratio table (see the module docstring);
    :class:`ConfigError` names what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source or 'haircut table'}: {exc}") from None
    unknown = set(data) - {"ratios", "default"}
    if unknown:
        raise ConfigError(f"{source}: unknown keys {sorted(unknown)} (expected [ratios], default)")
    ratios = data.get("ratios")
    if not isinstance(ratios, dict) or not ratios:
        raise ConfigError(f"{source}: a [ratios] table of at least one asset is required")
    haircuts = {}
    for asset, ratio in ratios.items():
        if not 0 < len(asset) <= 256:
            raise ConfigError(f"{source}: not an asset name: {asset!r}")
        haircuts[asset] = _haircut(f"{source}: {asset}", ratio)
    default = None if "default" not in data else _haircut(f"{source}: default", data["default"])
    return HaircutTable(MappingProxyType(haircuts), default, source)


def load_haircuts(path: str | Path | None = None) -> HaircutTable:
    """The table in the file at ``path``, or the packaged default (``None``)."""
    if path is None:
        return binance_haircuts()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the haircut table {path}: {exc}") from None
    return parse_haircuts(text, str(path))


@cache
def binance_haircuts() -> HaircutTable:
    """Binance's published collateral value ratios, as haircuts (the packaged table)."""
    text = files("feeds").joinpath(DEFAULT_TABLE).read_text(encoding="utf-8")
    return parse_haircuts(text, DEFAULT_TABLE)


def asset_of(symbol: str) -> str:
    """The asset of an index symbol: ``BTCUSD`` is BTC, ``USDTUSD`` is USDT."""
    if not symbol.endswith(INDEX_SUFFIX) or len(symbol) == len(INDEX_SUFFIX):
        raise MalformedRecord(
            "invalid_field", f"an asset index symbol is <asset>USD, got {symbol[:40]!r}"
        )
    return symbol.removesuffix(INDEX_SUFFIX)


def _record(
    item: Mapping[str, Any], names: tuple[str, str, str], table: HaircutTable
) -> CollateralRecord | None:
    symbol, when, index = names
    asset = asset_of(symbol_of(item.get(symbol), symbol))
    ts = ms_of(item.get(when), when)
    _, text = mark_of(item.get(index), index)  # finite and positive
    haircut = table.haircut(asset)
    if haircut is None:
        return None
    return CollateralRecord(ts, asset, Decimal(text), haircut)


def asset_index_event(event: Mapping[str, Any], table: HaircutTable) -> CollateralRecord | None:
    """The ``collateral`` record of one ``assetIndexUpdate`` stream event (``None`` when its
    asset is not collateral); raises :class:`MalformedRecord` for a bad event."""
    return _record(event, ("s", "E", "i"), table)


def _items(items: list[Any], read: Any) -> Parsed:
    """The records of a list of index items; a bad item gives one reject per reason (the first
    one's detail and how many more), the good ones their records."""
    records: list[CollateralRecord] = []
    bad: dict[str, tuple[str, int]] = {}
    for index, item in enumerate(items):
        try:
            if type(item) is not dict:
                raise MalformedRecord("unknown_shape", f"not an index item: {describe(item)}")
            record = read(item)
        except MalformedRecord as exc:
            detail, count = bad.get(exc.reason, (f"item {index}: {exc.detail}", 0))
            bad[exc.reason] = (detail, count + 1)
            continue
        if record is not None:
            records.append(record)
    rejects = tuple(
        (reason, detail if count == 1 else f"{detail} (and {count - 1} more items)")
        for reason, (detail, count) in bad.items()
    )
    return Parsed(records=tuple(records), rejects=rejects)


def asset_index_events(events: list[Any], table: HaircutTable) -> Parsed:
    """The records of the items of one ``!assetIndex@arr`` array."""
    return _items(events, lambda event: asset_index_event(event, table))


def asset_index_response(raw: str | bytes, table: HaircutTable | None = None) -> Parsed:
    """The records of a ``GET /fapi/v1/assetIndex`` response body (one object, or a list of
    them when no symbol was asked for), with ``table`` (default: Binance's) for the haircuts."""
    table = table if table is not None else binance_haircuts()
    try:
        body = decode_frame(raw)
        if type(body) is dict:
            record = _record(body, ("symbol", "time", "index"), table)
            return NOTHING if record is None else Parsed(records=(record,))
        if type(body) is not list:
            raise MalformedRecord("unknown_shape", f"not an assetIndex response: {describe(body)}")
    except MalformedRecord as exc:
        return refused(exc)
    return _items(body, lambda item: _record(item, ("symbol", "time", "index"), table))
