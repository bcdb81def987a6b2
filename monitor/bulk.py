"""Loading a run of account records in one pass over arrays, with the events of one by one.

A file of account records (a replay's opening, a service's ``--accounts`` seed) is mostly new
accounts opening new positions: each record creates or extends an entity, which docs/records.md
evaluates at once, with that record's ``ts``. :func:`apply_batch` gives exactly what applying
the records one by one gives (the same events, ids, refusals and book, laid out row for row
alike), in three steps per stretch of records:

1. *Eligibility*, per record: a position opening a new slot of a known contract (qty not 0,
   consistent with its side, an isolated wallet when isolated), or a balance, whose entity does
   not exist before the stretch (so every entity it touches is new), each slot at most once.
2. *Quiet prefix*: every evaluation the stretch implies (an entity after each record that
   touches it: its wallet so far, its rows so far, valued at the current marks) is computed in
   one pass, summed term by term in the order the scalar valuation sums them, so the floats are
   bit for bit those of :func:`monitor.valuation.value_one`. The prefix up to the first
   evaluation that could do anything (an event, a level, a state to publish, or a close call
   within the float error bound) is *quiet*.
3. *Load*: the quiet prefix is written to the tables in bulk (rows, entities, balances, their
   linked lists, in the order one-by-one application allocates them), and the new entities get
   trigger bands in one pass. The record that stopped the prefix takes the record-by-record
   path (:meth:`monitor.engine.Engine.apply`), which makes its decisions exactly and emits its
   events; then the next stretch starts.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from monitor.book import CROSS, ISOLATED, NONE
from monitor.errors import RecordRefused
from monitor.events import EngineEvent
from monitor.records import AccountBatch
from monitor.valuation import FLOAT_TOLERANCE

if TYPE_CHECKING:
    from monitor.engine import Engine

MIN_BULK = 32
"""Shorter stretches go record by record (the array set-up would cost more than it saves)."""
WINDOW = 1 << 16
"""Records considered per stretch (bounds the arrays of one pass)."""
_KEY_SPAN = 1 << 20


MIN_SEGMENT = 8
"""A stretch of bulk-eligible records shorter than this is applied record by record."""


def apply_batch(
    engine: Engine, batch: AccountBatch
) -> tuple[list[EngineEvent], list[tuple[int, RecordRefused]]]:
    """Apply every record of ``batch`` in order; the events, and the refused records by their
    index in the batch (see the module docstring)."""
    events: list[EngineEvent] = []
    refused: list[tuple[int, RecordRefused]] = []
    count = len(batch)
    start = 0
    while start < count:
        end = min(count, start + WINDOW)
        if end - start < MIN_BULK:
            for i in range(start, end):
                _one(engine, batch, i, events, refused)
            break
        sequential = _sequential(engine, batch, start, end)
        i = start
        while i < end:
            if sequential[i - start]:
                _one(engine, batch, i, events, refused)
                i += 1
                continue
            stop = i + 1
            while stop < end and not sequential[stop - start]:
                stop += 1
            if stop - i >= MIN_SEGMENT:
                _load(engine, batch, i, stop)
            else:
                for k in range(i, stop):
                    _one(engine, batch, k, events, refused)
            i = stop
        start = end
    return events, refused


def _one(
    engine: Engine,
    batch: AccountBatch,
    i: int,
    events: list[EngineEvent],
    refused: list[tuple[int, RecordRefused]],
) -> None:
    try:
        events.extend(engine.apply(batch.record(i)))
    except RecordRefused as exc:
        refused.append((i, exc))


class _Stretch:
    """The records ``[start, stop)`` of a batch with the ids they will get (provisional for
    names not interned yet: the ids interning in record order will give them)."""

    def __init__(self, engine: Engine, batch: AccountBatch, start: int, stop: int) -> None:
        book = engine.book
        self.start, self.stop = start, stop
        self.position = batch.is_position[start:stop]
        names = batch.account[start:stop]
        self.aid, self.known = _provisional(book.account_names.ids, names)
        symbols = book.symbol_names.ids
        sid = np.array([symbols.get(name, NONE) for name in batch.symbol[start:stop]])
        self.sid = np.where(self.position, sid, NONE).astype(np.int64)
        margin_asset = np.array([*book.margin_asset, NONE], dtype=np.int64)
        balance_asset, _ = _provisional(book.asset_names.ids, batch.asset[start:stop])
        self.asset = np.where(self.position, margin_asset[self.sid], balance_asset)


def _provisional(ids: dict[str, int], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The id of each name: its interned id, or for a new name the id interning the names in
    order would give it; and whether it was known."""
    found = [ids.get(name, NONE) for name in names]
    known = np.array(found, dtype=np.int64) != NONE
    if known.all():
        return np.array(found, dtype=np.int64), known
    fresh = [name for name in dict.fromkeys(names) if name not in ids]
    extra = dict(zip(fresh, range(len(ids), len(ids) + len(fresh)), strict=True))
    return np.array([ids.get(name, extra.get(name, NONE)) for name in names]), known


