"""The engine agrees with an independent exact oracle (``tests/oracle.py``) on random scenarios.

``tests/scenarios.py`` generates seeded normalized replays; the engine (through its public API
and through ``liqmon replay``) and the oracle apply them and must agree line by line: the same
refusal class (malformed / rejected / dropped; a no-op may be either applied or rejected), the
same events in the same order with the same kind, account, scope, asset, symbol, side, ts and
level and the same payload keys, and every number equal within a relative tolerance of 1e-9
(``REL``). The absolute floor ``ABS`` = 1e-24 (margin-asset or price units) only matters for
exact zeros and for the margin balances the probes cancel on purpose down to ~1e-24 of the
wallet; above it the check is purely relative (a tiny margin balance computed inexactly still
shows in ``margin_ratio`` = MM/MB). Event ids are not compared (they are the engine's hashes)
but must be unique within a replay and stable across replays (API vs CLI).

A disagreement is reported as the seed, the configuration, the first differing input line, what
differs, and both payloads.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from collections import Counter
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from feeds.normalized import parse_line
from monitor import (
    Engine,
    EngineConfig,
    MalformedRecord,
    RecordRefused,
    RecordRejected,
    TickDropped,
    to_payload,
)
from tests import cli_support
from tests.oracle import Contract, Oracle, Position, Tier
from tests.scenarios import generate

REL = 1e-9
ABS = 1e-24
SETTINGS = [
    ("0.7,0.8,0.9", "0.05"),  # the defaults
    ("0.5,0.75,0.9,0.95", "0.02"),
    ("0.85", "0"),  # one level, no hysteresis
]
POLICIES = ["close", "hold"]
FAST_SEEDS = range(40)
SLOW_SEEDS = range(40, 500)
CLI = Path(sys.executable).with_name("liqmon")

Line = tuple[str, list[dict[str, Any]]]  # (status, payloads) of one input line
scenario = cache(generate)  # each scenario is replayed under 6 configurations


def engine_run(text: str, levels: str, hysteresis: str, policy: str) -> list[Line]:
    """Apply ``text`` line by line through the public API; status is the refusal class."""
    engine = Engine(EngineConfig.from_values(levels=levels, hysteresis=hysteresis, policy=policy))
    out: list[Line] = []
    for line in text.splitlines():
        try:
            events = [to_payload(e) for e in engine.apply(parse_line(line))]
        except MalformedRecord:
            out.append(("malformed", []))
        except RecordRejected:
            out.append(("rejected", []))
        except TickDropped:
            out.append(("dropped", []))
        except RecordRefused:
            out.append(("refused", []))
        else:
            out.append(("applied", events))
    return out


def oracle_run(text: str, levels: str, hysteresis: str, policy: str) -> list[Line]:
    oracle = Oracle(levels, hysteresis, policy)
    return [(o.status, o.events) for o in oracle.replay(text)]


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not (isinstance(a, int | float) and isinstance(b, int | float)):
        return False
    return math.isfinite(a) and abs(a - b) <= REL * max(abs(a), abs(b)) + ABS


EXACT = ("event", "ts", "account", "scope", "asset", "symbol", "side", "level")


def payload_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Differences between an engine payload and an oracle payload (empty when they agree)."""
    problems = []
    keys = set(got) - {"id"}
    if keys != set(want):
        problems.append(f"keys: engine-only {keys - set(want)}, oracle-only {set(want) - keys}")
    for key in sorted(keys & set(want)):
        g, w = got[key], want[key]
        if key in EXACT:
            if g != w or type(g) is not type(w):
                problems.append(f"{key}: {g!r} != {w!r}")
        elif key == "positions":
            if len(g) != len(w):
                problems.append(f"positions: {len(g)} != {len(w)}")
                continue
            for i, (gp, wp) in enumerate(zip(g, w, strict=True)):
                if set(gp) != set(wp):
                    problems.append(f"positions[{i}] keys {sorted(gp)} != {sorted(wp)}")
                for pk in sorted(set(gp) & set(wp)):
                    same = gp[pk] == wp[pk] if pk in ("symbol", "side") else close(gp[pk], wp[pk])
                    if not same:
                        problems.append(f"positions[{i}].{pk}: {gp[pk]!r} != {wp[pk]!r}")
        elif not close(g, w):
            problems.append(f"{key}: {g!r} != {w!r}")
    return problems


