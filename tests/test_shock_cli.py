"""``liqmon replay FILE --shock SYMBOL=MOVE --shock-json PATH``: the what-if of the final book
names exactly the events that appending those moves as the next ticks causes, in the engine and
in the independent exact oracle (``tests/oracle.py``)."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import orjson
import pytest

from alerts.sink import MemorySink
from bench.generate import Workload
from liqmon.replay import replay_file
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.events import to_payload
from tests import cli_support
from tests.conftest import ROOT
from tests.oracle import Oracle

CRASH = ROOT / "examples" / "crash.jsonl"
LIQMON = [sys.executable, "-m", "liqmon.cli"]


def _workload(path: Path, seed: int) -> Path:
    args = argparse.Namespace(
        accounts=120,
        far_accounts=0,
        ticks=600,
        symbols=4,
        inverse_share=0.25,
        record_every=30,
        jump_probability=0.01,
        seed=seed,
    )
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in Workload(args).records()) + b"\n")
    return path


def _shock_cli(path: Path, moves: list[str], policy: str, out: Path) -> tuple[dict[str, Any], str]:
    result = cli_support.run(
        [
            *LIQMON,
            "replay",
            str(path),
            "--out",
            str(out.with_suffix(".events.jsonl")),
            "--policy",
            policy,
            *(arg for move in moves for arg in ("--shock", move)),
            "--shock-json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.read_text()), result.stderr


def _final_engine(path: Path, policy: str) -> Engine:
    engine = Engine(EngineConfig.from_values(policy=policy))
    asyncio.run(replay_file(str(path), engine, MemorySink()))
    return engine


def _shocked_text(engine: Engine, symbol: str, move: Decimal) -> str:
    """The shocked mark, exactly: last mark × (1 + move) (a finite decimal)."""
    last = engine.exact_mark(symbol)
    assert last is not None
    new = last * (1 + Fraction(move))
    with localcontext() as context:
        context.prec = 200
        exact = Decimal(new.numerator) / Decimal(new.denominator)
    assert Fraction(exact) == new
    return format(exact.normalize(), "f")


def _key(o: dict[str, Any]) -> tuple[str, ...]:
    return (o["account"], o["scope"], o["asset"], o.get("symbol") or "", o.get("side") or "")


def _outcomes(answer: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """kind + entity -> the numbers the answer gives."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for group, kind in (
        ("liquidations", "liquidation"),
        ("warnings", "margin_warning"),
        ("recoveries", "margin_recovered"),
    ):
        for o in answer[group]:
            found[(kind, *_key(o))] = o
    return found