def _ineligible(engine: Engine, batch: AccountBatch, s: _Stretch) -> np.ndarray:
    """Per record of the stretch: it cannot take the bulk path (see the module docstring)."""
    book = engine.book
    start, stop = s.start, s.stop
    count = stop - start
    position = s.position
    qty = batch.qty.value[start:stop]
    side = batch.side[start:stop]
    isolated = batch.isolated[start:stop]
    bad = ~batch.exact[start:stop]
    bad |= position & (s.sid == NONE)
    bad |= position & (qty == 0.0)
    bad |= position & (((side == 1) & (qty < 0)) | ((side == 2) & (qty > 0)))
    bad |= position & isolated & ~batch.has_wallet[start:stop]
    # the entity a record touches must not exist before the stretch
    multi = book.accounts.multi_assets
    for k in np.flatnonzero(s.known & ~bad).tolist():
        a = int(s.aid[k])
        if multi[a]:
            bad[k] = True
            continue
        if position[k]:
            if book.find_row(a, int(s.sid[k]), int(side[k])) != NONE:
                bad[k] = True
                continue
            if isolated[k]:
                continue
        if s.asset[k] != NONE and book.cross_entity(a, int(s.asset[k])) != NONE:
            bad[k] = True
    # each slot at most once
    slot = (s.aid * _KEY_SPAN + s.sid) * 4 + side
    slot = np.where(position, slot, -1 - np.arange(count))
    _, first = np.unique(slot, return_index=True)
    repeated = np.ones(count, dtype=bool)
    repeated[first] = False
    return bad | repeated


def _sequential(engine: Engine, batch: AccountBatch, start: int, end: int) -> np.ndarray:
    """Per record of ``[start, end)``: it must be applied on its own (see the module
    docstring). Everything else is loaded in bulk, in stretches between them."""
    stretch = _Stretch(engine, batch, start, end)
    sequential = _ineligible(engine, batch, stretch)
    plan = _Plan(engine, batch, stretch)
    group = plan.group
    count = end - start
    index = np.arange(count)
    # an evaluation that could do anything is decided on its own
    loud = np.zeros(count, dtype=bool)
    loud[plan.touch[plan.loud()]] = True
    sequential |= loud
    # once a record of an entity goes on its own, so does everything after it of that entity,
    # and an entity cut in two by a record of another one is finished on its own too (a bulk
    # stretch creates only new entities)
    for _ in range(8):
        first = np.full(plan.n_groups, count, dtype=np.int64)
        np.minimum.at(first, group[sequential], index[sequential])
        after = index > first[group]
        segment = np.cumsum(sequential)
        opened = np.full(plan.n_groups, count, dtype=np.int64)
        np.minimum.at(opened, group, segment)
        split = segment > opened[group]
        grown = sequential | after | split
        if (grown == sequential).all():
            break
        sequential = grown
    return sequential


