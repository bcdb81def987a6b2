"""The collateral records and funding (docs/collateral.md), applied to the book.

* ``asset_mode``: an account switches between one cross entity per margin asset and one pool
  of every linear cross position and every wallet. The entities it leaves are forgotten (their
  state cleared, no alert), the ones it enters evaluated at once. Switching to multi-assets is
  refused while the account holds an isolated or an inverse position; back to single-asset is
  always accepted; repeating the mode changes nothing.
* ``collateral``: an asset's USD price and haircut. A price that is not positive, or a haircut
  outside ``[0, 1)``, is refused. Every pool that holds the asset is re-evaluated at once with
  the record's ``ts``: all of them when the asset gets its first price or a new haircut, else
  those whose trigger band on that price the new price leaves, and those that waited for it.
* funding (only with ``EngineConfig.funding``): each symbol keeps the latest
  ``(funding_rate, funding_ts)`` its ticks carried. The first accepted tick with
  ``ts >= funding_ts`` settles that pair, before the tick is evaluated: every open position of
  the symbol pays ``s·N(P)·rate`` (its notional at that tick's mark; a positive rate makes
  longs pay) from its wallet — the isolated wallet, or the account's wallet of the margin asset
  for a cross or pool position. Each ``funding_ts`` settles once; a dropped tick neither settles
  nor stores a pair; a liquidating entity (hold policy) pays too, silently.
"""

from __future__ import annotations

from decimal import Context, Decimal
from typing import TYPE_CHECKING

from monitor.book import CROSS, ISOLATED, NONE, POOL, Collateral
from monitor.errors import RecordRejected
from monitor.events import EngineEvent, MarginStateCleared
from monitor.exact import UNBOUNDED
from monitor.pools import needed_assets
from monitor.records import AssetModeRecord, CollateralRecord
from monitor.views import entity_ref

if TYPE_CHECKING:
    from monitor.engine import Engine

INVERSE_FUNDING = Context(prec=50)
"""Funding of an inverse position divides by the mark: kept to 50 significant digits."""


def apply_asset_mode(engine: Engine, record: AssetModeRecord) -> list[EngineEvent]:
    book = engine.book
    engine._tick_clock(record.ts)
    aid = book.account_id(record.account)
    accounts = book.accounts
    if bool(accounts.v_multi_assets[aid]) == record.multi_assets:
        return []
    rows = book.rows
    open_rows = book.account_rows(aid)
    if record.multi_assets:
        for row in open_rows:
            contract = book.contracts[rows.v_symbol[row]]
            if rows.v_isolated[row] or (contract is not None and contract.is_inverse):
                raise RecordRejected(
                    "multi_assets_refused",
                    f"{record.account} holds an isolated or inverse position: multi-assets "
                    "mode takes linear cross positions only",
                )
    evaluator = engine._evaluator
    cleared: list[EngineEvent] = []
    old = sorted({int(rows.v_entity[r]) for r in open_rows if not rows.v_isolated[r]})
    for entity in old:  # the entities this switch leaves: forgotten, their state cleared
        ref = entity_ref(book, entity)
        evaluator.unindex(entity)
        members = book.entity_rows(entity)
        for row in members:
            book.detach(row)
        book.forget_entity(entity)
        if evaluator.state_move is not None:
            cleared.append(MarginStateCleared(record.ts, ref))
    accounts.v_multi_assets[aid] = 1 if record.multi_assets else 0
    touched: list[int] = []
    for row in sorted(r for r in open_rows if not rows.v_isolated[r]):
        entity = _entity_for(engine, aid, row)
        book.attach(entity, row)
        if entity not in touched:
            touched.append(entity)
    for entity in touched:
        book.entities.v_liquidating[entity] = 0
    return [*cleared, *evaluator.evaluate(touched, record.ts)]


def _entity_for(engine: Engine, aid: int, row: int) -> int:
    """The entity a cross row of this account belongs to in its current mode (made if new)."""
    book = engine.book
    if book.accounts.v_multi_assets[aid]:
        pool = book.accounts.v_pool[aid]
        return pool if pool != NONE else book.create_entity(POOL, aid, book.usd)
    asset = book.margin_asset[book.rows.v_symbol[row]]
    entity = book.cross_entity(aid, asset)
    return entity if entity != NONE else book.create_entity(CROSS, aid, asset)


