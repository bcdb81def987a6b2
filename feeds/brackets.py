"""Contracts from real tier tables: Binance ``leverageBracket`` and ccxt ``fetch_leverage_tiers``.

Recognised shapes (real USDⓈ-M and ccxt tables are in ``tests/data/``, see its
``PROVENANCE.md``):

* Binance USDⓈ-M ``GET /fapi/v1/leverageBracket``: ``[{"symbol", "brackets": [{"notionalFloor",
  "notionalCap", "maintMarginRatio", "cum", ...}]}]`` (or one such object);
* Binance COIN-M ``GET /dapi/v2/leverageBracket``: the same with ``qtyFloor`` / ``qtyCap`` in coin
  (Binance's own docs also spell it ``qtylFloor``) and ``symbol`` or ``pair``;
* ccxt ``fetch_leverage_tiers``: ``{"BTC/USDT:USDT": [{"minNotional", "maxNotional",
  "maintenanceMarginRate", "info": {"cum", ...}}]}``.

What the tables do not carry is inferred, and documented here because it matters:

* USDⓈ-M symbols are linear with contract size 1, margined in their quote asset (the suffix
  USDT / USDC / BUSD / FDUSD, before any ``_YYMMDD`` delivery suffix);
* COIN-M symbols (``qty*`` tiers, or a ccxt market whose settle asset is its base) are inverse,
  margined in the base coin, with Binance's contract sizes: 100 USD for BTC, 10 USD otherwise;
* ccxt symbols map to Binance ids: ``BTC/USDT:USDT`` → ``BTCUSDT``,
  ``BTC/USDT:USDT-241227`` → ``BTCUSDT_241227``, ``BTC/USD:BTC`` → ``BTCUSD_PERP``;
* a missing ``cum`` is derived from continuity (``cum_n = cum_{n−1} + floor_n·Δmmr``).

A table that cannot be used (gaps, overlaps, ...) is reported and skipped; a usable table with a
discontinuous ``cum`` is kept exactly as published and reported as a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from feeds.files import UnreadableFile, chunks
from feeds.normalized import to_decimal
from monitor.contracts import Contract, ContractKind, Tier, make_contract
from monitor.errors import BracketFileError as BracketFileError
from monitor.errors import TierTableError

LINEAR_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD")
BTC_CONTRACT_SIZE = Decimal(100)
ALT_CONTRACT_SIZE = Decimal(10)


@dataclass
class BracketLoad:
    """Contracts built from a tier file, and what was wrong with the rest."""

    contracts: list[Contract] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def inverse_contract_size(base: str) -> Decimal:
    return BTC_CONTRACT_SIZE if base == "BTC" else ALT_CONTRACT_SIZE


def _number(value: object, what: str) -> Decimal:
    try:
        return to_decimal(value)
    except ValueError as exc:
        raise TierTableError(f"{what}: {exc}") from None


def _with_cum(rows: list[tuple[Decimal, Decimal, Decimal, Decimal | None]]) -> list[Tier]:
    """Tiers from ``(floor, cap, mmr, cum or None)``, deriving missing ``cum`` by continuity."""
    rows = sorted(rows, key=lambda r: r[0])
    tiers: list[Tier] = []
    for floor, cap, mmr, cum in rows:
        if cum is None:
            cum = Decimal(0) if not tiers else tiers[-1].cum + floor * (mmr - tiers[-1].mmr)
        tiers.append(Tier(floor, cap, mmr, cum))
    return tiers


def _binance_entry(entry: dict[str, Any]) -> tuple[str, ContractKind, str, Decimal, list[Tier]]:
    symbol = entry.get("symbol") or entry.get("pair")
    brackets = entry.get("brackets")
    if not isinstance(symbol, str) or not isinstance(brackets, list) or not brackets:
        raise BracketFileError("a Binance entry needs 'symbol' (or 'pair') and 'brackets'")
    coin_margined = any("qtyCap" in b for b in brackets if isinstance(b, dict))
    rows = []
    for n, b in enumerate(brackets, start=1):
        if not isinstance(b, dict):
            raise TierTableError(f"{symbol}: bracket {n} is not an object")
        where = f"{symbol} bracket {n}"
        if coin_margined:
            floor_raw = b.get("qtyFloor", b.get("qtylFloor"))
            cap_raw = b.get("qtyCap")
        else:
            floor_raw, cap_raw = b.get("notionalFloor"), b.get("notionalCap")
        cum = b.get("cum")
        rows.append(
            (
                _number(floor_raw, f"{where} floor"),
                _number(cap_raw, f"{where} cap"),
                _number(b.get("maintMarginRatio"), f"{where} maintMarginRatio"),
                None if cum is None else _number(cum, f"{where} cum"),
            )
        )
    if coin_margined:
        pair = symbol.split("_")[0]
        base = pair.removesuffix("USD")
        exchange_symbol = symbol if "_" in symbol else f"{symbol}_PERP"
        return exchange_symbol, "inverse", base, inverse_contract_size(base), _with_cum(rows)
    root = symbol.split("_")[0]
    quote = next((q for q in LINEAR_QUOTES if root.endswith(q)), None)
    if quote is None:
        raise TierTableError(f"{symbol}: cannot tell the margin asset (no known quote suffix)")
    return symbol, "linear", quote, Decimal(1), _with_cum(rows)


def _ccxt_entry(
    market: str, tiers: list[Any]
) -> tuple[str, ContractKind, str, Decimal, list[Tier]]:
    try:
        pair, settle_part = market.split(":")
        base, quote = pair.split("/")
    except ValueError:
        raise BracketFileError(
            f"{market!r} is not a ccxt derivative symbol (BASE/QUOTE:SETTLE)"
        ) from None
    settle, _, expiry = settle_part.partition("-")
    inverse = settle == base and settle != quote
    rows = []
    for n, t in enumerate(tiers, start=1):
        if not isinstance(t, dict):
            raise TierTableError(f"{market}: tier {n} is not an object")
        info = t.get("info") if isinstance(t.get("info"), dict) else {}
        cum = info.get("cum") if info else None
        where = f"{market} tier {n}"
        rows.append(
            (
                _number(t.get("minNotional"), f"{where} minNotional"),
                _number(t.get("maxNotional"), f"{where} maxNotional"),
                _number(t.get("maintenanceMarginRate"), f"{where} maintenanceMarginRate"),
                None if cum is None else _number(cum, f"{where} cum"),
            )
        )
    if inverse:
        symbol = f"{base}{quote}_{expiry or 'PERP'}"
        return symbol, "inverse", settle, inverse_contract_size(base), _with_cum(rows)
    symbol = f"{base}{quote}" + (f"_{expiry}" if expiry else "")
    return symbol, "linear", settle, Decimal(1), _with_cum(rows)


def parse_brackets(document: object) -> BracketLoad:
    """Contracts from a decoded Binance or ccxt tier document."""
    load = BracketLoad()
    entries: list[tuple[str, Any]] = []
    if isinstance(document, dict) and "brackets" in document:
        document = [document]
    if isinstance(document, list):
        entries = [("binance", e) for e in document]
    elif isinstance(document, dict):
        entries = [("ccxt", item) for item in document.items()]
    else:
        raise BracketFileError("expected a Binance leverageBracket list or a ccxt tiers object")
    for shape, entry in entries:
        try:
            if shape == "binance":
                if not isinstance(entry, dict):
                    raise BracketFileError("a Binance entry must be an object")
                spec = _binance_entry(entry)
            else:
                market, tiers = entry
                if not isinstance(tiers, list) or not tiers:
                    raise TierTableError(f"{market}: expected a non-empty list of tiers")
                spec = _ccxt_entry(market, tiers)
            contract = make_contract(*spec)
        except (TierTableError, BracketFileError) as exc:
            load.errors.append(str(exc))
            continue
        load.contracts.append(contract)
        load.warnings.extend(contract.warnings)
    if not load.contracts and not load.errors:
        raise BracketFileError("no tier tables found")
    return load


def load_brackets(path: str | Path) -> BracketLoad:
    """Read a tier file, plain or gzip (see :func:`parse_brackets`)."""
    try:
        document = orjson.loads(b"".join(chunks(path)))
    except UnreadableFile as exc:
        raise BracketFileError(str(exc)) from exc
    except orjson.JSONDecodeError as exc:
        raise BracketFileError(f"{path} is not JSON: {exc}") from exc
    return parse_brackets(document)
