"""The book in columns: positions are rows of typed arrays, entities are groups of rows.

Tables (see :mod:`monitor.columns`):

* :class:`Symbols`: per symbol, its last mark (float), the exchange time of that mark and the
  trigger envelope of the index (ticks inside ``[env_lo, env_hi]`` change nothing);
* :class:`Rows`: one open position each: symbol, entity, side, mode, ``|qty|·CS`` and the entry
  as floats for valuation, quantity and entry exactly (scaled integers, :mod:`monitor.exact`),
  leverage (an id of a shared value), and the row's trigger band on its symbol;
* :class:`Entities`: one entity each (isolated position, cross account in one margin asset, or
  a multi-asset pool): kind, account, asset, symbol and side (isolated), its wallet (float and
  exact), its alert state (level, last published ratio and level, the hold flag);
* :class:`Balances`: an account's wallet in one asset, and the cross entity it backs.

An entity's rows form a linked list (``Rows.next``), in the order the old object graph kept
them (symbols in the order they were first held, sides within a symbol in the order they were
opened), so that a float sum over an entity adds its terms in one fixed order whether it is
computed for one entity or for thousands at once. An account's rows form a second list
(``Rows.next_in_account``) and its balances a third (``Balances.next``).

Names (accounts, assets, symbols) are interned once: every table holds small integer ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from monitor.columns import Cells, Table
from monitor.contracts import Contract
from monitor.exact import ExactColumn

CROSS, ISOLATED, POOL = 0, 1, 2
USD = "USD"
"""The asset a pool's numbers are in."""
SIDES = ("both", "long", "short")
SIDE_IDS = {"both": 0, "long": 1, "short": 2}
SCOPES = ("cross", "isolated", "pool")
INF = float("inf")
NAN = float("nan")
NONE = -1


@dataclass(slots=True)
class Collateral:
    """The latest ``collateral`` record of an asset."""

    price: Decimal
    haircut: Decimal
    ts: int
    price_f: float = 0.0
    keep_f: float = 0.0  # 1 − haircut
    haircut_f: float = 0.0

    def __post_init__(self) -> None:
        self.price_f = float(self.price)
        self.keep_f = float(1 - self.haircut)
        self.haircut_f = float(self.haircut)


class Names:
    """Strings interned as dense ids."""

    __slots__ = ("ids", "names")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def intern(self, name: str) -> int:
        found = self.ids.get(name)
        if found is not None:
            return found
        found = self.ids[name] = len(self.names)
        self.names.append(name)
        return found

    def __len__(self) -> int:
        return len(self.names)


class Symbols(Table):
    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {
        "price": ("float64", NAN),  # the last mark; NaN before the first tick
        "mark_ts": ("int64", -1),
        "inverse": ("int8", 0),
        "env_lo": ("float64", 0.0),  # the index's envelope (see monitor.triggers)
        "env_hi": ("float64", INF),
    }
    DERIVED: ClassVar[frozenset[str]] = frozenset({"env_lo", "env_hi"})
    price: np.ndarray
    mark_ts: np.ndarray
    inverse: np.ndarray
    env_lo: np.ndarray
    env_hi: np.ndarray
    v_price: Cells
    v_mark_ts: Cells
    v_inverse: Cells
    v_env_lo: Cells
    v_env_hi: Cells


