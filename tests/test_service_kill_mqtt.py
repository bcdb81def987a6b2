"""``liqmon run`` killed with -9 while account records arrive over MQTT: compared with an
uninterrupted run, no alert is lost or written twice, and the broker retains the same state for
every entity (and none for an entity that is gone)."""

from __future__ import annotations

import argparse
import random
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.generate import START_TS, Market, Workload
from liqmon.broker import LocalBroker, free_port
from tests.mqtt_support import Collector
from tests.process_support import Liqmon
from tests.test_service import _alerts, _env

PREFIX = "liqmon/v1"
SENTINEL = b'{"type":"balance","ts":"end-of-stream","account":"mq-end","asset":"USDT","wallet":"1"}'
"""The last account message: refused (``invalid_field``), so its notice in the events file says
that every message before it was handled."""
MESSAGE_RATE = 120.0
"""Account messages published a second, in both runs (the pace changes nothing but when)."""


# -- the inputs ------------------------------------------------------------------------------


def _workload(path: Path, seed: int) -> list[Market]:
    """A small generated workload (contracts, 150 accounts, 6,000 ticks with jumps: about 150
    alerts, liquidations among them) written to ``path``; its markets at their first prices."""
    args = argparse.Namespace(
        accounts=150,
        far_accounts=0,
        ticks=6_000,
        symbols=12,
        inverse_share=0.25,
        record_every=40,
        jump_probability=0.01,
        seed=seed,
    )
    workload = Workload(args)
    markets = [
        Market(m.symbol, m.inverse, m.asset, m.contract_size, m.price, 0.0, m.brackets, [])
        for m in workload.markets
    ]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in workload.records()) + b"\n")
    return markets


@dataclass
class _Slot:
    """One position of an MQTT account, as the stream left it."""

    account: str
    market: Market
    side: str
    mode: str = "cross"
    qty: str = "0"
    margin: float = 0.0
    wallet: float = 0.0  # isolated


@dataclass
class _Stream:
    """The account messages (in publishing order) and what they leave open."""

    messages: list[bytes] = field(default_factory=list)
    slots: list[_Slot] = field(default_factory=list)

    def open_positions(self) -> dict[tuple[str, str, str], float]:
        """``(account, symbol, side) -> qty`` of every position the stream leaves open."""
        return {
            (s.account, s.market.symbol, s.side): float(s.qty) for s in self.slots if s.qty != "0"
        }

    def open_topics(self) -> set[str]:
        """The state topics of the entities the stream leaves open (no multi-assets here)."""
        return {
            f"{PREFIX}/state/{s.account}/cross/{s.market.asset}"
            if s.mode == "cross"
            else f"{PREFIX}/state/{s.account}/isolated/{s.market.symbol}/{s.side}"
            for s in self.slots
            if s.qty != "0"
        }