def first_disagreement(text: str, got: list[Line], want: list[Line]) -> str | None:
    """A minimal report of the first line where engine and oracle differ, or None."""
    lines = text.splitlines()
    for n, (line, (gs, ge), (ws, we)) in enumerate(zip(lines, got, want, strict=True), 1):
        # a no-op (qty 0 on an empty slot) may be accepted or refused, but has no events
        status_ok = gs == ws or (ws == "noop" and gs in ("applied", "rejected"))
        problems = [] if status_ok else [f"status: engine {gs}, oracle {ws}"]
        if len(ge) != len(we):
            problems.append(f"{len(ge)} engine events, {len(we)} oracle events")
        else:
            for i, (g, w) in enumerate(zip(ge, we, strict=True)):
                problems += [f"event {i}: {p}" for p in payload_diff(g, w)]
        if problems:
            show = "\n".join(
                [f"line {n}: {line}", *problems]
                + [f"  engine: {json.dumps(e)}" for e in ge]
                + [f"  oracle: {json.dumps(e)}" for e in we]
            )
            return show
    return None


def check_ids(lines: list[Line]) -> None:
    ids = [e["id"] for _, events in lines for e in events]
    assert all(isinstance(i, str) and i for i in ids)
    dupes = [i for i, c in Counter(ids).items() if c > 1]
    assert not dupes, f"duplicate event ids: {dupes[:5]}"


def disagreement(seed: int, levels: str, hysteresis: str, policy: str) -> str | None:
    """Replay scenario ``seed`` through the engine and the oracle: None when they agree (and
    the engine's ids are unique), else a minimal report of the first differing line."""
    text = scenario(seed)
    got = engine_run(text, levels, hysteresis, policy)
    want = oracle_run(text, levels, hysteresis, policy)
    diff = first_disagreement(text, got, want)
    if diff is not None:
        return f"seed {seed} levels {levels} hysteresis {hysteresis} policy {policy}\n{diff}"
    check_ids(got)
    return None


def assert_seeds_agree(seeds: range, levels: str, hysteresis: str, policy: str) -> None:
    """Every seed agrees; on failure, name every failing seed and show the first diff."""
    failures = {s: d for s in seeds if (d := disagreement(s, levels, hysteresis, policy))}
    if failures:
        first = next(iter(failures.values()))
        pytest.fail(f"seeds {sorted(failures)} disagree; the first:\n{first}", pytrace=False)


# ---------------------------------------------------------------------------------------------
# The oracle itself reproduces docs/margin.md's published numbers (so agreeing with it counts)


def _single_tier(kind: str, size: str, mmr: str, cum: str) -> Contract:
    tier = Tier(Fraction(0), Fraction(10**12), Fraction(mmr), Fraction(cum))
    return Contract("S", kind, "A", Fraction(size), (tier,))


def _isolated_prices(
    contract: Contract, qty: str, entry: str, wallet: str
) -> tuple[Fraction | None, Fraction | None]:
    oracle = Oracle()
    oracle.contracts["S"] = contract
    pos = Position("a", "S", "both", "isolated", Fraction(qty), Fraction(entry), Fraction(wallet))
    lp = oracle.solve([pos], Fraction(wallet), "S", maintenance=True)
    bp = oracle.solve([pos], Fraction(wallet), "S", maintenance=False)
    return lp, bp


