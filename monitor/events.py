"""Domain events the engine emits (docs/alerts.md), as immutable past-tense facts.

Every event names the entity it is about: ``scope`` is ``isolated`` (one position, keyed by
account, symbol and side), ``cross`` (all cross positions of an account in one margin asset) or
``pool`` (every linear cross position and every wallet of an account in multi-assets mode,
valued in USD: docs/collateral.md).
``ts`` is the exchange time (ms) of the record that caused the event. ``id`` is stable: the same
input gives the same ids (see :func:`event_id`).

:func:`to_payload` gives the wire form shared by the JSON Lines sink and MQTT; the payload keys
and the ``event`` names are part of the public contract.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Scope = Literal["isolated", "cross", "pool"]

EVENT_KINDS = ("margin_warning", "margin_recovered", "liquidation")
_SCOPE_ORDER = {"cross": 0, "isolated": 1, "pool": 2}
"""Within an account: cross entities, then isolated ones, then the pool (a multi-assets
account has no cross entity nor isolated position, so the pool never meets them)."""


class EntityRef(NamedTuple):
    """Identifies an entity: ``symbol``/``side`` are set for isolated entities only.

    A named tuple: entities are looked up by it on every account record, and tuples hash and
    compare in C.
    """

    account: str
    scope: Scope
    asset: str
    symbol: str | None = None
    side: str | None = None

    @property
    def sort_key(self) -> tuple[str, int, str, str, str]:
        """Canonical order of entities (events caused by one record are emitted in it)."""
        return (
            self.account,
            _SCOPE_ORDER[self.scope],
            self.asset,
            self.symbol or "",
            self.side or "",
        )

    def label(self) -> str:
        if self.scope == "cross":
            return f"{self.account} cross {self.asset}"
        if self.scope == "pool":
            return f"{self.account} pool (USD)"
        return f"{self.account} {self.symbol} {self.side} isolated"


@dataclass(frozen=True, slots=True)
class PositionView:
    """A position as published in an event, valued at ``mark``.

    ``mark_ts`` is the exchange time of that mark (``None``: no tick yet, valued at its entry)
    and ``mark_stale`` says the feed of the symbol is stale (see :meth:`Engine.set_stale`), so
    the valuation may be old. Both appear in the retained state, not in alert payloads.
    """

    symbol: str
    side: str
    qty: float
    entry: float
    mark: float
    liquidation_price: float | None
    bankruptcy_price: float | None
    mark_ts: int | None = None
    mark_stale: bool = False
    funding: float = 0.0
    """Funding this position has paid so far (negative: received), with funding settlement on
    (docs/collateral.md §3); in the retained state only."""


@dataclass(frozen=True, slots=True)
class AssetView:
    """One asset of a pool (docs/collateral.md): the account's wallet in it, its equity (the
    wallet plus the uPnL of the pool's positions margined in it), its USD price and haircut,
    and what the equity is worth to the pool (haircut when positive)."""

    asset: str
    wallet: float
    equity: float
    price: float
    haircut: float
    value: float


@dataclass(frozen=True, slots=True)
class MarginWarningRaised:
    """The margin ratio reached ``level`` (the highest configured level at or below it)."""

    id: str
    ts: int
    entity: EntityRef
    level: float
    margin_ratio: float | None
    margin_balance: float
    maintenance_margin: float
    liquidation_price: float | None
    positions: tuple[PositionView, ...]

    seq: int = field(default=0, compare=False)
    """The engine's running event number (not published): durable sinks use it to skip, after
    a crash, events they already wrote."""
    assets: tuple[AssetView, ...] = ()
    """A pool's breakdown by asset (empty for other scopes)."""

    kind = "margin_warning"


@dataclass(frozen=True, slots=True)
class MarginRecovered:
    """The margin ratio fell below the lowest level minus the hysteresis."""

    id: str
    ts: int
    entity: EntityRef
    margin_ratio: float | None
    margin_balance: float
    maintenance_margin: float

    seq: int = field(default=0, compare=False)
    """The engine's running event number (not published): durable sinks use it to skip, after
    a crash, events they already wrote."""
    assets: tuple[AssetView, ...] = ()
    """A pool's breakdown by asset (empty for other scopes)."""

    kind = "margin_recovered"