class _Plan:
    """The entities a stretch creates, and every evaluation it implies."""

    def __init__(self, engine: Engine, batch: AccountBatch, s: _Stretch) -> None:
        self.engine, self.batch, self.s = engine, batch, s
        start, stop = s.start, s.stop
        count = stop - start
        index = np.arange(count)
        position = s.position
        isolated = batch.isolated[start:stop] & position
        # entity key: a cross key per (account, asset), an isolated key per record
        key = np.where(isolated, -1 - index, s.aid * _KEY_SPAN + s.asset)
        order = np.lexsort((index, key))
        k_sorted = key[order]
        group_start = np.r_[True, k_sorted[1:] != k_sorted[:-1]]
        group_id_sorted = np.cumsum(group_start) - 1
        group = np.empty(count, dtype=np.int64)
        group[order] = group_id_sorted
        n_groups = int(group_id_sorted[-1]) + 1 if count else 0
        # an entity exists from its first position record on
        first_position = np.full(n_groups, count, dtype=np.int64)
        np.minimum.at(first_position, group[position], index[position])
        touches = position | (~position & (index > first_position[group]))
        self.key, self.group, self.n_groups = key, group, n_groups
        self.first_position = first_position
        self.touch = np.flatnonzero(touches)  # record indices of the evaluations, in order
        # the wallet each evaluation sees: the last balance at or before it, else the book's
        wallet = batch.wallet.value[start:stop]
        last_balance = np.where(~position, index, -1)
        last = np.empty(count, dtype=np.int64)
        last[order] = _segmented_max(last_balance[order], group_start)
        self.isolated = isolated
        self.initial = self._initial_wallets(group, position, isolated)
        self.wallet_of = np.where(
            isolated,
            wallet,
            np.where(last >= 0, wallet[np.maximum(last, 0)], self.initial[group]),
        )

    def _initial_wallets(
        self, group: np.ndarray, position: np.ndarray, isolated: np.ndarray
    ) -> np.ndarray:
        """A cross entity's wallet before any balance of the stretch: the book's balance of
        that account and asset, if the account had one."""
        engine = self.engine
        s = self.s
        initial = np.zeros(self.n_groups)
        balances = engine.book.balances
        for k in np.flatnonzero(s.known & position & ~isolated).tolist():
            row = engine.book.balance_row(int(s.aid[k]), int(s.asset[k]))
            if row != NONE:
                initial[group[k]] = balances.v_wallet[row]
        return initial

    def loud(self) -> np.ndarray:
        """Per evaluation (``self.touch``): whether it could do anything (an event, a level,
        a state to publish, a close call)."""
        evaluator = self.engine._evaluator
        if not len(self.touch) or evaluator.state_in_bands:
            return np.ones(len(self.touch), dtype=bool)  # a first evaluation publishes a state
        mb, mm, tol = self.valuations()
        calm = (mb - mm) > tol
        if evaluator.negative_mm_possible:
            calm &= mb > tol
        for beta in evaluator.levels_f:
            gap = mm - beta * mb
            calm &= (np.abs(gap) > tol) & (gap < 0.0)
        loud: np.ndarray = ~calm
        return loud

    def row_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per record of the stretch (0 for balances): the row's uPnL, MM and error-bound term
        at the current marks, as :func:`monitor.valuation.value_many` computes them."""
        book = self.engine.book
        batch, s = self.batch, self.s
        start, stop = s.start, s.stop
        count = stop - start
        upnl = np.zeros(count)
        mm = np.zeros(count)
        term = np.zeros(count)
        pos = np.flatnonzero(s.position & (s.sid != NONE))
        if not len(pos):
            return upnl, mm, term
        sid = s.sid[pos]
        sizes = np.array(
            [0.0 if c is None else c.contract_size_f for c in book.contracts], dtype=np.float64
        )
        qcs = np.abs(batch.qty.value[start:stop][pos]) * sizes[sid]
        entry = batch.entry.value[start:stop][pos]
        sign = np.where(batch.qty.value[start:stop][pos] > 0, 1, -1).astype(np.int8)
        price = book.symbols.price[sid]
        price = np.where(np.isnan(price), entry, price)
        inverse = book.symbols.inverse[sid].astype(bool)
        notional = qcs * price
        u = sign * qcs * (price - entry)
        t = qcs * (price + entry)
        if inverse.any():
            ip = 1.0 / price[inverse]
            q_inv, e_inv = qcs[inverse], entry[inverse]
            notional[inverse] = q_inv * ip
            u[inverse] = sign[inverse] * q_inv * (1.0 / e_inv - ip)
            t[inverse] = q_inv * (1.0 / e_inv + ip)
        tiers = self.engine._evaluator.tiers
        tiers.refresh(book, self.engine._evaluator.contracts_version)
        tier = tiers.tiers(book, sid, notional)
        cum = tiers.cum[sid, tier]
        upnl[pos] = u
        mm[pos] = notional * tiers.mmr[sid, tier] - cum
        term[pos] = t + cum
        self.qcs, self.sign = qcs, sign
        return upnl, mm, term

    def list_order(self) -> np.ndarray:
        """Per position record: its rank in its entity's row list (symbols in the order first
        held, then record order), as :meth:`monitor.book.Book.attach` links them."""
        s = self.s
        count = s.stop - s.start
        index = np.arange(count)
        pos = s.position
        # first appearance of (entity, symbol)
        pair = self.group * _KEY_SPAN + np.where(pos, s.sid, 0)
        first_of_pair = np.full(count, count, dtype=np.int64)
        p_idx = index[pos]
        uniq, inverse = np.unique(pair[pos], return_inverse=True)
        first = np.full(len(uniq), count, dtype=np.int64)
        np.minimum.at(first, inverse, p_idx)
        first_of_pair[pos] = first[inverse]
        rank = np.full(count, -1, dtype=np.int64)
        order = np.lexsort((index[pos], first_of_pair[pos], self.group[pos]))
        ranked = p_idx[order]
        groups = self.group[ranked]
        starts = np.r_[True, groups[1:] != groups[:-1]]
        position_in_group = np.arange(len(ranked)) - np.maximum.accumulate(
            np.where(starts, np.arange(len(ranked)), 0)
        )
        rank[ranked] = position_in_group
        return rank

    def valuations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(MB, MM, tolerance)`` of every evaluation (``self.touch``), summed like
        :func:`monitor.valuation.value_one`: the wallet, then the rows in list order."""
        upnl, mm_rows, term = self.row_terms()
        s = self.s
        count = s.stop - s.start
        rank = self.list_order()
        touch = self.touch
        n_touch = len(touch)
        # each evaluation sums the rows of its entity opened at or before it
        pos = np.flatnonzero(s.position)
        by_group = pos[np.lexsort((pos, self.group[pos]))]
        group_of = self.group[by_group]
        counts = np.bincount(group_of, minlength=self.n_groups)
        offsets = np.r_[0, np.cumsum(counts)[:-1]]
        t_group = self.group[touch]
        # rows of the group with index <= the evaluation's (by_group is sorted by group, then
        # index: one search on the combined key)
        span = count + 1
        combined = group_of * span + by_group
        seen = np.searchsorted(combined, t_group * span + touch, side="right") - offsets[t_group]
        pair_eval = np.repeat(np.arange(n_touch), seen)
        within = np.arange(len(pair_eval)) - np.repeat(np.cumsum(seen) - seen, seen)
        pair_row = by_group[offsets[t_group][pair_eval] + within]
        # the order the scalar path adds them in: by evaluation, then list rank
        order = np.lexsort((rank[pair_row], pair_eval))
        pair_eval, pair_row = pair_eval[order], pair_row[order]
        wallet = self.wallet_of[touch]
        first = np.arange(n_touch)
        mb = np.bincount(
            np.r_[first, pair_eval], weights=np.r_[wallet, upnl[pair_row]], minlength=n_touch
        )
        mm = np.bincount(pair_eval, weights=mm_rows[pair_row], minlength=n_touch)
        scale = np.bincount(
            np.r_[first, pair_eval],
            weights=np.r_[np.abs(wallet), term[pair_row]],
            minlength=n_touch,
        )
        return mb, mm, scale * FLOAT_TOLERANCE