def _account_stream(markets: list[Market], contracts: list[bytes], seed: int) -> _Stream:
    """Account records for 40 accounts of their own (``mq-...``) on the workload's symbols, at
    1-2x leverage with deep collateral (a margin ratio near 0.01: no move of the run comes near
    an alert level): openings, re-sizes, mode switches, closes and re-openings, isolated margin
    moves (deltas: applied twice they would show) and wallet updates; then the closing of about
    a third of the positions (every position of ``mq-000`` among them), and the sentinel. The
    contracts come first (the same records as the file's), so that no message depends on how
    far the replay has got.

    A quarter of the accounts hold a symbol of their own that never ticks (valued at the entry
    price) and get no record after the first fifth of the updates: their states stop moving
    early, so a later restart has to publish them again by itself (nothing else would)."""
    rng = random.Random(f"{seed}-mqtt")
    model = next(i for i, m in enumerate(markets) if not m.inverse)
    quiet = replace(markets[model], symbol="MQQUIETUSDT")
    contract = {**orjson.loads(contracts[model]), "symbol": quiet.symbol}
    stream = _Stream(messages=[*contracts, orjson.dumps(contract)])
    ts = START_TS

    def send(record: dict[str, Any]) -> None:
        nonlocal ts
        ts += 1
        stream.messages.append(orjson.dumps({**record, "ts": ts}))

    def size(slot: _Slot) -> str:
        """A new quantity for ``slot`` (a notional of 300 to 10,000 USD), its margin set."""
        market = slot.market
        notional_usd = 10 ** rng.uniform(2.5, 4.0)
        if market.inverse:
            amount = float(max(1, round(notional_usd / market.contract_size)))
            notional = amount * market.contract_size / market.price
        else:
            amount = float(f"{notional_usd / market.price:.4g}")
            notional = amount * market.price
        slot.margin = notional / rng.uniform(1.0, 2.0)
        sign = {"long": 1, "short": -1}.get(slot.side, rng.choice((1, -1)))
        return f"{sign * amount:g}"

    def position(slot: _Slot, qty: str) -> None:
        market = slot.market
        slot.qty = qty
        record: dict[str, Any] = {
            "type": "position",
            "account": slot.account,
            "symbol": market.symbol,
            "side": slot.side,
            "mode": slot.mode,
            "qty": slot.qty,
            "entry": f"{market.price * (1 + rng.uniform(-0.002, 0.002)):.6g}",
            "leverage": "2",
        }
        if slot.mode == "isolated" and slot.qty != "0":
            slot.wallet = 3 * slot.margin
            record["isolated_wallet"] = f"{slot.wallet:.6g}"
        send(record)

    def balance(account: str, asset: str) -> None:
        margin = sum(
            s.margin
            for s in stream.slots
            if s.account == account and s.market.asset == asset and s.mode == "cross"
        )
        wallet = max(margin, 1.0) * rng.uniform(8.0, 12.0)
        send({"type": "balance", "account": account, "asset": asset, "wallet": f"{wallet:.6g}"})

    def resize(slot: _Slot) -> None:
        """A new size, the account's wallet in its asset raised to match first (cross)."""
        qty = size(slot)
        if slot.mode == "cross":
            balance(slot.account, slot.market.asset)
        position(slot, qty)

    for a in range(40):
        name = f"mq-{a:03d}"
        sides = ("long", "short") if rng.random() < 0.2 else ("both",)
        chosen = [quiet] if a % 4 == 3 else rng.sample(markets, rng.randint(1, 2))
        for market in chosen:
            mode = rng.choice(("cross", "isolated"))
            stream.slots.extend(_Slot(name, market, side, mode) for side in sides)
        mine = [s for s in stream.slots if s.account == name]
        sizes = [size(s) for s in mine]
        for asset in sorted({s.market.asset for s in mine}):  # the wallets first
            balance(name, asset)
        for s, qty in zip(mine, sizes, strict=True):
            position(s, qty)
    lively = [s for s in stream.slots if s.market is not quiet]
    for update in range(500):
        slot = rng.choice(stream.slots if update < 100 else lively)
        roll = rng.random()
        if slot.qty == "0":  # re-opened, now and then in the other mode
            if rng.random() < 0.3:
                slot.mode = "isolated" if slot.mode == "cross" else "cross"
            resize(slot)
        elif roll < 0.3:
            if rng.random() < 0.15:  # an open position moves to the other mode
                slot.mode = "isolated" if slot.mode == "cross" else "cross"
            resize(slot)
        elif roll < 0.45:
            position(slot, "0")
        elif roll < 0.8 and slot.mode == "isolated":
            delta = slot.margin * rng.uniform(-0.4, 0.6)
            if slot.wallet + delta < 1.5 * slot.margin:
                delta = -delta
            slot.wallet += delta
            send(
                {
                    "type": "margin",
                    "account": slot.account,
                    "symbol": slot.market.symbol,
                    "side": slot.side,
                    "delta": f"{delta:.6g}",
                }
            )
        else:
            balance(slot.account, slot.market.asset)
    for slot in lively:
        if slot.qty != "0" and (slot.account == "mq-000" or rng.random() < 0.3):
            position(slot, "0")
    stream.messages.append(SENTINEL)
    return stream


