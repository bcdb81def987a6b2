"""The alert state machine over the book, one entity at a time or many at once.

Per entity, with ``h`` the highest active level (docs/alerts.md):

* liquidation (``MB <= MM``, or ``MB <= 0``) first: emit it; under ``close`` remove the
  entity's positions (and zero a cross wallet); under ``hold`` keep them, marked liquidating,
  silent until a record changes the entity. ``h`` is cleared;
* else with ``top`` the highest level ``<= ratio``: if ``top`` exists and exceeds ``h``, emit
  one ``margin_warning`` at ``top`` and set ``h = top``;
* else if ``h`` exists and ratio ``< h − hysteresis``: without ``top`` emit
  ``margin_recovered`` and clear ``h``, otherwise set ``h = top`` silently;
* with state tracking, a state event when the level changed or the ratio moved far enough.

:meth:`Evaluator.evaluate` takes the entities a record or a tick touched. A few are run through
the scalar path (:meth:`Evaluator.evaluate_one`). Many are valued in one pass over arrays
(:func:`monitor.valuation.value_many`, bit for bit the scalar valuation) and classified at once:
an entity whose every decision clears the float error bound and calls for nothing (no event, no
level change) only gets new trigger bands, computed in one pass too
(:mod:`monitor.bands_batch`); the rest, usually a handful, go through the scalar path in
canonical order, which makes every close call exactly and builds the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

import numpy as np

from monitor.bands import SymbolCurve, Threshold, bands
from monitor.bands_batch import BandRequest, batch_bands
from monitor.book import CROSS, NONE, POOL, Book
from monitor.config import STATE_RATIO_FLOOR, EngineConfig
from monitor.events import (
    AssetView,
    EngineEvent,
    EntityRef,
    LiquidationTriggered,
    MarginRecovered,
    MarginStateChanged,
    MarginStateCleared,
    MarginWarningRaised,
    event_id,
)
from monitor.pools import (
    breakdown,
    needed_assets,
    pool_bands,
    pool_exact,
    pool_loss,
    value_pool,
)
from monitor.triggers import CollateralTriggers, Triggers
from monitor.valuation import (
    ExactMark,
    RowTerms,
    TierArrays,
    value_exact,
    value_many,
    value_one,
)
from monitor.views import entity_ref, leg_of, legs_by_symbol, position_views, sort_key

ONE = Fraction(1)
BATCH_MIN = 12
"""From this many entities at once, valuation and bands go through the array path."""
FLUSH_CHUNK = 16_384
"""Pending entities are banded this many at a time (the arrays of one pass stay small)."""

_LIQUIDATION = Threshold(alpha=1.0, beta=1.0, rising=True)
_BALANCE_POSITIVE = Threshold(alpha=0.0, beta=1.0, rising=True)


class _Valuation:
    """One entity valued at the current marks, with exact fallbacks for close calls."""

    __slots__ = ("entity", "evaluator", "exact", "mb", "mm", "pool", "tolerance", "waiting")

    def __init__(self, evaluator: Evaluator, entity: int) -> None:
        self.evaluator = evaluator
        self.entity = entity
        book = evaluator.book
        self.pool = book.entities.v_kind[entity] == POOL
        self.waiting = False
        """A pool that needs an asset without a price yet: not valued at all."""
        if self.pool:
            valued = value_pool(book, book.collateral, entity)
            if valued is None:
                self.waiting = True
                valued = (1.0, 0.0, 0.0)
            self.mb, self.mm, self.tolerance = valued
        else:
            self.mb, self.mm, self.tolerance = value_one(book, entity)
        self.exact: tuple[Fraction, Fraction] | None = None

    def exact_values(self) -> tuple[Fraction, Fraction]:
        """``(MB, MM)`` in exact arithmetic (computed once)."""
        if self.exact is None:
            evaluator = self.evaluator
            if self.pool:
                book = evaluator.book
                self.exact = pool_exact(book, book.collateral, self.entity, evaluator.exact_mark)
            else:
                self.exact = value_exact(evaluator.book, self.entity, evaluator.exact_mark)
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
        evaluator = self.evaluator
        return (
            evaluator.negative_mm_possible
            and evaluator.mm_can_be_negative(self.entity)
            and self.sign(0, 1.0, ONE) >= 0
        )


class Evaluator:
    """See the module docstring. Owned by :class:`monitor.engine.Engine`."""

    def __init__(
        self, config: EngineConfig, book: Book, triggers: Triggers, exact_mark: ExactMark
    ) -> None:
        self.config = config
        self.book = book
        self.triggers = triggers
        self.exact_mark = exact_mark
        self.tiers = TierArrays()
        self.contracts_version = 0
        self.levels = tuple(Fraction(v) for v in config.levels)
        self.levels_f = config.levels_f
        self.rearm = tuple(Fraction(config.rearm_threshold(i)) for i in range(len(self.levels)))
        self.rearm_f = tuple(float(v) for v in self.rearm)
        self.warn_thresholds = tuple(Threshold(1.0, b, rising=True) for b in self.levels_f)
        self.rearm_thresholds = tuple(Threshold(1.0, b, rising=False) for b in self.rearm_f)
        move = config.state_move
        self.state_move = None if move is None else float(move)
        self.state_in_bands = self.state_move is not None and not config.state_sweep
        """States found tick by tick: the published ratio's step is a trigger band."""
        self.sweeping = self.state_move is not None and config.state_sweep
        """States found by :meth:`sweep` (see :attr:`EngineConfig.state_sweep`)."""
        self.hold = config.policy == "hold"
        self.events_emitted = 0
        self.alerts_of: dict[EntityRef, int] = {}
        """Alerts emitted so far for each entity that has had one, kept when the entity is
        closed: the place an alert id names is its entity's own count, so the ids do not
        depend on which other accounts the engine holds (a shard holds some of them)."""
        self.transitions = 0
        self.evaluations = 0
        """Entities run through the state machine (scalar or batch), for tests and metrics."""
        self.negative_mm_possible = False
        self.stale: set[int] = set()
        self.indexing = True
        """Off in the naive baseline, which re-evaluates every holder of a ticked symbol."""
        self.batching = True
        """Off in the naive baseline: every evaluation takes the scalar path."""
        self.deferring = False
        """Within one batch of ticks: entities the array path found quiet (at a symbol's first
        mark) are banded once (:meth:`flush`), not after every first mark that touched them:
        a frame with the first mark of every symbol bands each entity once. Until then each is
        *pending*, the envelope of its symbols pinned to their marks; the batch's end, or the
        next mark of a pinned symbol, bands every pending entity."""
        self.pending: list[np.ndarray] = []
        self.pending_symbols: dict[int, list[np.ndarray]] = {}
        self.waiting: dict[int, set[int]] = {}
        """Pools waiting for the first price of an asset they need, by asset."""
        self.collateral_triggers = CollateralTriggers()

    # -- structure ------------------------------------------------------------------------------

    def mm_can_be_negative(self, entity: int) -> bool:
        contracts = self.book.contracts
        symbol = self.book.rows.v_symbol
        for row in self.book.entity_rows(entity):
            contract = contracts[symbol[row]]
            if contract is not None and contract.mm_can_be_negative:
                return True
        return False

    def close_row(self, row: int) -> bool:
        """Remove an open row from its entity, its account and the index; return whether
        the entity is left empty (and so forgotten)."""
        book = self.book
        rows = book.rows
        entity = rows.v_entity[row]
        aid = book.entities.v_account[entity]
        sid = rows.v_symbol[row]
        left = book.detach(row)
        book.drop_row(aid, row)
        self.triggers.row_closed(sid)
        if left == 0:
            book.forget_entity(entity)
            return True
        return False

    def unindex(self, entity: int) -> None:
        """The entity's bands no longer hold (it is liquidating, or about to be re-banded)."""
        clear = self.triggers.clear_band
        for row in self.book.entity_rows(entity):
            clear(row)
        self.collateral_triggers.clear(entity)

    def collateral_crossed(self, asset: int, price: float) -> list[int]:
        """Pools whose band on the asset's price ``price`` leaves."""
        return self.collateral_triggers.crossed(asset, price)

    # -- evaluating -----------------------------------------------------------------------------

    def evaluate(self, entities: Sequence[int], ts: int) -> list[EngineEvent]:
        """Run the state machine for ``entities`` (live, not liquidating ones) at the current
        marks; events in canonical entity order."""
        liquidating = self.book.entities.v_liquidating
        kind = self.book.entities.v_kind
        due = [e for e in entities if not liquidating[e]]
        events: list[EngineEvent] = []
        if self.batching and len(due) >= BATCH_MIN:
            pools = [e for e in due if kind[e] == POOL]  # pools take the scalar path
            rest = [e for e in due if kind[e] != POOL]
            due = [*self._quiet_in_batch(np.array(rest, dtype=np.int64)), *pools]
        if len(due) > 1:
            book = self.book
            due.sort(key=lambda e: sort_key(book, e))
        for entity in due:
            self.evaluate_one(entity, ts, events)
        return events

    def evaluate_one(self, entity: int, ts: int, events: list[EngineEvent]) -> None:
        """The state machine for one entity (see the module docstring)."""
        self.evaluations += 1
        valuation = _Valuation(self, entity)
        entities = self.book.entities
        if valuation.waiting:
            self._wait(entity)
            return
        if valuation.liquidated():
            alive = self._liquidate(entity, ts, valuation, events)
            if self.state_in_bands and alive:  # held, marked liquidating: publish that
                mb, mm = valuation.mb, valuation.mm
                events.append(self._state(entity, ts, mb, mm, mm / mb if mb > 0 else None))
            if alive and self.state_move is not None:
                entities.v_shown_ratio[entity] = float("nan")  # whatever comes next is news
            return
        levels_f = self.levels_f
        mb, mm, tolerance = valuation.mb, valuation.mm, valuation.tolerance
        top = -1
        for i in range(len(levels_f) - 1, -1, -1):
            gap = mm - levels_f[i] * mb  # ratio >= level  <=>  MM - level*MB >= 0 (MB > 0)
            if gap > tolerance or (
                gap >= -tolerance and valuation.sign(1, levels_f[i], self.levels[i]) >= 0
            ):
                top = i
                break
        h = entities.v_level[entity]
        if top >= 0 and top > h:
            entities.v_level[entity] = top
            events.append(self._warning(entity, ts, top, valuation))
        elif h >= 0 and valuation.sign(1, self.rearm_f[h], self.rearm[h]) < 0:
            entities.v_level[entity] = top
            self.transitions += 1
            if top < 0:
                events.append(self._recovered(entity, ts, valuation))
        if self.state_in_bands:
            ratio = mm / mb  # MB > 0: not liquidated
            if self._state_due(entity, ratio):
                events.append(self._state(entity, ts, mb, mm, ratio))
        if self.indexing:
            self.index_one(entity, mb, mm, tolerance)

    def _state_due(self, entity: int, ratio: float | None) -> bool:
        """Whether the entity's published state is out of date: none published yet (or marked
        so), another level, or ``ratio`` (``None``: not compared) moved by :meth:`state_step`
        or more. The array form of the same rule is in :meth:`_sweep_chunk`."""
        entities = self.book.entities
        shown = entities.v_shown_ratio[entity]
        if shown != shown or entities.v_level[entity] != entities.v_shown_level[entity]:
            return True
        return ratio is not None and abs(ratio - shown) >= self.state_step(shown)

    def state_step(self, shown: float) -> float:
        """How far the ratio may move from its published value before it is republished."""
        assert self.state_move is not None  # noqa: S101  # only called with state tracking on
        return self.state_move * max(shown, STATE_RATIO_FLOOR)

    def _thresholds(
        self, entity: int, mb: float, mm: float, tolerance: float
    ) -> list[tuple[Threshold, float]]:
        """The threshold functions that can change the entity's state, with their slacks.

        Every one but ``MB > 0`` is ``MM − β·MB``; rising ones (liquidation at β = 1, the
        next warning level, the published ratio plus its step) fire when the ratio reaches β,
        falling ones (the re-arm point, the published ratio minus its step) when it drops
        below β. While MM cannot go negative, a ratio below the smallest rising β is below
        every other (MB > 0 follows), and one above the largest falling β is above every
        other: those two functions alone bound the entity, and the others are left out (their
        bands would only be wider). With a table that lets MM go negative, every function is
        kept, and ``MB > 0`` with them.
        """
        level = self.book.entities.v_level[entity]
        shown = self.book.entities.v_shown_ratio[entity]
        rising: list[Threshold] = [_LIQUIDATION]
        falling: list[Threshold] = []
        if level + 1 < len(self.levels_f):
            rising.append(self.warn_thresholds[level + 1])
        if level >= 0 and self.rearm_f[level] > 0.0:
            falling.append(self.rearm_thresholds[level])
        if shown == shown and self.state_in_bands:
            step = self.state_step(shown)
            up, down = shown + step, shown - step
            rising.append(Threshold(1.0, up, rising=True))
            if down > 0.0:
                falling.append(Threshold(1.0, down, rising=False))
        if self.negative_mm_possible and self.mm_can_be_negative(entity):
            chosen = [rising[0], _BALANCE_POSITIVE, *rising[1:], *falling]
        else:
            chosen = [min(rising, key=_beta)]
            if falling:
                chosen.append(max(falling, key=_beta))
        return [(t, _slack(t, mb, mm) - tolerance) for t in chosen]

    def _wait(self, entity: int) -> None:
        """A pool without a price for an asset it needs: unbanded until that price comes."""
        book = self.book
        self.unindex(entity)
        for asset in needed_assets(book, entity):
            if asset not in book.collateral:
                self.waiting.setdefault(asset, set()).add(entity)

    def index_one(self, entity: int, mb: float, mm: float, tolerance: float) -> None:
        """Replace the entity's trigger bands with ones computed at the current marks."""
        book = self.book
        if book.entities.v_kind[entity] == POOL:
            rows, assets = pool_bands(book, entity, self._thresholds(entity, mb, mm, tolerance))
            for row, lo, hi in rows:
                self.triggers.set_band(row, lo, hi)
            self.collateral_triggers.set_bands(entity, assets)
            return
        price = book.symbols.v_price
        grouped = legs_by_symbol(book, entity)
        curves: list[SymbolCurve] = []
        members: list[list[int]] = []
        set_band = self.triggers.set_band
        for sid, group in grouped.items():
            p = price[sid]
            if p != p:
                for row in group:
                    self.triggers.clear_band(row)
                continue
            curves.append(SymbolCurve(str(sid), [leg_of(book, row) for row in group], p))
            members.append(group)
        if not curves:
            return
        result = bands(curves, self._thresholds(entity, mb, mm, tolerance))
        for group, (_, lo, hi) in zip(members, result, strict=True):
            for row in group:
                set_band(row, lo, hi)

    # -- many at once ---------------------------------------------------------------------------

    def band_many(self, entities: np.ndarray) -> None:
        """New trigger bands for entities evaluated elsewhere (a bulk load), in one pass."""
        if not len(entities):
            return
        book = self.book
        self.tiers.refresh(book, self.contracts_version)
        mb, mm, tol, terms = value_many(book, self.tiers, entities)
        state = book.entities
        request = BandRequest(
            entities=entities,
            mb=mb,
            mm=mm,
            tolerance=tol,
            level=state.level[entities].astype(np.int64),
            shown=state.shown_ratio[entities] if self.state_in_bands else None,
        )
        rows, lo, hi = batch_bands(self, request, terms, np.arange(len(entities)))
        self.triggers.set_bands(rows, lo, hi)

    def _quiet_in_batch(self, due: np.ndarray) -> list[int]:
        """Value ``due`` in one pass; band the entities for which nothing happens, return the
        others (for the scalar path)."""
        book = self.book
        self.tiers.refresh(book, self.contracts_version)
        mb, mm, tol, terms = value_many(book, self.tiers, due)
        entities = book.entities
        level = entities.level[due].astype(np.int64)
        # liquidation must be clearly out of reach ...
        calm = (mb - mm) > tol
        if self.negative_mm_possible:
            calm &= mb > tol
        # ... the highest level reached must be clear of every level's error band ...
        top = np.full(len(due), -1, dtype=np.int64)
        for i, beta in enumerate(self.levels_f):
            gap = mm - beta * mb
            calm &= np.abs(gap) > tol
            top[gap > tol] = i
        # ... and call for no event nor level change
        calm &= top <= level
        rearm = np.array([*self.rearm_f, 0.0])[level]  # level -1 picks the 0.0 pad
        active = level >= 0
        rearm_gap = mm - rearm * mb
        calm &= ~active | (rearm_gap > tol)
        if self.state_in_bands:
            shown = entities.shown_ratio[due]
            ratio = np.divide(mm, mb, out=np.zeros_like(mm), where=mb > 0)
            step = self.state_move * np.maximum(shown, STATE_RATIO_FLOOR)
            calm &= ~np.isnan(shown)
            calm &= entities.shown_level[due] == level
            calm &= np.abs(ratio - shown) < step
        quiet = np.flatnonzero(calm)
        self.evaluations += len(quiet)
        if len(quiet) and self.deferring:
            self._defer(due[quiet], terms, quiet)
        elif len(quiet):
            request = BandRequest(
                entities=due[quiet],
                mb=mb[quiet],
                mm=mm[quiet],
                tolerance=tol[quiet],
                level=level[quiet],
                shown=entities.shown_ratio[due[quiet]] if self.state_in_bands else None,
            )
            rows, lo, hi = batch_bands(self, request, terms, quiet)
            self.triggers.set_bands(rows, lo, hi)
        rest: list[int] = due[~calm].tolist()
        return rest

    def _defer(self, entities: np.ndarray, terms: RowTerms, picked: np.ndarray) -> None:
        """Mark quiet entities pending (see :attr:`deferring`)."""
        book = self.book
        self.pending.append(entities)
        keep = np.isin(terms.owner, picked)
        sids = terms.sid[keep]
        marked = ~np.isnan(book.symbols.price[sids])
        sids = sids[marked]
        owners = entities[np.searchsorted(picked, terms.owner[keep][marked])]
        order = np.argsort(sids, kind="stable")
        sids, owners = sids[order], owners[order]
        cuts = np.flatnonzero(np.r_[True, sids[1:] != sids[:-1]])
        for sid, group in zip(sids[cuts].tolist(), np.split(owners, cuts[1:]), strict=True):
            self.pending_symbols.setdefault(sid, []).append(group)
            self.pin(sid)

    def take_pending(self, sid: int) -> list[int]:
        """The pending entities holding ``sid`` (no longer waiting on it: they are due)."""
        groups = self.pending_symbols.pop(sid)
        taken: list[int] = np.unique(np.concatenate(groups)).tolist()
        return taken

    def pin(self, sid: int) -> None:
        """Every move of this symbol's mark evaluates its pending entities."""
        symbols = self.book.symbols
        price = symbols.v_price[sid]
        symbols.v_env_lo[sid] = price
        symbols.v_env_hi[sid] = price

    def flush(self) -> None:
        """Band the pending entities, in one pass (see :attr:`deferring`)."""
        if not self.pending:
            return
        entities = self.book.entities
        waiting = np.unique(np.concatenate(self.pending))
        alive = waiting[(entities.kind[waiting] != NONE) & (entities.liquidating[waiting] == 0)]
        pinned = list(self.pending_symbols)
        self.pending = []
        self.pending_symbols = {}
        for start in range(0, len(alive), FLUSH_CHUNK):  # bounded temporaries
            self.band_many(alive[start : start + FLUSH_CHUNK])
        for sid in pinned:
            self.triggers.refresh_envelope(sid)

    # -- state sweeps ---------------------------------------------------------------------------

    def sweep(
        self, entities: np.ndarray, ts: int, max_events: int
    ) -> tuple[list[EngineEvent], int]:
        """State events for those of ``entities`` (live ones, ascending ids) whose published
        state is out of date: none published yet (or marked so), another level, or a ratio
        moved by :meth:`state_step` or more. Valued in one pass over the arrays (pools one by
        one); only the entities that moved build an event, at most ``max_events`` of them.
        Returns the events and how many of ``entities`` were dealt with (all of them, or up to
        the one after the last event built)."""
        assert self.state_move is not None  # noqa: S101  # only called with state tracking on
        book = self.book
        state = book.entities
        pool = state.kind[entities] == POOL
        due = np.zeros(len(entities), dtype=bool)
        mb = np.zeros(len(entities))
        mm = np.zeros(len(entities))
        plain = np.flatnonzero(~pool)
        if len(plain):
            ids = entities[plain]
            self.tiers.refresh(book, self.contracts_version)
            mb[plain], mm[plain], _, _ = value_many(book, self.tiers, ids)
            ratio = np.divide(
                mm[plain], mb[plain], out=np.full(len(ids), np.nan), where=mb[plain] > 0
            )
            shown = state.shown_ratio[ids]
            moved = state.shown_level[ids] != state.level[ids]
            step = self.state_move * np.maximum(np.nan_to_num(shown), STATE_RATIO_FLOOR)
            moved |= np.abs(ratio - shown) >= step  # NaN compares False
            moved &= state.liquidating[ids] == 0  # a liquidating entity's state stays put
            due[plain] = np.isnan(shown) | moved
        due[pool] = True  # valued one by one below
        events: list[EngineEvent] = []
        for k in np.flatnonzero(due).tolist():
            if len(events) >= max_events:
                return events, k
            entity = int(entities[k])
            if pool[k]:
                self._sweep_pool(entity, ts, events)
                continue
            mb_k, mm_k = float(mb[k]), float(mm[k])
            events.append(self._state(entity, ts, mb_k, mm_k, mm_k / mb_k if mb_k > 0 else None))
        return events, len(entities)

    def _sweep_pool(self, entity: int, ts: int, events: list[EngineEvent]) -> None:
        valuation = _Valuation(self, entity)
        if valuation.waiting:
            return
        mb, mm = valuation.mb, valuation.mm
        ratio = mm / mb if mb > 0 else None
        moves = ratio is not None and not self.book.entities.v_liquidating[entity]
        if self._state_due(entity, ratio if moves else None):
            events.append(self._state(entity, ts, mb, mm, ratio))

    # -- events ---------------------------------------------------------------------------------

    def _next_id(self, kind: str, entity: int, ts: int, *facts: object) -> tuple[str, int]:
        """The alert's id and its place in the engine's stream of events (``seq``, what a
        durable sink resumes after)."""
        sequence = self.events_emitted
        self.events_emitted += 1
        self.transitions += 1
        ref = entity_ref(self.book, entity)
        count = self.alerts_of.get(ref, 0)
        self.alerts_of[ref] = count + 1
        return event_id(kind, ref, ts, count, facts), sequence

    def _warning(
        self, entity: int, ts: int, level: int, valuation: _Valuation
    ) -> MarginWarningRaised:
        mb, mm = valuation.exact_values()
        positions = position_views(self.book, entity, self.stale)
        ref = entity_ref(self.book, entity)
        event_key, seq = self._next_id("margin_warning", entity, ts, level, mb, mm)
        return MarginWarningRaised(
            id=event_key,
            seq=seq,
            ts=ts,
            entity=ref,
            level=float(self.levels[level]),
            margin_ratio=_ratio(mm, mb),
            margin_balance=float(mb),
            maintenance_margin=float(mm),
            liquidation_price=positions[0].liquidation_price if ref.scope == "isolated" else None,
            positions=positions,
            assets=self._assets(entity),
        )

    def _state(
        self, entity: int, ts: int, mb: float, mm: float, ratio: float | None
    ) -> MarginStateChanged:
        entities = self.book.entities
        entities.v_shown_ratio[entity] = float("nan") if ratio is None else ratio
        entities.v_shown_level[entity] = entities.v_level[entity]
        # not a transition: the retained state is presentation (republished whole on restart
        # and on stop), not state that the journal must rebuild
        return self._describe(entity, ts, mb, mm, ratio)

    def describe(self, entity: int, ts: int) -> MarginStateChanged:
        """The entity's state as a state event, changing nothing (no published-state
        bookkeeping): what a reader of the whole book sees."""
        valuation = _Valuation(self, entity)
        mb, mm = valuation.mb, valuation.mm
        return self._describe(entity, ts, mb, mm, mm / mb if mb > 0 else None)

    def _describe(
        self, entity: int, ts: int, mb: float, mm: float, ratio: float | None
    ) -> MarginStateChanged:
        entities = self.book.entities
        level = entities.v_level[entity]
        return MarginStateChanged(
            ts=ts,
            entity=entity_ref(self.book, entity),
            level=float(self.levels[level]) if level >= 0 else None,
            margin_ratio=ratio,
            margin_balance=mb,
            maintenance_margin=mm,
            liquidating=bool(entities.v_liquidating[entity]),
            positions=position_views(self.book, entity, self.stale),
            assets=self._assets(entity),
        )

    def _assets(self, entity: int) -> tuple[AssetView, ...]:
        book = self.book
        return breakdown(book, entity) if book.entities.v_kind[entity] == POOL else ()

    def state_of(self, entity: int, ts: int) -> MarginStateChanged:
        """A state event for the entity as it stands (feed health changes)."""
        valuation = _Valuation(self, entity)
        mb, mm = valuation.mb, valuation.mm
        return self._state(entity, ts, mb, mm, mm / mb if mb > 0 else None)

    def _recovered(self, entity: int, ts: int, valuation: _Valuation) -> MarginRecovered:
        mb, mm = valuation.exact_values()
        event_key, seq = self._next_id("margin_recovered", entity, ts, mb, mm)
        return MarginRecovered(
            id=event_key,
            seq=seq,
            ts=ts,
            entity=entity_ref(self.book, entity),
            margin_ratio=_ratio(mm, mb),
            margin_balance=float(mb),
            maintenance_margin=float(mm),
            assets=self._assets(entity),
        )

    def _liquidate(
        self, entity: int, ts: int, valuation: _Valuation, events: list[EngineEvent]
    ) -> bool:
        """Emit the liquidation and apply the policy; return whether the entity lives on."""
        book = self.book
        mb, mm = valuation.exact_values()
        kind = book.entities.v_kind[entity]
        wallet: Decimal | Fraction = (
            pool_loss(book, book.collateral, entity) if kind == POOL else book.wallet(entity)
        )
        ref = entity_ref(book, entity)
        event_key, seq = self._next_id("liquidation", entity, ts, mb, mm, wallet)
        events.append(
            LiquidationTriggered(
                id=event_key,
                seq=seq,
                ts=ts,
                entity=ref,
                margin_ratio=_ratio(mm, mb),
                margin_balance=float(mb),
                maintenance_margin=float(mm),
                loss=float(wallet),
                shortfall=float(-mb) if mb < 0 else 0.0,
                positions=position_views(book, entity, self.stale),
                assets=self._assets(entity),
            )
        )
        entities = book.entities
        entities.v_level[entity] = -1
        if self.hold:
            entities.v_liquidating[entity] = 1
            self.unindex(entity)
            return True
        aid = entities.v_account[entity]
        asset = entities.v_asset[entity]
        self.collateral_triggers.clear(entity)
        for row in book.entity_rows(entity):
            self.close_row(row)
        if kind == CROSS:
            balance = book.balance_row(aid, asset)
            if balance != NONE:
                book.set_balance(balance, Decimal(0))
        elif kind == POOL:  # the pool claims every wallet of the account, negative ones too
            for balance in book.balance_rows(aid):
                book.set_balance(balance, Decimal(0))
        if self.state_move is not None:
            events.append(MarginStateCleared(ts, ref))
        return False


def _beta(threshold: Threshold) -> float:
    return threshold.beta


def _slack(t: Threshold, mb: float, mm: float) -> float:
    return t.beta * mb - t.alpha * mm if t.rising else t.alpha * mm - t.beta * mb


def _ratio(mm: Fraction, mb: Fraction) -> float | None:
    return float(mm / mb) if mb > 0 else None
