"""The indexed engine and the naive full-scan engine agree on the bundled example."""

from __future__ import annotations

from contextlib import suppress

from bench.naive import NaiveEngine
from feeds.normalized import parse_line
from monitor import Engine, RecordRefused, to_payload
from tests.conftest import ROOT


def _events(engine: Engine) -> list[dict[str, object]]:
    out = []
    for line in (ROOT / "examples" / "crash.jsonl").read_text().splitlines():
        with suppress(RecordRefused):
            out.extend(to_payload(e) for e in engine.apply(parse_line(line)))
    return out


def test_indexed_engine_matches_naive_engine_on_the_example() -> None:
    """Routing ticks through the trigger index changes nothing in the events."""
    indexed = _events(Engine())
    assert indexed == _events(NaiveEngine())
    assert {e["event"] for e in indexed} == {"margin_warning", "margin_recovered", "liquidation"}