class _Publisher(threading.Thread):
    """Publishes the account messages at QoS 1 at :data:`MESSAGE_RATE`, whether liqmon is up
    or not: its persistent session (made before) has the broker queue them meanwhile."""

    def __init__(self, port: int, messages: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.messages = messages
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            feeder = Collector(self.port, [])
            started = time.monotonic()
            for i, message in enumerate(self.messages):
                time.sleep(max(0.0, started + i / MESSAGE_RATE - time.monotonic()))
                info = feeder.client.publish(f"{PREFIX}/in/records", message, qos=1)
                info.wait_for_publish(10)
            feeder.stop()
        except BaseException as exc:  # raised again by finish()
            self.error = exc

    def finish(self, timeout: float = 60.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the account messages are still being published"
        if self.error is not None:
            raise self.error


def _make_input_session(port: int) -> None:
    """liqmon's persistent input session, made in advance: the broker queues what follows."""
    Collector(port, [f"{PREFIX}/in/#"], client_id="liqmon-svc-in", persistent=True).stop()


# -- watching a run --------------------------------------------------------------------------


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _answers(port: int) -> bool:
    """Whether the ops endpoint answers at all (it starts once the state is restored)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _sentinel_handled(out: Path) -> bool:
    if not out.exists():
        return False
    return any(
        b'"input_rejected"' in line and b"end-of-stream" in line
        for line in out.read_bytes().splitlines()
    )


ENV = _env(
    LIQMON_LOG__LEVEL="info",  # for replay_source_finished
    LIQMON_STATE__SNAPSHOT_INTERVAL_S="0.5",  # restarts from a snapshot and a journal
    # every move of a ratio republishes the state, so that the retained state is the entity's
    # final state in both runs (with the default 5 % a state lags by up to that much, and a
    # restart, which republishes every state, would legitimately show a fresher one)
    LIQMON_ENGINE__STATE_MOVE="0.000000001",
    # a publishing budget well below what the book needs (about 400 entities): every kill
    # comes while states wait for their turn, states the restart must not take as published
    LIQMON_MQTT__STATE_RATE="100",
)


def _spawn(source: Path, state: Path, out: Path, broker: LocalBroker, port: int) -> Liqmon:
    return Liqmon(
        "run",
        "--replay",
        str(source),
        "--speed",
        "6",
        "--out",
        str(out),
        "--state-dir",
        str(state),
        "--http-port",
        str(port),
        "--mqtt",
        broker.url,
        env=ENV,
    )


def _finish(run: Liqmon, out: Path, publisher: _Publisher, port: int) -> None:
    """Let ``run`` apply the whole replay and every account message, then stop it (SIGTERM:
    the graceful stop that finishes the state sweep with no budget)."""
    run.wait_for_line(lambda line: "replay_source_finished" in line, timeout=120)
    publisher.finish()
    _wait(lambda: _sentinel_handled(out), "the last account message", timeout=60)
    assert _ready(port)  # connected: the graceful stop can reach the broker
    assert run.stop(signal.SIGTERM, timeout=60) == 0, run.output()[-3000:]


# -- reading the broker ----------------------------------------------------------------------


def _retained_states(broker: LocalBroker) -> dict[str, dict[str, Any]]:
    """Every retained state on the broker, by topic, read by a fresh subscriber: the broker
    sends the retained messages right after the subscription, before a message published
    afterwards on the same connection, so the marker's arrival means they all came."""
    marker = "test/retained-read"
    reader = Collector(broker.port, [f"{PREFIX}/state/#", marker])
    reader.client.publish(marker, b"x", qos=1).wait_for_publish(10)
    reader.wait_until(lambda got: any(g.topic == marker for g in got), timeout=20)
    reader.stop()
    states: dict[str, dict[str, Any]] = {}
    for got in reader.messages:
        if got.topic == marker:
            continue
        assert got.retain, got.topic
        body = got.body
        assert body is not None, got.topic  # a cleared state is not retained at all
        states[got.topic] = body
    return states


def _entity(body: dict[str, Any]) -> dict[str, Any]:
    """What a retained state says about its entity. Left out:

    * ``ts``: the engine's clock when the state sweep built the message, which depends on when
      the sweep ran between inputs (and a restart republishes every state at its own time);
    * ``id``: a digest of the rest of the body, ``ts`` included.
    """
    return {k: v for k, v in body.items() if k not in ("id", "ts")}


def _differences(a: Any, b: Any, where: str) -> list[str]:
    """Where ``a`` and ``b`` differ. Numbers too must be equal to the last bit: both runs value
    an entity in the same array pass over its rows, in the same order (its own records')."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, pair in enumerate(zip(a, b, strict=True))
            for d in _differences(*pair, f"{where}[{i}]")
        ]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


# -- the test --------------------------------------------------------------------------------


def _uninterrupted(
    source: Path, stream: _Stream, directory: Path
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The events file's alert ids and the retained states of a run that nothing interrupts."""
    out = directory / "events.jsonl"
    with LocalBroker() as broker:
        _make_input_session(broker.port)
        port = free_port()
        run = _spawn(source, directory / "state", out, broker, port)
        try:
            publisher = _Publisher(broker.port, stream.messages)
            publisher.start()
            _finish(run, out, publisher, port)
        finally:
            run.stop(signal.SIGKILL)  # only if the test failed: it has stopped by now
        return [str(e["id"]) for e in _alerts(out)], _retained_states(broker)


def _check_account_states(states: dict[str, dict[str, Any]], stream: _Stream) -> None:
    """The retained states of the ``mq`` accounts are those of the positions the account
    messages leave open, no more (a gone entity is cleared) and no fewer, each with its
    quantity; and no retained state is of an entity without positions."""
    assert all(body["positions"] for body in states.values())
    mine = {t: b for t, b in states.items() if b["account"].startswith("mq-")}
    assert sorted(mine) == sorted(stream.open_topics())
    shown = {
        (body["account"], p["symbol"], p["side"]): p["qty"]
        for body in mine.values()
        for p in body["positions"]
    }
    assert shown == stream.open_positions()


@pytest.mark.parametrize("seed", [5, *(pytest.param(s, marks=pytest.mark.slow) for s in (6, 7))])
def test_kill_9_with_account_records_over_mqtt_keeps_alerts_and_retained_state(
    tmp_path: Path, seed: int
) -> None:
    """Five ``kill -9`` of ``liqmon run`` at random points (two in start-up: at a random
    moment of its start, and once its ops endpoint answers, the state restored and the sinks
    being given what they missed, before it is ready; one just after it is ready, while the
    messages queued meanwhile arrive; two later), with account records arriving over MQTT at a
    steady pace all along, whether liqmon is up or not; then a last run to the end, stopped
    gracefully. Compared with an uninterrupted run on a broker of its own: the same
    alerts in the events file, in order, none twice; and on the broker, the same retained
    state for every entity, and none for an entity that is gone.

    Why the two runs must agree although the messages come by wall clock: the replay and the
    account messages never touch the same entity. The messages are for accounts of their own
    (``mq-...``) that never come near an alert level, on the replay's symbols; they start with
    the contracts (the same records as the file's, so they apply wherever the replay is), and
    they arrive in the one order they were published. So every alert (and every event id, which
    counts the alerts before it) comes from the file alone, in file order; an ``mq`` entity's
    final state is a function of its last records and the final marks, whenever the records
    came. The retained states are compared on what they say of the entity, with
    ``state_move`` at 1e-9 so that every entity's retained state is its final one (with the
    default 5 %, a state may lag by that much, and a restart republishes every state fresh).
    The stop is SIGTERM once the run has read the whole file and handled the last message (its
    refusal is in the events file): ``--exit-at-end`` would stop at the end of the file
    whether or not the broker still held messages for it.
    """
    source = tmp_path / "workload.jsonl"
    markets = _workload(source, seed)
    contracts = source.read_bytes().splitlines()[: len(markets)]
    assert all(b'"contract"' in c for c in contracts)
    stream = _account_stream(markets, contracts, seed)
    whole = tmp_path / "whole"
    want_ids, want_states = _uninterrupted(source, stream, whole)
    # the premise: every alert comes from the file
    assert not any(str(e["account"]).startswith("mq-") for e in _alerts(whole / "events.jsonl"))
    assert len(want_ids) > 100
    _check_account_states(want_states, stream)

    rng = random.Random(seed)
    kinds = ["starting", "answering", "ready", "running", "running"]
    rng.shuffle(kinds)
    state, out = tmp_path / "broken" / "state", tmp_path / "broken" / "events.jsonl"
    killed_before_ready = 0
    with LocalBroker() as broker:
        _make_input_session(broker.port)
        publisher = _Publisher(broker.port, stream.messages)
        for kind in kinds:
            port = free_port()
            run = _spawn(source, state, out, broker, port)
            try:
                if not publisher.ident:
                    publisher.start()
                if kind == "starting":
                    time.sleep(rng.uniform(0.05, 0.3))
                elif kind == "answering":
                    _wait(lambda: _answers(port), "the ops endpoint")  # noqa: B023  # called here
                else:
                    _wait(lambda: _ready(port), "readiness")  # noqa: B023
                    time.sleep(rng.uniform(0.0, 0.05) if kind == "ready" else rng.uniform(0.1, 1.2))
                killed_before_ready += kind in ("starting", "answering") and not _ready(port)
            finally:
                run.stop(signal.SIGKILL)
        port = free_port()
        last = _spawn(source, state, out, broker, port)
        try:
            _finish(last, out, publisher, port)
        finally:
            last.stop(signal.SIGKILL)  # only if the test failed: it has stopped by now
        got_states = _retained_states(broker)
    assert killed_before_ready >= 1

    # the alerts: all of the file's, in its order, none twice
    got_ids = [str(e["id"]) for e in _alerts(out)]
    assert len(set(got_ids)) == len(got_ids)
    assert got_ids == want_ids

    # the retained states: the same entities, each the same
    assert sorted(got_states) == sorted(want_states), (
        f"only after the kills: {sorted(set(got_states) - set(want_states))[:10]}; "
        f"only without: {sorted(set(want_states) - set(got_states))[:10]}"
    )
    differences = [
        d
        for topic in sorted(want_states)
        for d in _differences(_entity(got_states[topic]), _entity(want_states[topic]), topic)
    ]
    assert not differences, "\n".join(differences[:20])
    _check_account_states(got_states, stream)