@pytest.mark.parametrize(
    ("qty", "entry", "mmr", "cum", "lp", "bp"),
    [
        ("3683.979", "1456.84", "0.10", "135365", 1114.7849637, 1040.05),
        ("109.488", "32481.98", "0.025", "16300", 18778.7259322, 18458.13),
    ],
)
def test_oracle_reproduces_binance_faq_prices(
    qty: str, entry: str, mmr: str, cum: str, lp: float, bp: float
) -> None:
    """docs/margin.md's Binance FAQ isolated examples: the oracle's LP and BP are Binance's."""
    got_lp, got_bp = _isolated_prices(
        _single_tier("linear", "1", mmr, cum), qty, entry, "1535443.01"
    )
    assert got_lp is not None
    assert got_bp is not None
    assert float(got_lp) == pytest.approx(lp, abs=1e-7)
    assert float(got_bp) == pytest.approx(bp, abs=0.005)


@pytest.mark.parametrize(
    ("side", "leverage", "entry", "qty", "lp"),
    [
        (-1, 5, "10", "1.0", 11.89108910891089),
        (-1, 3, "10", "1.0", 13.2112211221122),
        (-1, 5, "8", "1.0", 9.514851485148514),
        (-1, 5, "10", "0.6", 11.897689768976898),
        (1, 5, "10", "1.0", 8.070707070707071),
        (1, 5, "8", "1.0", 6.454545454545454),
        (1, 3, "10", "1.0", 6.723905723905723),
        (1, 5, "10", "0.6", 8.063973063973064),
    ],
)
def test_oracle_reproduces_freqtrade_prices(
    side: int, leverage: int, entry: str, qty: str, lp: float
) -> None:
    """docs/margin.md's freqtrade table (mmr 0.01, cum 0.01, WB = q·EP/leverage)."""
    wallet = Fraction(qty) * Fraction(entry) / leverage
    signed = str(side * Fraction(qty))
    got, _ = _isolated_prices(
        _single_tier("linear", "1", "0.01", "0.01"), signed, entry, str(wallet)
    )
    assert got is not None
    assert float(got) == pytest.approx(lp, rel=1e-12)


def test_oracle_coinm_maintenance_example() -> None:
    """docs/margin.md's COIN-M example: 100 BTCUSD contracts at 25,000 → 0.4 BTC, MM 0.0016 BTC."""
    contract = _single_tier("inverse", "100", "0.004", "0")
    assert contract.notional(Fraction(100), Fraction(25000)) == Fraction("0.4")
    assert contract.maintenance(Fraction(100), Fraction(25000)) == Fraction("0.0016")


def test_oracle_liquidation_price_is_exactly_where_mb_equals_mm() -> None:
    """At the LP the oracle solves for a hedged cross entity, MM/MB is exactly 1."""
    text = generate(3)
    oracle = Oracle()
    oracle.replay(text)
    checked = 0
    for key in sorted({oracle._key(p) for p in oracle.slots.values()}):
        members = oracle._members(key)
        wallet = oracle._wallet(key, members)
        for symbol in sorted({p.symbol for p in members}):
            lp = oracle.solve(members, wallet, symbol, maintenance=True)
            if lp is None:
                continue
            saved = oracle.marks.get(symbol)
            oracle.marks[symbol] = (0, lp)
            mb = wallet + sum((oracle._upnl(p) for p in members), Fraction(0))
            mm = sum((oracle._mm(p) for p in members), Fraction(0))
            assert mb == mm
            checked += 1
            if saved is None:
                del oracle.marks[symbol]
            else:
                oracle.marks[symbol] = saved
    assert checked > 0


# ---------------------------------------------------------------------------------------------
# Minimal reproductions of where the engine and the oracle part (see the module docstring)

_LINEAR_X = (
    '{"type":"contract","symbol":"X","kind":"linear","margin_asset":"USDT","contract_size":"1",'
    '"brackets":[{"floor":"0","cap":"1000000","mmr":"0.01","cum":"0"}]}'
)
_INVERSE_X = (
    '{"type":"contract","symbol":"X","kind":"inverse","margin_asset":"BTC","contract_size":"1",'
    '"brackets":[{"floor":"0","cap":"1000000","mmr":"0.01","cum":"0"}]}'
)


def _isolated_short(wallet: str) -> str:
    return (
        '{"type":"position","ts":2,"account":"a","symbol":"X","side":"both","mode":"isolated",'
        f'"qty":"-1","entry":"1","leverage":"5","isolated_wallet":"{wallet}"}}'
    )


