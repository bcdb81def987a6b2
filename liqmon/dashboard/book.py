"""The dashboard's model of every instance's book, kept from the topic tree (sans-I/O).

Inputs are MQTT messages, as a topic and its decoded JSON body (:meth:`Book.receive`):

* ``{prefix}/state/...`` (retained): the latest state of an entity; an empty body clears it;
* ``{prefix}/events/{kind}/...``: alerts and feed events, de-duplicated by ``id`` (delivery is
  at least once), the last ``alerts_kept`` kept; ``feed_stale`` / ``feed_recovered`` also set
  the symbol's feed health;
* ``{prefix}/status/{instance}`` (retained): each instance's health.

After a (re)connection the broker re-sends every retained message: :meth:`Book.begin_sync` at
the connection and :meth:`Book.end_sync` at the link's sync barrier drop the entities and
instances whose retained message is gone (cleared while the dashboard was away).

Outputs are the page's wire form: :meth:`Book.snapshot` for a browser that connects (the whole
book, the recent alerts, health, ladders) and :meth:`Book.take_delta` for what changed since
the last delta (several changes of one entity coalesce into its latest row). A row is a compact
array (:data:`ROW_FIELDS`, positions as :data:`POSITION_FIELDS`), encoded once when its state
arrives, so the snapshot of 100,000 entities is a join of cached bytes. Anything malformed is
counted and skipped: the broker is not trusted to send only what liqmon publishes.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from liqmon.dashboard.ladder import DEFAULT_BUCKETS, DEFAULT_STEP_PCT, LadderEntry, ladder
from monitor.errors import MalformedRecord

ROW_FIELDS = (
    "id",
    "account",
    "scope",
    "asset",
    "symbol",
    "side",
    "level",
    "ratio",
    "mb",
    "mm",
    "liquidating",
    "positions",
)
"""A row on the wire: ``scope`` 0 (cross) or 1 (isolated); ``asset`` and ``symbol`` are indexes
into the book's name lists (``symbol`` −1 for cross), ``side`` into :data:`SIDES` (−1 for
cross); ``level`` null for none, ``ratio`` null when MB ≤ 0, ``liquidating`` 0/1."""
POSITION_FIELDS = ("symbol", "side", "qty", "mark", "liq", "bkr", "mark_ts", "stale", "notional")
"""A position inside a row: ``symbol`` and ``side`` as indexes, ``liq``/``bkr`` the liquidation
and bankruptcy prices (null when none), ``mark_ts`` the exchange time (ms) of its mark,
``stale`` 0/1, ``notional`` at the mark in the margin asset."""
SIDES = ("both", "long", "short")
_SIDE_INDEX = {side: i for i, side in enumerate(SIDES)}
ALERT_KINDS = ("margin_warning", "margin_recovered", "liquidation")
FEED_KINDS = ("feed_stale", "feed_recovered")
SNAPSHOT_CHUNK_ROWS = 10_000
"""Rows per snapshot message."""
SIGNIFICANT = 9
"""Numbers on the wire keep 9 significant digits: money below ten million to the cent."""


def _num(value: object) -> float | None:
    """A finite JSON number as a float (``None`` when it is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _short(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.{SIGNIFICANT}g}")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class _Malformed(MalformedRecord):
    """A message that is not what liqmon publishes on that topic."""

    def __init__(self, detail: str) -> None:
        super().__init__("malformed_message", detail)


def _required(value: float | None, name: str) -> float:
    if value is None:
        raise _Malformed(f"{name} is not a finite number")
    return value


@dataclass(frozen=True, slots=True)
class Leg:
    """A position as the model needs it for the ladder and the symbol's health."""

    symbol: str
    asset: str
    liquidation_price: float | None
    notional: float | None
    mark: float
    mark_ts: int | None
    stale: bool


@dataclass(slots=True)
class _Entity:
    id: int
    key: str
    row: bytes
    legs: tuple[Leg, ...]
    liquidating: bool
    generation: int


@dataclass(slots=True)
class SymbolHealth:
    """What the book says about one symbol: its latest mark, the entities holding it, how many
    of their positions are valued on a stale feed, and the feed events about it."""

    symbol: str
    asset: str | None = None
    """The margin asset of its positions (the unit of the ladder's notional)."""
    mark: float | None = None
    mark_ts: int | None = None
    stale_positions: int = 0
    feed: dict[str, Any] | None = None
    members: dict[int, tuple[LadderEntry, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        feed_stale = bool(self.feed and self.feed.get("stale"))
        return {
            "symbol": self.symbol,
            "asset": self.asset,
            "mark": self.mark,
            "mark_ts": self.mark_ts,
            "entities": len(self.members),
            "positions": sum(len(legs) for legs in self.members.values()),
            "stale_positions": self.stale_positions,
            "stale": feed_stale or self.stale_positions > 0,
            "feed": self.feed,
        }


class _Names:
    """Names (symbols, assets) as small integers on the wire; a name keeps its index."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.new: list[tuple[int, str]] = []

    def index(self, name: str) -> int:
        found = self._index.get(name)
        if found is None:
            found = self._index[name] = len(self.names)
            self.names.append(name)
            self.new.append((found, name))
        return found


def _side(value: object) -> int:
    side = _SIDE_INDEX.get(value) if isinstance(value, str) else None
    if side is None:
        raise _Malformed("a side is both, long or short")
    return side


def _parse_state(
    body: Mapping[str, Any], symbols: _Names, assets: _Names
) -> tuple[list[Any], tuple[Leg, ...], bool]:
    """The compact row (without its id), the legs and the liquidating flag of a state body;
    :class:`_Malformed` when it is not a state."""
    account, asset = _text(body.get("account")), _text(body.get("asset"))
    scope = body.get("scope")
    if account is None or asset is None or scope not in ("cross", "isolated"):
        raise _Malformed("a state names its account, scope and asset")
    symbol = _text(body.get("symbol")) if scope == "isolated" else None
    if scope == "isolated" and symbol is None:
        raise _Malformed("an isolated state names its symbol and side")
    side = _side(body.get("side")) if scope == "isolated" else -1
    liquidating = body.get("liquidating") is True
    positions = body.get("positions")
    if not isinstance(positions, list):
        raise _Malformed("positions is not a list")
    ratio = _num(body.get("margin_ratio"))
    mb = _required(_num(body.get("margin_balance")), "margin_balance")
    mm = _required(_num(body.get("maintenance_margin")), "maintenance_margin")
    legs: list[Leg] = []
    parsed: list[tuple[str, int, float, float, float | None, float | None, Any, bool, Any]] = []
    for p in positions:
        if not isinstance(p, dict) or _text(p.get("symbol")) is None:
            raise _Malformed("a position names its symbol")
        mark = _required(_num(p.get("mark")), "mark")
        qty = _required(_num(p.get("qty")), "qty")
        liq, bkr = _num(p.get("liquidation_price")), _num(p.get("bankruptcy_price"))
        notional = _num(p.get("notional"))
        mark_ts = _int(p.get("mark_ts"))
        stale = p.get("mark_stale") is True
        legs.append(Leg(p["symbol"], asset, liq, notional, mark, mark_ts, stale))
        parsed.append(
            (p["symbol"], _side(p.get("side")), qty, mark, liq, bkr, mark_ts, stale, notional)
        )
    encoded = [
        [
            symbols.index(name),
            leg_side,
            _short(qty),
            _short(mark),
            _short(liq),
            _short(bkr),
            mark_ts,
            1 if stale else 0,
            _short(notional),
        ]
        for name, leg_side, qty, mark, liq, bkr, mark_ts, stale, notional in parsed
    ]
    row = [
        account,
        0 if scope == "cross" else 1,
        assets.index(asset),
        -1 if symbol is None else symbols.index(symbol),
        side,
        _num(body.get("level")),
        _short(ratio),
        _short(mb),
        _short(mm),
        1 if liquidating else 0,
        encoded,
    ]
    return row, tuple(legs), liquidating


def _alert(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """An alert or feed event as the page's feed shows it."""
    item: dict[str, Any] = {"id": body["id"], "kind": kind, "ts": _int(body.get("ts"))}
    if kind in FEED_KINDS:
        for name in ("venue", "symbol"):
            item[name] = _text(body.get(name))
        item["stale_ms"] = _int(body.get("stale_ms"))
        item["mark"] = _num(body.get("mark" if kind == "feed_recovered" else "last_mark"))
        item["since_ts"] = _int(body.get("since_ts"))
        return item
    for name in ("account", "scope", "asset", "symbol", "side"):
        if (value := _text(body.get(name))) is not None:
            item[name] = value
    item["ratio"] = _num(body.get("margin_ratio"))
    item["mb"] = _num(body.get("margin_balance"))
    item["mm"] = _num(body.get("maintenance_margin"))
    if kind == "margin_warning":
        item["level"] = _num(body.get("level"))
    if kind == "liquidation":
        item["loss"] = _num(body.get("loss"))
        item["shortfall"] = _num(body.get("shortfall"))
    return item


class Book:
    """See the module docstring."""

    def __init__(
        self,
        prefix: str,
        *,
        alerts_kept: int = 1000,
        ladder_step_pct: float = DEFAULT_STEP_PCT,
        ladder_buckets: int = DEFAULT_BUCKETS,
    ) -> None:
        self.prefix = prefix
        self.ladder_step_pct = ladder_step_pct
        self.ladder_buckets = ladder_buckets
        self._state_prefix = f"{prefix}/state/"
        self._events_prefix = f"{prefix}/events/"
        self._status_prefix = f"{prefix}/status/"
        self._entities: dict[str, _Entity] = {}
        self._symbol_names = _Names()
        self._assets = _Names()
        self._next_id = 1
        self._generation = 0
        self.symbols: dict[str, SymbolHealth] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self._instance_generation: dict[str, int] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=alerts_kept)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_kept = 4 * alerts_kept
        self.broker: dict[str, Any] = {"connected": False, "synced": False}
        self._ladders: dict[str, dict[str, Any]] = {}
        # what changed since the last delta
        self._upserts: dict[int, bytes] = {}
        self._removes: set[int] = set()
        self._new_alerts: list[dict[str, Any]] = []
        self._symbols_changed: set[str] = set()
        self._ladders_dirty: set[str] = set()
        self._instances_changed = False
        self._broker_changed = False
        self.malformed = 0
        self.duplicates = 0

    # -- reading -------------------------------------------------------------------------------

    @property
    def entity_count(self) -> int:
        return len(self._entities)

    def row(self, key: str) -> dict[str, Any] | None:
        """The row of the entity at state topic suffix ``key``, its fields named and its
        indexes replaced by the names (for tests and tools)."""
        entity = self._entities.get(key)
        if entity is None:
            return None
        symbols, assets = self._symbol_names.names, self._assets.names
        row = dict(zip(ROW_FIELDS, orjson.loads(entity.row), strict=True))
        row["scope"] = "cross" if row["scope"] == 0 else "isolated"
        row["asset"] = assets[row["asset"]]
        row["symbol"] = None if row["symbol"] < 0 else symbols[row["symbol"]]
        row["side"] = None if row["side"] < 0 else SIDES[row["side"]]
        positions = []
        for raw in row["positions"]:
            position = dict(zip(POSITION_FIELDS, raw, strict=True))
            position["symbol"] = symbols[position["symbol"]]
            position["side"] = SIDES[position["side"]]
            positions.append(position)
        row["positions"] = positions
        return row

    def ladder(self, symbol: str) -> dict[str, Any] | None:
        """The symbol's ladder now (``None`` while the book holds no mark for it)."""
        health = self.symbols.get(symbol)
        if health is None or health.mark is None or not health.members:
            return None
        entries = [entry for legs in health.members.values() for entry in legs]
        return ladder(
            symbol,
            health.mark,
            entries,
            step_pct=self.ladder_step_pct,
            buckets=self.ladder_buckets,
        )

    # -- input ---------------------------------------------------------------------------------

    def receive(self, topic: str, body: Mapping[str, Any] | None) -> bool:
        """Take one message; return whether anything the page shows changed."""
        try:
            if topic.startswith(self._state_prefix):
                return self._state(topic.removeprefix(self._state_prefix), body)
            if topic.startswith(self._events_prefix):
                return self._event(topic.removeprefix(self._events_prefix), body)
            if topic.startswith(self._status_prefix):
                return self._status(topic.removeprefix(self._status_prefix), body)
        except _Malformed:
            self.malformed += 1
        return False

    def begin_sync(self) -> None:
        """A new connection: what its retained messages do not bring again goes at
        :meth:`end_sync`."""
        self._generation += 1

    def end_sync(self) -> bool:
        """Drop the entities and instances the broker no longer holds; return whether any."""
        current = self._generation
        gone = [key for key, e in self._entities.items() if e.generation < current]
        for key in gone:
            self._remove(key)
        stale = [name for name, g in self._instance_generation.items() if g < current]
        for name in stale:
            del self.instances[name]
            del self._instance_generation[name]
            self._instances_changed = True
        return bool(gone or stale)

    def set_broker(self, **state: Any) -> None:
        """The bridge's connection state (``connected``, ``synced``, ``url``, ...)."""
        if any(self.broker.get(k) != v for k, v in state.items()):
            self.broker.update(state)
            self._broker_changed = True

    def _state(self, key: str, body: Mapping[str, Any] | None) -> bool:
        if body is None:
            return self._remove(key)
        row, legs, liquidating = _parse_state(body, self._symbol_names, self._assets)
        existing = self._entities.get(key)
        if existing is None:
            entity_id = self._next_id
            self._next_id += 1
        else:
            entity_id = existing.id
            self._forget_legs(existing)
        encoded = orjson.dumps([entity_id, *row])
        entity = _Entity(entity_id, key, encoded, legs, liquidating, self._generation)
        self._entities[key] = entity
        self._add_legs(entity)
        self._upserts[entity_id] = encoded
        self._removes.discard(entity_id)
        return True

    def _remove(self, key: str) -> bool:
        entity = self._entities.pop(key, None)
        if entity is None:
            return False
        self._forget_legs(entity)
        self._upserts.pop(entity.id, None)
        self._removes.add(entity.id)
        return True

    def _health(self, symbol: str) -> SymbolHealth:
        health = self.symbols.get(symbol)
        if health is None:
            health = self.symbols[symbol] = SymbolHealth(symbol)
        return health

    def _add_legs(self, entity: _Entity) -> None:
        by_symbol: dict[str, list[LadderEntry]] = {}
        for leg in entity.legs:
            health = self._health(leg.symbol)
            by_symbol.setdefault(leg.symbol, []).append(
                LadderEntry(entity.id, leg.liquidation_price, leg.notional, entity.liquidating)
            )
            health.asset = leg.asset
            if leg.stale:
                health.stale_positions += 1
            if leg.mark_ts is not None and (
                health.mark_ts is None or leg.mark_ts >= health.mark_ts
            ):
                health.mark, health.mark_ts = leg.mark, leg.mark_ts
            elif health.mark is None:
                health.mark = leg.mark  # valued at its entry before a first tick
        for symbol, entries in by_symbol.items():
            self.symbols[symbol].members[entity.id] = tuple(entries)
            self._symbols_changed.add(symbol)
            self._ladders_dirty.add(symbol)

    def _forget_legs(self, entity: _Entity) -> None:
        for leg in entity.legs:
            health = self.symbols[leg.symbol]
            health.members.pop(entity.id, None)
            if leg.stale:
                health.stale_positions -= 1
            self._symbols_changed.add(leg.symbol)
            self._ladders_dirty.add(leg.symbol)

    def _event(self, path: str, body: Mapping[str, Any] | None) -> bool:
        kind = path.partition("/")[0]
        if body is None:
            return False
        if kind not in ALERT_KINDS + FEED_KINDS or body.get("event") != kind:
            raise _Malformed(f"not an event of kind {kind}")
        event_id = _text(body.get("id"))
        if event_id is None:
            raise _Malformed("an event carries its id")
        if event_id in self._seen:
            self.duplicates += 1
            return False
        self._seen[event_id] = None
        if len(self._seen) > self._seen_kept:
            self._seen.popitem(last=False)
        item = _alert(kind, body)
        self.alerts.append(item)
        self._new_alerts.append(item)
        if kind in FEED_KINDS and item["symbol"] is not None:
            health = self._health(item["symbol"])
            health.feed = {
                "venue": item["venue"],
                "stale": kind == "feed_stale",
                "since_ts": item["since_ts"],
                "ts": item["ts"],
                "stale_ms": item["stale_ms"],
            }
            self._symbols_changed.add(item["symbol"])
        return True

    def _status(self, name: str, body: Mapping[str, Any] | None) -> bool:
        if body is None:
            if self.instances.pop(name, None) is None:
                return False
            del self._instance_generation[name]
        else:
            status = body.get("status")
            if status not in ("online", "offline"):
                raise _Malformed("a status is online or offline")
            self.instances[name] = {
                "instance": _text(body.get("instance")) or name,
                "status": status,
                "version": _text(body.get("version")),
                "started_at": _int(body.get("started_at")),
                "ts": _int(body.get("ts")),
            }
            self._instance_generation[name] = self._generation
        self._instances_changed = True
        return True

    # -- output --------------------------------------------------------------------------------

    def refresh_ladders(self) -> dict[str, dict[str, Any] | None]:
        """Recompute the ladders of the symbols whose positions changed; return them (``None``:
        the symbol has no ladder any more)."""
        fresh: dict[str, dict[str, Any] | None] = {}
        for symbol in sorted(self._ladders_dirty):
            computed = self.ladder(symbol)
            fresh[symbol] = computed
            if computed is None:
                self._ladders.pop(symbol, None)
            else:
                self._ladders[symbol] = computed
        self._ladders_dirty.clear()
        return fresh

    def _meta(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "rows": ROW_FIELDS,
            "positions": POSITION_FIELDS,
            "sides": SIDES,
            "ladder_step_pct": self.ladder_step_pct,
            "ladder_buckets": self.ladder_buckets,
        }

    def snapshot(self, *, chunk_rows: int = SNAPSHOT_CHUNK_ROWS) -> list[bytes]:
        """Everything, for a browser that connects now, as messages to send in order: the
        first holds the meta, names, health, ladders (as of the last refresh, the missing ones
        computed), the alerts and the first rows, and says how many ``snapshot_rows``
        messages follow with the rest (a browser parses one while the next arrives). The page
        sorts the rows. Names are sent with their indexes, so a delta that repeats some is
        harmless."""
        for symbol in self.symbols:
            if symbol not in self._ladders and (computed := self.ladder(symbol)) is not None:
                self._ladders[symbol] = computed
        rows = [entity.row for entity in self._entities.values()]
        chunks = [rows[i : i + chunk_rows] for i in range(0, len(rows), chunk_rows)] or [[]]
        head = orjson.dumps(
            {
                "t": "snapshot",
                "meta": self._meta(),
                "names": {
                    "symbols": list(enumerate(self._symbol_names.names)),
                    "assets": list(enumerate(self._assets.names)),
                },
                "broker": self.broker,
                "instances": sorted(self.instances.values(), key=lambda i: i["instance"]),
                "symbols": [self.symbols[s].as_dict() for s in sorted(self.symbols)],
                "ladders": self._ladders,
                "alerts": list(self.alerts),
                "total_rows": len(rows),
                "more": len(chunks) - 1,
            }
        )
        messages = [head[:-1] + b',"rows":[' + b",".join(chunks[0]) + b"]}"]
        messages.extend(
            b'{"t":"snapshot_rows","rows":[' + b",".join(chunk) + b"]}" for chunk in chunks[1:]
        )
        return messages

    def take_delta(self, *, ladders: bool) -> bytes | None:
        """What changed since the last delta (``None``: nothing); with ``ladders``, also the
        refreshed ladders (they cost more, and are pushed less often)."""
        body: dict[str, Any] = {"t": "delta"}
        if self._symbol_names.new or self._assets.new:
            body["names"] = {"symbols": self._symbol_names.new, "assets": self._assets.new}
        if self._removes:
            body["remove"] = sorted(self._removes)
        if self._new_alerts:
            body["alerts"] = self._new_alerts
        if self._instances_changed:
            body["instances"] = sorted(self.instances.values(), key=lambda i: i["instance"])
        if self._broker_changed:
            body["broker"] = self.broker
        if self._symbols_changed:
            body["symbols"] = [self.symbols[s].as_dict() for s in sorted(self._symbols_changed)]
        if ladders and self._ladders_dirty:
            body["ladders"] = self.refresh_ladders()
        upserts = self._upserts
        if len(body) == 1 and not upserts:
            return None
        self._removes = set()
        self._symbol_names.new = []
        self._assets.new = []
        self._new_alerts = []
        self._instances_changed = self._broker_changed = False
        self._symbols_changed = set()
        self._upserts = {}
        head = orjson.dumps(body)
        if not upserts:
            return head
        return head[:-1] + b',"upsert":[' + b",".join(upserts.values()) + b"]}"

    @property
    def ladders_pending(self) -> bool:
        return bool(self._ladders_dirty)
