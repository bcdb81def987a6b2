"""``liqmon replay FILE --funding`` agrees with the exact oracle on pools and funding.

``tests/scenarios_collateral.py`` generates seeded replays mixing pools (USDT and USDC
contracts; BTC, ETH, USDC, USDT and BNB collateral with moving prices), single-asset cross
accounts, isolated positions, mode switches, refused records and funding; ``tests/oracle.py``
implements ``docs/collateral.md`` exactly. For each scenario the CLI's events must equal the
oracle's: the events of each run of equal ``ts`` as multisets (the contract fixes no order
within one record's events), every ``margin_warning``, ``margin_recovered`` and
``liquidation`` by identity (event, account, scope, asset, symbol, side) and level, and every
number (``margin_ratio``, ``margin_balance``, ``maintenance_margin``, ``loss``, ``shortfall``,
each position's qty, entry, mark, liquidation and bankruptcy price) within 1e-6 relative
(``REL``; ``ABS`` only matters for zeros). The summary's refusals and drops must be the
oracle's (a no-op, such as an ``asset_mode`` repeating the mode, may count as either).

Funding is also compared after the replay (``test_settled_funding_agrees_with_oracle``):
the summary JSON's ``funding`` object (per asset, the net amount booked to wallets: negative
when paid) and each open position's ``funding`` in ``--book-json`` (cumulative while the slot
is open, same sign) against the oracle's ``funding_by_asset`` and ``position_funding()``.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests import cli_support
from tests.oracle import Oracle
from tests.scenarios import generate as base_generate
from tests.scenarios_collateral import generate

REL = 1e-6
ABS = 1e-18
CLI = Path(sys.executable).with_name("liqmon")
FAST_SEEDS = range(10)
SLOW_SEEDS = range(10, 120)
SETTINGS = [("0.7,0.8,0.9", "0.05"), ("0.5,0.75,0.9,0.95", "0.02")]
POLICIES = ["close", "hold"]
IDENTITY = ("event", "account", "scope", "asset", "symbol", "side", "level")
NUMBERS = ("margin_ratio", "margin_balance", "maintenance_margin", "loss", "shortfall")

scenario = cache(generate)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not (isinstance(a, int | float) and isinstance(b, int | float)):
        return False
    return math.isfinite(a) and abs(a - b) <= REL * max(abs(a), abs(b)) + ABS


def identity(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((key, event.get(key)) for key in IDENTITY)


def event_diff(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """What differs between a CLI event and an oracle event of the same identity."""
    problems = []
    keys = set(got) - {"id"}
    if got.get("scope") == "pool" and "assets" in got:
        # the CLI's pool events also carry their equity by asset (docs/alerts.md): the
        # values of the assets add up to the pool's margin balance
        keys -= {"assets"}
        values = [asset["value"] for asset in got["assets"]]
        total = math.fsum(values)
        scale = math.fsum(abs(v) for v in values)  # the terms may cancel to about zero
        if abs(total - got.get("margin_balance", math.nan)) > REL * scale + ABS:
            problems.append(f"assets: values add up to {total!r}, not the margin balance")
    if keys != set(want):
        problems.append(f"keys: CLI-only {keys - set(want)}, oracle-only {set(want) - keys}")
    if got.get("ts") != want.get("ts"):
        problems.append(f"ts: {got.get('ts')} != {want.get('ts')}")
    problems += [
        f"{key}: {got.get(key)!r} != {want.get(key)!r}"
        for key in (*NUMBERS, "liquidation_price")
        if (key in got or key in want) and not close(got.get(key), want.get(key))
    ]
    g, w = got.get("positions", []), want.get("positions", [])
    if len(g) != len(w):
        return [*problems, f"positions: {len(g)} != {len(w)}"]
    for i, (gp, wp) in enumerate(zip(g, w, strict=True)):
        if set(gp) != set(wp):
            problems.append(f"positions[{i}] keys {sorted(gp)} != {sorted(wp)}")
        for key in sorted(set(gp) & set(wp)):
            same = gp[key] == wp[key] if key in ("symbol", "side") else close(gp[key], wp[key])
            if not same:
                problems.append(f"positions[{i}].{key}: {gp[key]!r} != {wp[key]!r}")
    return problems


def runs(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Maximal runs of consecutive events with the same ts, each sorted by identity (stable:
    two events of one identity keep their order)."""
    out: list[list[dict[str, Any]]] = []
    for event in events:
        if out and out[-1][0]["ts"] == event["ts"]:
            out[-1].append(event)
        else:
            out.append([event])
    return [sorted(run, key=lambda e: repr(identity(e))) for run in out]


