"""The engine's whole state as arrays, and back.

A snapshot is the book itself: every column of every table (:mod:`monitor.book`), copied,
plus a small JSON-ready part for what is not a column: the interned names, the contracts, the
exact text of the last mark of every symbol, the shared leverages, the rare exact values kept
outside the columns, the event counter (so ids continue), the engine clock and the alert
levels the level columns refer to. Nothing walks the book entity by entity: capturing 100,000
accounts is a few array copies (the service writes them as one file, on another thread: see
``liqmon.persistence``).

Restoring loads the arrays back, rebuilds the trigger index from the bands stored in the rows
(one sort per symbol) and runs *no* state machine: it emits nothing, and the next record
behaves exactly as it would have without the restart.

Alert levels are stored by value, so a restart with a different ``--levels`` keeps a level that
still exists and forgets one that does not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from monitor.book import NONE, POOL, Collateral
from monitor.config import EngineConfig
from monitor.contracts import Tier, make_contract
from monitor.engine import Engine
from monitor.errors import SnapshotError as SnapshotError
from monitor.events import EntityRef
from monitor.pools import value_pool
from monitor.records import MarkSource

SNAPSHOT_VERSION = 2
_TABLES = ("symbols", "rows", "entities", "balances", "accounts")
_EXACT = (
    ("rows", "qty"),
    ("rows", "entry_exact"),
    ("entities", "wallet_exact"),
    ("balances", "wallet_exact"),
)


def mark_text(source: MarkSource) -> str:
    """The exact decimal text of a mark, whatever form it arrived in."""
    if isinstance(source, str):
        return source
    if isinstance(source, bytes):
        value = json.loads(source, parse_float=str, parse_int=str)["mark"]
        return str(value)
    return repr(source)


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """The state of an engine: ``arrays`` (the tables' columns) and ``meta`` (JSON-ready)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EngineSnapshot):
            return NotImplemented
        return (
            self.meta == other.meta
            and self.arrays.keys() == other.arrays.keys()
            and all(
                np.array_equal(a, other.arrays[k], equal_nan=a.dtype.kind == "f")
                for k, a in self.arrays.items()
            )
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def without_bands(self) -> EngineSnapshot:
        """The state without what is derived from it or only presents it: trigger bands and
        envelopes (they depend on when entities were last evaluated, not on what they hold)
        and the last published state of each entity (the retained state's bookkeeping: a
        restart republishes every state, so it depends on restarts, not on the inputs)."""
        derived = {"rows.lo", "rows.hi", "entities.shown_ratio", "entities.shown_level"}
        return EngineSnapshot(
            {k: v for k, v in self.arrays.items() if k not in derived}, dict(self.meta)
        )


def _contract_json(contract: Any) -> dict[str, Any]:
    return {
        "symbol": contract.symbol,
        "kind": contract.kind,
        "margin_asset": contract.margin_asset,
        "contract_size": str(contract.contract_size),
        "brackets": [
            {"floor": str(t.floor), "cap": str(t.cap), "mmr": str(t.mmr), "cum": str(t.cum)}
            for t in contract.tiers
        ],
    }


def export_state(engine: Engine) -> EngineSnapshot:
    """The engine's state (see the module docstring)."""
    book = engine.book
    arrays: dict[str, np.ndarray] = {}
    for name in _TABLES:
        arrays.update(getattr(book, name).export(name + "."))
    marks = [None if s is None else mark_text(s) for s in engine._mark_text]
    overflow = {
        f"{table}.{column}": {
            str(row): str(value)
            for row, value in getattr(getattr(book, table), column).overflow.items()
        }
        for table, column in _EXACT
    }
    meta = {
        "version": SNAPSHOT_VERSION,
        "clock": engine.clock,
        "events_emitted": engine.events_emitted,
        "alerts_of": [[*ref, count] for ref, count in engine._evaluator.alerts_of.items()],
        "levels": [str(v) for v in engine.config.levels],
        "accounts": list(book.account_names.names),
        "assets": list(book.asset_names.names),
        "symbols": list(book.symbol_names.names),
        "contracts": [None if c is None else _contract_json(c) for c in book.contracts],
        "marks": marks,
        "leverages": [str(v) for v in book.leverages],
        "overflow": overflow,
        "collateral": {
            str(asset): [str(c.price), str(c.haircut), c.ts]
            for asset, c in sorted(book.collateral.items())
        },
        "funding": {
            "stored": {str(s): [str(r), t] for s, (r, t) in sorted(engine._funding.items())},
            "settled": {str(s): t for s, t in sorted(engine._funding_settled.items())},
            "paid": {a: str(v) for a, v in sorted(engine.funding_paid.items())},
            "received": {a: str(v) for a, v in sorted(engine.funding_received.items())},
        },
    }
    return EngineSnapshot(arrays, meta)


def _level_map(config: EngineConfig, stored: list[str]) -> np.ndarray:
    """Stored level index -> configured level index (-1: no longer configured). Index -1 of
    the stored levels maps through the last slot."""
    mapping = np.full(len(stored) + 1, -1, dtype=np.int64)
    for i, value in enumerate(stored):
        try:
            mapping[i] = config.levels.index(Decimal(value))
        except ValueError:
            mapping[i] = -1
    return mapping


def restore_state(snapshot: EngineSnapshot, config: EngineConfig | None = None) -> Engine:
    """An engine in the state :func:`export_state` captured, under ``config``."""
    meta = snapshot.meta
    if not isinstance(meta, dict) or meta.get("version") != SNAPSHOT_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise SnapshotError(f"unsupported snapshot version {version!r}")
    engine = Engine(config)
    book = engine.book
    try:
        for name in meta["accounts"]:
            book.account_names.intern(name)
        for name in meta["assets"]:
            book.asset_names.intern(name)
        for name in meta["symbols"]:
            book.symbol_names.intern(name)
            book.contracts.append(None)
            book.margin_asset.append(NONE)
            engine._mark_text.append(None)
            engine._exact_marks.append(None)
        for name in _TABLES:
            getattr(book, name).load(name + ".", snapshot.arrays)
        book.rebuild_indexes()
        for value in meta["leverages"]:
            book.leverage_id(Decimal(value))
        for table, column in _EXACT:
            target = getattr(getattr(book, table), column)
            for row, value in meta["overflow"][f"{table}.{column}"].items():
                target.overflow[int(row)] = Decimal(value)
        for sid, spec in enumerate(meta["contracts"]):
            if spec is None:
                continue
            tiers = [
                Tier(Decimal(b["floor"]), Decimal(b["cap"]), Decimal(b["mmr"]), Decimal(b["cum"]))
                for b in spec["brackets"]
            ]
            contract = make_contract(
                spec["symbol"],
                spec["kind"],
                spec["margin_asset"],
                Decimal(spec["contract_size"]),
                tiers,
            )
            book.set_contract(sid, contract)
            engine._evaluator.negative_mm_possible |= contract.mm_can_be_negative
        engine._evaluator.contracts_version += 1
        for sid, text in enumerate(meta["marks"]):
            engine._mark_text[sid] = text
        engine._clock = int(meta["clock"])
        engine.events_emitted = int(meta["events_emitted"])
        engine._evaluator.alerts_of = {
            EntityRef(*ref): int(count) for *ref, count in meta.get("alerts_of", ())
        }
        for asset, (price, haircut, ts) in meta.get("collateral", {}).items():
            book.collateral[int(asset)] = Collateral(Decimal(price), Decimal(haircut), int(ts))
        funding = meta.get("funding", {})
        for sid, (rate, when) in funding.get("stored", {}).items():
            engine._funding[int(sid)] = (Decimal(rate), int(when))
        for sid, when in funding.get("settled", {}).items():
            engine._funding_settled[int(sid)] = int(when)
        engine.funding_paid.update({a: Decimal(v) for a, v in funding.get("paid", {}).items()})
        engine.funding_received.update(
            {a: Decimal(v) for a, v in funding.get("received", {}).items()}
        )
        entities = book.entities
        mapping = _level_map(engine.config, meta["levels"])
        for column in ("level", "shown_level"):
            values = getattr(entities, column)[: entities.size].astype(np.int64)
            getattr(entities, column)[: entities.size] = mapping[values]
    except (KeyError, TypeError, ValueError, ArithmeticError, IndexError) as exc:
        raise SnapshotError(f"inconsistent snapshot: {exc!r}") from exc
    _rebuild_index(engine)
    return engine


def _rebuild_index(engine: Engine) -> None:
    """The trigger heaps and envelopes from the bands stored in the rows."""
    book = engine.book
    triggers = engine.triggers
    rows = book.rows
    for sid in range(len(book.contracts)):
        triggers.ensure(sid)
    open_rows = np.flatnonzero(rows.sign[: rows.size] != 0)
    counts = np.bincount(rows.symbol[open_rows], minlength=len(book.contracts))
    triggers.holders = [int(c) for c in counts]
    triggers.set_bands(open_rows, rows.lo[open_rows].copy(), rows.hi[open_rows].copy())
    # pools: their collateral bands are not columns, and those waiting for a price wait again
    evaluator = engine._evaluator
    entities = book.entities
    for pool in np.flatnonzero(entities.kind[: entities.size] == POOL).tolist():
        if entities.v_liquidating[pool]:
            continue
        valued = value_pool(book, book.collateral, pool)
        if valued is None:
            evaluator._wait(pool)
        else:
            evaluator.index_one(pool, *valued)
