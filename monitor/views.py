"""Reading the book as objects: entity references, the legs of a symbol, published positions.

The book keeps no object per position. What an event or a reader needs is built here, on
demand, from the columns: an :class:`EntityRef`, the :class:`~monitor.margin.Leg` tuples the
price solver works on, the :class:`PositionView` list of an event, and the read-only
:class:`EntityState` that tests and tools inspect.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from monitor.book import CROSS, ISOLATED, NONE, POOL, SCOPES, SIDES, Book
from monitor.events import EntityRef, PositionView
from monitor.margin import Leg, maintenance_margin, solve_price, unrealized_pnl
from monitor.pools import needed_assets, pool_parts, solve_pool_price
from monitor.records import Mode, Side

_ZERO = Decimal(0)


def entity_ref(book: Book, entity: int) -> EntityRef:
    entities = book.entities
    kind = entities.v_kind[entity]
    account = book.account_names.names[entities.v_account[entity]]
    if kind == ISOLATED:
        return EntityRef(
            account,
            "isolated",
            book.asset_names.names[entities.v_asset[entity]],
            book.symbol_names.names[entities.v_symbol[entity]],
            SIDES[entities.v_side[entity]],
        )
    return EntityRef(account, SCOPES[kind], book.asset_names.names[entities.v_asset[entity]])  # type: ignore[arg-type]


def sort_key(book: Book, entity: int) -> tuple[str, int, str, str, str]:
    """Canonical order of entities (:attr:`EntityRef.sort_key`)."""
    entities = book.entities
    kind = entities.v_kind[entity]
    account = book.account_names.names[entities.v_account[entity]]
    asset = book.asset_names.names[entities.v_asset[entity]]
    if kind == ISOLATED:
        return (
            account,
            1,
            asset,
            book.symbol_names.names[entities.v_symbol[entity]],
            SIDES[entities.v_side[entity]],
        )
    return (account, 0 if kind == CROSS else 2, asset, "", "")


def leg_of(book: Book, row: int) -> Leg:
    """The float view of a row for the price solver and the trigger bands (the exact
    quantity and entry are read from the columns only where they are needed)."""
    rows = book.rows
    contract = book.contracts[rows.v_symbol[row]]
    assert contract is not None  # noqa: S101
    entry = rows.v_entry[row]
    return Leg(_ZERO, _ZERO, contract, rows.v_sign[row], rows.v_qcs[row], entry, 1.0 / entry)


def legs_by_symbol(book: Book, entity: int) -> dict[int, list[int]]:
    """The entity's rows grouped by symbol id, symbols and rows in list order."""
    grouped: dict[int, list[int]] = {}
    symbol = book.rows.v_symbol
    for row in book.entity_rows(entity):
        grouped.setdefault(symbol[row], []).append(row)
    return grouped


def position_views(
    book: Book, entity: int, stale: set[int] | frozenset[int]
) -> tuple[PositionView, ...]:
    """Each position with its liquidation and bankruptcy prices, solved per symbol with the
    entity's other symbols held at their marks (legs of one symbol solved together), in
    canonical order (symbol, then side)."""
    if book.entities.v_kind[entity] == POOL:
        return _pool_views(book, entity, stale)
    rows = book.rows
    symbols = book.symbols
    grouped = legs_by_symbol(book, entity)
    terms: dict[int, tuple[float, float]] = {}
    legs: dict[int, list[Leg]] = {}
    for sid, members in grouped.items():
        price = symbols.v_price[sid]
        upnl = mm = 0.0
        group = [leg_of(book, row) for row in members]
        legs[sid] = group
        for leg in group:
            p = leg.entry_f if price != price else price
            upnl += unrealized_pnl(leg, p)
            mm += maintenance_margin(leg, p)
        terms[sid] = (upnl, mm)
    wallet = book.entities.v_wallet[entity]
    names = book.symbol_names.names
    views: list[PositionView] = []
    for sid in sorted(grouped, key=names.__getitem__):
        group = legs[sid]
        others_upnl = sum(u for s, (u, _) in terms.items() if s != sid)
        others_mm = sum(m for s, (_, m) in terms.items() if s != sid)
        price = symbols.v_price[sid]
        marked = price == price
        reference = price if marked else group[0].entry_f
        liquidation = solve_price(group, wallet + others_upnl - others_mm, reference)
        bankruptcy = solve_price(group, wallet + others_upnl, reference, with_maintenance=False)
        mark_ts = symbols.v_mark_ts[sid]
        ordered = sorted(zip(grouped[sid], group, strict=True), key=lambda rl: rows.v_side[rl[0]])
        for row, leg in ordered:
            views.append(
                PositionView(
                    symbol=names[sid],
                    side=SIDES[rows.v_side[row]],
                    qty=float(rows.qty.get(row)),
                    entry=leg.entry_f,
                    mark=price if marked else leg.entry_f,
                    liquidation_price=liquidation,
                    bankruptcy_price=bankruptcy,
                    mark_ts=mark_ts if mark_ts >= 0 else None,
                    mark_stale=sid in stale,
                    funding=rows.v_funding[row],
                )
            )
    return tuple(views)


