"""``liqmon.dashboard.book``: the dashboard's model of the book, alerts and health, fed with
the payloads liqmon really publishes (no broker here: the model is sans-I/O)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest

from alerts.encoding import engine_notional, state_payload
from alerts.sink import MemorySink
from alerts.topics import event_topic, state_topic, status_topic
from liqmon.dashboard.book import ROW_FIELDS, Book
from liqmon.replay import replay_file
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.events import AlertEvent, MarginStateChanged, to_payload
from tests.conftest import ROOT

CRASH = ROOT / "examples" / "crash.jsonl"
PREFIX = "liqmon/v1"


def _crash() -> tuple[Engine, list[Any]]:
    engine = Engine(EngineConfig.from_values(policy="hold", state_move="0.05"))
    sink = MemorySink()
    asyncio.run(replay_file(str(CRASH), engine, sink))
    return engine, sink.events


def _feed_states(book: Book, engine: Engine) -> dict[str, dict[str, Any]]:
    notional = engine_notional(lambda: engine)
    published = {}
    for state in engine.book_states():
        payload = state_payload(state, notional_of=notional)
        topic = state_topic(PREFIX, state.entity)
        book.receive(topic, orjson.loads(orjson.dumps(payload)))
        published[topic.removeprefix(f"{PREFIX}/state/")] = payload
    return published


def _row(book: Book, key: str) -> dict[str, Any]:
    row = book.row(key)
    assert row is not None
    return row


def _whole(book: Book, chunk_rows: int = 10_000) -> dict[str, Any]:
    """The snapshot's messages put back together (the first, with the rows of the rest)."""
    first, *rest = [json.loads(part) for part in book.snapshot(chunk_rows=chunk_rows)]
    assert first["more"] == len(rest)
    for part in rest:
        assert part["t"] == "snapshot_rows"
        first["rows"].extend(part["rows"])
    assert len(first["rows"]) == first["total_rows"]
    return first


def _delta(book: Book, *, ladders: bool = False) -> dict[str, Any]:
    raw = book.take_delta(ladders=ladders)
    assert raw is not None
    body: dict[str, Any] = json.loads(raw)
    return body


def test_rows_carry_what_the_retained_state_says() -> None:
    """Every entity of the crash's final book (hold policy: liquidated ones stay) becomes a
    row with its account, scope, margin numbers, level and positions with marks, liquidation
    and bankruptcy prices, mark time, stale flag and notional (9 significant digits); names
    travel as indexes and come back as the names."""
    engine, _ = _crash()
    book = Book(PREFIX)
    published = _feed_states(book, engine)
    assert book.entity_count == len(published) == 6
    for key, payload in published.items():
        row = _row(book, key)
        assert row["account"] == payload["account"]
        assert row["scope"] == payload["scope"]
        assert row["asset"] == payload["asset"]
        assert row["symbol"] == payload.get("symbol")
        assert row["liquidating"] == (1 if payload["liquidating"] else 0)
        assert row["mb"] == pytest.approx(payload["margin_balance"], rel=1e-8)
        if payload["margin_ratio"] is not None:
            assert row["ratio"] == pytest.approx(payload["margin_ratio"], rel=1e-8)
        for mine, theirs in zip(row["positions"], payload["positions"], strict=True):
            assert mine["symbol"] == theirs["symbol"]
            assert mine["mark"] == pytest.approx(theirs["mark"], rel=1e-8)
            assert mine["notional"] == pytest.approx(theirs["notional"], rel=1e-8)
            assert mine["mark_ts"] == theirs["mark_ts"]
            if theirs["liquidation_price"] is None:
                assert mine["liq"] is None
            else:
                assert mine["liq"] == pytest.approx(theirs["liquidation_price"], rel=1e-8)
    carol = _row(book, "carol/cross/XRP")["positions"][0]
    # inverse, 10 USD contracts: notional in XRP = 3000 · 10 / mark
    assert carol["notional"] == pytest.approx(3000 * 10 / carol["mark"], rel=1e-8)


