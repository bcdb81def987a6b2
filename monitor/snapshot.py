"""The engine's whole state as plain JSON-ready data, and back.

A snapshot holds everything that decides future events: contracts, the last mark (exact text
and ``ts``) of every symbol, balances, positions, each entity's wallet, alert level, hold-policy
flag and last published state, the event counter (so ids continue) and the engine clock.
Restoring rebuilds the entities and the trigger index *without* running the alert state
machine: it emits nothing, and the next record behaves exactly as it would have without the
restart.

Decimals travel as strings. Alert levels are stored by value, so a restart with a different
``--levels`` keeps a level that still exists and forgets one that does not.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from monitor.config import EngineConfig
from monitor.contracts import Tier, make_contract
from monitor.engine import Engine, _Valuation
from monitor.entity import Entity, Position
from monitor.errors import LiqmonError
from monitor.events import EntityRef
from monitor.margin import Leg
from monitor.records import MarkSource

SNAPSHOT_VERSION = 1


class SnapshotError(LiqmonError):
    """A snapshot cannot be restored (unknown version, inconsistent content)."""


def mark_text(source: MarkSource) -> str:
    """The exact decimal text of a mark, whatever form it arrived in."""
    if isinstance(source, str):
        return source
    if isinstance(source, bytes):
        value = json.loads(source, parse_float=str, parse_int=str)["mark"]
        return str(value)
    return repr(source)


def export_state(engine: Engine) -> dict[str, Any]:
    """The engine's state (see the module docstring)."""
    levels = engine.config.levels
    return {
        "version": SNAPSHOT_VERSION,
        "clock": engine._clock,
        "snapshot_ts": dict(engine._snapshot_ts),
        "events_emitted": engine.events_emitted,
        "contracts": [
            {
                "symbol": c.symbol,
                "kind": c.kind,
                "margin_asset": c.margin_asset,
                "contract_size": str(c.contract_size),
                "brackets": [
                    {"floor": str(t.floor), "cap": str(t.cap), "mmr": str(t.mmr), "cum": str(t.cum)}
                    for t in c.tiers
                ],
            }
            for c in engine.contracts.values()
        ],
        "marks": [
            {"symbol": symbol, "mark": mark_text(engine._mark_text[symbol]), "ts": ts}
            for symbol, ts in engine._mark_ts.items()
        ],
        "balances": [
            {"account": account, "asset": asset, "wallet": str(wallet)}
            for (account, asset), wallet in engine._balances.items()
        ],
        "entities": [
            {
                "account": e.ref.account,
                "scope": e.ref.scope,
                "asset": e.ref.asset,
                "symbol": e.ref.symbol,
                "side": e.ref.side,
                "wallet": str(e.wallet),
                "level": str(levels[e.level]) if e.level >= 0 else None,
                "liquidating": e.liquidating,
                "shown_ratio": e.shown_ratio,
                "shown_level": str(levels[e.shown_level]) if e.shown_level >= 0 else None,
                "positions": [
                    {
                        "symbol": p.symbol,
                        "side": p.side,
                        "mode": p.mode,
                        "qty": str(p.leg.qty),
                        "entry": str(p.leg.entry),
                        "leverage": str(p.leverage),
                    }
                    # insertion order, not sorted: float sums then add up bit for bit the same
                    for slots in e.exposures.values()
                    for p in slots.values()
                ],
            }
            for e in engine._entities.values()
        ],
    }


def _level_index(config: EngineConfig, value: str | None) -> int:
    if value is None:
        return -1
    try:
        return config.levels.index(Decimal(value))
    except ValueError:
        return -1  # that level is no longer configured: as if none were active


def restore_state(data: dict[str, Any], config: EngineConfig | None = None) -> Engine:
    """An engine in the state :func:`export_state` captured, under ``config``."""
    if data.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"unsupported snapshot version {data.get('version')!r}")
    engine = Engine(config)
    config = engine.config
    try:
        for c in data["contracts"]:
            tiers = [
                Tier(Decimal(b["floor"]), Decimal(b["cap"]), Decimal(b["mmr"]), Decimal(b["cum"]))
                for b in c["brackets"]
            ]
            contract = make_contract(
                c["symbol"], c["kind"], c["margin_asset"], Decimal(c["contract_size"]), tiers
            )
            engine.contracts[contract.symbol] = contract
            engine.negative_mm_possible |= contract.mm_can_be_negative
        for m in data["marks"]:
            engine.prices[m["symbol"]] = float(m["mark"])
            engine._mark_text[m["symbol"]] = m["mark"]
            engine._mark_ts[m["symbol"]] = int(m["ts"])
        for b in data["balances"]:
            engine._balances[(b["account"], b["asset"])] = Decimal(b["wallet"])
        for e in data["entities"]:
            ref = EntityRef(e["account"], e["scope"], e["asset"], e["symbol"], e["side"])
            entity = Entity(ref, Decimal(e["wallet"]))
            entity.level = _level_index(config, e["level"])
            entity.liquidating = bool(e["liquidating"])
            entity.shown_ratio = e["shown_ratio"]
            entity.shown_level = _level_index(config, e["shown_level"])
            engine._entities[ref] = entity
            for p in e["positions"]:
                contract = engine.contracts[p["symbol"]]
                position = Position(
                    account=ref.account,
                    symbol=p["symbol"],
                    side=p["side"],
                    mode=p["mode"],
                    leverage=Decimal(p["leverage"]),
                    leg=Leg.of(Decimal(p["qty"]), Decimal(p["entry"]), contract),
                )
                engine._attach(entity, position)
        engine._clock = int(data["clock"])
        engine._snapshot_ts = {str(k): int(v) for k, v in data.get("snapshot_ts", {}).items()}
        engine.events_emitted = int(data["events_emitted"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise SnapshotError(f"inconsistent snapshot: {exc!r}") from exc
    for entity in engine._entities.values():
        if not entity.liquidating:
            engine._index(entity, _Valuation(engine, entity))
    return engine
