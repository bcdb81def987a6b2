"""The margin engine: records in, events out. Synchronous, deterministic, free of I/O.

Rules (interfaces §1, §3):

* a tick older than the last accepted tick of its symbol, or for a symbol without a contract,
  is dropped (:class:`TickDropped`); a tick with an equal ``ts`` is applied;
* until a symbol's first tick its positions are valued at their entry prices;
* a ``margin`` record for a position that is not open and isolated is rejected;
* every record that changes an account re-evaluates the entities it touches at once, with the
  record's ``ts``; a ``contract`` record that re-tiers a held symbol re-evaluates its holders
  with the latest ``ts`` seen (contract records carry none);
* events caused by one record are emitted in the canonical entity order
  (:attr:`EntityRef.sort_key`).

Alert state machine, per entity, with ``h`` the highest active level:

* liquidation (``MB <= MM``) first: emit it; under ``close`` remove the entity's positions (and
  zero a cross wallet); under ``hold`` keep them, marked liquidating, silent until a record
  changes the entity. ``h`` is cleared;
* else with ``top`` the highest level ``<= ratio``: if ``top`` exists and exceeds ``h``, emit one
  ``margin_warning`` at ``top`` (even when several levels were jumped) and set ``h = top``;
* else if ``h`` exists and ratio ``< h − hysteresis``: without ``top`` emit
  ``margin_recovered`` and clear ``h``, otherwise set ``h = top`` silently.

Ticks are routed through the trigger index (:mod:`monitor.index`, :mod:`monitor.bands`): only
entities whose band the new mark leaves are re-evaluated, and the result equals re-evaluating
every holder of the symbol (the naive strategy in ``bench/naive.py``, checked by the tests).

Decisions are made on floats and re-made exactly (rational arithmetic, from the exact decimal
inputs) whenever a float result lies within its error bound of the threshold; the margin
numbers published in events are computed exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

from monitor.bands import SymbolCurve, Threshold, bands
from monitor.config import STATE_RATIO_FLOOR, EngineConfig
from monitor.contracts import Contract
from monitor.entity import Entity, Position, measure, measure_exact, symbol_terms
from monitor.errors import RecordRejected, TickDropped
from monitor.events import (
    EngineEvent,
    EntityRef,
    LiquidationTriggered,
    MarginRecovered,
    MarginStateChanged,
    MarginStateCleared,
    MarginWarningRaised,
    PositionView,
    event_id,
)
from monitor.index import SymbolTriggers
from monitor.margin import EXACT, Leg, solve_price
from monitor.records import (
    AccountUpdateRecord,
    BalanceRecord,
    ContractRecord,
    MarginRecord,
    MarkSource,
    Mode,
    PositionRecord,
    Record,
    Side,
    TickRecord,
    exact_mark_of,
)

NO_EVENTS: tuple[EngineEvent, ...] = ()
_NOTHING_DUE: list[Entity] = []  # never mutated: returned when a tick crosses no band
_SIDES: dict[str, Side] = {"both": "both", "long": "long", "short": "short"}
_MODES: dict[str, Mode] = {"isolated": "isolated", "cross": "cross"}
ZERO = Decimal(0)
ONE = Fraction(1)

_LIQUIDATION = Threshold(alpha=1.0, beta=1.0, rising=True)
_BALANCE_POSITIVE = Threshold(alpha=0.0, beta=1.0, rising=True)


class _Valuation:
    """One entity valued at the current marks, with exact fallbacks for close calls."""

    __slots__ = ("engine", "entity", "exact", "mb", "mm", "tolerance")

    def __init__(self, engine: Engine, entity: Entity) -> None:
        self.engine = engine
        self.entity = entity
        self.mb, self.mm, self.tolerance = measure(entity, engine.prices)
        self.exact: tuple[Fraction, Fraction] | None = None

    def exact_values(self) -> tuple[Fraction, Fraction]:
        """``(MB, MM)`` in exact arithmetic (computed once)."""
        if self.exact is None:
            self.exact = measure_exact(self.entity, self.engine.exact_mark)
        return self.exact

    def sign(self, alpha: int, beta: float, beta_exact: Fraction) -> int:
        """Sign of ``α·MM − β·MB``, exact even when the floats cannot tell."""
        value = alpha * self.mm - beta * self.mb
        if value > self.tolerance:
            return 1
        if value < -self.tolerance:
            return -1
        mb, mm = self.exact_values()
        exact = (mm if alpha else 0) - beta_exact * mb
        return (exact > 0) - (exact < 0)

    def liquidated(self) -> bool:
        """``MB <= MM``, or ``MB <= 0`` (only distinct when a tier table lets MM go negative)."""
        if self.sign(1, 1.0, ONE) >= 0:
            return True
        return (
            self.engine.negative_mm_possible
            and self.entity.mm_can_be_negative
            and self.sign(0, 1.0, ONE) >= 0
        )


class Engine:
    """Live state of every contract, mark, account and entity; see the module docstring."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._levels = tuple(Fraction(v) for v in self.config.levels)
        self._levels_f = self.config.levels_f
        self._rearm = tuple(
            Fraction(self.config.rearm_threshold(i)) for i in range(len(self._levels))
        )
        self._rearm_f = tuple(float(v) for v in self._rearm)
        self.contracts: dict[str, Contract] = {}
        self.prices: dict[str, float] = {}
        self._mark_text: dict[str, MarkSource] = {}
        self._mark_ts: dict[str, int] = {}
        self._stale: set[str] = set()
        # names and leverages shared by every position that uses them (memory: one string per
        # account, not one per position)
        self._names: dict[str, str] = {}
        self._leverages: dict[object, Decimal] = {}
        self._balances: dict[tuple[str, str], Decimal] = {}
        self._positions: dict[tuple[str, str, str], Position] = {}
        self._entities: dict[EntityRef, Entity] = {}
        self._holders: dict[str, dict[EntityRef, Entity]] = {}
        self._triggers: dict[str, SymbolTriggers] = {}
        self._clock = 0
        self._snapshot_ts: dict[str, int] = {}  # account -> ts of its last full snapshot
        self.events_emitted = 0
        self.transitions = 0
        """Counts every change of an entity's alert state, silent ones included (a level lowered
        within hysteresis), and every published state: an input that moved it is worth
        journaling."""
        self.negative_mm_possible = False
        self._warn_thresholds = tuple(Threshold(1.0, b, rising=True) for b in self._levels_f)
        self._rearm_thresholds = tuple(Threshold(1.0, b, rising=False) for b in self._rearm_f)
        move = self.config.state_move
        self._state_move = None if move is None else float(move)

    # -- reading -------------------------------------------------------------------------------

    def exact_mark(self, symbol: str) -> Fraction | None:
        """The last mark of ``symbol``, exactly (``None`` before its first tick)."""
        source = self._mark_text.get(symbol)
        return None if source is None else exact_mark_of(source)

    @property
    def entity_count(self) -> int:
        return len(self._entities)

    @property
    def position_count(self) -> int:
        return len(self._positions)

    def entity(self, ref: EntityRef) -> Entity | None:
        return self._entities.get(ref)

    def entities(self) -> list[Entity]:
        return list(self._entities.values())

    def balance(self, account: str, asset: str) -> Decimal:
        return self._balances.get((account, asset), ZERO)

    @property
    def stale_symbols(self) -> frozenset[str]:
        """Symbols whose feed was reported stale (:meth:`set_stale`)."""
        return frozenset(self._stale)

    # -- feed health ---------------------------------------------------------------------------

    def set_stale(self, symbol: str, stale: bool) -> Sequence[EngineEvent]:
        """Say whether the feed of ``symbol`` is stale (the caller watches the feed's clock).

        A stale symbol's entities are still valued at its last mark, but their published state
        says so (``mark_stale`` and ``mark_ts`` of each position): a state event is emitted for
        every entity holding the symbol whenever the flag changes (with state tracking on). The
        flag is not part of a snapshot: after a restart the feed's health is measured afresh.
        """
        if stale == (symbol in self._stale):
            return NO_EVENTS
        if stale:
            self._stale.add(symbol)
        else:
            self._stale.discard(symbol)
        holders = self._holders.get(symbol)
        if self._state_move is None or not holders:
            return NO_EVENTS
        events: list[EngineEvent] = []
        for entity in sorted(holders.values(), key=_sort_key):
            valuation = _Valuation(self, entity)
            mb, mm = valuation.mb, valuation.mm
            events.append(self._state(entity, self._clock, mb, mm, mm / mb if mb > 0 else None))
        return events

    # -- applying records ----------------------------------------------------------------------

    def apply(self, record: Record) -> Sequence[EngineEvent]:
        """Apply one record; return the events it caused (possibly none).

        Raises :class:`TickDropped` or :class:`RecordRejected` when the record is not applied;
        the state is then unchanged.
        """
        if isinstance(record, TickRecord):
            return self.apply_tick(record.symbol, record.mark, record.mark_text, record.ts)
        if isinstance(record, PositionRecord):
            return self._apply_position(record)
        if isinstance(record, BalanceRecord):
            return self._apply_balance(record)
        if isinstance(record, MarginRecord):
            return self._apply_margin(record)
        if isinstance(record, AccountUpdateRecord):
            return self._apply_account_update(record)
        return self._apply_contract(record)

    def apply_tick(
        self, symbol: str, mark: float, mark_text: MarkSource, ts: int
    ) -> Sequence[EngineEvent]:
        """Apply a mark price (the hot path). ``mark`` must be finite and positive;
        ``mark_text`` says exactly what it was (see :data:`monitor.records.MarkSource`); it is
        only read when a decision or an event needs the exact value."""
        last = self._mark_ts.get(symbol)
        if last is None:
            if symbol not in self.contracts:
                raise TickDropped("unknown_symbol", f"no contract for {symbol}")
        elif ts < last:
            raise TickDropped("stale_tick", f"{symbol} ts {ts} is older than {last}")
        self.prices[symbol] = mark
        self._mark_text[symbol] = mark_text
        self._mark_ts[symbol] = ts
        if ts > self._clock:
            self._clock = ts
        if last is None:
            holders = self._holders.get(symbol)
            if not holders:
                return NO_EVENTS
            due = [e for e in holders.values() if not e.liquidating]
        else:
            due = self._due(symbol, mark)
        if not due:
            return NO_EVENTS
        return self._evaluate_all(due, ts)

    def _due(self, symbol: str, price: float) -> list[Entity]:
        """Entities a new mark of ``symbol`` can have changed: those whose band it leaves."""
        triggers = self._triggers.get(symbol)
        if triggers is None:
            return _NOTHING_DUE
        # the common case, before any call: the mark stays inside every band of the symbol
        above, below = triggers.above, triggers.below
        if (not above or above[0][0] >= price) and (not below or -below[0][0] <= price):
            return _NOTHING_DUE
        return triggers.crossed(price)

    def _apply_contract(self, record: ContractRecord) -> Sequence[EngineEvent]:
        contract = record.contract
        symbol = contract.symbol
        old = self.contracts.get(symbol)
        holders = self._holders.get(symbol)
        if old is not None and holders and not old.same_instrument(contract):
            raise RecordRejected(
                "contract_redefined",
                f"{symbol}: kind, margin asset or contract size changed while positions are open",
            )
        self.contracts[symbol] = contract
        self.negative_mm_possible |= contract.mm_can_be_negative
        if old is None or old == contract or not holders:
            return NO_EVENTS
        for entity in holders.values():
            slots = entity.exposures[symbol]
            for side, position in list(slots.items()):
                moved = _with_leg(position, position.leg.with_contract(contract))
                slots[side] = moved
                self._positions[(position.account, symbol, side)] = moved
        due = [e for e in holders.values() if not e.liquidating]
        return self._evaluate_all(due, self._clock)

    def _apply_balance(self, record: BalanceRecord) -> Sequence[EngineEvent]:
        self._tick_clock(record.ts)
        self._balances[(record.account, record.asset)] = record.wallet
        entity = self._entities.get(EntityRef(record.account, "cross", record.asset))
        if entity is None:
            return NO_EVENTS
        entity.set_wallet(record.wallet)
        entity.liquidating = False
        return self._evaluate_all([entity], record.ts)

    def _apply_margin(self, record: MarginRecord) -> Sequence[EngineEvent]:
        position = self._positions.get((record.account, record.symbol, record.side))
        if position is None or position.mode != "isolated":
            raise RecordRejected(
                "margin_not_open_isolated",
                f"{record.account} {record.symbol} {record.side} has no open isolated position",
            )
        self._tick_clock(record.ts)
        entity = self._entities[_ref_of(position)]
        entity.set_wallet(EXACT.add(entity.wallet, record.delta))
        entity.liquidating = False
        return self._evaluate_all([entity], record.ts)

    def _check_position(self, record: PositionRecord) -> Contract:
        """The record's contract; raises :class:`RecordRejected` if it cannot apply."""
        contract = self.contracts.get(record.symbol)
        if contract is None:
            raise RecordRejected("unknown_symbol", f"no contract for {record.symbol}")
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
        events = self._evaluate_all(touched, record.ts)
        return [*cleared, *events] if cleared else events

    def _apply_account_update(self, record: AccountUpdateRecord) -> Sequence[EngineEvent]:
        """See :class:`AccountUpdateRecord`. Validated as a whole before anything changes."""
        account = record.account
        if record.replace:
            last = self._snapshot_ts.get(account)
            if last is not None and record.ts < last:
                raise RecordRejected(
                    "stale_snapshot", f"{account}: snapshot ts {record.ts} is older than {last}"
                )
        contracts = []
        for position in record.positions:
            if position.account != account:
                raise RecordRejected("invalid_field", "every position must be of the account")
            contracts.append(self._check_position(position))
        self._tick_clock(record.ts)
        if record.replace:
            self._snapshot_ts[account] = record.ts
        touched: dict[EntityRef, Entity] = {}
        cleared: list[EngineEvent] = []
        wallets = dict(record.balances)
        if record.replace:
            for _, asset in [k for k in self._balances if k[0] == account]:
                wallets.setdefault(asset, ZERO)
        for asset, wallet in wallets.items():
            self._balances[(account, asset)] = wallet
            entity = self._entities.get(EntityRef(account, "cross", asset))
            if entity is not None:
                entity.set_wallet(wallet)
                touched[entity.ref] = entity
        updates = list(zip(record.positions, contracts, strict=True))
        if record.replace:
            listed = {(p.symbol, p.side) for p in record.positions}
            for (acct, symbol, _), old in list(self._positions.items()):
                if acct == account and (symbol, old.side) not in listed:
                    close = PositionRecord(
                        record.ts,
                        account,
                        symbol,
                        old.side,
                        old.mode,
                        ZERO,
                        old.leg.entry,
                        old.leverage,
                        None,
                    )
                    updates.append((close, old.leg.contract))
        for position, contract in updates:
            moved, gone = self._upsert(position, contract)
            touched.update((e.ref, e) for e in moved)
            cleared.extend(gone)
        alive = [e for e in touched.values() if e.alive]
        for entity in alive:
            entity.liquidating = False
        events = self._evaluate_all(alive, record.ts)
        return [*cleared, *events] if cleared else events

    def _upsert(
        self, record: PositionRecord, contract: Contract
    ) -> tuple[list[Entity], list[EngineEvent]]:
        """Apply a position record to the books without evaluating: the entities it touched,
        and state-clear events for entities it emptied."""
        qty = record.qty
        account = self._names.setdefault(record.account, record.account)
        symbol, side, mode = contract.symbol, _SIDES[record.side], _MODES[record.mode]
        slot = (account, symbol, side)
        old = self._positions.pop(slot, None)
        new_ref: EntityRef | None = None
        if qty != 0:
            new_ref = _entity_ref(account, symbol, side, mode, contract)
        touched: list[Entity] = []
        cleared: list[EngineEvent] = []
        if old is not None and _ref_of(old) != new_ref:
            old_entity = self._entities[_ref_of(old)]
            self._detach(old_entity, old)
            if old_entity.alive:
                touched.append(old_entity)
            elif self._state_move is not None:
                cleared.append(MarginStateCleared(record.ts, old_entity.ref))
        if new_ref is not None:
            entity = self._entities.get(new_ref)
            if entity is None:
                entity = self._create(new_ref)
            if record.isolated_wallet is not None and record.mode == "isolated":
                entity.set_wallet(record.isolated_wallet)
            leverage = record.leverage
            if leverage == 0 and old is not None:  # not reported (Binance ACCOUNT_UPDATE)
                leverage = old.leverage
            else:  # a few distinct values held by many positions: share them
                leverage = self._leverages.setdefault(leverage.as_tuple(), leverage)
            position = Position(
                account=account,
                symbol=symbol,
                side=side,
                mode=mode,
                leverage=leverage,
                leg=Leg.of(qty, record.entry, contract),
            )
            self._attach(entity, position)
            touched.append(entity)
        for entity in touched:
            entity.liquidating = False
        return touched, cleared

    # -- state bookkeeping ---------------------------------------------------------------------

    def _tick_clock(self, ts: int) -> None:
        if ts > self._clock:
            self._clock = ts

    def _create(self, ref: EntityRef) -> Entity:
        wallet = (
            self._balances.get((ref.account, ref.asset), ZERO) if ref.scope == "cross" else ZERO
        )
        entity = Entity(ref, wallet)
        self._entities[ref] = entity
        return entity

    def _attach(self, entity: Entity, position: Position) -> None:
        entity.exposures.setdefault(position.symbol, {})[position.side] = position
        self._holders.setdefault(position.symbol, {})[entity.ref] = entity
        self._positions[(position.account, position.symbol, position.side)] = position

    def _detach(self, entity: Entity, position: Position) -> None:
        """Remove a position from its entity; forget the entity when it holds nothing."""
        slots = entity.exposures[position.symbol]
        del slots[position.side]
        if not slots:
            del entity.exposures[position.symbol]
            holders = self._holders[position.symbol]
            del holders[entity.ref]
            if not holders:
                del self._holders[position.symbol]
        if not entity.exposures:
            entity.alive = False
            entity.version += 1
            del self._entities[entity.ref]

    # -- evaluation ----------------------------------------------------------------------------

    def _evaluate_all(self, entities: list[Entity], ts: int) -> Sequence[EngineEvent]:
        if len(entities) > 1:
            entities.sort(key=_sort_key)
        events: list[EngineEvent] = []
        for entity in entities:
            if entity.alive and not entity.liquidating:
                self._evaluate(entity, ts, events)
        return events

    def _evaluate(self, entity: Entity, ts: int, events: list[EngineEvent]) -> None:
        """Run the alert state machine for one entity at the current marks."""
        valuation = _Valuation(self, entity)
        if valuation.liquidated():
            events.append(self._liquidate(entity, ts, valuation))
            if self._state_move is not None:
                if entity.alive:  # held, marked liquidating: publish that
                    mb, mm = valuation.mb, valuation.mm
                    events.append(self._state(entity, ts, mb, mm, mm / mb if mb > 0 else None))
                    entity.shown_ratio = None  # whatever comes next is news
                else:
                    events.append(MarginStateCleared(ts, entity.ref))
            return
        levels_f = self._levels_f
        mb, mm, tolerance = valuation.mb, valuation.mm, valuation.tolerance
        top = -1
        for i in range(len(levels_f) - 1, -1, -1):
            gap = mm - levels_f[i] * mb  # ratio >= level  <=>  MM - level*MB >= 0 (MB > 0)
            if gap > tolerance or (
                gap >= -tolerance and valuation.sign(1, levels_f[i], self._levels[i]) >= 0
            ):
                top = i
                break
        h = entity.level
        if top >= 0 and top > h:
            entity.level = top
            events.append(self._warning(entity, ts, top, valuation))
        elif h >= 0 and valuation.sign(1, self._rearm_f[h], self._rearm[h]) < 0:
            entity.level = top
            self.transitions += 1
            if top < 0:
                events.append(self._recovered(entity, ts, valuation))
        if self._state_move is not None:
            self._track_state(entity, ts, valuation, events)
        self._index(entity, valuation)

    def _state_step(self, shown: float) -> float:
        """How far the ratio may move from its published value before it is republished."""
        assert self._state_move is not None  # noqa: S101  # only called with state tracking on
        return self._state_move * max(shown, STATE_RATIO_FLOOR)

    def _track_state(
        self, entity: Entity, ts: int, valuation: _Valuation, events: list[EngineEvent]
    ) -> None:
        """Emit a state event when the level changed or the ratio moved far enough."""
        ratio = valuation.mm / valuation.mb  # MB > 0: the entity is not liquidated
        shown = entity.shown_ratio
        if (
            shown is None
            or entity.level != entity.shown_level
            or abs(ratio - shown) >= self._state_step(shown)
        ):
            events.append(self._state(entity, ts, valuation.mb, valuation.mm, ratio))

    def _index(self, entity: Entity, valuation: _Valuation) -> None:
        """Replace the entity's trigger bands with ones computed at the current marks."""
        entity.version += 1
        prices = self.prices
        curves = [
            SymbolCurve(symbol, [p.leg for p in slots.values()], price)
            for symbol, slots in entity.exposures.items()
            if (price := prices.get(symbol)) is not None
        ]
        if not curves:
            return
        mb, mm, tolerance = valuation.mb, valuation.mm, valuation.tolerance
        thresholds = [(_LIQUIDATION, mb - mm - tolerance)]
        if self.negative_mm_possible and entity.mm_can_be_negative:
            thresholds.append((_BALANCE_POSITIVE, mb - tolerance))
        level = entity.level
        if level + 1 < len(self._levels_f):
            beta = self._levels_f[level + 1]
            thresholds.append((self._warn_thresholds[level + 1], beta * mb - mm - tolerance))
        if level >= 0 and self._rearm_f[level] > 0.0:
            beta = self._rearm_f[level]
            thresholds.append((self._rearm_thresholds[level], mm - beta * mb - tolerance))
        shown = entity.shown_ratio
        if shown is not None and self._state_move is not None:
            step = self._state_step(shown)
            up, down = shown + step, shown - step
            thresholds.append((Threshold(1.0, up, rising=True), up * mb - mm - tolerance))
            if down > 0.0:
                thresholds.append((Threshold(1.0, down, rising=False), mm - down * mb - tolerance))
        for symbol, lo, hi in bands(curves, thresholds):
            triggers = self._triggers.get(symbol)
            if triggers is None:
                triggers = self._triggers[symbol] = SymbolTriggers()
            triggers.add(entity, lo, hi)
            if len(triggers) > 4 * len(self._holders[symbol]) + 64:
                triggers.compact()

    # -- events --------------------------------------------------------------------------------

    def _next_id(self, kind: str, ref: EntityRef, ts: int, *facts: object) -> str:
        sequence = self.events_emitted
        self.events_emitted += 1
        self.transitions += 1
        return event_id(kind, ref, ts, sequence, facts)

    def _warning(
        self, entity: Entity, ts: int, level: int, valuation: _Valuation
    ) -> MarginWarningRaised:
        mb, mm = valuation.exact_values()
        positions = self._position_views(entity)
        return MarginWarningRaised(
            id=self._next_id("margin_warning", entity.ref, ts, level, mb, mm),
            seq=self.events_emitted - 1,  # keyword arguments run in order: after _next_id
            ts=ts,
            entity=entity.ref,
            level=float(self._levels[level]),
            margin_ratio=_ratio(mm, mb),
            margin_balance=float(mb),
            maintenance_margin=float(mm),
            liquidation_price=positions[0].liquidation_price
            if entity.ref.scope == "isolated"
            else None,
            positions=positions,
        )

    def _state(
        self, entity: Entity, ts: int, mb: float, mm: float, ratio: float | None
    ) -> MarginStateChanged:
        entity.shown_ratio = ratio
        entity.shown_level = entity.level
        self.transitions += 1  # the published state is state too: worth journaling
        return MarginStateChanged(
            ts=ts,
            entity=entity.ref,
            level=float(self._levels[entity.level]) if entity.level >= 0 else None,
            margin_ratio=ratio,
            margin_balance=mb,
            maintenance_margin=mm,
            liquidating=entity.liquidating,
            positions=self._position_views(entity),
        )

    def _recovered(self, entity: Entity, ts: int, valuation: _Valuation) -> MarginRecovered:
        mb, mm = valuation.exact_values()
        return MarginRecovered(
            id=self._next_id("margin_recovered", entity.ref, ts, mb, mm),
            seq=self.events_emitted - 1,  # keyword arguments run in order: after _next_id
            ts=ts,
            entity=entity.ref,
            margin_ratio=_ratio(mm, mb),
            margin_balance=float(mb),
            maintenance_margin=float(mm),
        )

    def _liquidate(self, entity: Entity, ts: int, valuation: _Valuation) -> LiquidationTriggered:
        mb, mm = valuation.exact_values()
        event = LiquidationTriggered(
            id=self._next_id("liquidation", entity.ref, ts, mb, mm, entity.wallet),
            seq=self.events_emitted - 1,  # keyword arguments run in order: after _next_id
            ts=ts,
            entity=entity.ref,
            margin_ratio=_ratio(mm, mb),
            margin_balance=float(mb),
            maintenance_margin=float(mm),
            loss=float(entity.wallet),
            shortfall=float(-mb) if mb < 0 else 0.0,
            positions=self._position_views(entity),
        )
        entity.level = -1
        if self.config.policy == "hold":
            entity.liquidating = True
            entity.version += 1
            return event
        for position in entity.positions():
            del self._positions[(position.account, position.symbol, position.side)]
            self._detach(entity, position)
        if entity.ref.scope == "cross":
            self._balances[(entity.ref.account, entity.ref.asset)] = ZERO
        return event

    def _position_views(self, entity: Entity) -> tuple[PositionView, ...]:
        """Each position with its liquidation and bankruptcy prices, solved per symbol with the
        entity's other symbols held at their marks (legs of one symbol solved together)."""
        terms = symbol_terms(entity, self.prices)
        views: list[PositionView] = []
        for symbol in sorted(entity.exposures):
            slots = entity.exposures[symbol]
            legs = [p.leg for p in slots.values()]
            others_upnl = sum(u for s, (u, _) in terms.items() if s != symbol)
            others_mm = sum(m for s, (_, m) in terms.items() if s != symbol)
            price = self.prices.get(symbol)
            reference = legs[0].entry_f if price is None else price
            liquidation = solve_price(legs, entity.wallet_f + others_upnl - others_mm, reference)
            bankruptcy = solve_price(
                legs, entity.wallet_f + others_upnl, reference, with_maintenance=False
            )
            for side in sorted(slots):
                leg = slots[side].leg
                views.append(
                    PositionView(
                        symbol=symbol,
                        side=side,
                        qty=float(leg.qty),
                        entry=leg.entry_f,
                        mark=leg.entry_f if price is None else price,
                        liquidation_price=liquidation,
                        bankruptcy_price=bankruptcy,
                        mark_ts=self._mark_ts.get(symbol),
                        mark_stale=symbol in self._stale,
                    )
                )
        return tuple(views)


def _sort_key(entity: Entity) -> tuple[str, int, str, str, str]:
    return entity.sort_key


def _ratio(mm: Fraction, mb: Fraction) -> float | None:
    return float(mm / mb) if mb > 0 else None


def _entity_ref(account: str, symbol: str, side: str, mode: str, contract: Contract) -> EntityRef:
    if mode == "isolated":
        return EntityRef(account, "isolated", contract.margin_asset, symbol, side)
    return EntityRef(account, "cross", contract.margin_asset)


def _ref_of(position: Position) -> EntityRef:
    return _entity_ref(
        position.account, position.symbol, position.side, position.mode, position.leg.contract
    )


def _with_leg(position: Position, leg: Leg) -> Position:
    return Position(
        account=position.account,
        symbol=position.symbol,
        side=position.side,
        mode=position.mode,
        leverage=position.leverage,
        leg=leg,
    )