def test_changes_coalesce_into_one_delta_with_the_latest_row() -> None:
    """Three states of one entity before a delta give one upsert (the latest, same id); a
    cleared state gives a remove and no upsert; nothing changed gives no delta at all."""
    engine, _ = _crash()
    book = Book(PREFIX)
    _feed_states(book, engine)
    book.take_delta(ladders=True)
    assert book.take_delta(ladders=True) is None
    bob = next(s for s in engine.book_states() if s.entity.account == "bob")
    topic = state_topic(PREFIX, bob.entity)
    first_id = _row(book, "bob/cross/USDT")["id"]
    for balance in (100.0, 200.0, 300.0):
        moved = MarginStateChanged(
            bob.ts, bob.entity, 0.8, 0.85, balance, 0.85 * balance, False, bob.positions
        )
        book.receive(topic, state_payload(moved))
    delta = _delta(book)
    assert [row[0] for row in delta["upsert"]] == [first_id]
    assert delta["upsert"][0][ROW_FIELDS.index("mb")] == 300.0
    assert delta["upsert"][0][ROW_FIELDS.index("level")] == 0.8
    book.receive(topic, None)
    delta = _delta(book)
    assert delta["remove"] == [first_id]
    assert "upsert" not in delta
    assert book.row("bob/cross/USDT") is None


def test_alerts_are_kept_once_each_newest_last_and_bounded() -> None:
    """Each alert of the crash appears once though delivered twice (at least once delivery),
    in order, with loss and shortfall for liquidations; only the last ``alerts_kept`` stay."""
    _, events = _crash()
    alerts: list[AlertEvent] = [e for e in events if e.kind != "margin_state"]
    alerts = [e for e in alerts if e.kind != "margin_state_cleared"]
    book = Book(PREFIX, alerts_kept=5)
    for event in [*alerts, *alerts]:
        book.receive(event_topic(PREFIX, event.kind, event.entity), to_payload(event))
    assert book.duplicates == len(alerts)
    assert [a["id"] for a in book.alerts] == [e.id for e in alerts[-5:]]
    carol = next(a for a in book.alerts if a["kind"] == "liquidation")
    assert carol["account"] == "carol"
    assert carol["shortfall"] == pytest.approx(255.61, abs=0.01)
    assert [a["id"] for a in _delta(book)["alerts"]] == [e.id for e in alerts]


def test_feed_events_and_statuses_make_the_health() -> None:
    """A feed_stale marks its symbol stale until feed_recovered; instance statuses follow
    online and offline, and a cleared status forgets the instance."""
    book = Book(PREFIX)
    stale = {
        "event": "feed_stale",
        "id": "s1",
        "ts": 1000,
        "venue": "bybit",
        "symbol": "BTCUSDT",
        "since_ts": 1,
        "last_mark_ts": 1,
        "last_mark": 60000.0,
        "stale_ms": 999,
        "stale_after_ms": 100,
    }
    book.receive(f"{PREFIX}/events/feed_stale/bybit/BTCUSDT", stale)
    assert book.symbols["BTCUSDT"].as_dict()["stale"] is True
    recovered = {
        "event": "feed_recovered",
        "id": "r1",
        "ts": 2000,
        "venue": "bybit",
        "symbol": "BTCUSDT",
        "since_ts": 1,
        "recovered_ts": 2000,
        "stale_ms": 1999,
        "mark": 60100.0,
    }
    book.receive(f"{PREFIX}/events/feed_recovered/bybit/BTCUSDT", recovered)
    assert book.symbols["BTCUSDT"].as_dict()["stale"] is False
    assert [a["kind"] for a in book.alerts] == ["feed_stale", "feed_recovered"]
    status = {
        "id": "x",
        "ts": 5,
        "status": "online",
        "instance": "svc-a",
        "version": "0.1.0",
        "started_at": 1,
    }
    book.receive(status_topic(PREFIX, "svc-a"), status)
    book.receive(status_topic(PREFIX, "svc-b"), {**status, "instance": "svc-b"})
    book.receive(
        status_topic(PREFIX, "svc-b"), {**status, "instance": "svc-b", "status": "offline"}
    )
    assert {n: i["status"] for n, i in book.instances.items()} == {
        "svc-a": "online",
        "svc-b": "offline",
    }
    book.receive(status_topic(PREFIX, "svc-a"), None)
    assert set(book.instances) == {"svc-b"}


