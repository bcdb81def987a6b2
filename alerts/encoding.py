"""What liqmon puts on the wire over MQTT: topics with their payloads, and MQTT 5 properties.

Pure: events in, bytes out. No connection, clock or randomness (the caller passes the time).
Topic names are built by :mod:`alerts.topics`; the payload shapes are documented in
``docs/alerts.md`` and ``asyncapi.yaml`` (:mod:`alerts.schema` holds their models).

* **Alert events**: the JSON Lines payload (:func:`alerts.jsonl.encode`) on
  ``events/{kind}/{entity}`` (:func:`event_message`).
* **Retained state**: :func:`state_payload` on ``state/{entity}``; an empty payload clears it
  (:func:`state_message`).
* **Feed health and notices**: their payloads on ``events/{feed_kind}/{venue}/{symbol}``,
  ``rejects`` and ``service/{kind}/{instance}`` (:func:`notice_message`).
* **Status**: :func:`status_payload` on ``status/{instance}``.
* **MQTT 5 PUBLISH properties**: content type, the event id as the user property ``id`` and the
  message expiry, packed once per message by :func:`publish_properties` and handed to paho as
  :class:`PackedProperties`.

Every payload carries ``id`` (the event id, or a digest of the body) and ``ts``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.jsonl import encode
from alerts.topics import event_topic, feed_event_topic, service_topic, state_topic
from feeds.health import FeedEvent, FeedRecovered, FeedStalled
from monitor.contracts import Contract
from monitor.engine import Engine
from monitor.events import (
    AlertEvent,
    EntityRef,
    MarginStateChanged,
    MarginStateCleared,
    PositionView,
    assets_payload,
)
from monitor.notices import InputRejected, Notice

CONTENT_TYPE = "application/json"

PositionExtras = Callable[[EntityRef, PositionView], Mapping[str, Any]]
"""Optional fields a venue adapter adds to a position of the retained state (Hyperliquid's
``exchange_liquidation_price``)."""
NotionalOf = Callable[[str, float, float], float | None]
"""``(symbol, qty, mark) -> notional`` in the margin asset, or ``None`` for an unknown symbol."""


def digest(body: Mapping[str, Any]) -> str:
    """The id of a payload that has no event id: a short hash of its JSON."""
    return hashlib.blake2b(orjson.dumps(body), digest_size=10).hexdigest()


def contract_notional(contract_of: Callable[[str], Contract | None]) -> NotionalOf:
    """The notional of a position at a mark, from its contract: ``|q|·CS·P`` (linear) or
    ``|q|·CS/P`` (inverse), in the margin asset (what the engine's tiers are applied to)."""

    def notional(symbol: str, qty: float, mark: float) -> float | None:
        contract = contract_of(symbol)
        if contract is None or not mark > 0:
            return None
        size = abs(qty) * contract.contract_size_f
        return size / mark if contract.is_inverse else size * mark

    return notional


def engine_notional(engine: Callable[[], Engine]) -> NotionalOf:
    """:func:`contract_notional` with the contracts of ``engine()`` (a getter: the service
    replaces its engine on restore)."""

    def contract_of(symbol: str) -> Contract | None:
        book = engine().book
        sid = book.symbol_names.ids.get(symbol)
        return None if sid is None else book.contracts[sid]

    return contract_notional(contract_of)


def _positions(
    entity: EntityRef,
    positions: tuple[PositionView, ...],
    extras: PositionExtras | None = None,
    notional_of: NotionalOf | None = None,
) -> list[dict[str, Any]]:
    out = [
        {
            "symbol": p.symbol,
            "side": p.side,
            "qty": p.qty,
            "entry": p.entry,
            "mark": p.mark,
            "liquidation_price": p.liquidation_price,
            "bankruptcy_price": p.bankruptcy_price,
            "mark_ts": p.mark_ts,
            "mark_stale": p.mark_stale,
            "funding": p.funding,
        }
        for p in positions
    ]
    if notional_of is not None:
        for body, p in zip(out, positions, strict=True):
            body["notional"] = notional_of(p.symbol, p.qty, p.mark)
    if extras is not None:
        for body, position in zip(out, positions, strict=True):
            body.update(extras(entity, position))
    return out


def state_payload(
    event: MarginStateChanged,
    extras: PositionExtras | None = None,
    notional_of: NotionalOf | None = None,
) -> dict[str, Any]:
    """The retained state message of an entity (see ``alerts.schema.StatePayload``); with
    ``notional_of``, each position also carries its ``notional``; ``extras`` adds optional
    fields to its positions."""
    entity = event.entity
    body: dict[str, Any] = {
        "ts": event.ts,
        "account": entity.account,
        "scope": entity.scope,
        "asset": entity.asset,
    }
    if entity.scope == "isolated":
        body["symbol"] = entity.symbol
        body["side"] = entity.side
    body.update(
        level=event.level,
        margin_ratio=event.margin_ratio,
        margin_balance=event.margin_balance,
        maintenance_margin=event.maintenance_margin,
        liquidating=event.liquidating,
        positions=_positions(entity, event.positions, extras, notional_of),
    )
    if event.assets:
        body["assets"] = assets_payload(event.assets)
    return {"id": digest(body), **body}


@dataclass(frozen=True, slots=True)
class StateMessage:
    """A retained state as published: its topic, its payload (empty: clear the retained state)
    and the id carried as the ``id`` user property (empty for a clear)."""

    topic: str
    payload: bytes
    message_id: str


def state_message(
    prefix: str,
    event: MarginStateChanged | MarginStateCleared,
    extras: PositionExtras | None = None,
    notional_of: NotionalOf | None = None,
) -> StateMessage:
    """The retained message of a state event: its payload, or an empty one for a gone entity."""
    topic = state_topic(prefix, event.entity)
    if isinstance(event, MarginStateCleared):
        return StateMessage(topic, b"", "")
    payload = state_payload(event, extras, notional_of)
    return StateMessage(topic, orjson.dumps(payload), payload["id"])


def event_message(prefix: str, event: AlertEvent) -> tuple[str, bytes]:
    """``(topic, payload)`` of an alert event (the JSON Lines payload, ``docs/alerts.md``)."""
    return event_topic(prefix, event.kind, event.entity), encode(event).encode()


def notice_message(
    prefix: str, instance: str, event: FeedEvent | Notice
) -> tuple[str, dict[str, Any]]:
    """``(topic, body)`` of a feed health event or a service notice (``body`` carries ``id``)."""
    if isinstance(event, FeedStalled | FeedRecovered):
        topic = feed_event_topic(prefix, event.kind, event.venue, event.symbol)
    elif isinstance(event, InputRejected):
        topic = f"{prefix}/rejects"
    else:
        topic = service_topic(prefix, event.kind, instance)
    return topic, event.to_payload()


def status_payload(
    status: str, *, ts_ms: int, instance: str, version: str, started_ms: int
) -> bytes:
    """The retained status of an instance: ``online`` or ``offline`` (also its Last Will)."""
    body = {
        "ts": ts_ms,
        "status": status,
        "instance": instance,
        "version": version,
        "started_at": started_ms,
    }
    return orjson.dumps({"id": digest(body), **body})


class PackedProperties(Properties):
    """MQTT 5 PUBLISH properties packed by :func:`publish_properties`: paho assembles them
    attribute by attribute (about 35 µs a message, more than the rest of a publish); paho only
    ever calls :meth:`pack` on the properties of a message it sends."""

    packed: bytes

    def __init__(self, packed: bytes) -> None:
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "packed", packed)

    def pack(self) -> bytes:
        return self.packed

    def __str__(self) -> str:
        return f"PackedProperties({self.packed!r})"


def publish_properties(message_id: str, expiry_s: int | None) -> bytes:
    """The packed properties of a PUBLISH: content type, the event id as the user property
    ``id`` (when there is one) and the message expiry (when set), in identifier order as paho
    packs them, preceded by their length."""
    body = bytearray()
    if expiry_s is not None:
        body += b"\x02" + expiry_s.to_bytes(4, "big")
    body += b"\x03" + _utf8(CONTENT_TYPE)
    if message_id:
        body += b"\x26" + _utf8("id") + _utf8(message_id)
    return _variable_int(len(body)) + bytes(body)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _variable_int(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)