def _pool_views(
    book: Book, entity: int, stale: set[int] | frozenset[int]
) -> tuple[PositionView, ...]:
    """A pool's positions, each symbol's prices solved with every other mark and every
    collateral price held (:func:`monitor.pools.solve_pool_price`)."""
    rows = book.rows
    symbols = book.symbols
    collateral = book.collateral
    parts = pool_parts(book, entity)
    priced = all(a in collateral for a in needed_assets(book, entity))
    worth: dict[int, float] = {}
    mm_usd = 0.0
    if priced:
        for asset, equity in parts.equity.items():
            c = collateral[asset]
            worth[asset] = equity * c.price_f * (c.keep_f if equity >= 0.0 else 1.0)
        for asset, maintenance in parts.maintenance.items():
            mm_usd += maintenance * collateral[asset].price_f
    names = book.symbol_names.names
    grouped = legs_by_symbol(book, entity)
    views: list[PositionView] = []
    for sid in sorted(grouped, key=names.__getitem__):
        group = [leg_of(book, row) for row in grouped[sid]]
        price = symbols.v_price[sid]
        marked = price == price
        reference = price if marked else group[0].entry_f
        liquidation = bankruptcy = None
        if priced:
            asset = book.margin_asset[sid]
            c = collateral[asset]
            p = price if marked else None
            upnl = sum(unrealized_pnl(leg, leg.entry_f if p is None else p) for leg in group)
            mm = sum(maintenance_margin(leg, leg.entry_f if p is None else p) for leg in group)
            rest = parts.equity.get(asset, 0.0) - upnl
            others = sum(v for a, v in worth.items() if a != asset)
            liquidation = solve_pool_price(
                group, rest, c.price_f, c.keep_f, others - (mm_usd - mm * c.price_f), reference
            )
            bankruptcy = solve_pool_price(
                group, rest, c.price_f, c.keep_f, others, reference, with_maintenance=False
            )
        mark_ts = symbols.v_mark_ts[sid]
        ordered = sorted(zip(grouped[sid], group, strict=True), key=lambda rl: rows.v_side[rl[0]])
        for row, leg in ordered:
            views.append(
                PositionView(
                    symbol=names[sid],
                    side=SIDES[rows.v_side[row]],
                    qty=float(rows.qty.get(row)),
                    entry=leg.entry_f,
                    mark=price if marked else leg.entry_f,
                    liquidation_price=liquidation,
                    bankruptcy_price=bankruptcy,
                    mark_ts=mark_ts if mark_ts >= 0 else None,
                    mark_stale=sid in stale,
                    funding=rows.v_funding[row],
                )
            )
    return tuple(views)


class Position(NamedTuple):
    """An open position as a reader sees it (built from the book on demand)."""

    account: str
    symbol: str
    side: Side
    mode: Mode
    leverage: Decimal
    leg: Leg


class EntityState(NamedTuple):
    """A read-only picture of one entity, for tests, tools and metrics."""

    ref: EntityRef
    wallet: Decimal
    level: int
    liquidating: bool
    exposures: dict[str, dict[str, Position]]

    def positions(self) -> list[Position]:
        """Positions in canonical order (symbol, then side)."""
        ordered: list[Position] = []
        for symbol in sorted(self.exposures):
            slots = self.exposures[symbol]
            ordered.extend(slots[side] for side in sorted(slots))
        return ordered


def entity_state(book: Book, entity: int) -> EntityState:
    rows = book.rows
    entities = book.entities
    ref = entity_ref(book, entity)
    exposures: dict[str, dict[str, Position]] = {}
    for row in book.entity_rows(entity):
        sid = rows.v_symbol[row]
        contract = book.contracts[sid]
        assert contract is not None  # noqa: S101
        symbol = book.symbol_names.names[sid]
        side: Side = SIDES[rows.v_side[row]]  # type: ignore[assignment]
        qty = rows.qty.get(row)
        entry = rows.entry_exact.get(row)
        exposures.setdefault(symbol, {})[side] = Position(
            account=ref.account,
            symbol=symbol,
            side=side,
            mode="isolated" if rows.v_isolated[row] else "cross",
            leverage=book.leverages[rows.v_leverage[row]],
            leg=Leg.of(qty, entry, contract),
        )
    level = entities.v_level[entity]
    return EntityState(
        ref=ref,
        wallet=book.wallet(entity),
        level=level if level != NONE else -1,
        liquidating=bool(entities.v_liquidating[entity]),
        exposures=exposures,
    )
