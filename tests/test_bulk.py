"""Bulk loading (``monitor.bulk``) is an optimisation only: a run of account records loaded in
one pass gives exactly what applying the records one by one gives — the same events (payloads,
ids, order), the same refusals, and the same book, laid out row for row (so a restart that
re-applies a journal record by record rebuilds the very arrays a bulk-loaded run holds)."""

from __future__ import annotations

import argparse
import random
from contextlib import suppress
from decimal import Decimal
from typing import Any

import orjson
import pytest

from bench.generate import Workload
from feeds.batches import AccountRun, OneRecord, Refused, TickRun, decode_buffer
from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, RecordRefused, to_payload
from monitor.bulk import apply_batch
from monitor.events import EngineEvent
from monitor.snapshot import export_state


def _lines(seed: int, accounts: int, far: int, ticks: int, symbols: int = 16) -> list[bytes]:
    args = argparse.Namespace(
        accounts=accounts,
        far_accounts=far,
        ticks=ticks,
        symbols=symbols,
        inverse_share=0.25,
        record_every=30,
        jump_probability=0.003,
        seed=seed,
    )
    return [orjson.dumps(record) for record in Workload(args).records()]


def _shuffled_accounts(lines: list[bytes], seed: int) -> list[bytes]:
    """The workload's account records with trouble mixed in: closes, repeated slots, unknown
    symbols, side/qty mismatches, balances after positions, re-opened slots, underwater
    positions (which warn or liquidate at once)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for line in lines:
        obj = orjson.loads(line)
        if obj["type"] not in ("position", "balance"):
            out.append(line)
            continue
        out.append(line)
        roll = rng.random()
        if obj["type"] == "position" and roll < 0.03:
            out.append(orjson.dumps({**obj, "qty": "0"}))  # close at once
        elif obj["type"] == "position" and roll < 0.06:
            out.append(line)  # the same slot again
        elif obj["type"] == "position" and roll < 0.08:
            out.append(orjson.dumps({**obj, "symbol": "NOPEUSDT"}))
        elif obj["type"] == "position" and roll < 0.10:
            out.append(orjson.dumps({**obj, "side": "long", "qty": "-1"}))
        elif obj["type"] == "position" and roll < 0.13:
            # opened underwater: the wallet covers a tenth of the margin
            if obj["mode"] == "isolated":
                wallet = Decimal(obj["isolated_wallet"]) / 10
                out.append(orjson.dumps({**obj, "isolated_wallet": str(wallet)}))
        elif obj["type"] == "balance" and roll < 0.2:
            out.append(orjson.dumps({**obj, "wallet": str(Decimal(obj["wallet"]) / 7)}))
    return out


def _one_by_one(engine: Engine, records: list[Any]) -> tuple[list[Any], list[Any]]:
    events: list[EngineEvent] = []
    refused: list[tuple[int, str]] = []
    for i, record in enumerate(records):
        try:
            events.extend(engine.apply(record))
        except RecordRefused as exc:
            refused.append((i, exc.reason))
    return [_plain(e) for e in events], refused


def _plain(event: EngineEvent) -> Any:
    return to_payload(event) if hasattr(event, "id") else event  # type: ignore[arg-type]


def _run(config: EngineConfig, lines: list[bytes]) -> tuple[Engine, Engine, list[Any], list[Any]]:
    """Replay ``lines`` on two engines: account runs in bulk on the first, record by record on
    the second; ticks and other records alike on both. Returns both and both outcomes."""
    bulk, single = Engine(config), Engine(config)
    outcome_bulk: list[Any] = []
    outcome_single: list[Any] = []
    data = b"\n".join(lines) + b"\n"
    for item in decode_buffer(data, 1):
        if isinstance(item, AccountRun):
            events, refused = apply_batch(bulk, item.batch)
            outcome_bulk.append(([_plain(e) for e in events], [(i, r.reason) for i, r in refused]))
            records = [item.batch.record(i) for i in range(len(item.batch))]
            outcome_single.append(_one_by_one(single, records))
        elif isinstance(item, TickRun):
            for engine, outcome in ((bulk, outcome_bulk), (single, outcome_single)):
                events, dropped = engine.apply_ticks(
                    item.symbols, item.marks, item.texts, item.stamps
                )
                outcome.append(([_plain(e) for e in events], [(i, d.reason) for i, d in dropped]))
        elif isinstance(item, OneRecord):
            for engine, outcome in ((bulk, outcome_bulk), (single, outcome_single)):
                with suppress(RecordRefused):
                    outcome.append([_plain(e) for e in engine.apply(item.record)])
        else:
            assert isinstance(item, Refused)
    return bulk, single, outcome_bulk, outcome_single


@pytest.mark.parametrize(
    ("seed", "policy", "state_move", "trouble"),
    [
        (1, "close", None, False),
        (2, "hold", None, True),
        (3, "close", None, True),
        (4, "close", "0.05", True),
        (5, "hold", "0.1", False),
    ],
)
def test_bulk_loading_equals_one_by_one(
    seed: int, policy: str, state_move: str | None, trouble: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events, refusals and the book (every column, bands aside) are identical, on workloads
    with loads before any mark, records between ticks, and troublesome records mixed in; and
    the bulk path did load most of the opening (without state tracking, which publishes a state
    at every first evaluation and so sends every record one by one)."""
    from monitor import bulk as bulk_module

    loaded = [0]
    original = bulk_module._load

    def counting(engine: Engine, batch: Any, start: int, stop: int) -> None:
        loaded[0] += stop - start
        original(engine, batch, start, stop)

    monkeypatch.setattr(bulk_module, "_load", counting)
    lines = _lines(seed, accounts=600, far=300, ticks=3000)
    if trouble:
        lines = _shuffled_accounts(lines, seed)
    config = EngineConfig.from_values(policy=policy, state_move=state_move)
    bulk, single, outcome_bulk, outcome_single = _run(config, lines)
    assert outcome_bulk == outcome_single
    assert export_state(bulk).without_bands() == export_state(single).without_bands()
    assert bulk.evaluations == single.evaluations
    assert sum(len(o[0]) for o in outcome_bulk if isinstance(o, tuple)) > 10  # events happened
    if state_move is None:
        assert loaded[0] > 1000
    else:
        assert loaded[0] == 0