def _both(lines: list[str], policy: str = "close") -> tuple[list[Line], list[Line]]:
    text = "\n".join(lines)
    return engine_run(text, "0.7,0.8,0.9", "0.05", policy), oracle_run(
        text, "0.7,0.8,0.9", "0.05", policy
    )


def test_identical_events_get_distinct_ids() -> None:
    """Under ``hold`` the same entity can be liquidated twice at the same ts with the same
    numbers (a balance record re-sets the same wallet): the two events still differ in id."""
    lines = [
        _LINEAR_X,
        '{"type":"balance","ts":1,"account":"a","asset":"USDT","wallet":"0.5"}',
        '{"type":"position","ts":1,"account":"a","symbol":"X","side":"both","mode":"cross",'
        '"qty":"1","entry":"100","leverage":"5"}',
        '{"type":"balance","ts":1,"account":"a","asset":"USDT","wallet":"0.5"}',
    ]
    got, want = _both(lines, "hold")
    diff = first_disagreement("\n".join(lines), got, want)
    assert diff is None, diff
    assert [e["event"] for _, events in got for e in events] == ["liquidation"] * 2
    check_ids(got)


def test_long_json_number_is_read_from_its_text() -> None:
    """A bare JSON number with more digits than a double holds is the decimal it spells."""
    lines = [
        _LINEAR_X,
        '{"type":"balance","ts":1,"account":"a","asset":"USDT","wallet":1.00000000000000000001}',
        '{"type":"position","ts":1,"account":"a","symbol":"X","side":"both","mode":"cross",'
        '"qty":"1","entry":"100","leverage":"5"}',
    ]
    got, want = _both(lines)
    assert [e["event"] for e in want[-1][1]] == ["margin_warning"]
    diff = first_disagreement("\n".join(lines), got, want)
    assert diff is None, diff


@pytest.mark.parametrize(
    ("mark", "wallet", "event"),
    [
        # MB − MM = W − 601/700 = −1.4e-30 < 0 (29-digit wallet): liquidation, not a warning
        ("7", "0.85857142857142857142857142857", "liquidation"),
        # MB = W − 2/3 = 3.3333333333333335e-25: reported to the last bit (margin_ratio 1e22)
        ("3", "0.666666666666666666666667", "liquidation"),
    ],
)
def test_short_inverse_amounts_are_exact(mark: str, wallet: str, event: str) -> None:
    """A short inverse position's amounts are exact, however long the wallet (regression:
    a unary minus once rounded a short's uPnL to 28 digits, fixed in 4761d3c)."""
    lines = [_INVERSE_X, f'{{"type":"tick","ts":1,"symbol":"X","mark":"{mark}"}}']
    got, want = _both([*lines, _isolated_short(wallet)])
    assert [e["event"] for e in want[-1][1]] == [event]
    diff = first_disagreement("\n".join([*lines, _isolated_short(wallet)]), got, want)
    assert diff is None, diff


@pytest.mark.parametrize("wallet", ["9.01", "9"])
def test_inverse_amounts_are_exact_with_recurring_reciprocals(wallet: str) -> None:
    """Amounts built from 1/entry and 1/mark are exact even when those reciprocals recur."""
    lines = [
        _INVERSE_X,
        '{"type":"tick","ts":1,"symbol":"X","mark":"7"}',
        '{"type":"position","ts":2,"account":"a","symbol":"X","side":"both","mode":"isolated",'
        f'"qty":"-7","entry":"0.7","leverage":"5","isolated_wallet":"{wallet}"}}',
    ]
    got, want = _both(lines)
    assert [e["event"] for e in want[-1][1]] == ["liquidation"]
    diff = first_disagreement("\n".join(lines), got, want)
    assert diff is None, diff


# ---------------------------------------------------------------------------------------------
# Agreement