def first_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str | None:
    """A short report of the first run of equal ts where the CLI and the oracle part."""
    got_runs, want_runs = runs(got), runs(want)
    for n, (g, w) in enumerate(zip(got_runs, want_runs, strict=False)):  # lengths: below
        problems = []
        if [identity(e) for e in g] != [identity(e) for e in w]:
            problems.append("the events differ by identity or level")
        else:
            for i, (ge, we) in enumerate(zip(g, w, strict=True)):
                problems += [f"event {i}: {p}" for p in event_diff(ge, we)]
        if problems:
            return "\n".join(
                [f"run {n} (ts {w[0]['ts'] if w else g[0]['ts']}):", *problems]
                + [f"  CLI:    {json.dumps(e)}" for e in g]
                + [f"  oracle: {json.dumps(e)}" for e in w]
            )
    if len(got_runs) != len(want_runs):
        extra = got_runs[len(want_runs) :] or want_runs[len(got_runs) :]
        side = "CLI" if len(got_runs) > len(want_runs) else "oracle"
        return (
            f"{len(got_runs)} CLI runs, {len(want_runs)} oracle runs; {side} has more, from: "
            + (json.dumps(extra[0][0]))
        )
    return None


def cli_replay(
    tmp_path: Path, seed: int, levels: str, hysteresis: str, policy: str
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """``liqmon replay FILE --funding``: the events, the summary JSON and the final book."""
    name = f"s{seed}-{policy}-{levels.count(',')}"
    replay = tmp_path / f"{name}.jsonl"
    replay.write_text(scenario(seed))
    out, summary, book = (tmp_path / f"{name}.{x}.json" for x in ("events", "summary", "book"))
    cmd = [str(CLI), "replay", str(replay), "--funding", "--out", str(out)]
    cmd += ["--summary-json", str(summary), "--book-json", str(book)]
    cmd += ["--levels", levels, "--hysteresis", hysteresis, "--policy", policy]
    done = cli_support.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stderr[-2000:]}"
    events = [json.loads(x) for x in out.read_text().splitlines()]
    return events, json.loads(summary.read_text()), json.loads(book.read_text())


def oracle_replay(
    seed: int, levels: str, hysteresis: str, policy: str
) -> tuple[Oracle, Counter[str], list[dict[str, Any]]]:
    """The oracle after the scenario, the count of each line status, and its events."""
    oracle = Oracle(levels, hysteresis, policy, funding=True)
    statuses: Counter[str] = Counter()
    events = []
    for outcome in oracle.replay(scenario(seed)):
        statuses[outcome.status] += 1
        events.extend(outcome.events)
    return oracle, statuses, events


def disagreement(
    tmp_path: Path, seed: int, levels: str, hysteresis: str, policy: str
) -> str | None:
    got, summary, _ = cli_replay(tmp_path, seed, levels, hysteresis, policy)
    _, statuses, want = oracle_replay(seed, levels, hysteresis, policy)
    where = f"seed {seed} levels {levels} hysteresis {hysteresis} policy {policy}"
    diff = first_difference(got, want)
    if diff is not None:
        return f"{where}\n{diff}"
    refused = sum(summary["rejected"].values())
    low = statuses["malformed"] + statuses["rejected"]
    if not low <= refused <= low + statuses["noop"]:
        return f"{where}: {refused} refused lines, the oracle {low} (+ {statuses['noop']} no-ops)"
    if sum(summary["dropped"].values()) != statuses["dropped"]:
        return f"{where}: {summary['dropped']} dropped, the oracle {statuses['dropped']}"
    ids = [e["id"] for e in got]
    if len(set(ids)) != len(ids):
        return f"{where}: duplicate event ids"
    return None


def assert_agree(tmp_path: Path, seeds: range, levels: str, hysteresis: str, policy: str) -> None:
    failures = {s: d for s in seeds if (d := disagreement(tmp_path, s, levels, hysteresis, policy))}
    if failures:
        first = next(iter(failures.values()))
        pytest.fail(f"seeds {sorted(failures)} disagree; the first:\n{first}", pytrace=False)


# ---------------------------------------------------------------------------------------------
# The scenarios themselves


def test_without_pools_the_scenarios_are_the_single_asset_ones() -> None:
    """``generate(seed, pools=False)`` is ``tests.scenarios.generate(seed)``, byte for byte:
    the collateral generator leaves the base scenarios exactly as they are."""
    for seed in range(8):
        assert generate(seed, pools=False) == base_generate(seed)


