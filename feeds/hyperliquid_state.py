"""Hyperliquid ``meta`` and ``clearinghouseState`` responses as liqmon records (pure).

``meta`` (info ``{"type":"meta","dex":d}``) lists a perp dex's ``universe`` (in asset-index
order) and its ``marginTables``; :func:`parse_meta` turns it into one linear contract per asset.
``clearinghouseState`` (info ``{"type":"clearinghouseState","user":a,"dex":d}``) is one
account's positions and margin on one dex; :func:`parse_state` reads it and
:class:`AccountState` turns it into an ``account_snapshot``.

Numbers are accepted as strings (what the API sends) or JSON numbers (``maxLeverage``,
``leverage.value`` and ``time`` are numbers in the raw API and strings in some recordings).

**Margin tiers** (Hyperliquid docs, "Margin tiers" and "Liquidations"). A tier with maximum
leverage ``L`` has the maintenance rate ``mmr = 1 / (2·L)`` (half the initial margin at max
leverage). The maintenance margin is ``N·mmr − cum`` with the tier's deduction
``cum_n = cum_{n-1} + floor_n·(mmr_n − mmr_{n-1})`` (``cum_1 = 0``): the same continuous
brackets as Binance's, so the engine's math applies unchanged. A universe entry names its
table by ``marginTableId``; ids below 50 without a table are one tier at that leverage; an
entry without an id is one tier at its ``maxLeverage``. A tier that states its own deduction
keeps it (the engine warns when it is not continuous).

**From a state to the engine's inputs.** The mark of a position is what the state implies,
``positionValue / |szi|``. The engine values a position as ``wallet + uPnL`` with
``uPnL = szi·(mark − entryPx)``, so:

* an isolated position's wallet is ``rawUsd + szi·entryPx`` (its isolated margin at the mark is
  then ``rawUsd + szi·mark``, the ``marginUsed`` the exchange reports, as the docs define it);
* the cross wallet of the dex is ``crossMarginSummary.accountValue − Σ_cross szi·(mark − entryPx)``
  (the account value at the marks is then exactly the exchange's).

Every dex is its own clearinghouse with its own cross margin, so each gets its own margin asset:
``USDC`` for the first (main) dex, the dex's name (``xyz``, ``flx``) for a HIP-3 dex. A HIP-3
market's symbol carries its dex prefix as the API writes it (``xyz:TSLA``).

Errors are :class:`~monitor.errors.MalformedRecord` with ``invalid_field`` or ``missing_field``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from feeds.fields import describe, short
from feeds.normalized import MAX_TS, to_decimal
from monitor.contracts import Contract, Tier, make_contract
from monitor.errors import MalformedRecord, TierTableError
from monitor.records import AccountUpdateRecord, PositionRecord

MAIN_ASSET = "USDC"
LAST_CAP = Decimal("1e20")
"""The cap written for the last tier (notional above the last cap stays in the last tier)."""
SINGLE_TIER_IDS = 50
""""For IDs less than 50, there is a single tier with max leverage equal to the ID"."""


def margin_asset(dex: str) -> str:
    """The margin asset of a dex's clearinghouse: ``USDC`` for the main dex, else the dex name."""
    return MAIN_ASSET if dex == "" else dex


def dex_of(coin: str) -> str:
    """The dex of a perp coin name: ``xyz`` for ``xyz:TSLA``, ``""`` for ``BTC``."""
    prefix, colon, _ = coin.partition(":")
    return prefix if colon else ""


def number(value: object, name: str) -> Decimal:
    """A finite decimal from a JSON string or number (``invalid_field`` otherwise)."""
    if value is None:
        raise MalformedRecord("missing_field", f"{name} is required")
    try:
        return to_decimal(value)
    except ValueError as exc:
        raise MalformedRecord("invalid_field", f"{name}: {exc}") from None


def positive(value: object, name: str) -> Decimal:
    result = number(value, name)
    if result <= 0:
        raise MalformedRecord("invalid_field", f"{name} must be positive, got {short(value)}")
    return result


