"""``liqmon tail`` on a real Mosquitto: what a person watching the broker reads, for every kind of
message liqmon publishes on the topics it follows, and for messages it does not publish."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest

from alerts.mqtt_settings import settings_from_url
from alerts.topics import event_topic, feed_event_topic, state_topic, status_topic
from liqmon.broker import LocalBroker
from liqmon.tail import tail
from monitor.events import EntityRef
from tests.mqtt_support import Collector
from tests.test_console import BACK, STALL

pytestmark = pytest.mark.integration

PREFIX = "liqmon/v1"
ALICE = EntityRef("alice", "cross", "USDT")


def _alert() -> dict[str, object]:
    return {
        "event": "margin_warning",
        "id": "w1",
        "ts": 1_637_000_000_000,
        "account": "alice",
        "scope": "cross",
        "asset": "USDT",
        "level": 0.7,
        "margin_ratio": 0.71,
        "margin_balance": 1000.0,
        "maintenance_margin": 710.0,
        "positions": [],
    }


async def test_tail_prints_feed_events_alerts_states_and_survives_foreign_messages(
    broker: LocalBroker,
) -> None:
    """With ``--state``, tail prints a feed_stale and a feed_recovered (which carry no entity),
    an alert (once, though delivered twice), a state and its clearing, and the instance's
    status; a message on an event topic that is not liqmon's is shown as unreadable and tail
    goes on to print what follows it."""
    out = io.StringIO()
    settings = settings_from_url(broker.url)
    task = asyncio.create_task(tail(settings, state=True, stream=out))
    publisher = Collector(broker.port, [])
    try:
        for _ in range(200):  # tail writes its header once it is about to subscribe
            if out.getvalue():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the subscription is in place
        messages = [
            (feed_event_topic(PREFIX, "feed_stale", "binance-usdm", "XRPUSDT"), STALL.to_payload()),
            (event_topic(PREFIX, "margin_warning", ALICE), {"event": "margin_warning", "id": "x"}),
            (event_topic(PREFIX, "margin_warning", ALICE), _alert()),
            (event_topic(PREFIX, "margin_warning", ALICE), _alert()),
            (state_topic(PREFIX, ALICE), {**_alert(), "level": 0.7, "liquidating": False}),
            (
                feed_event_topic(PREFIX, "feed_recovered", "binance-usdm", "XRPUSDT"),
                BACK.to_payload(),
            ),
            (status_topic(PREFIX, "svc"), {"instance": "svc", "status": "online", "version": "1"}),
        ]
        for topic, body in messages:
            publisher.client.publish(topic, orjson.dumps(body), qos=1).wait_for_publish(5)
        publisher.client.publish(state_topic(PREFIX, ALICE), b"", qos=1).wait_for_publish(5)
        for _ in range(250):
            if "[state cleared]" in out.getvalue():
                break
            await asyncio.sleep(0.02)
        assert not task.done()  # nothing it received stopped it
    finally:
        publisher.stop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    lines = out.getvalue().splitlines()[1:]
    assert lines[0].endswith("FEED STALE  binance-usdm XRPUSDT: no mark for 12 s (last 1.20932)")
    assert lines[1].startswith("[unreadable] liqmon/v1/events/margin_warning/alice/cross/USDT")
    assert "alice cross USDT  WARNING  level 0.7  ratio 71.0%" in lines[2]
    assert "state: level 0.7" in lines[3]
    assert lines[4].endswith("FEED RECOVERED  binance-usdm XRPUSDT after 15.5 s at 1.1655")
    assert lines[5] == "[status] svc: online (liqmon 1)"
    assert lines[6] == "[state cleared] liqmon/v1/state/alice/cross/USDT"
    assert len(lines) == 7  # the second copy of the alert was dropped by id