def test_scenarios_exercise_every_event_kind() -> None:
    """The generated scenarios are not vacuous: every event kind and refusal class occurs,
    liquidations with and without shortfall, and the probes land exactly on thresholds
    (warnings whose ratio is exactly their level, liquidations at MB = MM and at MB = 0)."""
    c: Counter[str] = Counter()
    for seed in range(20):
        for outcome in Oracle().replay(scenario(seed)):
            c[outcome.status] += 1
            for e in outcome.events:
                c[e["event"]] += 1
                c["shortfall"] += e.get("shortfall", 0) > 0
                c["warning at its level"] += e.get("level") == e["margin_ratio"]
                c["MB = MM"] += e["event"] == "liquidation" and e["margin_ratio"] == 1.0
                c["MB = 0"] += e["event"] == "liquidation" and e["margin_balance"] == 0.0
                c["hedged cross"] += len({p["side"] for p in e.get("positions", [])}) == 2
    assert min(c[k] for k in ("margin_warning", "margin_recovered", "liquidation")) >= 50, c
    assert min(c[k] for k in ("applied", "dropped", "rejected", "malformed", "noop")) > 0, c
    assert c["liquidation"] - c["shortfall"] >= 20, c
    assert min(c[k] for k in ("shortfall", "warning at its level", "MB = MM", "MB = 0")) >= 3, c
    assert c["hedged cross"] >= 10, c


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("levels", "hysteresis"), SETTINGS)
def test_engine_agrees_with_oracle(levels: str, hysteresis: str, policy: str) -> None:
    """On 40 seeded scenarios the engine's events equal the oracle's, line by line."""
    assert_seeds_agree(FAST_SEEDS, levels, hysteresis, policy)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("levels", "hysteresis"), SETTINGS)
def test_engine_agrees_with_oracle_many_seeds(levels: str, hysteresis: str, policy: str) -> None:
    """The same on 460 more seeds."""
    assert_seeds_agree(SLOW_SEEDS, levels, hysteresis, policy)


def cli_events(tmp_path: Path, seed: int, name: str, flags: list[str]) -> list[dict[str, Any]]:
    """Run ``liqmon replay`` on scenario ``seed`` written to ``name`` (gzipped if .gz)."""
    replay = tmp_path / name
    data = scenario(seed).encode()
    replay.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    out = tmp_path / f"events-{name}.jsonl"
    cmd = [str(CLI), "replay", str(replay), "--out", str(out), *flags]
    cli_support.run(cmd, check=True, capture_output=True)
    return [json.loads(x) for x in out.read_text().splitlines()]


def assert_same_events(seed: int, got: list[dict[str, Any]], want: list[Line]) -> None:
    flat = [e for _, events in want for e in events]
    assert len(got) == len(flat), f"seed {seed}: {len(got)} vs {len(flat)} events"
    for i, (g, w) in enumerate(zip(got, flat, strict=True)):
        assert not payload_diff(g, w), f"seed {seed} event {i}: {payload_diff(g, w)}"


@pytest.mark.parametrize("policy", POLICIES)
def test_cli_replay_agrees_with_oracle(tmp_path: Path, policy: str) -> None:
    """``liqmon replay FILE --out`` (plain and ``.gz``) writes the oracle's events, with the
    same ids as the API run of the same file (ids are stable across replays)."""
    levels, hysteresis = SETTINGS[1]
    flags = ["--levels", levels, "--hysteresis", hysteresis, "--policy", policy]
    for seed, name in ((7, "s7.jsonl"), (8, "s8.jsonl.gz")):
        got = cli_events(tmp_path, seed, name, flags)
        assert_same_events(seed, got, oracle_run(scenario(seed), levels, hysteresis, policy))
        api = engine_run(scenario(seed), levels, hysteresis, policy)
        assert [e["id"] for e in got] == [e["id"] for _, events in api for e in events]


def test_cli_replay_defaults_are_the_spec_defaults(tmp_path: Path) -> None:
    """Without flags, ``liqmon replay`` uses levels 0.7,0.8,0.9, hysteresis 0.05, ``close``."""
    got = cli_events(tmp_path, 9, "s9.jsonl", [])
    assert_same_events(9, got, oracle_run(scenario(9), "0.7,0.8,0.9", "0.05", "close"))