def _events(payloads: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {(p["event"], *_key(p)): p for p in payloads if p.get("event")}


def _check_same(answer: dict[str, Any], events: dict[tuple[str, ...], dict[str, Any]]) -> None:
    got = _outcomes(answer)
    assert set(got) == set(events)
    for key, outcome in got.items():
        event = events[key]
        if key[0] == "margin_warning":
            assert outcome["level"] == event["level"]
        if key[0] == "liquidation":
            assert outcome["loss"] == pytest.approx(event["loss"], rel=1e-12, abs=1e-9)
            assert outcome["shortfall"] == pytest.approx(event["shortfall"], rel=1e-12, abs=1e-9)
        for name in ("margin_balance", "maintenance_margin"):
            assert outcome[name] == pytest.approx(event[name], rel=1e-12, abs=1e-9)


def _append_ticks(
    path: Path, policy: str, moves: dict[str, Decimal], oracle: Oracle | None = None
) -> tuple[dict[tuple[str, ...], dict[str, Any]], dict[tuple[str, ...], dict[str, Any]]]:
    """The events of appending the moves as ticks: in the engine, and in the oracle (a copy
    of ``oracle`` when given: the file already replayed)."""
    engine = _final_engine(path, policy)
    ts = engine.clock
    lines = [
        json.dumps({"type": "tick", "ts": ts, "symbol": s, "mark": _shocked_text(engine, s, move)})
        for s, move in moves.items()
    ]
    alert_kinds = ("liquidation", "margin_warning", "margin_recovered")
    engine_events = [
        to_payload(event)  # type: ignore[arg-type]  # alert events only
        for line in lines
        for event in engine.apply_tick(
            json.loads(line)["symbol"],
            float(json.loads(line)["mark"]),
            json.loads(line)["mark"],
            ts,
        )
        if event.kind in alert_kinds
    ]
    if oracle is None:
        oracle = Oracle(policy=policy)
        oracle.replay(path.read_text())
    else:
        oracle = copy.deepcopy(oracle)
    oracle_events = [e for line in lines for e in oracle.apply_line(line).events]
    return _events(engine_events), _events(oracle_events)


@pytest.mark.parametrize(
    ("seed", "policy"),
    [
        (3, "close"),
        (11, "hold"),
        # the other two pairings (each ~4 s, mostly the exact oracle's replay): with -m slow
        pytest.param(3, "hold", marks=pytest.mark.slow),
        pytest.param(11, "close", marks=pytest.mark.slow),
    ],
)
def test_shock_json_equals_appending_the_tick(tmp_path: Path, policy: str, seed: int) -> None:
    """On random workloads, for moves down and up of the most held symbol, the JSON answer
    lists exactly the liquidations (with loss and shortfall), warnings (with level) and
    recoveries that the engine emits, and the oracle emits, when the move is appended as the
    next tick; the printed answer names each of them. The cases together are not vacuous."""
    path = _workload(tmp_path / "w.jsonl", seed)
    engine = _final_engine(path, policy)
    held = max(
        engine.contracts,
        key=lambda s: sum(1 for st in engine.book_states() for p in st.positions if p.symbol == s),
    )
    replayed = Oracle(policy=policy)
    replayed.replay(path.read_text())
    seen = {"liquidations": 0, "warnings": 0}
    for move in ("-3%", "-8%", "+8%", "-0.15"):
        answer, printed = _shock_cli(path, [f"{held}={move}"], policy, tmp_path / "shock.json")
        amount = Decimal(move.removesuffix("%")) / (100 if move.endswith("%") else 1)
        by_engine, by_oracle = _append_ticks(path, policy, {held: amount}, replayed)
        _check_same(answer, by_engine)
        assert set(_outcomes(answer)) == set(by_oracle)
        for _kind, *entity in _outcomes(answer):
            assert entity[0] in printed
        seen["liquidations"] += len(answer["liquidations"])
        seen["warnings"] += len(answer["warnings"])
        assert answer["totals"]["liquidations"] == len(answer["liquidations"])
    assert seen["liquidations"] > 0
    assert seen["warnings"] > 0


def test_the_crash_shocked_on_both_symbols_at_once(tmp_path: Path) -> None:
    """Both symbols of the bundled crash moved together (their holders are disjoint, so the
    two ticks one after the other are the same question): the engine's and the oracle's
    events; the summary is printed first, then the answer, and an unknown symbol is refused
    by name."""
    moves = {"XRPUSDT": Decimal("-0.2"), "XRPUSD_PERP": Decimal("-0.2")}
    answer, printed = _shock_cli(
        CRASH,
        ["XRPUSDT=-20%", "XRPUSD_PERP=-20%", "NOPE=-1%"],
        "close",
        tmp_path / "shock.json",
    )
    by_engine, by_oracle = _append_ticks(CRASH, "close", moves)
    _check_same(answer, by_engine)
    assert set(_outcomes(answer)) == set(by_oracle)
    assert {o["account"] for o in answer["liquidations"]} == {"bob", "frank"}
    assert answer["refused"] == {"NOPE": "unknown_symbol"}
    assert answer["moves"] == {"XRPUSDT": -0.2, "XRPUSD_PERP": -0.2}
    assert printed.index("events      13") < printed.index("what-if")
    assert "NOPE: unknown_symbol" in printed


@pytest.mark.parametrize("bad", ["XRPUSDT", "XRPUSDT=", "XRPUSDT=-100%", "XRPUSDT=lots"])
def test_a_bad_shock_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    """A malformed ``--shock`` stops before replaying anything, with exit status 2."""
    result = cli_support.run(
        [*LIQMON, "replay", str(CRASH), "--out", str(tmp_path / "e.jsonl"), "--shock", bad],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "--shock" in result.stderr
    assert not (tmp_path / "e.jsonl").exists()