def check_pool_position(engine: Engine, aid: int | None, isolated: bool, inverse: bool) -> None:
    """A multi-assets account takes linear cross positions only (docs/collateral.md §4)."""
    if aid is None or not engine.book.accounts.v_multi_assets[aid]:
        return
    if isolated:
        raise RecordRejected(
            "multi_assets_isolated", "a multi-assets account holds no isolated position"
        )
    if inverse:
        raise RecordRejected(
            "multi_assets_inverse", "a multi-assets account holds no inverse position"
        )


def apply_collateral(engine: Engine, record: CollateralRecord) -> list[EngineEvent]:
    if not record.price > 0:
        raise RecordRejected(
            "invalid_collateral_price", f"{record.asset}: price {record.price} is not positive"
        )
    if not Decimal(0) <= record.haircut < Decimal(1):
        raise RecordRejected(
            "invalid_haircut", f"{record.asset}: haircut {record.haircut} is outside [0, 1)"
        )
    book = engine.book
    engine._tick_clock(record.ts)
    asset = book.asset_names.intern(record.asset)
    old = book.collateral.get(asset)
    book.collateral[asset] = Collateral(record.price, record.haircut, record.ts)
    evaluator = engine._evaluator
    if old is None or old.haircut != record.haircut or not engine._indexed:
        due = [pool for pool in _pools(engine) if asset in needed_assets(book, pool)]
    else:
        due = evaluator.collateral_crossed(asset, float(record.price))
        due.extend(p for p in evaluator.waiting.pop(asset, ()) if p not in due)
    alive = [p for p in due if book.entities.v_kind[p] == POOL]
    return evaluator.evaluate(sorted(set(alive)), record.ts)


def _pools(engine: Engine) -> list[int]:
    entities = engine.book.entities
    size = entities.size
    return [int(e) for e in (entities.kind[:size] == POOL).nonzero()[0]]


def settle_funding(engine: Engine, sid: int, ts: int) -> list[int]:
    """Settle the stored funding of a symbol if this accepted tick (whose mark is already the
    symbol's price) is due for it; return the entities whose wallets moved."""
    stored = engine._funding.get(sid)
    if stored is None:
        return []
    rate, when = stored
    if ts < when or engine._funding_settled.get(sid) == when:
        return []
    engine._funding_settled[sid] = when
    engine.funding_changes += 1
    book = engine.book
    rows = book.rows
    contract = book.contracts[sid]
    assert contract is not None  # noqa: S101
    mark = engine._exact_mark_id(sid)
    assert mark is not None  # noqa: S101  # the tick set it
    asset_name = contract.margin_asset
    touched: list[int] = []
    for row in book.rows_of_symbol(sid).tolist():
        qty = rows.qty.get(row)
        qcs = UNBOUNDED.multiply(abs(qty), contract.contract_size)
        if contract.is_inverse:
            notional = INVERSE_FUNDING.divide(qcs, mark)
        else:
            notional = UNBOUNDED.multiply(qcs, mark)
        pay = UNBOUNDED.multiply(notional, rate)
        if qty < 0:
            pay = UNBOUNDED.minus(pay)  # s·N·rate: a short receives what a long pays
        if pay > 0:
            paid = engine.funding_paid
            paid[asset_name] = UNBOUNDED.add(paid.get(asset_name, Decimal(0)), pay)
        elif pay < 0:
            got = engine.funding_received
            got[asset_name] = UNBOUNDED.subtract(got.get(asset_name, Decimal(0)), pay)
        entity = rows.v_entity[row]
        kind = book.entities.v_kind[entity]
        if kind == ISOLATED:
            book.set_wallet(entity, UNBOUNDED.subtract(book.wallet(entity), pay))
        else:
            aid = book.entities.v_account[entity]
            balance = book.balance_row(aid, book.margin_asset[sid], create=True)
            book.set_balance(balance, UNBOUNDED.subtract(book.balance_wallet(balance), pay))
        rows.v_funding[row] -= float(pay)  # booked: negative when paid
        if entity not in touched:
            touched.append(entity)
    return touched


def store_funding(engine: Engine, sid: int, rate: Decimal | None, when: int | None) -> None:
    """Keep the pair an accepted tick carried (after any settlement it caused)."""
    if rate is not None and when is not None and engine._funding.get(sid) != (rate, when):
        engine._funding[sid] = (rate, when)
        engine.funding_changes += 1
