"""``asyncapi.yaml`` is generated from the payload models and is a valid AsyncAPI 3 document."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from alerts.asyncapi import document
from alerts.encoding import notice_message
from alerts.schema import FEED_MODELS, NOTICE_MODELS
from feeds.health import FeedEvent, FeedHealth
from monitor.notices import InputRejected, Notice, ServiceStarted, ServiceStopped
from tests.conftest import ROOT

SPEC = ROOT / "asyncapi.yaml"
VALIDATOR = ROOT / "tools" / "asyncapi" / "validate.mjs"
PARSER = ROOT / "tools" / "asyncapi" / "node_modules" / "@asyncapi" / "parser"


def test_asyncapi_yaml_is_the_document_generated_from_the_models() -> None:
    """The committed file equals what the payload models generate (run
    ``python -m alerts.asyncapi > asyncapi.yaml`` after changing a model or a topic)."""
    assert yaml.safe_load(SPEC.read_text()) == document()


def test_every_channel_and_message_is_described() -> None:
    """Each alert kind has a cross, an isolated and a pool channel, plus state (each scope) and
    status, the feed events, rejects, the service's start and stop, the two input channels and
    the what-if request / response; every message's payload points at a schema that exists."""
    doc = document()
    assert set(doc["channels"]) == {
        "status",
        "state_cross",
        "state_isolated",
        "state_pool",
        "feed_stale",
        "feed_recovered",
        "rejects",
        "service_started",
        "service_stopped",
        "in_records",
        "in_binance",
        "shock_request",
        "shock_response",
        *(
            f"{kind}_{scope}"
            for kind in ("margin_warning", "margin_recovered", "liquidation")
            for scope in ("cross", "isolated", "pool")
        ),
    }
    schemas = doc["components"]["schemas"]
    for message in doc["components"]["messages"].values():
        name = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert name in schemas


def test_feed_events_and_notices_as_published_match_their_schemas_and_channels() -> None:
    """What the runtime hands the sinks validates against the documented models, and goes to
    the topic its channel documents."""
    health = FeedHealth("bybit", expected_interval_s=1.0)
    health.watch(["BTCUSDT"], 0)
    stalled = health.check(5_000_000_000)
    recovered = health.observe("BTCUSDT", 6_000_000_000, 100.5)
    assert stalled
    assert recovered is not None
    notices: list[Notice] = [
        InputRejected.of(
            ts=1, source="mqtt", reason="too_deep", detail="d", payload=b"[[", topic="records"
        ),
        InputRejected.of(
            ts=1, source="replay", reason="invalid_json", detail="d", payload=b"", line=3
        ),
        ServiceStarted(
            id="a", ts=1, instance="i", version="v", start="fresh", summary="s", restored={"x": 0}
        ),
        ServiceStopped(id="b", ts=2, instance="i", reason="signal", counts={"ticks": 0}),
    ]
    channels = document()["channels"]
    events: list[FeedEvent | Notice] = [*stalled, recovered, *notices]
    for event in events:
        topic, body = notice_message("liqmon/v1", "i", event)
        (FEED_MODELS | NOTICE_MODELS)[body["event"]].model_validate(body)
        channel = "rejects" if body["event"] == "input_rejected" else body["event"]
        address = channels[channel]["address"]
        pattern = address.replace("{instance}", "i").replace("{venue}", "bybit")
        assert topic == pattern.replace("{feed_symbol}", "BTCUSDT")


def test_the_official_asyncapi_parser_accepts_the_document() -> None:
    """Validated by @asyncapi/parser (installed by .ci/run into tools/asyncapi)."""
    node = shutil.which("node")
    if node is None or not PARSER.exists():
        if os.environ.get("LIQMON_REQUIRE_TOOLS"):
            pytest.fail("node and @asyncapi/parser are required (LIQMON_REQUIRE_TOOLS is set)")
        pytest.skip("node or @asyncapi/parser not installed (npm install --prefix tools/asyncapi)")
    result = subprocess.run(
        [node, str(VALIDATOR), str(SPEC)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
