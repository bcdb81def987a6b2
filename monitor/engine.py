"""The margin engine: records in, events out. Synchronous, deterministic, free of I/O.

Rules (docs/records.md, docs/alerts.md):

* a tick older than the last accepted tick of its symbol, or for a symbol without a contract,
  is dropped (:class:`TickDropped`); a tick with an equal ``ts`` is applied;
* until a symbol's first tick its positions are valued at their entry prices;
* a ``margin`` record for a position that is not open and isolated is rejected;
* every record that changes an account re-evaluates the entities it touches at once, with the
  record's ``ts``; a ``contract`` record that re-tiers a held symbol re-evaluates its holders
  with the latest ``ts`` seen (contract records carry none);
* events caused by one record are emitted in the canonical entity order
  (:attr:`EntityRef.sort_key`).

The state lives in a columnar book (:mod:`monitor.book`); the alert state machine is in
:mod:`monitor.evaluation`. Ticks are routed through the trigger index (:mod:`monitor.triggers`):
only entities whose band the new mark leaves are re-evaluated, and the result equals
re-evaluating every holder of the symbol (the naive strategy in ``bench/naive.py``, checked by
the tests). A symbol's first tick, a re-tier and any tick that crosses many bands value their
entities in one pass over arrays.

Decisions are made on floats and re-made exactly (from the exact decimal inputs) whenever a
float result lies within its error bound of the threshold; the margin numbers published in
events are computed exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import numpy as np

from monitor.book import CROSS, ISOLATED, NONE, POOL, SIDE_IDS, Book
from monitor.collateral import (
    apply_asset_mode,
    apply_collateral,
    check_pool_position,
    settle_funding,
    store_funding,
)
from monitor.config import EngineConfig
from monitor.contracts import Contract
from monitor.errors import RecordRejected, TickDropped
from monitor.evaluation import Evaluator
from monitor.events import EngineEvent, EntityRef, MarginStateChanged, MarginStateCleared
from monitor.exact import EXACT
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    BalanceRecord,
    CollateralRecord,
    ContractRecord,
    MarginRecord,
    MarkSource,
    PositionRecord,
    Record,
    TickRecord,
    exact_mark_decimal,
)
from monitor.triggers import Triggers
from monitor.views import EntityState, entity_state, sort_key

NO_EVENTS: tuple[EngineEvent, ...] = ()
ZERO = Decimal(0)
_UNSET = object()


class Engine:
    """Live state of every contract, mark, account and entity; see the module docstring."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.book = Book()
        self.triggers = Triggers(self.book)
        self._mark_text: list[MarkSource | None] = []
        self._exact_marks: list[Decimal | None] = []
        self._clock = 0
        self._symbol_ids = self.book.symbol_names.ids
        self._indexed = True
        """Ticks inside every band of their symbol are skipped (off in the naive baseline)."""
        self._evaluator = Evaluator(self.config, self.book, self.triggers, self._exact_mark_id)
        self._funding: dict[int, tuple[Decimal, int]] = {}  # symbol -> (rate, funding_ts)
        self._funding_settled: dict[int, int] = {}  # symbol -> the funding_ts it settled last
        self.funding_paid: dict[str, Decimal] = {}
        """Funding settled so far per margin asset: what positions paid, what they received."""
        self.funding_received: dict[str, Decimal] = {}
        self.funding_changes = 0
        """Funding settlements and stored pairs that changed (see :attr:`changes`)."""

    # -- reading -------------------------------------------------------------------------------

    @property
    def events_emitted(self) -> int:
        return self._evaluator.events_emitted

    @events_emitted.setter
    def events_emitted(self, value: int) -> None:
        self._evaluator.events_emitted = value

    @property
    def transitions(self) -> int:
        """Counts every change of an entity's alert state, silent ones included (a level
        lowered within hysteresis): an input that moved it is worth journaling. Published
        states are not counted (they present the state; see :meth:`book_states`)."""
        return self._evaluator.transitions

    @property
    def changes(self) -> int:
        """Grows whenever an input changed state that the marks alone do not restore: an alert
        state (:attr:`transitions`), a funding settlement or a stored funding pair. A tick that
        leaves it unchanged need not be journaled (its mark is the only thing it changed)."""
        return self._evaluator.transitions + self.funding_changes

    @property
    def evaluations(self) -> int:
        """Entities run through the state machine so far (for tests and metrics)."""
        return self._evaluator.evaluations

    @property
    def clock(self) -> int:
        """The latest ``ts`` seen (stamps the events of contract records)."""
        return self._clock

    @property
    def contracts(self) -> dict[str, Contract]:
        names = self.book.symbol_names.names
        return {names[i]: c for i, c in enumerate(self.book.contracts) if c is not None}

    @property
    def prices(self) -> dict[str, float]:
        names = self.book.symbol_names.names
        price = self.book.symbols.v_price
        return {names[i]: price[i] for i in range(len(names)) if price[i] == price[i]}

    def _exact_mark_id(self, sid: int) -> Decimal | None:
        cached = self._exact_marks[sid]
        if cached is None:
            source = self._mark_text[sid]
            if source is None:
                return None
            cached = self._exact_marks[sid] = exact_mark_decimal(source)
        return cached

    def exact_mark(self, symbol: str) -> Fraction | None:
        """The last mark of ``symbol``, exactly (``None`` before its first tick)."""
        sid = self._symbol_ids.get(symbol)
        if sid is None:
            return None
        mark = self._exact_mark_id(sid)
        return None if mark is None else Fraction(mark)

    def mark_source(self, symbol: str) -> tuple[MarkSource, int] | None:
        """What the last mark of ``symbol`` was, and its ``ts``."""
        sid = self._symbol_ids.get(symbol)
        if sid is None or self._mark_text[sid] is None:
            return None
        source = self._mark_text[sid]
        assert source is not None  # noqa: S101
        return source, self.book.symbols.v_mark_ts[sid]

    @property
    def entity_count(self) -> int:
        return self.book.entities.live

    @property
    def position_count(self) -> int:
        return self.book.rows.live

    @property
    def account_count(self) -> int:
        """Accounts that hold at least one open position."""
        first = self.book.accounts.first_row[: self.book.accounts.size]
        return int((first != NONE).sum())

    def level_counts(self) -> dict[str, int]:
        """Open entities by alert level (``"none"``, ``"liquidating"`` and each level)."""
        entities = self.book.entities
        live = entities.kind[: entities.size] != NONE
        level = entities.level[: entities.size][live]
        liquidating = entities.liquidating[: entities.size][live] != 0
        counts = {"none": int(((level < 0) & ~liquidating).sum())}
        counts["liquidating"] = int(liquidating.sum())
        for i, value in enumerate(self.config.levels):
            counts[str(value)] = int(((level == i) & ~liquidating).sum())
        return counts

    def _find_entity(self, ref: EntityRef) -> int:
        book = self.book
        aid = book.account_names.ids.get(ref.account)
        if aid is None:
            return NONE
        if ref.scope == "isolated":
            sid = self._symbol_ids.get(ref.symbol or "")
            if sid is None:
                return NONE
            row = book.find_row(aid, sid, SIDE_IDS.get(ref.side or "", -1))
            if row == NONE or not book.rows.v_isolated[row]:
                return NONE
            return int(book.rows.v_entity[row])
        if ref.scope == "pool":
            return int(book.accounts.v_pool[aid])
        asset = book.asset_names.ids.get(ref.asset)
        return NONE if asset is None else int(book.cross_entity(aid, asset))

    def entity(self, ref: EntityRef) -> EntityState | None:
        found = self._find_entity(ref)
        return None if found == NONE else entity_state(self.book, found)

    def entities(self) -> list[EntityState]:
        return [entity_state(self.book, int(e)) for e in self.book.live_entities()]

    def book_states(self) -> list[MarginStateChanged]:
        """Every open entity as it stands, in canonical order, as state events (the shape of
        the retained state), built without changing anything."""
        book = self.book
        entities = [int(e) for e in book.live_entities()]
        entities.sort(key=lambda e: sort_key(book, e))
        describe = self._evaluator.describe
        return [describe(e, self._clock) for e in entities]

    def sweep_states(
        self, cursor: int, limit: int, max_events: int
    ) -> tuple[list[EngineEvent], int]:
        """With :attr:`EngineConfig.state_sweep`: the state events of entities with ids from
        ``cursor`` on (at most ``limit`` ids looked at) whose published state is out of date,
        at most ``max_events`` of them; and the cursor to pass next (0 once the book's end is
        reached: the next call starts a new sweep). Cost: one array pass over the ids looked
        at, plus one event per entity that moved."""
        evaluator = self._evaluator
        if not evaluator.sweeping:
            return [], 0
        entities = self.book.entities
        stop = min(cursor + limit, entities.size)
        ids = np.arange(cursor, stop, dtype=np.int64)
        live = ids[entities.kind[cursor:stop] != NONE]
        if not len(live):
            return [], (0 if stop >= entities.size else stop)
        events, done = evaluator.sweep(live, self._clock, max_events)
        if done < len(live):
            return events, int(live[done])
        return events, (0 if stop >= entities.size else stop)

    def forget_published_states(self) -> None:
        """Take every state as unpublished (after a restart: what the broker holds is not
        known), so that the sweeps publish each entity once more."""
        entities = self.book.entities
        entities.shown_ratio[: entities.size] = np.nan

    def balance(self, account: str, asset: str) -> Decimal:
        book = self.book
        aid = book.account_names.ids.get(account)
        asset_id = book.asset_names.ids.get(asset)
        if aid is None or asset_id is None:
            return ZERO
        row = book.balance_row(aid, asset_id)
        return ZERO if row == NONE else book.balance_wallet(row)

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Symbols whose feed was reported stale (:meth:`set_stale`)."""
        names = self.book.symbol_names.names
        return frozenset(names[s] for s in self._evaluator.stale)

    @property
    def negative_mm_possible(self) -> bool:
        return self._evaluator.negative_mm_possible

    # -- feed health ---------------------------------------------------------------------------

    def set_stale(self, symbol: str, stale: bool) -> Sequence[EngineEvent]:
        """Say whether the feed of ``symbol`` is stale (the caller watches the feed's clock).

        A stale symbol's entities are still valued at its last mark, but their published state
        says so (``mark_stale`` and ``mark_ts`` of each position): a state event is emitted for
        every entity holding the symbol whenever the flag changes (with state tracking on). The
        flag is not part of a snapshot: after a restart the feed's health is measured afresh.
        """
        sid = self._symbol_ids.get(symbol)
        if sid is None:
            return NO_EVENTS
        evaluator = self._evaluator
        if stale == (sid in evaluator.stale):
            return NO_EVENTS
        if stale:
            evaluator.stale.add(sid)
        else:
            evaluator.stale.discard(sid)
        if evaluator.state_move is None:
            return NO_EVENTS
        holders = self._holders(sid, include_liquidating=True)
        book = self.book
        if evaluator.sweeping:  # the next sweep publishes them
            book.entities.shown_ratio[np.array(holders, dtype=np.int64)] = np.nan
            return NO_EVENTS
        holders.sort(key=lambda e: sort_key(book, e))
        return [evaluator.state_of(entity, self._clock) for entity in holders]

    def _holders(self, sid: int, *, include_liquidating: bool = False) -> list[int]:
        """Entities holding a symbol (one scan of the symbol column)."""
        rows = self.book.rows_of_symbol(sid)
        if not len(rows):
            return []
        entities = np.unique(self.book.rows.entity[rows])
        if not include_liquidating:
            entities = entities[self.book.entities.liquidating[entities] == 0]
        return [int(e) for e in entities]

    # -- applying records ----------------------------------------------------------------------

    def apply(self, record: Record) -> Sequence[EngineEvent]:
        """Apply one record; return the events it caused (possibly none).

        Raises :class:`TickDropped` or :class:`RecordRejected` when the record is not applied;
        the state is then unchanged.
        """
        if isinstance(record, TickRecord):
            return self.apply_tick(
                record.symbol,
                record.mark,
                record.mark_text,
                record.ts,
                record.funding_rate,
                record.funding_ts,
            )
        if isinstance(record, PositionRecord):
            return self._apply_position(record)
        if isinstance(record, BalanceRecord):
            return self._apply_balance(record)
        if isinstance(record, MarginRecord):
            return self._apply_margin(record)
        if isinstance(record, AccountUpdateRecord):
            return self._apply_account_update(record)
        if isinstance(record, AssetModeRecord):
            return apply_asset_mode(self, record)
        if isinstance(record, CollateralRecord):
            return apply_collateral(self, record)
        return self._apply_contract(record)

    def apply_tick(
        self,
        symbol: str,
        mark: float,
        mark_text: MarkSource,
        ts: int,
        funding_rate: Decimal | None = None,
        funding_ts: int | None = None,
    ) -> Sequence[EngineEvent]:
        """Apply a mark price (the hot path). ``mark`` must be finite and positive;
        ``mark_text`` says exactly what it was (see :data:`monitor.records.MarkSource`); it is
        only read when a decision or an event needs the exact value. The funding pair, if
        any, is settled and stored with funding on (:mod:`monitor.collateral`)."""
        sid = self._symbol_ids.get(symbol)
        if sid is None:
            raise TickDropped("unknown_symbol", f"no contract for {symbol}")
        symbols = self.book.symbols
        last = symbols.v_mark_ts[sid]
        if ts < last:
            raise TickDropped("stale_tick", f"{symbol} ts {ts} is older than {last}")
        symbols.v_price[sid] = mark
        symbols.v_mark_ts[sid] = ts
        self._mark_text[sid] = mark_text
        self._exact_marks[sid] = None
        if ts > self._clock:
            self._clock = ts
        if self.config.funding:
            return self._funded_tick(sid, mark, ts, last, funding_rate, funding_ts)
        if last < 0:
            due = self._holders(sid)
        elif self._indexed and symbols.v_env_lo[sid] <= mark <= symbols.v_env_hi[sid]:
            return NO_EVENTS
        else:
            due = self._crossed(sid, mark)
        if not due:
            return NO_EVENTS
        return self._evaluator.evaluate(due, ts)

    def _funded_tick(
        self,
        sid: int,
        mark: float,
        ts: int,
        last: int,
        rate: Decimal | None,
        when: int | None,
    ) -> Sequence[EngineEvent]:
        """The rest of an accepted tick with funding on: settlement first (every holder whose
        wallet moved is evaluated with the move), then the pair is stored."""
        moved = settle_funding(self, sid, ts)
        store_funding(self, sid, rate, when)
        symbols = self.book.symbols
        if last < 0 or moved:
            due = self._holders(sid)
            if last >= 0:
                self._crossed(sid, mark)  # the crossed entries are due anyway: drop them
        elif self._indexed and symbols.v_env_lo[sid] <= mark <= symbols.v_env_hi[sid]:
            return NO_EVENTS
        else:
            due = self._crossed(sid, mark)
        return self._evaluator.evaluate(due, ts) if due else NO_EVENTS

    def apply_ticks(
        self,
        symbols: Sequence[str],
        marks: Sequence[float],
        texts: Sequence[MarkSource],
        stamps: Sequence[int],
        funding: Sequence[tuple[Decimal | None, int | None]] | None = None,
    ) -> tuple[list[EngineEvent], list[tuple[int, TickDropped]]]:
        """Apply a batch of ticks in order (one call for many: the replay's hot loop).

        Returns the events (in order) and the ticks dropped, by their index in the batch.
        ``funding``: each tick's ``(funding_rate, funding_ts)``, settled with funding on.
        """
        if self.config.funding:
            return self._ticks_one_by_one(symbols, marks, texts, stamps, funding)
        evaluator = self._evaluator
        evaluator.deferring = evaluator.batching
        try:
            return self._apply_ticks(symbols, marks, texts, stamps)
        finally:
            evaluator.deferring = False
            evaluator.flush()

    def _ticks_one_by_one(
        self,
        symbols: Sequence[str],
        marks: Sequence[float],
        texts: Sequence[MarkSource],
        stamps: Sequence[int],
        funding: Sequence[tuple[Decimal | None, int | None]] | None,
    ) -> tuple[list[EngineEvent], list[tuple[int, TickDropped]]]:
        events: list[EngineEvent] = []
        dropped: list[tuple[int, TickDropped]] = []
        for i, symbol in enumerate(symbols):
            rate, when = funding[i] if funding is not None else (None, None)
            try:
                events.extend(self.apply_tick(symbol, marks[i], texts[i], stamps[i], rate, when))
            except TickDropped as exc:
                dropped.append((i, exc))
        return events, dropped

    def _apply_ticks(
        self,
        symbols: Sequence[str],
        marks: Sequence[float],
        texts: Sequence[MarkSource],
        stamps: Sequence[int],
    ) -> tuple[list[EngineEvent], list[tuple[int, TickDropped]]]:
        events: list[EngineEvent] = []
        dropped: list[tuple[int, TickDropped]] = []
        evaluator = self._evaluator
        pending = evaluator.pending_symbols
        ids = self._symbol_ids
        table = self.book.symbols
        mark_ts, price, env_lo, env_hi = (
            table.v_mark_ts,
            table.v_price,
            table.v_env_lo,
            table.v_env_hi,
        )
        mark_text, exact = self._mark_text, self._exact_marks
        clock = self._clock
        indexed = self._indexed
        for i, symbol in enumerate(symbols):
            sid = ids.get(symbol)
            ts = stamps[i]
            if sid is None:
                dropped.append((i, TickDropped("unknown_symbol", f"no contract for {symbol}")))
                continue
            last = mark_ts[sid]
            if ts < last:
                dropped.append(
                    (i, TickDropped("stale_tick", f"{symbol} ts {ts} is older than {last}"))
                )
                continue
            mark = marks[i]
            if pending and last >= 0 and sid in pending and mark != price[sid]:
                # a pinned symbol moves again: the frame of first marks is over for it. Band
                # every pending entity at the marks it was valued at, then go on as usual
                evaluator.flush()
                pending = evaluator.pending_symbols
            price[sid] = mark
            mark_ts[sid] = ts
            mark_text[sid] = texts[i]
            exact[sid] = None
            if ts > clock:
                clock = ts
            if last >= 0 and indexed and env_lo[sid] <= mark <= env_hi[sid]:
                continue
            self._clock = clock
            due = self._holders(sid) if last < 0 else self._crossed(sid, mark)
            if due:
                events.extend(evaluator.evaluate(due, ts))
            # the tables may have grown (a first tick creates nothing, but be safe)
            mark_ts, price, env_lo, env_hi = (
                table.v_mark_ts,
                table.v_price,
                table.v_env_lo,
                table.v_env_hi,
            )
        self._clock = clock
        return events, dropped

    def _crossed(self, sid: int, mark: float) -> list[int]:
        """Entities whose band on ``sid`` the mark leaves (live, not liquidating)."""
        rows = self.triggers.crossed(sid, mark)
        if not rows:
            return []
        entity_of = self.book.rows.v_entity
        liquidating = self.book.entities.v_liquidating
        seen: list[int] = []
        for row in rows:
            entity = entity_of[row]
            if entity != NONE and not liquidating[entity] and entity not in seen:
                seen.append(entity)
        return seen

    def _apply_contract(self, record: ContractRecord) -> Sequence[EngineEvent]:
        contract = record.contract
        book = self.book
        sid = self._symbol_ids.get(contract.symbol)
        old = None if sid is None else book.contracts[sid]
        holders = [] if sid is None else self._holders(sid, include_liquidating=True)
        if old is not None and holders and not old.same_instrument(contract):
            raise RecordRejected(
                "contract_redefined",
                f"{contract.symbol}: kind, margin asset or contract size changed while "
                "positions are open",
            )
        if sid is None:
            sid = book.symbol_id(contract.symbol)
            self._mark_text.append(None)
            self._exact_marks.append(None)
            self.triggers.ensure(sid)
        book.set_contract(sid, contract)
        evaluator = self._evaluator
        evaluator.contracts_version += 1
        evaluator.negative_mm_possible |= contract.mm_can_be_negative
        if old is None or old == contract or not holders:
            return NO_EVENTS
        liquidating = book.entities.v_liquidating
        due = [e for e in holders if not liquidating[e]]
        return evaluator.evaluate(due, self._clock)

    def _apply_balance(self, record: BalanceRecord) -> Sequence[EngineEvent]:
        self._tick_clock(record.ts)
        book = self.book
        aid = book.account_id(record.account)
        row = book.balance_row(aid, book.asset_names.intern(record.asset), create=True)
        book.set_balance(row, record.wallet)
        entity = book.balances.v_entity[row]
        if book.accounts.v_multi_assets[aid]:
            entity = book.accounts.v_pool[aid]  # every wallet backs the pool
        if entity == NONE:
            return NO_EVENTS
        book.entities.v_liquidating[entity] = 0
        return self._evaluator.evaluate([entity], record.ts)

    def _open_row(self, account: str, symbol: str, side: str) -> int:
        book = self.book
        aid = book.account_names.ids.get(account)
        sid = self._symbol_ids.get(symbol)
        if aid is None or sid is None or side not in SIDE_IDS:
            return NONE
        return book.find_row(aid, sid, SIDE_IDS[side])

    def _apply_margin(self, record: MarginRecord) -> Sequence[EngineEvent]:
        book = self.book
        row = self._open_row(record.account, record.symbol, record.side)
        if row == NONE or not book.rows.v_isolated[row]:
            raise RecordRejected(
                "margin_not_open_isolated",
                f"{record.account} {record.symbol} {record.side} has no open isolated position",
            )
        self._tick_clock(record.ts)
        entity = book.rows.v_entity[row]
        book.set_wallet(entity, EXACT.add(book.wallet(entity), record.delta))
        book.entities.v_liquidating[entity] = 0
        return self._evaluator.evaluate([entity], record.ts)

    def _check_position(self, record: PositionRecord) -> Contract:
        """The record's contract; raises :class:`RecordRejected` if it cannot apply."""
        sid = self._symbol_ids.get(record.symbol)
        contract = None if sid is None else self.book.contracts[sid]
        if contract is None:
            raise RecordRejected("unknown_symbol", f"no contract for {record.symbol}")
        check_pool_position(
            self,
            self.book.account_names.ids.get(record.account),
            record.mode == "isolated",
            contract.is_inverse,
        )
        qty = record.qty
        if (record.side == "long" and qty < 0) or (record.side == "short" and qty > 0):
            raise RecordRejected("qty_side_mismatch", f"qty {qty} contradicts side {record.side}")
        if qty != 0 and record.mode == "isolated" and record.isolated_wallet is None:
            raise RecordRejected(
                "missing_isolated_wallet", "an isolated position needs isolated_wallet"
            )
        return contract

    def _apply_position(self, record: PositionRecord) -> Sequence[EngineEvent]:
        contract = self._check_position(record)
        self._tick_clock(record.ts)
        touched, cleared = self._upsert(record, contract)
        events = self._evaluator.evaluate(touched, record.ts)
        return [*cleared, *events] if cleared else events

    def _apply_account_update(self, record: AccountUpdateRecord) -> Sequence[EngineEvent]:
        """See :class:`AccountUpdateRecord`. Validated as a whole before anything changes."""
        book = self.book
        account = record.account
        known = book.account_names.ids.get(account)
        if record.replace and known is not None:
            last = book.accounts.v_snapshot_ts[known]
            if last >= 0 and record.ts < last:
                raise RecordRejected(
                    "stale_snapshot", f"{account}: snapshot ts {record.ts} is older than {last}"
                )
        contracts = []
        for position in record.positions:
            if position.account != account:
                raise RecordRejected("invalid_field", "every position must be of the account")
            contracts.append(self._check_position(position))
        self._tick_clock(record.ts)
        aid = book.account_id(account)
        if record.replace:
            book.accounts.v_snapshot_ts[aid] = record.ts
        touched: dict[int, None] = {}
        cleared: list[EngineEvent] = []
        wallets = dict(record.balances)
        assets = book.asset_names
        if record.replace:
            for row in book.balance_rows(aid):
                wallets.setdefault(assets.names[book.balances.v_asset[row]], ZERO)
        for asset, wallet in wallets.items():
            row = book.balance_row(aid, assets.intern(asset), create=True)
            book.set_balance(row, wallet)
            entity = book.balances.v_entity[row]
            if book.accounts.v_multi_assets[aid]:
                entity = book.accounts.v_pool[aid]
            if entity != NONE:
                touched[entity] = None
        updates = list(zip(record.positions, contracts, strict=True))
        if record.replace:
            listed = {(p.symbol, p.side) for p in record.positions}
            rows = book.rows
            names = book.symbol_names.names
            for row in book.account_rows(aid):
                sid = rows.v_symbol[row]
                side = ("both", "long", "short")[rows.v_side[row]]
                if (names[sid], side) in listed:
                    continue
                close = PositionRecord(
                    record.ts,
                    account,
                    names[sid],
                    side,  # type: ignore[arg-type]
                    "isolated" if rows.v_isolated[row] else "cross",
                    ZERO,
                    rows.entry_exact.get(row),
                    book.leverages[rows.v_leverage[row]],
                    None,
                )
                contract = book.contracts[sid]
                assert contract is not None  # noqa: S101
                updates.append((close, contract))
        for position, contract in updates:
            moved, gone = self._upsert(position, contract)
            touched.update(dict.fromkeys(moved))
            cleared.extend(gone)
        kind = book.entities.v_kind
        alive = [e for e in touched if kind[e] != NONE]
        liquidating = book.entities.v_liquidating
        for entity in alive:
            liquidating[entity] = 0
        events = self._evaluator.evaluate(alive, record.ts)
        return [*cleared, *events] if cleared else events

    def _upsert(
        self, record: PositionRecord, contract: Contract
    ) -> tuple[list[int], list[EngineEvent]]:
        """Apply a position record to the book without evaluating: the entities it touched,
        and state-clear events for entities it emptied."""
        book = self.book
        rows = book.rows
        qty = record.qty
        aid = book.account_id(record.account)
        sid = self._symbol_ids[contract.symbol]
        side = SIDE_IDS[record.side]
        isolated = record.mode == "isolated"
        asset = book.margin_asset[sid]
        row = book.find_row(aid, sid, side)
        old_entity = NONE if row == NONE else rows.v_entity[row]
        new_entity = NONE
        if qty != 0:
            if isolated:
                if old_entity != NONE and rows.v_isolated[row]:
                    new_entity = old_entity
                else:
                    new_entity = book.create_entity(ISOLATED, aid, asset, sid, side)
            elif book.accounts.v_multi_assets[aid]:
                new_entity = book.accounts.v_pool[aid]
                if new_entity == NONE:
                    new_entity = book.create_entity(POOL, aid, book.usd)
            else:
                new_entity = book.cross_entity(aid, asset)
                if new_entity == NONE:
                    new_entity = book.create_entity(CROSS, aid, asset)
        touched: list[int] = []
        cleared: list[EngineEvent] = []
        evaluator = self._evaluator
        if row != NONE and old_entity != new_entity:
            ref = None
            if evaluator.state_move is not None and book.entities.v_count[old_entity] == 1:
                from monitor.views import entity_ref

                ref = entity_ref(book, old_entity)
            if qty == 0:
                emptied = evaluator.close_row(row)
                row = NONE
            else:
                emptied = book.detach(row) == 0
                if emptied:
                    book.forget_entity(old_entity)
            if emptied:
                if ref is not None:
                    cleared.append(MarginStateCleared(record.ts, ref))
            else:
                touched.append(old_entity)
        if new_entity != NONE:
            if row == NONE:
                row = book.new_row(aid, sid, side)
                self.triggers.row_opened(sid)
            leverage = record.leverage
            if leverage == 0 and rows.v_sign[row] != 0:  # not reported (Binance ACCOUNT_UPDATE)
                leverage_id = rows.v_leverage[row]
            else:
                leverage_id = book.leverage_id(leverage)
            rows.qty.set(row, qty)
            rows.entry_exact.set(row, record.entry)
            rows.v_entry[row] = float(record.entry)
            rows.v_qcs[row] = abs(float(qty)) * contract.contract_size_f
            rows.v_sign[row] = 1 if qty > 0 else -1
            rows.v_isolated[row] = 1 if isolated else 0
            rows.v_leverage[row] = leverage_id
            if rows.v_entity[row] == NONE:
                book.attach(new_entity, row)
            if isolated and record.isolated_wallet is not None:
                book.set_wallet(new_entity, record.isolated_wallet)
            touched.append(new_entity)
        liquidating = book.entities.v_liquidating
        for entity in touched:
            liquidating[entity] = 0
        return touched, cleared

    def _tick_clock(self, ts: int) -> None:
        if ts > self._clock:
            self._clock = ts