def test_accounts_loaded_after_the_marks_are_valued_at_the_marks() -> None:
    """Accounts that arrive once every symbol is marked (a service seeded mid-run) are loaded in
    bulk at those marks, with the events one by one gives (some open underwater)."""
    lines = _lines(6, accounts=400, far=0, ticks=2000)
    ticks = [line for line in lines if b'"type":"tick"' in line]
    others = [line for line in lines if b'"type":"tick"' not in line]
    contracts = [line for line in others if b'"type":"contract"' in line]
    accounts = _shuffled_accounts([line for line in others if line not in contracts], 6)
    bulk, single, outcome_bulk, outcome_single = _run(
        EngineConfig(), [*contracts, *ticks, *accounts]
    )
    assert outcome_bulk == outcome_single
    assert export_state(bulk).without_bands() == export_state(single).without_bands()
    assert any(o[0] for o in outcome_bulk if isinstance(o, tuple))


def test_the_bulk_path_really_loads_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load of quiet new accounts takes the bulk path for nearly every record (the test of
    equality above would pass vacuously if everything fell back to one by one)."""
    from monitor import bulk as bulk_module

    loaded = [0]
    original = bulk_module._load

    def counting(engine: Engine, batch: Any, start: int, stop: int) -> None:
        loaded[0] += stop - start
        original(engine, batch, start, stop)

    monkeypatch.setattr(bulk_module, "_load", counting)
    lines = _lines(7, accounts=50, far=2000, ticks=10)
    engine = Engine()
    total = 0
    for item in decode_buffer(b"\n".join(lines) + b"\n", 1):
        if isinstance(item, AccountRun):
            apply_batch(engine, item.batch)
            total += len(item.batch)
        elif isinstance(item, OneRecord):
            engine.apply(item.record)
    assert total > 5000
    assert loaded[0] > 0.9 * total


def test_parse_line_and_batch_records_agree() -> None:
    """``AccountBatch.record`` rebuilds the record the line parser gives for the same line."""
    lines = [line for line in _lines(8, accounts=100, far=0, ticks=0) if b'"contract"' not in line]
    (run,) = [i for i in decode_buffer(b"\n".join(lines) + b"\n", 1) if isinstance(i, AccountRun)]
    assert [run.batch.record(i) for i in range(len(run.batch))] == [parse_line(x) for x in lines]