def test_a_resync_drops_what_the_broker_no_longer_holds() -> None:
    """After a reconnection only what the broker re-sent stays: an entity and an instance
    whose retained messages were cleared meanwhile are removed at the sync barrier."""
    engine, _ = _crash()
    book = Book(PREFIX)
    book.begin_sync()
    published = _feed_states(book, engine)
    status = {"id": "x", "ts": 5, "status": "online", "instance": "a", "version": "v"}
    book.receive(status_topic(PREFIX, "a"), {**status, "started_at": 1})
    book.receive(status_topic(PREFIX, "b"), {**status, "instance": "b", "started_at": 1})
    assert book.end_sync() is False
    book.take_delta(ladders=True)
    gone = _row(book, "bob/cross/USDT")
    book.begin_sync()
    notional = engine_notional(lambda: engine)
    for state in engine.book_states():
        if state.entity.account != "bob":
            book.receive(
                state_topic(PREFIX, state.entity), state_payload(state, notional_of=notional)
            )
    book.receive(status_topic(PREFIX, "a"), {**status, "started_at": 1})
    assert book.end_sync() is True
    assert book.entity_count == len(published) - 1
    assert set(book.instances) == {"a"}
    assert _delta(book)["remove"] == [gone["id"]]


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        ("liqmon/v1/state/x/cross/USDT", {"account": "x", "scope": "sideways", "asset": "USDT"}),
        ("liqmon/v1/state/x/cross/USDT", {"account": "x", "scope": "cross", "asset": "USDT"}),
        (
            "liqmon/v1/state/x/cross/USDT",
            {
                "account": "x",
                "scope": "cross",
                "asset": "USDT",
                "positions": [{"symbol": "A", "mark": "1", "qty": 1}],
                "margin_balance": 1,
                "maintenance_margin": 1,
            },
        ),
        ("liqmon/v1/state/x/isolated/A/both", {"account": "x", "scope": "isolated", "asset": "U"}),
        ("liqmon/v1/events/liquidation/x/cross/USDT", {"event": "margin_warning", "id": "1"}),
        ("liqmon/v1/events/liquidation/x/cross/USDT", {"event": "liquidation"}),
        ("liqmon/v1/status/a", {"status": "sleepy"}),
    ],
)
def test_malformed_messages_are_counted_and_change_nothing(
    topic: str, body: dict[str, Any]
) -> None:
    """A state without its numbers or positions, an event whose body is not its topic's kind
    or has no id, a status that is neither online nor offline: counted, not shown."""
    book = Book(PREFIX)
    assert book.receive(topic, body) is False
    assert book.malformed == 1
    assert book.entity_count == 0
    assert not book.alerts
    assert not book.instances


def test_a_snapshot_holds_everything_and_the_ladders_total_the_notionals() -> None:
    """The snapshot is one JSON document with every row, the alerts, the instances, the
    symbols' health and a ladder per symbol whose total is the sum of the notionals of that
    symbol's positions."""
    engine, events = _crash()
    book = Book(PREFIX)
    published = _feed_states(book, engine)
    for event in events:
        if event.kind in ("margin_warning", "margin_recovered", "liquidation"):
            book.receive(event_topic(PREFIX, event.kind, event.entity), to_payload(event))
    snapshot = _whole(book)
    assert snapshot["t"] == "snapshot"
    assert len(snapshot["rows"]) == len(published)
    assert len(snapshot["alerts"]) == 13
    assert snapshot["meta"]["rows"] == list(ROW_FIELDS)
    for symbol in ("XRPUSDT", "XRPUSD_PERP"):
        want = sum(
            p["notional"]
            for payload in published.values()
            for p in payload["positions"]
            if p["symbol"] == symbol
        )
        assert snapshot["ladders"][symbol]["total"]["notional"] == pytest.approx(want)
    health = {s["symbol"]: s for s in snapshot["symbols"]}
    assert health["XRPUSDT"]["entities"] == 5
    assert health["XRPUSDT"]["mark_ts"] == max(
        p["mark_ts"] for v in published.values() for p in v["positions"]
    )


def test_a_large_snapshot_comes_in_parts_that_add_up_to_the_book() -> None:
    """The rows are split into parts of the given size after the first message, which says how
    many follow; together they hold every row once."""
    engine, _ = _crash()
    book = Book(PREFIX)
    _feed_states(book, engine)
    parts = book.snapshot(chunk_rows=4)
    assert len(parts) == 2
    whole = _whole(book, chunk_rows=4)
    assert sorted(row[0] for row in whole["rows"]) == sorted(
        row[0] for row in _whole(book, chunk_rows=100)["rows"]
    )
    assert len({row[0] for row in whole["rows"]}) == 6
    empty = Book(PREFIX).snapshot()
    assert len(empty) == 1
    assert json.loads(empty[0])["rows"] == []