def timestamp(value: object, name: str = "time") -> int | None:
    """Milliseconds from a JSON integer or a string of digits; ``None`` when absent."""
    if value is None:
        return None
    if type(value) is int and 0 <= value <= MAX_TS:
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 19:
        number_ = int(value)
        if number_ <= MAX_TS:
            return number_
    raise MalformedRecord("invalid_field", f"{name} is not a timestamp: {short(value)}")


def _object(value: object, name: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise MalformedRecord("invalid_field", f"{name} must be an object: {describe(value)}")
    return value


def _list(value: object, name: str) -> list[Any]:
    if type(value) is not list:
        raise MalformedRecord("invalid_field", f"{name} must be a list: {describe(value)}")
    return value


def _coin(value: object, name: str) -> str:
    if (
        type(value) is not str
        or not 0 < len(value) <= 64
        or not value.isprintable()
        or " " in value
    ):
        raise MalformedRecord("invalid_field", f"{name} is not a coin: {short(value)}")
    return value


# --- meta ---------------------------------------------------------------------------------


def tier_rate(max_leverage: Decimal) -> Decimal:
    """``mmr = 1 / (2·L)``: half the initial margin rate at the tier's max leverage."""
    return Decimal(1) / (2 * max_leverage)


def tiers_of(rows: Sequence[tuple[Decimal, Decimal, Decimal | None]]) -> list[Tier]:
    """Tiers from ``(lower bound, max leverage, deduction or None)`` rows (see the module
    docstring: caps are the next floor, missing deductions follow continuity)."""
    ordered = sorted(rows, key=lambda row: row[0])
    tiers: list[Tier] = []
    for n, (floor, leverage, deduction) in enumerate(ordered):
        mmr = tier_rate(leverage)
        cap = ordered[n + 1][0] if n + 1 < len(ordered) else LAST_CAP
        if deduction is None:
            deduction = Decimal(0) if not tiers else tiers[-1].cum + floor * (mmr - tiers[-1].mmr)
        tiers.append(Tier(floor, cap, mmr, deduction))
    return tiers


def contract_of(symbol: str, dex: str, tiers: Sequence[Tier]) -> Contract:
    try:
        return make_contract(symbol, "linear", margin_asset(dex), Decimal(1), tiers)
    except TierTableError as exc:
        raise MalformedRecord("invalid_field", str(exc)[:200]) from None


def single_tier(max_leverage: Decimal) -> list[Tier]:
    return tiers_of([(Decimal(0), max_leverage, None)])


@dataclass(frozen=True, slots=True)
class Meta:
    """One dex's ``meta``: asset names in index order and a contract per asset."""

    dex: str
    names: tuple[str, ...]
    contracts: tuple[Contract, ...]
    isolated_only: frozenset[str]
    delisted: frozenset[str]

    @property
    def by_symbol(self) -> dict[str, Contract]:
        return {c.symbol: c for c in self.contracts}


def _margin_tables(meta: dict[str, Any]) -> dict[int, list[Tier]]:
    tables: dict[int, list[Tier]] = {}
    for n, entry in enumerate(_list(meta.get("marginTables", []), "marginTables")):
        if type(entry) is not list or len(entry) != 2 or type(entry[0]) is not int:
            raise MalformedRecord("invalid_field", f"marginTables[{n}] is not [id, table]")
        table = _object(entry[1], f"marginTables[{n}][1]")
        rows = []
        for k, tier in enumerate(_list(table.get("marginTiers"), f"marginTables[{n}] tiers")):
            where = f"marginTables[{n}] tier {k + 1}"
            tier = _object(tier, where)
            deduction = tier.get("maintenanceDeduction")
            rows.append(
                (
                    number(tier.get("lowerBound"), f"{where} lowerBound"),
                    positive(tier.get("maxLeverage"), f"{where} maxLeverage"),
                    None if deduction is None else number(deduction, f"{where} deduction"),
                )
            )
        if not rows:
            raise MalformedRecord("invalid_field", f"marginTables[{n}] has no tiers")
        tables[entry[0]] = tiers_of(rows)
    return tables


def parse_meta(obj: object, dex: str | None = None) -> Meta:
    """A dex's ``meta`` (or a ``metaAndAssetCtxs`` pair, whose first item is the meta).

    ``dex`` defaults to the prefix of the universe's names (``xyz:TSLA`` → ``xyz``).
    """
    if type(obj) is list and len(obj) == 2 and type(obj[0]) is dict:
        obj = obj[0]
    meta = _object(obj, "meta")
    universe = _list(meta.get("universe"), "universe")
    tables = _margin_tables(meta)
    names: list[str] = []
    contracts: list[Contract] = []
    isolated: set[str] = set()
    delisted: set[str] = set()
    for n, item in enumerate(universe):
        asset = _object(item, f"universe[{n}]")
        name = _coin(asset.get("name"), f"universe[{n}].name")
        names.append(name)
        asset_dex = dex_of(name)
        if dex is None:
            dex = asset_dex
        elif asset_dex != dex:
            raise MalformedRecord("invalid_field", f"universe[{n}] {name} is not on dex {dex!r}")
        if asset.get("onlyIsolated") is True or asset.get("marginMode") in (
            "strictIsolated",
            "noCross",
        ):
            isolated.add(name)
        if asset.get("isDelisted") is True:
            delisted.add(name)
        table_id = asset.get("marginTableId")
        if type(table_id) is int and table_id in tables:
            tiers = tables[table_id]
        elif type(table_id) is int and 0 < table_id < SINGLE_TIER_IDS:
            tiers = single_tier(Decimal(table_id))
        elif asset.get("maxLeverage") is not None:
            tiers = single_tier(positive(asset.get("maxLeverage"), f"{name} maxLeverage"))
        else:
            continue  # the 2023 schema: no leverage at all, so no maintenance rate to use
        contracts.append(contract_of(name, asset_dex, tiers))
    return Meta(dex or "", tuple(names), tuple(contracts), frozenset(isolated), frozenset(delisted))


# --- clearinghouseState -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionState:
    """One open position as the exchange reported it (exact decimals)."""

    coin: str
    qty: Decimal
    entry: Decimal
    isolated: bool
    leverage: Decimal
    max_leverage: Decimal | None
    raw_usd: Decimal | None
    position_value: Decimal
    liquidation_px: Decimal | None

    @property
    def mark(self) -> Decimal:
        """The mark the state implies: ``positionValue / |szi|``."""
        return self.position_value / abs(self.qty)

    @property
    def unrealized_pnl(self) -> Decimal:
        """``szi·(mark − entry)``, written as ``±positionValue − szi·entry`` (exact)."""
        signed_value = self.position_value if self.qty > 0 else -self.position_value
        return signed_value - self.qty * self.entry

    def contract_from_state(self, dex: str) -> Contract:
        """A single-tier contract at this position's ``maxLeverage``."""
        if self.max_leverage is None:
            raise MalformedRecord(
                "missing_field", f"{self.coin}: maxLeverage is required without a meta"
            )
        return contract_of(self.coin, dex, single_tier(self.max_leverage))

    @property
    def wallet(self) -> Decimal | None:
        """The isolated wallet ``rawUsd + szi·entry``; ``None`` for a cross position."""
        if not self.isolated or self.raw_usd is None:
            return None
        return self.raw_usd + self.qty * self.entry


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account's ``clearinghouseState`` on one dex."""

    dex: str
    time_ms: int | None
    cross_account_value: Decimal
    cross_maintenance: Decimal | None
    positions: tuple[PositionState, ...]

    @property
    def asset(self) -> str:
        return margin_asset(self.dex)

    @property
    def cross_wallet(self) -> Decimal:
        """``crossMarginSummary.accountValue − Σ_cross uPnL`` (see the module docstring)."""
        pnl = sum((p.unrealized_pnl for p in self.positions if not p.isolated), Decimal(0))
        return self.cross_account_value - pnl

    def position_records(self, account: str, ts: int) -> tuple[PositionRecord, ...]:
        return tuple(
            PositionRecord(
                ts,
                account,
                p.coin,
                "both",
                "isolated" if p.isolated else "cross",
                p.qty,
                p.entry,
                p.leverage,
                p.wallet,
            )
            for p in self.positions
        )

    def marks(self) -> dict[str, Decimal]:
        """The mark of every position's coin, as the state implies it."""
        return {p.coin: p.mark for p in self.positions}

    def exchange_liquidation(self) -> dict[str, Decimal | None]:
        """The exchange's ``liquidationPx`` per coin (``None`` where it reported null)."""
        return {p.coin: p.liquidation_px for p in self.positions}

    def contracts_from_state(self) -> list[Contract]:
        """One single-tier contract per position at its ``maxLeverage`` (when no ``meta`` is
        at hand: exact while the position is in its asset's first tier)."""
        return [p.contract_from_state(self.dex) for p in self.positions]


def snapshot(account: str, ts: int, states: Sequence[AccountState]) -> AccountUpdateRecord:
    """One ``account_snapshot`` of every given dex state of ``account`` (a wallet per dex)."""
    balances: list[tuple[str, Decimal]] = []
    positions: list[PositionRecord] = []
    for state in states:
        balances.append((state.asset, state.cross_wallet))
        positions.extend(state.position_records(account, ts))
    return AccountUpdateRecord(ts, account, tuple(balances), tuple(positions), replace=True)


def _position(item: object, n: int) -> PositionState | None:
    entry = _object(item, f"assetPositions[{n}]")
    pos = _object(entry.get("position"), f"assetPositions[{n}].position")
    coin = _coin(pos.get("coin"), f"assetPositions[{n}].coin")
    qty = number(pos.get("szi"), f"{coin} szi")
    if qty == 0:
        return None
    leverage = _object(pos.get("leverage"), f"{coin} leverage")
    kind = leverage.get("type")
    if kind not in ("cross", "isolated"):
        raise MalformedRecord("invalid_field", f"{coin} leverage.type is {short(kind)}")
    isolated = kind == "isolated"
    raw_usd = number(leverage.get("rawUsd"), f"{coin} rawUsd") if isolated else None
    liq = pos.get("liquidationPx")
    max_leverage = pos.get("maxLeverage")
    return PositionState(
        coin=coin,
        qty=qty,
        entry=positive(pos.get("entryPx"), f"{coin} entryPx"),
        isolated=isolated,
        leverage=positive(leverage.get("value"), f"{coin} leverage.value"),
        max_leverage=None if max_leverage is None else positive(max_leverage, f"{coin} maxLev"),
        raw_usd=raw_usd,
        position_value=positive(pos.get("positionValue"), f"{coin} positionValue"),
        liquidation_px=None if liq is None else positive(liq, f"{coin} liquidationPx"),
    )


def parse_state(obj: object, dex: str | None = None) -> AccountState:
    """A ``clearinghouseState`` response. ``dex`` defaults to the prefix of its coins (the
    main dex when it holds no position)."""
    state = _object(obj, "clearinghouseState")
    cross = _object(state.get("crossMarginSummary"), "crossMarginSummary")
    positions = []
    for n, item in enumerate(_list(state.get("assetPositions"), "assetPositions")):
        position = _position(item, n)
        if position is not None:
            positions.append(position)
    dexes = {dex_of(p.coin) for p in positions}
    if dex is None:
        if len(dexes) > 1:
            raise MalformedRecord("invalid_field", f"positions on several dexes: {sorted(dexes)}")
        dex = dexes.pop() if dexes else ""
    elif dexes - {dex}:
        raise MalformedRecord("invalid_field", f"positions of dex {sorted(dexes)} on {dex!r}")
    maintenance = state.get("crossMaintenanceMarginUsed")
    return AccountState(
        dex=dex,
        time_ms=timestamp(state.get("time")),
        cross_account_value=number(cross.get("accountValue"), "crossMarginSummary.accountValue"),
        cross_maintenance=None
        if maintenance is None
        else number(maintenance, "crossMaintenanceMarginUsed"),
        positions=tuple(positions),
    )


def contracts_for(state: AccountState, meta: Mapping[str, Contract] | None) -> list[Contract]:
    """The contracts of a state's positions: from ``meta`` where it has them, else from the
    state's own ``maxLeverage``."""
    return [
        meta[p.coin] if meta is not None and p.coin in meta else p.contract_from_state(state.dex)
        for p in state.positions
    ]
