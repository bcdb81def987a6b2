"""``asyncapi.yaml`` is generated from the payload models and is a valid AsyncAPI 3 document."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from alerts.asyncapi import document
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
    status, the feed
    events, rejects, the two input channels and the what-if request / response; every
    message's payload points at a schema that exists."""
    doc = document()
    assert set(doc["channels"]) == {
        "status",
        "state_cross",
        "state_isolated",
        "state_pool",
        "feed_stale",
        "feed_recovered",
        "rejects",
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