@dataclass(frozen=True, slots=True)
class LiquidationTriggered:
    """Margin balance fell to or below maintenance margin.

    ``loss`` is what the owner loses (the isolated wallet, or the whole cross wallet of the
    asset); ``shortfall = max(0, −margin balance)`` is what an insurance fund would cover.
    """

    id: str
    ts: int
    entity: EntityRef
    margin_ratio: float | None
    margin_balance: float
    maintenance_margin: float
    loss: float
    shortfall: float
    positions: tuple[PositionView, ...]

    seq: int = field(default=0, compare=False)
    """The engine's running event number (not published): durable sinks use it to skip, after
    a crash, events they already wrote."""
    assets: tuple[AssetView, ...] = ()
    """A pool's breakdown by asset (before the liquidation; empty for other scopes)."""

    kind = "liquidation"


@dataclass(frozen=True, slots=True)
class MarginStateChanged:
    """An entity's margin state moved enough to be worth publishing: its alert level changed,
    it was liquidated under the ``hold`` policy, or its margin ratio moved by the configured
    relative amount since the last such event (see :attr:`EngineConfig.state_move`).

    Not an alert: it feeds the retained per-entity state that dashboards read. ``level`` is the
    highest active alert level (``None`` for none). Its numbers come from the float path (within
    1e-12 relative of exact), unlike alert events.
    """

    ts: int
    entity: EntityRef
    level: float | None
    margin_ratio: float | None
    margin_balance: float
    maintenance_margin: float
    liquidating: bool
    positions: tuple[PositionView, ...]
    assets: tuple[AssetView, ...] = ()
    """A pool's breakdown by asset (empty for other scopes)."""

    kind = "margin_state"


@dataclass(frozen=True, slots=True)
class MarginStateCleared:
    """The entity is gone: its positions all closed, or it was liquidated under ``close``."""

    ts: int
    entity: EntityRef

    kind = "margin_state_cleared"


AlertEvent = MarginWarningRaised | MarginRecovered | LiquidationTriggered
"""The alert events (docs/alerts.md): what the JSON Lines sink writes and MQTT publishes."""
StateEvent = MarginStateChanged | MarginStateCleared
EngineEvent = AlertEvent | StateEvent


def event_id(
    kind: str, entity: EntityRef, ts: int, sequence: int, facts: tuple[object, ...] = ()
) -> str:
    """A stable, unique id: a hash of what the event is about, what it says and its place in
    the stream.

    ``sequence`` is the entity's own running count of alerts, so two otherwise identical events
    (same entity, kind and ``ts``) still differ, and replaying the same input gives the same ids
    whatever other accounts the engine holds (one instance or a shard of them); ``facts`` (the
    event's numbers) make ids of different runs differ when their events do.
    """
    text = "|".join(
        (
            kind,
            entity.account,
            entity.scope,
            entity.asset,
            entity.symbol or "",
            entity.side or "",
            str(ts),
            str(sequence),
            *(repr(fact) for fact in facts),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _positions_payload(positions: tuple[PositionView, ...]) -> list[dict[str, Any]]:
    return [
        {
            "symbol": p.symbol,
            "side": p.side,
            "qty": p.qty,
            "entry": p.entry,
            "mark": p.mark,
            "liquidation_price": p.liquidation_price,
            "bankruptcy_price": p.bankruptcy_price,
        }
        for p in positions
    ]


def to_payload(event: AlertEvent) -> dict[str, Any]:
    """The event's wire form (docs/alerts.md): a JSON-ready dict with numbers as numbers."""
    entity = event.entity
    payload: dict[str, Any] = {
        "event": event.kind,
        "id": event.id,
        "ts": event.ts,
        "account": entity.account,
        "scope": entity.scope,
        "asset": entity.asset,
    }
    if entity.scope == "isolated":
        payload["symbol"] = entity.symbol
        payload["side"] = entity.side
    if isinstance(event, MarginWarningRaised):
        payload["level"] = event.level
    payload["margin_ratio"] = event.margin_ratio
    payload["margin_balance"] = event.margin_balance
    payload["maintenance_margin"] = event.maintenance_margin
    if isinstance(event, MarginWarningRaised):
        if entity.scope == "isolated":
            payload["liquidation_price"] = event.liquidation_price
        payload["positions"] = _positions_payload(event.positions)
    elif isinstance(event, LiquidationTriggered):
        payload["loss"] = event.loss
        payload["shortfall"] = event.shortfall
        payload["positions"] = _positions_payload(event.positions)
    if event.assets:
        payload["assets"] = assets_payload(event.assets)
    return payload


def assets_payload(assets: tuple[AssetView, ...]) -> list[dict[str, Any]]:
    """A pool's breakdown as it goes on the wire."""
    return [
        {
            "asset": a.asset,
            "wallet": a.wallet,
            "equity": a.equity,
            "price": a.price,
            "haircut": a.haircut,
            "value": a.value,
        }
        for a in assets
    ]