class Rows(Table):
    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {
        "symbol": ("int32", NONE),
        "entity": ("int32", NONE),
        "side": ("int8", 0),
        "isolated": ("int8", 0),
        "sign": ("int8", 0),  # +1 long, -1 short; 0 marks a free row
        "qcs": ("float64", 0.0),  # |qty|·contract size, rounded once
        "entry": ("float64", 0.0),
        "qty_m": ("int64", 0),
        "qty_e": ("int8", 0),
        "entry_m": ("int64", 0),
        "entry_e": ("int8", 0),
        "leverage": ("int32", 0),
        "next": ("int32", NONE),
        "next_in_account": ("int32", NONE),
        "lo": ("float64", 0.0),  # trigger band of the row's entity on the row's symbol
        "hi": ("float64", INF),
        "funding": ("float64", 0.0),  # cumulative funding settled (docs/collateral.md §3)
    }
    # new_row sets symbol, side and the account link; the upsert every value; attach the entity
    RESET = ("sign", "entity", "next", "lo", "hi", "funding")
    symbol: np.ndarray
    entity: np.ndarray
    side: np.ndarray
    isolated: np.ndarray
    sign: np.ndarray
    qcs: np.ndarray
    entry: np.ndarray
    qty_m: np.ndarray
    qty_e: np.ndarray
    entry_m: np.ndarray
    entry_e: np.ndarray
    leverage: np.ndarray
    next: np.ndarray
    next_in_account: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    funding: np.ndarray
    v_symbol: Cells
    v_entity: Cells
    v_side: Cells
    v_isolated: Cells
    v_sign: Cells
    v_qcs: Cells
    v_entry: Cells
    v_qty_m: Cells
    v_qty_e: Cells
    v_entry_m: Cells
    v_entry_e: Cells
    v_leverage: Cells
    v_next: Cells
    v_next_in_account: Cells
    v_lo: Cells
    v_hi: Cells
    v_funding: Cells

    def __init__(self, capacity: int = 256) -> None:
        self.qty = ExactColumn()
        self.entry_exact = ExactColumn()
        super().__init__(capacity)

    def _grow(self, capacity: int) -> None:
        super()._grow(capacity)
        self.qty.bind(self.v_qty_m, self.v_qty_e)
        self.entry_exact.bind(self.v_entry_m, self.v_entry_e)

    def free(self, row: int) -> None:
        self.qty.clear(row)
        self.entry_exact.clear(row)
        super().free(row)


class Entities(Table):
    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {
        "kind": ("int8", NONE),  # CROSS, ISOLATED, POOL; NONE marks a free row
        "account": ("int32", NONE),
        "asset": ("int32", NONE),
        "symbol": ("int32", NONE),  # isolated only
        "side": ("int8", 0),  # isolated only
        "first": ("int32", NONE),  # first row of the entity's list
        "count": ("int32", 0),
        "wallet": ("float64", 0.0),
        "wallet_m": ("int64", 0),
        "wallet_e": ("int8", 0),
        "level": ("int8", NONE),  # index of the highest active alert level
        "shown_level": ("int8", NONE),
        "shown_ratio": ("float64", NAN),  # ratio of the last state event; NaN: none yet
        "liquidating": ("int8", 0),  # under the hold policy, after a liquidation
    }
    kind: np.ndarray
    account: np.ndarray
    asset: np.ndarray
    symbol: np.ndarray
    side: np.ndarray
    first: np.ndarray
    count: np.ndarray
    wallet: np.ndarray
    wallet_m: np.ndarray
    wallet_e: np.ndarray
    level: np.ndarray
    shown_level: np.ndarray
    shown_ratio: np.ndarray
    liquidating: np.ndarray
    v_kind: Cells
    v_account: Cells
    v_asset: Cells
    v_symbol: Cells
    v_side: Cells
    v_first: Cells
    v_count: Cells
    v_wallet: Cells
    v_wallet_m: Cells
    v_wallet_e: Cells
    v_level: Cells
    v_shown_level: Cells
    v_shown_ratio: Cells
    v_liquidating: Cells

    def __init__(self, capacity: int = 256) -> None:
        self.wallet_exact = ExactColumn()
        super().__init__(capacity)

    def _grow(self, capacity: int) -> None:
        super()._grow(capacity)
        self.wallet_exact.bind(self.v_wallet_m, self.v_wallet_e)

    def free(self, row: int) -> None:
        self.wallet_exact.clear(row)
        super().free(row)


class Balances(Table):
    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {
        "account": ("int32", NONE),
        "asset": ("int32", NONE),
        "wallet": ("float64", 0.0),
        "wallet_m": ("int64", 0),
        "wallet_e": ("int8", 0),
        "entity": ("int32", NONE),  # the cross entity this wallet backs, if any
        "next": ("int32", NONE),  # next balance of the same account
    }
    account: np.ndarray
    asset: np.ndarray
    wallet: np.ndarray
    wallet_m: np.ndarray
    wallet_e: np.ndarray
    entity: np.ndarray
    next: np.ndarray
    v_account: Cells
    v_asset: Cells
    v_wallet: Cells
    v_wallet_m: Cells
    v_wallet_e: Cells
    v_entity: Cells
    v_next: Cells

    def __init__(self, capacity: int = 256) -> None:
        self.wallet_exact = ExactColumn()
        super().__init__(capacity)

    def _grow(self, capacity: int) -> None:
        super()._grow(capacity)
        self.wallet_exact.bind(self.v_wallet_m, self.v_wallet_e)


