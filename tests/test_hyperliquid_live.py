"""Hyperliquid live: the websocket feed against the local fake venue, the info API polls against
its fake info endpoint, the exchange-versus-liqmon liquidation check, and ``liqmon run --feed
hyperliquid --watch`` end to end over a real Mosquitto, compared with the replay of the same
data."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AsyncExitStack, aclosing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from alerts.schema import StatePayload
from alerts.topics import ALERT_KINDS
from feeds.backoff import ReconnectPolicy
from feeds.frames import FrameParser
from feeds.hyperliquid_info import (
    InfoFailed,
    InfoUpdate,
    MetaFetched,
    StatesFetched,
    WatchSpec,
    info_url_of,
    poll,
    weight_per_minute,
)
from feeds.hyperliquid_state import parse_meta, parse_state
from feeds.live import FeedSpec, FeedStats, frames
from feeds.ticks import MarkTick
from liqmon.broker import LocalBroker
from liqmon.cli import main
from liqmon.convert import hyperliquid_records
from liqmon.hyperliquid_watch import HyperliquidWatch
from liqmon.service import Service
from liqmon.settings import load_settings
from monitor.events import EntityRef, PositionView
from monitor.records import AccountUpdateRecord, TickRecord
from tests.fake_exchange import (
    FakeExchange,
    FakeInfoApi,
    Start,
    fake_exchange_fixture,  # noqa: F401  # registers the fake_exchange fixture
)
from tests.mqtt_support import Collector, Got

DATA = Path(__file__).parent / "data" / "hyperliquid"


@pytest.fixture(autouse=True)
def _own_logging() -> Iterator[None]:
    """``liqmon.cli.main`` configures structlog for its process; undo it after each test."""
    yield
    structlog.reset_defaults()


FIRST_DEX = json.loads((DATA / "meta" / "docs_example_metaAndAssetCtxs_first_dex.json").read_text())
XYZ = json.loads((DATA / "meta" / "docs_example_metaAndAssetCtxs_hip3_dex_xyz.json").read_text())
HYPE_SHORT = json.loads(
    (DATA / "clearinghouse" / "ccxt_fetchPositions_isolated_short_HYPE_2025-10-30.json").read_text()
)
ADDRESS = "0x" + "ab" * 20
META = {  # the docs' meta with HYPE listed as on mainnet (10x)
    **FIRST_DEX[0],
    "universe": [*FIRST_DEX[0]["universe"], {"name": "HYPE", "szDecimals": 2, "maxLeverage": 10}],
}
POLICY = ReconnectPolicy(base_s=0.01, cap_s=0.05, minimum_s=0.01)
PREFIX = "liqmon/v1"


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


async def test_feed_names_all_dexs_contexts_by_its_own_meta_requests_and_resubscribes(
    fake_exchange: Start,
) -> None:
    """With all marks: the feed subscribes ``allDexsAssetCtxs``, posts one ``meta`` per dex,
    pings on its period, and the parser names every context from the replies (HIP-3 ones with
    their prefix). After a dropped connection it subscribes and asks for the metas again."""
    fake: FakeExchange = await fake_exchange("hyperliquid", interval_s=0.005)
    fake.hl_metas = {"": META, "xyz": XYZ[0]}
    spec = FeedSpec(
        venue="hyperliquid",
        symbols="all",
        dexes=("xyz",),
        url=fake.url,
        heartbeat_s=0.05,
        reconnect=POLICY,
    )
    parser = FrameParser("hyperliquid")
    ticks: list[MarkTick] = []
    stats = FeedStats("hyperliquid")

    async def consume() -> None:
        async with aclosing(frames(spec, stats=stats)) as stream:
            async for frame in stream:
                parsed = parser.parse(frame.raw, frame.receive_ts_ns)
                assert parsed.rejects == ()
                ticks.extend(parsed.ticks)
                fake.notify()

    every = {a["name"] for a in META["universe"]} | {a["name"] for a in XYZ[0]["universe"]}

    def named(count: int) -> bool:
        return {t.symbol for t in ticks} == every and len(ticks) >= count

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consume())
        await fake.wait_until(lambda: named(7) and fake.connections[0].heartbeats >= 2)
        first = len(ticks)
        fake.drop()
        await fake.wait_until(lambda: len(fake.connections) == 2 and named(first + 7))
        task.cancel()
    assert "xyz:TSLA" in every
    for connection in fake.connections:
        assert connection.topics == ['{"type":"allDexsAssetCtxs"}']
        posts = [json.loads(r) for r in connection.requests if '"post"' in r]
        assert [p["request"]["payload"].get("dex", "") for p in posts[:2]] == ["", "xyz"]
    assert stats.reconnects == 1


async def test_poll_asks_meta_first_retries_failures_and_yields_whole_accounts() -> None:
    """The info API answers 500 once: that is an ``InfoFailed`` (retried, not fatal); then both
    dexes' meta arrive before any state, and each address comes as one update holding its
    states on both dexes, parsed as recorded; an unchanged meta is not yielded again, a changed
    one (a listing) is."""
    async with FakeInfoApi() as info:
        info.metas = {"": META, "xyz": XYZ[0]}
        info.states = {(ADDRESS, ""): HYPE_SHORT, (ADDRESS, "xyz"): {**HYPE_SHORT,
                       "assetPositions": []}}  # fmt: skip
        info.fail_next = [500]
        spec = WatchSpec(addresses=(ADDRESS.upper().replace("0X", "0x"),), dexes=("", "xyz"),
                         url=info.url, interval_s=0.01, meta_interval_s=0.02)  # fmt: skip
        updates: list[InfoUpdate] = []
        async with aclosing(poll(spec, sleep=_no_wait)) as stream:
            async for update in stream:
                updates.append(update)
                if sum(isinstance(u, StatesFetched) for u in updates) == 3:
                    break
            listed = {**META, "universe": [*META["universe"], {"name": "NEW", "maxLeverage": 3}]}
            info.metas[""] = listed  # a listing: the next meta poll yields the new meta
            async for update in stream:
                if isinstance(update, MetaFetched):
                    assert update.meta.names[-1] == "NEW"
                    break
    assert isinstance(updates[0], InfoFailed)
    assert (updates[0].request, updates[0].reason) == ("meta (main)", "http_500")
    kinds = [type(u).__name__ for u in updates[1:]]
    assert kinds == ["MetaFetched", "MetaFetched", *["StatesFetched"] * 3]
    fetched = updates[-1]
    assert isinstance(fetched, StatesFetched)
    assert fetched.address == ADDRESS
    assert [s.dex for s in fetched.states] == ["", "xyz"]
    assert fetched.states[0].positions == parse_state(HYPE_SHORT).positions
    assert {"type": "clearinghouseState", "user": ADDRESS, "dex": "xyz"} in info.requests
    assert weight_per_minute(spec) == 2 * 2 * 60 / 0.01
    assert info_url_of("wss://api.hyperliquid.xyz/ws") == "https://api.hyperliquid.xyz/info"
    with pytest.raises(ValueError, match="address"):
        WatchSpec(addresses=("0x12",))


def _fetched(state: dict[str, Any]) -> StatesFetched:
    return StatesFetched(ADDRESS, (parse_state(state),), time.time_ns())


def test_a_disagreeing_exchange_price_is_logged_once_per_change_and_counted() -> None:
    """The recorded state agrees with liqmon (no warning); the same state with the exchange's
    price moved by 1e-5 gives one warning and one count, however many polls repeat it, and one
    line when it agrees again; the retained state's extra field is the exchange's latest."""
    registry = CollectorRegistry()
    watch = HyperliquidWatch(WatchSpec(addresses=(ADDRESS,)), registry)
    contracts = watch.handle(MetaFetched(parse_meta(META), time.time_ns()))
    assert [c.contract.symbol for c in contracts] == ["BTC", "ETH", "HPOS", "HYPE"]  # type: ignore[union-attr]
    wrong = json.loads(json.dumps(HYPE_SHORT))
    wrong["assetPositions"][0]["position"]["liquidationPx"] = "50.273"
    with structlog.testing.capture_logs() as logs:
        (record,) = watch.handle(_fetched(HYPE_SHORT))
        for _ in range(3):
            watch.handle(_fetched(wrong))
        watch.handle(_fetched(HYPE_SHORT))
    assert isinstance(record, AccountUpdateRecord)
    assert [e["event"] for e in logs] == ["liquidation_price_disagrees", "liquidation_price_agrees"]
    assert logs[0]["exchange"] == 50.273
    assert logs[0]["liqmon"] == pytest.approx(50.2724802381, rel=1e-9)
    assert registry.get_sample_value("liqmon_liquidation_price_disagreements_total") == 1
    assert registry.get_sample_value("liqmon_liquidation_price_disagreeing") == 0
    view = PositionView("HYPE", "both", -4.0, 47.99, 48.1, None, None)
    entity = EntityRef(ADDRESS, "isolated", "USDC", "HYPE", "both")
    assert watch.position_extras(entity, view) == {"exchange_liquidation_price": 50.2724802381}
    assert watch.position_extras(entity._replace(account="other"), view) == {}


# --- the service end to end --------------------------------------------------------------


def _alerts_until_liquidation(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for alert in alerts:
        out.append((alert["event"], alert["account"], alert.get("symbol"), alert.get("level"),
                    alert["ts"]))  # fmt: skip
        if alert["event"] == "liquidation":
            break
    return out


async def test_watched_account_moving_to_liquidation_alerts_over_mqtt_as_its_replay_does(
    broker: LocalBroker, fake_exchange: Start, tmp_path: Path
) -> None:
    """``liqmon run --feed hyperliquid --watch ADDRESS``: the fake venue's HYPE mark rises
    towards the recorded isolated short's liquidation price while the fake info API serves the
    recorded state at each mark. Over MQTT come the margin warnings and the liquidation; the
    retained state carries the exchange's ``liquidationPx`` beside liqmon's; ``/metrics``
    counts the polls and no disagreement. Replaying the recorded frames with the states the
    fake served (converted by ``liqmon convert``'s code) gives the same alerts, at the same
    times, up to the liquidation."""
    fake: FakeExchange = await fake_exchange("hyperliquid", interval_s=0.005)
    fake.hl_metas = {"": META}
    fake.hl_marks = {"HYPE": Decimal("48.145")}
    fake.hl_step = Decimal("0.01")
    watcher = Collector(broker.port, [f"{PREFIX}/events/#", f"{PREFIX}/state/#"])
    out = tmp_path / "events.jsonl"
    async with AsyncExitStack() as stack:
        info = await stack.enter_async_context(FakeInfoApi(fake))
        info.metas = {"": META}
        info.states = {(ADDRESS, ""): HYPE_SHORT}
        settings = load_settings(
            None,
            feed={
                "venue": "hyperliquid",
                "symbols": "HYPE",
                "url": fake.url,
                "info_url": info.url,
                "watch": [ADDRESS],
                "watch_interval_s": 0.05,
                "record_dir": tmp_path / "capture",
            },
            mqtt={
                "url": broker.url,
                "instance": "svc",
                "state_interval_ms": 0,
                "accounts_input": False,
            },
            state={"dir": tmp_path / "state"},
            http={"enabled": True, "port": 0},
            out=out,
        )
        service = Service(settings)
        running = asyncio.create_task(service.run(install_signals=False))

        def liquidated(got: list[Got]) -> bool:
            return any(g.body and g.body.get("event") == "liquidation" for g in got)

        try:
            await asyncio.to_thread(watcher.wait_until, liquidated, 30.0)
            url = f"http://127.0.0.1:{service.http_port}/metrics"
            metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url).read().decode())
        finally:
            service.stop()
            status = await running
            watcher.stop()
    assert status == 0
    mqtt_alerts = watcher.alerts()
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert mqtt_alerts == [e for e in written if e["event"] in ALERT_KINDS]
    live = _alerts_until_liquidation(mqtt_alerts)
    assert [a[0] for a in live] == ["margin_warning"] * 3 + ["liquidation"]
    assert [a[3] for a in live[:3]] == [0.7, 0.8, 0.9]
    states = [g.body for g in watcher.messages if "/state/" in g.topic and g.body]
    for body in states:
        StatePayload.model_validate(body)
    position = states[-1]["positions"][0]
    assert position["exchange_liquidation_price"] == 50.2724802381
    assert position["liquidation_price"] == pytest.approx(50.2724802381, rel=1e-9)
    assert 'liqmon_hyperliquid_polls_total{outcome="ok",request="clearinghouseState"}' in metrics
    assert "liqmon_liquidation_price_disagreements_total 0.0" in metrics

    # the replay of the same data: the recorded frames, and the states the fake served
    accounts = tmp_path / "accounts.jsonl"
    lines = []
    for served in info.served:
        converted = hyperliquid_records(served, META, account=ADDRESS)
        lines.extend(r for r in converted.records if not isinstance(r, TickRecord))
    from feeds.normalized import record_json

    accounts.write_text("".join(record_json(r).decode() + "\n" for r in lines))
    (capture,) = sorted((tmp_path / "capture").glob("*"))
    replayed = tmp_path / "replayed.jsonl"
    argv = ["replay", str(capture), "--venue", "hyperliquid", "--accounts", str(accounts),
            "--policy", "hold", "--out", str(replayed)]  # fmt: skip
    assert await asyncio.to_thread(main, argv) == 0
    replay = [json.loads(line) for line in replayed.read_text().splitlines()]
    assert _alerts_until_liquidation(replay) == live
