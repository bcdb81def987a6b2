"""``liqmon run --feed``: live marks from a local fake venue, account records over a real
Mosquitto, alerts and feed health out over MQTT.

The service runs in this process (so the fake exchange can be paused at a chosen moment); the
broker is a real Mosquitto; the subscriber is a paho client. Blocking waits on the subscriber
run in a thread so the service keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from alerts.schema import FEED_MODELS, StatePayload
from alerts.topics import ALERT_KINDS
from liqmon.broker import LocalBroker
from liqmon.service import Service
from liqmon.settings import load_settings
from tests.fake_exchange import (
    Start,
    fake_exchange_fixture,  # noqa: F401  # registers the fake_exchange fixture
)
from tests.mqtt_support import Collector, Got

SYMBOL = "BTC-USDC-SWAP"
PREFIX = "liqmon/v1"
STATE_TOPIC = f"{PREFIX}/state/short/isolated/{SYMBOL}/both"

# The fake OKX venue pushes marks 28479.1, 28479.2, ... (+0.1 per frame, every 5 ms). A short of
# 1 BTC from 28479 with 175 USDC: MM = 0.4 % of notional (≈ 114); the ratio reaches 0.7 about
# 12 USDC above entry (after ≈ 0.6 s) and liquidation ≈ 60 above (after ≈ 3 s).
RECORDS = [
    {
        "type": "contract",
        "symbol": SYMBOL,
        "kind": "linear",
        "margin_asset": "USDC",
        "contract_size": "1",
        "brackets": [{"floor": "0", "cap": "1e12", "mmr": "0.004", "cum": "0"}],
    },
    {
        "type": "position",
        "ts": 1,
        "account": "short",
        "symbol": SYMBOL,
        "side": "both",
        "mode": "isolated",
        "qty": "-1",
        "entry": "28479",
        "leverage": "100",
        "isolated_wallet": "175",
    },
]


def _of_kind(kind: str) -> Any:
    return lambda got: any(g.body and g.body.get("event") == kind for g in got)


def _last_state(got: list[Got]) -> dict[str, Any] | None:
    states = [g for g in got if g.topic == STATE_TOPIC and g.payload]
    return states[-1].body if states else None


def _state_is(stale: bool) -> Any:
    def check(got: list[Got]) -> bool:
        state = _last_state(got)
        return state is not None and state["positions"][0]["mark_stale"] is stale

    return check


async def test_live_marks_and_mqtt_accounts_give_alerts_and_feed_health_over_mqtt(
    broker: LocalBroker, fake_exchange: Start, tmp_path: Path
) -> None:
    """Account records in over MQTT plus live OKX marks: the warning and the liquidation reach
    their topics (equal to the JSON Lines sink); pausing the venue gives ``feed_stale`` on its
    topic and a retained state that says the valuation is stale, resuming gives
    ``feed_recovered`` and a fresh state. Every payload matches its published schema."""
    fake = await fake_exchange("okx", interval_s=0.005)
    # liqmon's persistent input session, made in advance so the broker queues the records
    Collector(broker.port, [f"{PREFIX}/in/#"], client_id="liqmon-svc-in", persistent=True).stop()
    feeder = Collector(broker.port, [])
    for record in RECORDS:
        feeder.client.publish(f"{PREFIX}/in/records", json.dumps(record), qos=1).wait_for_publish(5)
    feeder.stop()
    watcher = Collector(broker.port, [f"{PREFIX}/events/#", f"{PREFIX}/state/#"])
    out = tmp_path / "events.jsonl"
    settings = load_settings(
        None,
        feed={
            "venue": "okx",
            "symbols": SYMBOL,
            "url": fake.url,
            "expected_interval_ms": 100,
            "stale_after": 3,
        },
        mqtt={"url": broker.url, "instance": "svc", "state_interval_ms": 0},
        state={"dir": tmp_path / "state"},
        http={"enabled": False},
        out=out,
    )
    service = Service(settings)
    running = asyncio.create_task(service.run(install_signals=False))

    async def wait(predicate: Any) -> None:
        await asyncio.to_thread(watcher.wait_until, predicate, 20.0)

    try:
        await wait(_of_kind("margin_warning"))
        fake.pause()
        await wait(_of_kind("feed_stale"))
        await wait(_state_is(stale=True))
        fake.resume()
        await wait(_of_kind("feed_recovered"))
        await wait(_state_is(stale=False))
        await wait(_of_kind("liquidation"))
    finally:
        service.stop()
        status = await running
        watcher.stop()
    assert status == 0

    feed = [g for g in watcher.messages if g.body and g.body.get("event") in FEED_MODELS]
    assert [g.topic for g in feed[:2]] == [
        f"{PREFIX}/events/feed_stale/okx/{SYMBOL}",
        f"{PREFIX}/events/feed_recovered/okx/{SYMBOL}",
    ]
    for got in feed:
        assert got.body is not None
        FEED_MODELS[got.body["event"]].model_validate(got.body)
        assert got.user_properties == {"id": got.body["id"]}
    stale, recovered = feed[0].body, feed[1].body
    assert stale is not None
    assert recovered is not None
    assert recovered["since_ts"] == stale["since_ts"] == stale["last_mark_ts"]
    assert stale["stale_ms"] >= 300
    assert recovered["stale_ms"] >= stale["stale_ms"]

    for got in watcher.messages:
        if got.topic.startswith(f"{PREFIX}/state/") and got.payload:
            StatePayload.model_validate(got.body)
    stale_state = next(
        g.body
        for g in watcher.messages
        if g.topic == STATE_TOPIC and g.body and g.body["positions"][0]["mark_stale"]
    )
    position = stale_state["positions"][0]
    assert position["mark_ts"] is not None
    assert position["mark"] == stale["last_mark"]

    written = [json.loads(line) for line in out.read_text().splitlines()]
    alerts = [a for a in watcher.alerts() if a["event"] not in FEED_MODELS]
    assert alerts == [e for e in written if e["event"] in ALERT_KINDS]
    # the JSON Lines file holds the feed events too, as MQTT carried them, in order
    assert [g.body for g in feed] == [e for e in written if e["event"] in FEED_MODELS]
    assert written[0]["event"] == "service_started"
    assert [a["event"] for a in alerts][:1] == ["margin_warning"]
    assert alerts[-1]["event"] == "liquidation"