def _segmented_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting at each ``True`` of ``starts`` (values are
    record indices or -1, so adding a large offset per segment keeps segments apart)."""
    segment = np.cumsum(starts)
    offset = segment * (len(values) + 2)
    running: np.ndarray = np.maximum.accumulate(values + offset) - offset
    return running


def _load(engine: Engine, batch: AccountBatch, start: int, stop: int) -> None:
    """Write the quiet stretch ``[start, stop)`` to the book (see the module docstring)."""
    book = engine.book
    s = _Stretch(engine, batch, start, stop)
    plan = _Plan(engine, batch, s)
    count = stop - start
    position = s.position
    isolated = plan.isolated
    # names, in record order (as one-by-one application interns them)
    book.intern_accounts(batch.account[start:stop])
    for name in dict.fromkeys(batch.asset[k + start] for k in np.flatnonzero(~position).tolist()):
        book.asset_names.intern(name)
    aid, asset = s.aid, s.asset
    # balance rows, in the order records first touch them
    first_in_group = np.zeros(count, dtype=bool)
    first_in_group[plan.first_position[plan.first_position < count]] = True
    needs = np.flatnonzero(~position | (first_in_group & ~isolated))
    balance_row = np.full(count, NONE, dtype=np.int64)
    balance_row[needs] = book.balance_rows_for(aid[needs], asset[needs])
    # the last balance of each (account, asset) in the stretch sets its wallet
    balances = book.balances
    bal = np.flatnonzero(~position)
    if len(bal):
        rows_of = balance_row[bal]
        # the last record of each row: first occurrence in the reversed order
        _, last_reversed = np.unique(rows_of[::-1], return_index=True)
        ks = bal[len(bal) - 1 - last_reversed] + start
        rows = balance_row[ks - start]
        balances.wallet_exact.set_many(
            balances.wallet_m,
            balances.wallet_e,
            rows,
            batch.wallet.mantissa[ks],
            batch.wallet.exponent[ks],
        )
        balances.wallet[rows] = batch.wallet.value[ks]
    # entities, in the order their first position record creates them
    creators = np.flatnonzero(first_in_group & position)
    entity_ids = book.entities.allocate_many(len(creators))
    entity_of_group = np.full(plan.n_groups, NONE, dtype=np.int64)
    entity_of_group[plan.group[creators]] = entity_ids
    ent = book.entities
    ent.kind[entity_ids] = np.where(isolated[creators], ISOLATED, CROSS)
    ent.account[entity_ids] = aid[creators]
    ent.asset[entity_ids] = asset[creators]
    ent.symbol[entity_ids] = np.where(isolated[creators], s.sid[creators], NONE)
    ent.side[entity_ids] = np.where(isolated[creators], batch.side[start:stop][creators], 0)
    # wallets: an isolated entity's own, a cross entity's balance (after the stretch)
    iso = isolated[creators]
    iso_ids, iso_k = entity_ids[iso], creators[iso] + start
    ent.wallet_exact.set_many(
        ent.wallet_m,
        ent.wallet_e,
        iso_ids,
        batch.wallet.mantissa[iso_k],
        batch.wallet.exponent[iso_k],
    )
    ent.wallet[iso_ids] = batch.wallet.value[iso_k]
    cross_ids, cross_rows = entity_ids[~iso], balance_row[creators[~iso]]
    ent.wallet_m[cross_ids] = balances.wallet_m[cross_rows]
    ent.wallet_e[cross_ids] = balances.wallet_e[cross_rows]
    ent.wallet[cross_ids] = balances.wallet[cross_rows]
    for e, r in zip(cross_ids.tolist(), cross_rows.tolist(), strict=True):
        if r in balances.wallet_exact.overflow:
            ent.wallet_exact.overflow[e] = balances.wallet_exact.overflow[r]
    balances.entity[cross_rows] = cross_ids
    # rows, in record order
    pos = np.flatnonzero(position)
    rows_t = book.rows
    row_ids = rows_t.allocate_many(len(pos))
    ks = pos + start
    sid = s.sid[pos]
    sizes = np.array([0.0 if c is None else c.contract_size_f for c in book.contracts])
    rows_t.symbol[row_ids] = sid
    rows_t.entity[row_ids] = entity_of_group[plan.group[pos]]
    rows_t.side[row_ids] = batch.side[ks]
    rows_t.isolated[row_ids] = batch.isolated[ks]
    qty = batch.qty.value[ks]
    rows_t.sign[row_ids] = np.where(qty > 0, 1, -1)
    rows_t.qcs[row_ids] = np.abs(qty) * sizes[sid]
    rows_t.entry[row_ids] = batch.entry.value[ks]
    rows_t.qty.set_many(
        rows_t.qty_m, rows_t.qty_e, row_ids, batch.qty.mantissa[ks], batch.qty.exponent[ks]
    )
    rows_t.entry_exact.set_many(
        rows_t.entry_m, rows_t.entry_e, row_ids, batch.entry.mantissa[ks], batch.entry.exponent[ks]
    )
    leverage_ids: dict[str, int] = {}
    levers: list[int] = []
    for k in ks.tolist():
        text = batch.leverage[k]
        found = leverage_ids.get(text)
        if found is None:
            found = leverage_ids[text] = book.leverage_id(Decimal(text))
        levers.append(found)
    rows_t.leverage[row_ids] = np.array(levers, dtype=np.int64)
    rows_t.lo[row_ids] = 0.0
    rows_t.hi[row_ids] = np.inf
    # the entities' row lists, in list order
    rank = plan.list_order()[pos]
    groups = plan.group[pos]
    order = np.lexsort((rank, groups))
    chained = row_ids[order]
    g_sorted = groups[order]
    last_of_group = np.r_[g_sorted[1:] != g_sorted[:-1], True]
    nxt = np.where(last_of_group, NONE, np.r_[chained[1:], NONE])
    rows_t.next[chained] = nxt
    first_of = np.r_[True, g_sorted[:-1] != g_sorted[1:]]
    heads = chained[first_of]
    ent.first[entity_of_group[g_sorted[first_of]]] = heads
    ent.count[entity_ids] = 0
    np.add.at(ent.count, entity_of_group[groups], 1)
    # the accounts' row lists: each new row goes in front (newest first)
    accounts = book.accounts
    r_aid = aid[pos]
    order = np.lexsort((-pos, r_aid))
    by_account = row_ids[order]
    a_sorted = r_aid[order]
    last_of_account = np.r_[a_sorted[1:] != a_sorted[:-1], True]
    old_first = accounts.first_row[a_sorted]
    rows_t.next_in_account[by_account] = np.where(
        last_of_account, old_first, np.r_[by_account[1:], NONE]
    )
    first_of_account = np.r_[True, a_sorted[:-1] != a_sorted[1:]]
    accounts.first_row[a_sorted[first_of_account]] = by_account[first_of_account]
    # the index, the clock, the counters
    for symbol, n in zip(*np.unique(sid, return_counts=True), strict=True):
        engine.triggers.row_opened(int(symbol))
        engine.triggers.holders[int(symbol)] += int(n) - 1
    engine._tick_clock(int(batch.ts[start:stop].max()))
    engine._evaluator.evaluations += len(plan.touch)
    marked = ~np.isnan(book.symbols.price[sid])
    if marked.any():
        engine._evaluator.band_many(np.unique(rows_t.entity[row_ids[marked]]).astype(np.int64))