def test_the_collateral_scenarios_exercise_pools_rejections_and_funding() -> None:
    """Over 20 seeds (oracle only) pools warn, recover and are liquidated, with and without
    shortfall, exactly at MB = MM and at MB = 0; every rejection of collateral.md occurs; funding
    settles several times per replay; single-asset and isolated entities keep alerting."""
    c: Counter[str] = Counter()
    for seed in range(20):
        oracle = Oracle(funding=True)
        for line, outcome in zip(
            scenario(seed).splitlines(), oracle.replay(scenario(seed)), strict=True
        ):
            c[outcome.status] += 1
            if outcome.status == "rejected":
                c[outcome.why] += 1
                c[f"rejected {json.loads(line)['type']}"] += 1
            for e in outcome.events:
                c[f"{e['scope']} {e['event']}"] += 1
                if e["scope"] == "pool" and e["event"] == "liquidation":
                    c["pool shortfall"] += e["shortfall"] > 0
                    c["pool MB = MM"] += e["margin_ratio"] == 1.0
                    c["pool MB = 0"] += e["margin_balance"] == 0.0
        c["settlements"] += len(oracle.settled)
        c["replays with funding"] += any(v != 0 for v in oracle.funding_by_asset.values())
    assert c["pool margin_warning"] >= 50, c
    assert c["pool margin_recovered"] >= 10, c
    assert c["pool liquidation"] - c["pool shortfall"] >= 20, c
    assert min(c["pool shortfall"], c["pool MB = MM"], c["pool MB = 0"]) >= 1, c
    for kind in ("cross", "isolated"):
        assert (
            min(c[f"{kind} {e}"] for e in ("margin_warning", "margin_recovered", "liquidation"))
            >= 20
        ), c
    for why in (
        "an isolated position in a multi-assets account",
        "an inverse position in a multi-assets account",
        "multi-assets mode with an isolated or inverse position",
        "collateral price <= 0",
        "haircut outside [0, 1)",
    ):
        assert c[why] >= 3, (why, c)
    assert c["rejected account_update"] >= 1, c
    assert c["noop"] > 0, c
    assert c["settlements"] >= 20 * 10, c
    assert c["replays with funding"] == 20, c


# ---------------------------------------------------------------------------------------------
# Agreement


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("levels", "hysteresis"), SETTINGS)
def test_cli_replay_with_funding_agrees_with_oracle(
    tmp_path: Path, levels: str, hysteresis: str, policy: str
) -> None:
    """On 10 seeded collateral scenarios ``liqmon replay --funding`` writes the oracle's events
    (identity, level, every number to 1e-6) and refuses and drops what the oracle does."""
    assert_agree(tmp_path, FAST_SEEDS, levels, hysteresis, policy)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(("levels", "hysteresis"), SETTINGS)
def test_cli_replay_with_funding_agrees_with_oracle_many_seeds(
    tmp_path: Path, levels: str, hysteresis: str, policy: str
) -> None:
    """The same on 110 more seeds."""
    assert_agree(tmp_path, SLOW_SEEDS, levels, hysteresis, policy)


def _slot(account: str, position: dict[str, Any]) -> tuple[str, str, str]:
    return (account, position["symbol"], position["side"])


@pytest.mark.parametrize("policy", POLICIES)
def test_settled_funding_agrees_with_oracle(tmp_path: Path, policy: str) -> None:
    """After the replay, the funding per asset in the summary and each open position's
    cumulative funding in the final book are the oracle's (to 1e-6), and the book holds
    exactly the oracle's open positions."""
    levels, hysteresis = SETTINGS[0]
    for seed in range(4):
        _, summary, book = cli_replay(tmp_path, seed, levels, hysteresis, policy)
        oracle, _, _ = oracle_replay(seed, levels, hysteresis, policy)
        want_assets = {a: float(v) for a, v in oracle.funding_by_asset.items()}
        got_assets = summary["funding"]
        assert set(got_assets) == set(want_assets), (seed, got_assets, want_assets)
        for asset, value in want_assets.items():
            assert close(got_assets[asset], value), (seed, asset, got_assets[asset], value)
        got = {_slot(e["account"], p): p["funding"] for e in book for p in e["positions"]}
        want: dict[tuple[str, str, str], Fraction] = oracle.position_funding()
        assert set(got) == set(want), (seed, set(got) ^ set(want))
        for slot, value in want.items():
            assert close(got[slot], float(value)), (seed, slot, got[slot], float(value))