class Accounts(Table):
    COLUMNS: ClassVar[dict[str, tuple[str, Any]]] = {
        "first_row": ("int32", NONE),
        "first_balance": ("int32", NONE),
        "snapshot_ts": ("int64", -1),  # ts of the last full account snapshot; -1: none
        "multi_assets": ("int8", 0),  # asset_mode, docs/collateral.md §1
        "pool": ("int32", NONE),  # the account's pool entity, in multi-assets mode
    }
    first_row: np.ndarray
    first_balance: np.ndarray
    snapshot_ts: np.ndarray
    multi_assets: np.ndarray
    pool: np.ndarray
    v_first_row: Cells
    v_first_balance: Cells
    v_snapshot_ts: Cells
    v_multi_assets: Cells
    v_pool: Cells


class Book:
    """Every table of the engine's state and the structural operations on them (no valuation,
    no events: see :mod:`monitor.engine`)."""

    def __init__(self) -> None:
        self.account_names = Names()
        self.asset_names = Names()
        self.symbol_names = Names()
        self.symbols = Symbols()
        self.rows = Rows()
        self.entities = Entities()
        self.balances = Balances()
        self.accounts = Accounts()
        self.contracts: list[Contract | None] = []
        self.margin_asset: list[int] = []  # per symbol: asset id of its margin asset
        self.leverages: list[Decimal] = []
        self._leverage_ids: dict[Any, int] = {}
        self._balance_index: dict[int, int] = {}
        self.collateral: dict[int, Collateral] = {}
        """The latest ``collateral`` record of each asset (by asset id)."""
        self.usd = self.asset_names.intern(USD)

    def rebuild_indexes(self) -> None:
        """The lookups that are not columns, after the tables were loaded from a snapshot."""
        balances = self.balances
        keys = (balances.account[: balances.size].astype(np.int64) << 20) | balances.asset[
            : balances.size
        ].astype(np.int64)
        self._balance_index = {int(k): row for row, k in enumerate(keys.tolist())}

    # -- names ---------------------------------------------------------------------------------

    def symbol_id(self, symbol: str) -> int:
        sid = self.symbol_names.ids.get(symbol)
        if sid is not None:
            return sid
        sid = self.symbol_names.intern(symbol)
        row = self.symbols.allocate()
        assert row == sid  # noqa: S101  # one symbols row per interned name
        self.contracts.append(None)
        self.margin_asset.append(NONE)
        return sid

    def account_id(self, account: str) -> int:
        aid = self.account_names.ids.get(account)
        if aid is not None:
            return aid
        aid = self.account_names.intern(account)
        row = self.accounts.allocate()
        assert row == aid  # noqa: S101
        return aid

    def intern_accounts(self, names: list[str]) -> None:
        """Intern these account names in order (the rows of new accounts made in bulk)."""
        ids = self.account_names.ids
        fresh = [name for name in dict.fromkeys(names) if name not in ids]
        if not fresh:
            return
        for name in fresh:
            self.account_names.intern(name)
        rows = self.accounts.allocate_many(len(fresh))
        assert int(rows[0]) == ids[fresh[0]]  # noqa: S101  # one accounts row per name

    def leverage_id(self, leverage: Decimal) -> int:
        key = leverage.as_tuple()
        found = self._leverage_ids.get(key)
        if found is None:
            found = self._leverage_ids[key] = len(self.leverages)
            self.leverages.append(leverage)
        return found

    # -- contracts -----------------------------------------------------------------------------

    def set_contract(self, sid: int, contract: Contract) -> None:
        self.contracts[sid] = contract
        self.margin_asset[sid] = self.asset_names.intern(contract.margin_asset)
        self.symbols.v_inverse[sid] = 1 if contract.is_inverse else 0

    # -- balances ------------------------------------------------------------------------------

    def balance_row(self, aid: int, asset: int, *, create: bool = False) -> int:
        key = (aid << 20) | asset
        row = self._balance_index.get(key, NONE)
        if row == NONE and create:
            balances = self.balances
            row = balances.allocate()
            balances.v_account[row] = aid
            balances.v_asset[row] = asset
            balances.wallet_exact.set(row, Decimal(0))
            accounts = self.accounts
            balances.v_next[row] = accounts.v_first_balance[aid]
            accounts.v_first_balance[aid] = row
            self._balance_index[key] = row
        return row

    def balance_rows_for(self, aid: np.ndarray, asset: np.ndarray) -> np.ndarray:
        """The balance row of each (account, asset) pair, those not there yet made in bulk in
        the order the pairs first appear, exactly as :meth:`balance_row` with ``create`` would
        make them one by one (a zero wallet, in front of the account's list)."""
        keys = ((aid << 20) | asset).tolist()
        index = self._balance_index
        fresh = [key for key in dict.fromkeys(keys) if key not in index]
        if fresh:
            balances = self.balances
            rows = balances.allocate_many(len(fresh))
            fresh_keys = np.array(fresh, dtype=np.int64)
            owner = fresh_keys >> 20
            balances.account[rows] = owner
            balances.asset[rows] = fresh_keys & ((1 << 20) - 1)
            balances.wallet[rows] = 0.0
            balances.wallet_m[rows] = 0
            balances.wallet_e[rows] = 0
            balances.entity[rows] = NONE
            # each new row goes in front of its account's list (newest first)
            order = np.lexsort((-np.arange(len(fresh)), owner))
            by_account = rows[order]
            owners = owner[order]
            last = np.r_[owners[1:] != owners[:-1], True]
            accounts = self.accounts
            balances.next[by_account] = np.where(
                last, accounts.first_balance[owners], np.r_[by_account[1:], NONE]
            )
            head = np.r_[True, owners[:-1] != owners[1:]]
            accounts.first_balance[owners[head]] = by_account[head]
            index.update(zip(fresh, rows.tolist(), strict=True))
        return np.array([index[key] for key in keys], dtype=np.int64)

    def balance_rows(self, aid: int) -> list[int]:
        rows: list[int] = []
        row = self.accounts.v_first_balance[aid]
        nxt = self.balances.v_next
        while row != NONE:
            rows.append(row)
            row = nxt[row]
        return rows

    def set_balance(self, row: int, wallet: Decimal) -> None:
        balances = self.balances
        balances.wallet_exact.set(row, wallet)
        balances.v_wallet[row] = float(wallet)
        entity = balances.v_entity[row]
        if entity != NONE:
            self.set_wallet(entity, wallet)

    def balance_wallet(self, row: int) -> Decimal:
        return self.balances.wallet_exact.get(row)

    # -- entities ------------------------------------------------------------------------------

    def set_wallet(self, entity: int, wallet: Decimal) -> None:
        entities = self.entities
        entities.wallet_exact.set(entity, wallet)
        entities.v_wallet[entity] = float(wallet)

    def wallet(self, entity: int) -> Decimal:
        return self.entities.wallet_exact.get(entity)

    def create_entity(self, kind: int, aid: int, asset: int, sid: int = NONE, side: int = 0) -> int:
        entities = self.entities
        entity = entities.allocate()
        entities.v_kind[entity] = kind
        entities.v_account[entity] = aid
        entities.v_asset[entity] = asset
        entities.v_symbol[entity] = sid
        entities.v_side[entity] = side
        if kind == CROSS:
            balance = self.balance_row(aid, asset, create=True)
            self.balances.v_entity[balance] = entity
            self.set_wallet(entity, self.balance_wallet(balance))
        else:  # an isolated wallet is set by its record; a pool's wallets are the balances
            self.set_wallet(entity, Decimal(0))
        if kind == POOL:
            self.accounts.v_pool[aid] = entity
        return entity

    def forget_entity(self, entity: int) -> None:
        """Remove an entity that holds no row any more."""
        entities = self.entities
        if entities.v_kind[entity] == POOL:
            self.accounts.v_pool[entities.v_account[entity]] = NONE
        if entities.v_kind[entity] == CROSS:
            balance = self.balance_row(entities.v_account[entity], entities.v_asset[entity])
            if balance != NONE:
                self.balances.v_entity[balance] = NONE
        entities.free(entity)

    def cross_entity(self, aid: int, asset: int) -> int:
        row = self.balance_row(aid, asset)
        return NONE if row == NONE else self.balances.v_entity[row]

    def entity_rows(self, entity: int) -> list[int]:
        """The entity's rows in list order."""
        out: list[int] = []
        row = self.entities.v_first[entity]
        nxt = self.rows.v_next
        while row != NONE:
            out.append(row)
            row = nxt[row]
        return out

    def live_entities(self) -> np.ndarray:
        entities = self.entities
        return np.flatnonzero(entities.kind[: entities.size] != NONE)

    # -- rows ----------------------------------------------------------------------------------

    def find_row(self, aid: int, sid: int, side: int) -> int:
        """The row in slot (account, symbol, side), or ``NONE``."""
        rows = self.rows
        row: int = self.accounts.v_first_row[aid]
        symbol, sides, nxt = rows.v_symbol, rows.v_side, rows.v_next_in_account
        while row != NONE:
            if symbol[row] == sid and sides[row] == side:
                return row
            row = nxt[row]
        return NONE

    def account_rows(self, aid: int) -> list[int]:
        out: list[int] = []
        row = self.accounts.v_first_row[aid]
        nxt = self.rows.v_next_in_account
        while row != NONE:
            out.append(row)
            row = nxt[row]
        return out

    def new_row(self, aid: int, sid: int, side: int) -> int:
        """A row for a new position in slot (account, symbol, side), linked to its account."""
        rows = self.rows
        row = rows.allocate()
        rows.v_symbol[row] = sid
        rows.v_side[row] = side
        accounts = self.accounts
        rows.v_next_in_account[row] = accounts.v_first_row[aid]
        accounts.v_first_row[aid] = row
        return row

    def drop_row(self, aid: int, row: int) -> None:
        """Unlink a row (already detached from its entity) from its account and free it."""
        rows = self.rows
        accounts = self.accounts
        nxt = rows.v_next_in_account
        if accounts.v_first_row[aid] == row:
            accounts.v_first_row[aid] = nxt[row]
        else:
            prev = accounts.v_first_row[aid]
            while nxt[prev] != row:
                prev = nxt[prev]
            nxt[prev] = nxt[row]
        rows.free(row)

    def attach(self, entity: int, row: int) -> None:
        """Link ``row`` into ``entity``: after the entity's last row of the same symbol, or at
        the end (the order the entity's terms are summed in)."""
        rows = self.rows
        entities = self.entities
        nxt = rows.v_next
        rows.v_entity[row] = entity
        nxt[row] = NONE
        first = entities.v_first[entity]
        entities.v_count[entity] += 1
        if first == NONE:
            entities.v_first[entity] = row
            return
        sid = rows.v_symbol[row]
        symbol = rows.v_symbol
        after = NONE
        last = cur = first
        while cur != NONE:
            if symbol[cur] == sid:
                after = cur
            last = cur
            cur = nxt[cur]
        if after == NONE:
            after = last
        nxt[row] = nxt[after]
        nxt[after] = row

    def detach(self, row: int) -> int:
        """Unlink ``row`` from its entity; return how many rows the entity still holds."""
        rows = self.rows
        entities = self.entities
        nxt = rows.v_next
        entity = rows.v_entity[row]
        first = entities.v_first[entity]
        if first == row:
            entities.v_first[entity] = nxt[row]
        else:
            prev = first
            while nxt[prev] != row:
                prev = nxt[prev]
            nxt[prev] = nxt[row]
        nxt[row] = NONE
        rows.v_entity[row] = NONE
        entities.v_count[entity] -= 1
        return int(entities.v_count[entity])

    def rows_of_symbol(self, sid: int) -> np.ndarray:
        """Every open row of a symbol (one vectorised scan of the symbol column)."""
        rows = self.rows
        size = rows.size
        return np.flatnonzero((rows.symbol[:size] == sid) & (rows.sign[:size] != 0))

    def gather(self, entities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, owner)``: the rows of ``entities`` and, for each, the index in
        ``entities`` of its entity, in an order that keeps every entity's rows in list order
        (all first rows, then all second rows, ...): a walk of every list at once."""
        nxt = self.rows.next
        current = self.entities.first[entities].astype(np.int64)
        owner = np.arange(len(entities), dtype=np.int64)
        keep = current != NONE
        current, owner = current[keep], owner[keep]
        row_parts: list[np.ndarray] = []
        owner_parts: list[np.ndarray] = []
        while len(current):
            row_parts.append(current)
            owner_parts.append(owner)
            current = nxt[current].astype(np.int64)
            keep = current != NONE
            current, owner = current[keep], owner[keep]
        if not row_parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        return np.concatenate(row_parts), np.concatenate(owner_parts)
