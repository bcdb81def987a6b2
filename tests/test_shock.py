"""``liqmon.shock``: what-if requests, one instance's answer from its engine, and the sum of
several instances' answers (sans-I/O: no broker here)."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alerts.schema import ShockAnswerPayload, ShockRefusalPayload, ShockRequestPayload
from alerts.sink import MemorySink
from liqmon.replay import replay_file
from liqmon.shock import (
    BadRequest,
    Collection,
    answer,
    combine,
    parse_request,
    render_answer,
    render_combined,
    request_payload,
)
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.shock import shock
from tests.conftest import ROOT

CRASH = ROOT / "examples" / "crash.jsonl"
BOOK_A = {"alice", "bob", "carol"}
BOOK_B = {"dave", "erin", "frank"}
REQUEST = b'{"moves": {"XRPUSDT": "-20%", "XRPUSD_PERP": -0.2}}'
ANSWER_ONLY = {"id", "ts", "instance", "as_of_ts", "elapsed_ms"}


def _split(path: Path, accounts: set[str], *, drop: str | None = None) -> Path:
    """The crash with only ``accounts`` (and without the contract of ``drop``)."""
    lines = []
    for line in CRASH.read_text().splitlines():
        record = json.loads(line)
        if record.get("account", next(iter(accounts))) not in accounts:
            continue
        if drop is not None and record.get("symbol") == drop:
            continue
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def _engine(path: Path = CRASH) -> Engine:
    engine = Engine(EngineConfig.from_values(policy="hold"))
    asyncio.run(replay_file(str(path), engine, MemorySink()))
    return engine


class FakeTimer:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.0125
        return self.now


def _answer(engine: Engine, instance: str, payload: bytes = REQUEST) -> dict[str, Any]:
    return answer(engine, payload, instance=instance, now_ms=1_700_000_000_000, timer=FakeTimer())


def test_an_answer_is_the_engine_shock_of_the_book_and_changes_nothing() -> None:
    """The answer is exactly ``monitor.shock``'s result for those moves, plus who answered, as
    of when and how long it took (by the injected timer); the book is the same afterwards;
    the payload is what the schema in asyncapi.yaml says."""
    engine = _engine()
    before = engine.book_states()
    body = _answer(engine, "svc-a")
    expected = shock(engine, {"XRPUSDT": Decimal("-0.2"), "XRPUSD_PERP": Decimal("-0.2")})
    assert {k: v for k, v in body.items() if k not in ANSWER_ONLY} == expected.as_dict()
    assert body["instance"] == "svc-a"
    assert body["as_of_ts"] == engine.clock
    assert body["elapsed_ms"] == 12.5
    assert body["liquidations"]  # the hold policy keeps dave and alice: not vacuous
    assert engine.book_states() == before
    ShockAnswerPayload.model_validate(body)
    ShockRequestPayload.model_validate_json(REQUEST)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected"),
        (b'{"moves": {}}', "non-empty"),
        (b'{"moves": {"XRPUSDT": "-8%"}, "extra": 1}', "expected"),
        (b'{"moves": {"XRPUSDT": true}}', "string or a number"),
        (b'{"moves": {"XRPUSDT": "-100%"}}', "no price"),
        (b'{"moves": {"XRPUSDT": "lots"}}', "not a number"),
        (b'{"moves": {"A=B": "-1%"}}', "not a symbol"),
        (b'{"moves": {"XRPUSDT": "-1%"}}' + b" " * 70_000, "at most"),
        (json.dumps({"moves": {f"S{i}": "-1%" for i in range(65)}}).encode(), "at most 64"),
    ],
)
def test_a_bad_request_is_refused_with_the_reason(payload: bytes, says: str) -> None:
    """A request that is not ``{"moves": {SYMBOL: MOVE}}`` within the limits is answered with a
    refusal saying why, never an exception (an instance must not fall over on bad input)."""
    body = _answer(_engine(), "svc-a", payload)
    assert body["error"] == "invalid_request"
    assert says in body["detail"]
    ShockRefusalPayload.model_validate(body)
    with pytest.raises(BadRequest):
        parse_request(payload)


def test_requests_say_moves_as_written() -> None:
    """A request carries the moves as the user wrote them, and means fractions of the mark."""
    payload = request_payload({"XRPUSDT": "-8%", "ETHUSDT": "+0.5"})
    assert parse_request(payload) == {"XRPUSDT": Decimal("-0.08"), "ETHUSDT": Decimal("0.5")}


def test_two_books_add_up_to_the_whole_book(tmp_path: Path) -> None:
    """The crash's accounts split over two instances: their summed answer names the same
    outcomes as the answer of one instance holding every account, each with the instance that
    holds it; counts are added and money is summed per margin asset."""
    a = _answer(_engine(_split(tmp_path / "a.jsonl", BOOK_A)), "svc-a")
    b = _answer(_engine(_split(tmp_path / "b.jsonl", BOOK_B)), "svc-b")
    whole = _answer(_engine(), "one")
    total = combine({"svc-a": a, "svc-b": b}, expected=["svc-a", "svc-b"])
    for kind in ("liquidations", "warnings", "recoveries"):
        strip = [{k: v for k, v in o.items() if k != "instance"} for o in total[kind]]
        assert strip == whole[kind]
        assert {o["instance"] for o in total[kind] if o["account"] in BOOK_A} <= {"svc-a"}
        assert {o["instance"] for o in total[kind] if o["account"] in BOOK_B} <= {"svc-b"}
    counts = total["totals"]
    assert counts["liquidations"] == whole["totals"]["liquidations"] > 0
    assert counts["entities_valued"] == whole["totals"]["entities_valued"]
    by_asset: dict[str, float] = {}
    for o in whole["liquidations"]:
        by_asset[o["asset"]] = by_asset.get(o["asset"], 0.0) + o["loss"]
    assert counts["loss"] == pytest.approx(by_asset)
    assert total["instances"] == ["svc-a", "svc-b"]
    assert total["missing"] == []
    text = render_combined(total)
    for name in ("svc-a", "svc-b", *(o["account"] for o in total["liquidations"])):
        assert name in text


def test_a_symbol_is_refused_only_when_no_instance_could_shock_it(tmp_path: Path) -> None:
    """An instance without the inverse contract refuses it, but another holds it: the sum
    shocks it. A symbol nobody knows is refused in the sum too."""
    payload = b'{"moves": {"XRPUSD_PERP": "-20%", "NOPE": "-1%"}}'
    a = _answer(_engine(_split(tmp_path / "a.jsonl", BOOK_A)), "svc-a", payload)
    b = _answer(_engine(_split(tmp_path / "b.jsonl", BOOK_B, drop="XRPUSD_PERP")), "svc-b", payload)
    assert b["refused"] == {"XRPUSD_PERP": "unknown_symbol", "NOPE": "unknown_symbol"}
    total = combine({"svc-a": a, "svc-b": b})
    assert total["refused"] == {"NOPE": "unknown_symbol"}
    assert "NOPE: unknown_symbol" in render_answer(b)


def test_a_collection_completes_when_every_expected_instance_answered() -> None:
    """Answers are taken once per instance; bodies without an instance are ignored; the
    collection is complete with the last expected answer, and names who never answered."""
    collection = Collection(["svc-a", "svc-b"])
    first = {"instance": "svc-a", "totals": {"entities_valued": 1}, "liquidations": []}
    assert collection.add(first) is False
    assert collection.add({**first, "totals": {"entities_valued": 99}}) is False
    assert collection.add({"nobody": True}) is False
    assert collection.add(None) is False
    assert collection.ignored == 3
    assert collection.add({"instance": "svc-b", "error": "busy", "detail": "8 waiting"}) is True
    combined = collection.combined()
    assert combined["totals"]["entities_valued"] == 1
    assert combined["refusals"] == {"svc-b": {"error": "busy", "detail": "8 waiting"}}
    assert combined["instances"] == ["svc-a"]
    late = Collection(["svc-a", "svc-c"])
    late.add(first)
    assert not late.complete
    assert late.combined()["missing"] == ["svc-c"]
    assert not Collection([]).complete  # nobody known online: wait for the timeout
