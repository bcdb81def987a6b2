"""``liqmon replay`` end to end: :func:`replay_file` into a MemorySink, and the CLI as a subprocess.

The golden file ``tests/data/golden/crash.events.jsonl`` holds the 13 events that the bundled
scenario ``examples/crash.jsonl`` produces (every event kind, isolated and cross, linear and
inverse). It was generated once from the implementation and checked by hand (see
``test_golden_events_check_out_by_hand``). When an intended change alters the events, regenerate
it from the repository root and review the diff line by line before committing::

    .venv/bin/liqmon replay examples/crash.jsonl --out tests/data/golden/crash.events.jsonl

Synthetic inputs are written to ``tmp_path``; the large file of the streaming test is generated
on the fly (about 64 MiB uncompressed, 1 MiB gzipped, in a fraction of a second).
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import os
import random
import select
import subprocess
import sys
import warnings
import zlib
from collections import Counter
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import liqmon.replay as replay_module
from alerts.jsonl import encode
from alerts.sink import MemorySink
from liqmon.replay import Pacer, Progress, replay_file
from liqmon.summary import ReplayStats, render
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.events import EngineEvent, LiquidationTriggered
from tests import cli_support
from tests.conftest import DATA, ROOT

CRASH = ROOT / "examples" / "crash.jsonl"
GOLDEN = DATA / "golden" / "crash.events.jsonl"
_SCRIPT = Path(sys.executable).with_name("liqmon")
LIQMON = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "liqmon.cli"]


# -- helpers ----------------------------------------------------------------------------------


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    """Run ``liqmon`` with pipes (so stdout and stderr are not terminals)."""
    return cli_support.run(
        [*LIQMON, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )


async def _replay(
    path: Path | str, config: EngineConfig | None = None, **options: Any
) -> tuple[ReplayStats, list[EngineEvent]]:
    sink = MemorySink()
    stats = await replay_file(str(path), Engine(config), sink, **options)
    return stats, sink.events


def _golden() -> list[str]:
    return GOLDEN.read_text(encoding="utf-8").splitlines()


def _crash_lines() -> list[str]:
    return CRASH.read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str] | list[bytes]) -> Path:
    data = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    path.write_bytes(data)
    return path


def _gzip(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _strict_json(line: str) -> Any:
    """Parse one line as strict JSON (no NaN / Infinity)."""
    return json.loads(line, parse_constant=_refuse_constant)


def _rec(**fields: Any) -> str:
    return json.dumps(fields)


def _contract(symbol: str = "TESTUSDT", mmr: str = "0.01") -> str:
    """A linear USDT contract with one tier: MM = notional * mmr."""
    return _rec(
        type="contract",
        symbol=symbol,
        kind="linear",
        margin_asset="USDT",
        contract_size="1",
        brackets=[{"floor": "0", "cap": "1000000000", "mmr": mmr, "cum": "0"}],
    )


def _tick(ts: int, mark: str, symbol: str = "TESTUSDT") -> str:
    return _rec(type="tick", ts=ts, symbol=symbol, mark=mark)


def _kinds(events: list[EngineEvent]) -> list[tuple[str, int]]:
    return [(e.kind, e.ts) for e in events]


# -- (a) the golden replay ----------------------------------------------------------------------


async def test_replay_matches_the_golden_events_exactly() -> None:
    """A fresh replay of the bundled scenario gives the golden events, byte for byte."""
    stats, events = await _replay(CRASH)
    assert [encode(e) for e in events] == _golden()
    assert stats.failure is None
    assert stats.lines == 254
    assert dict(stats.records) == {
        "contract": 2,
        "position": 7,
        "balance": 4,
        "margin": 1,
        "tick": 240,
    }
    assert stats.ticks_applied == 240
    assert dict(stats.events) == {"margin_warning": 5, "margin_recovered": 5, "liquidation": 3}
    assert not stats.rejected
    assert not stats.dropped


async def test_replay_is_deterministic() -> None:
    """Two replays of the same file give identical events, ids included."""
    _, first = await _replay(CRASH)
    _, second = await _replay(CRASH)
    assert first == second
    assert len({e.id for e in first}) == len(first)


def test_cli_writes_the_golden_events(tmp_path: Path) -> None:
    """``liqmon replay FILE --out PATH`` writes exactly the golden file and exits 0."""
    out = tmp_path / "events.jsonl"
    result = _cli("replay", CRASH, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()
    assert result.stdout == ""
    assert "events      13 (liquidation 3, margin_recovered 5, margin_warning 5)" in result.stderr


def _marks() -> dict[tuple[str, int], Decimal]:
    marks: dict[tuple[str, int], Decimal] = {}
    for line in _crash_lines():
        record = json.loads(line)
        if record["type"] == "tick":
            marks[(record["symbol"], record["ts"])] = Decimal(record["mark"])
    return marks


def _find(payloads: list[dict[str, Any]], event: str, account: str) -> list[dict[str, Any]]:
    return [p for p in payloads if p["event"] == event and p["account"] == account]


def test_golden_events_check_out_by_hand() -> None:
    """The golden numbers agree with the scenario's inputs, recomputed here independently.

    Inputs (examples/crash.jsonl): alice isolated long 20000 XRPUSDT @ 1.2093 with isolated
    wallet 967.44; bob cross 40000 @ 1.2093 on 3750 USDT, later 9200; carol cross COIN-M long
    3000 XRPUSD_PERP contracts (10 USD each) @ 1.2093 on 1980 XRP; dave hedge-mode cross on
    3000 USDT; frank isolated 15000 @ 1.2093 with 1649.05, later +1500. XRPUSDT tiers are
    Binance's real table: tier 2 is [10000, 50000) with mmr 0.01 and cum 35.
    """
    payloads = [_strict_json(line) for line in _golden()]
    marks = _marks()
    assert len(payloads) == 13
    assert {p["event"] for p in payloads} == {"margin_warning", "margin_recovered", "liquidation"}
    assert {p["scope"] for p in payloads} == {"isolated", "cross"}
    assert [p["ts"] for p in payloads] == sorted(p["ts"] for p in payloads)

    # alice: isolated liquidation loses exactly her isolated wallet.
    (alice,) = _find(payloads, "liquidation", "alice")
    mark = marks[("XRPUSDT", alice["ts"])]
    assert Decimal(str(alice["positions"][0]["mark"])) == mark
    assert alice["loss"] == 967.44
    assert alice["margin_balance"] == pytest.approx(
        float(Decimal("967.44") + 20000 * (mark - Decimal("1.2093"))), rel=1e-12
    )
    assert alice["maintenance_margin"] == pytest.approx(
        float(20000 * mark * Decimal("0.01") - 35), rel=1e-12
    )
    assert alice["shortfall"] == 0.0
    assert (alice["symbol"], alice["side"], alice["scope"]) == ("XRPUSDT", "both", "isolated")

    # carol: inverse cross, margin balance below zero; the shortfall is its opposite.
    (carol,) = _find(payloads, "liquidation", "carol")
    mark = marks[("XRPUSD_PERP", carol["ts"])]
    balance = Decimal(1980) + 3000 * 10 * (1 / Decimal("1.2093") - 1 / mark)
    assert balance < 0
    assert carol["margin_balance"] == pytest.approx(float(balance), rel=1e-12)
    assert carol["shortfall"] == -carol["margin_balance"]
    assert carol["shortfall"] > 0
    assert carol["loss"] == 1980.0
    assert carol["margin_ratio"] is None
    assert carol["asset"] == "XRP"
    assert "symbol" not in carol

    # dave: a cross liquidation takes the whole cross wallet and both hedge legs.
    (dave,) = _find(payloads, "liquidation", "dave")
    assert dave["loss"] == 3000.0
    assert [(p["side"], p["qty"]) for p in dave["positions"]] == [
        ("long", 60000.0),
        ("short", -35000.0),
    ]

    # bob recovers at the ts of his 9200 USDT balance record, valued at the last mark.
    (bob,) = _find(payloads, "margin_recovered", "bob")
    balance_record = next(json.loads(line) for line in _crash_lines() if '"wallet":"9200"' in line)
    assert bob["ts"] == balance_record["ts"]
    last_mark = max((ts, m) for (s, ts), m in marks.items() if s == "XRPUSDT" and ts <= bob["ts"])[
        1
    ]
    assert bob["margin_balance"] == pytest.approx(
        float(9200 + 40000 * (last_mark - Decimal("1.2093"))), rel=1e-12
    )

    # frank: his +1500 isolated margin lifts the margin balance by exactly 1500.
    (warning,) = _find(payloads, "margin_warning", "frank")
    (recovered,) = _find(payloads, "margin_recovered", "frank")
    assert recovered["margin_balance"] == pytest.approx(warning["margin_balance"] + 1500, rel=1e-12)

    # The ratio is MM / MB wherever MB > 0; warnings carry the level they crossed.
    for p in payloads:
        if p["margin_balance"] > 0:
            assert p["margin_ratio"] == pytest.approx(
                p["maintenance_margin"] / p["margin_balance"], rel=1e-12
            )
        if p["event"] == "margin_warning":
            assert p["level"] <= p["margin_ratio"]


# -- (b) malformed lines ------------------------------------------------------------------------

BAD_LINES: dict[int, str | bytes] = {
    3: "",  # blank: skipped, but it still counts in the line numbers
    4: "this is not json",
    6: "[1, 2, 3]",
    9: '{"type": "trade", "ts": 1}',
    12: '{"type": "tick", "ts": 1636956000000, "symbol": "XRPUSDT"}',
    20: '{"type": "tick", "ts": 1636956000000, "symbol": "XRPUSDT", "mark": "NaN"}',
    30: "{not json either",
    31: b'{"type": "tick", "ts": 1636956000000, "symbol": "XRP\xff", "mark": "1"}',
    40: '{"type": "tick", "ts": 1636956000000, "symbol": "XRPUSDT", "mark": NaN}',
    50: "]",
    60: "}{",
    70: _rec(
        type="position",
        ts=1636955940000,
        account="zed",
        symbol="XRPUSDT",
        side="both",
        mode="cross",
        qty=True,
        entry="1",
        leverage="1",
    ),
    80: _rec(
        type="contract",
        symbol="GAPUSDT",
        kind="linear",
        margin_asset="USDT",
        contract_size="1",
        brackets=[
            {"floor": "0", "cap": "100", "mmr": "0.01", "cum": "0"},
            {"floor": "200", "cap": "300", "mmr": "0.02", "cum": "1"},
        ],
    ),
    90: _rec(
        type="margin", ts=1636955940000, account="nobody", symbol="XRPUSDT", side="both", delta="5"
    ),
}
EXPECTED_REJECTED = {
    "invalid_json": 6,
    "not_an_object": 1,
    "unknown_type": 1,
    "missing_field": 1,
    "invalid_price": 1,
    "invalid_field": 1,
    "invalid_brackets": 1,
    "margin_not_open_isolated": 1,
}


def _with_bad_lines(path: Path) -> Path:
    crash = iter(_crash_lines())
    total = 254 + len(BAD_LINES)
    lines = [BAD_LINES[n] if n in BAD_LINES else next(crash) for n in range(1, total + 1)]
    return _write(path, lines)  # type: ignore[arg-type]


async def test_malformed_lines_are_counted_by_reason_with_line_numbers(tmp_path: Path) -> None:
    """Bad lines are skipped and counted by reason, with their (physical) line numbers; the
    replay goes on and the events are exactly those of the clean file."""
    stats, events = await _replay(_with_bad_lines(tmp_path / "bad.jsonl"))
    assert [encode(e) for e in events] == _golden()
    assert dict(stats.rejected) == EXPECTED_REJECTED
    assert stats.rejected_lines["invalid_json"] == [4, 30, 31, 40, 50]  # the first five
    assert stats.rejected_lines["not_an_object"] == [6]
    assert stats.rejected_lines["unknown_type"] == [9]
    assert stats.rejected_lines["missing_field"] == [12]
    assert stats.rejected_lines["invalid_price"] == [20]
    assert stats.rejected_lines["invalid_field"] == [70]
    assert stats.rejected_lines["invalid_brackets"] == [80]
    assert stats.rejected_lines["margin_not_open_isolated"] == [90]
    assert stats.lines == 254 + len(BAD_LINES) - 1  # the blank line is not a record
    assert stats.failure is None


def test_cli_summary_names_reasons_and_first_lines(tmp_path: Path) -> None:
    """The printed summary lists each reason with its count and first line numbers
    (``...`` when there are more), and the exit status stays 0."""
    out = tmp_path / "events.jsonl"
    result = _cli("replay", _with_bad_lines(tmp_path / "bad.jsonl"), "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()
    assert "  rejected    13\n" in result.stderr
    assert "invalid_json 6: line 4, 30, 31, 40, 50 ...\n" in result.stderr
    assert "not_an_object 1: line 6\n" in result.stderr
    assert "invalid_brackets 1: line 80\n" in result.stderr
    assert "margin_not_open_isolated 1: line 90\n" in result.stderr


def test_unhashable_type_line_does_not_stop_the_replay(tmp_path: Path) -> None:
    """``{"type": ["tick"]}`` is one malformed line like any other: counted and skipped."""
    lines = _crash_lines()
    lines.insert(2, '{"type": ["tick"]}')
    out = tmp_path / "events.jsonl"
    result = _cli("replay", _write(tmp_path / "t.jsonl", lines), "--out", out)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    assert "unknown_type 1: line 3" in result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()


TINY_NUMBER_CASES = [
    pytest.param(
        _rec(
            type="position",
            ts=1636955940000,
            account="zed",
            symbol="XRPUSDT",
            side="both",
            mode="cross",
            qty="1",
            entry="1e-400",
            leverage="1",
        ),
        id="entry-1e-400-ZeroDivisionError",
    ),
    pytest.param(
        _rec(type="tick", ts=1636956000000, symbol="XRPUSD_PERP", mark="1e-320"),
        id="inverse-mark-1e-320-infinite-margin-balance",
    ),
    pytest.param(
        _rec(type="balance", ts=1636955940000, account="carol", asset="XRP", wallet="1e-400"),
        id="wallet-1e-400-infinite-margin-ratio",
    ),
]


@pytest.mark.parametrize("line", TINY_NUMBER_CASES)
def test_subnormal_numbers_do_not_crash_the_replay(tmp_path: Path, line: str) -> None:
    """Whatever the engine makes of an absurdly small but positive number, the replay ends
    normally and every event written is strict JSON."""
    lines = _crash_lines()
    lines.insert(12, line)  # after the set-up records, before the first tick
    out = tmp_path / "events.jsonl"
    result = _cli("replay", _write(tmp_path / "tiny.jsonl", lines), "--out", out)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0
    for event in out.read_text().splitlines():
        _strict_json(event)


# -- (c) gzip -----------------------------------------------------------------------------------


async def test_gzip_input_gives_the_same_events_as_plain(tmp_path: Path) -> None:
    """A gzipped copy replays to exactly the plain file's events and counters."""
    plain_stats, plain = await _replay(CRASH)
    gz_stats, gz = await _replay(_gzip(tmp_path / "crash.jsonl.gz", CRASH.read_bytes()))
    assert [encode(e) for e in gz] == [encode(e) for e in plain] == _golden()
    assert gz_stats.records == plain_stats.records
    assert gz_stats.lines == plain_stats.lines


async def test_gzip_is_recognised_by_content_not_by_name(tmp_path: Path) -> None:
    """A gzip file named ``.jsonl`` is decompressed; a plain file named ``.gz`` is read plain."""
    disguised = _gzip(tmp_path / "really-gzip.jsonl", CRASH.read_bytes())
    plain = tmp_path / "really-plain.jsonl.gz"
    plain.write_bytes(CRASH.read_bytes())
    for path in (disguised, plain):
        stats, events = await _replay(path)
        assert [encode(e) for e in events] == _golden(), path.name
        assert stats.failure is None


async def _resource_warnings(path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await _replay(path)
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_plain_replay_closes_its_file() -> None:
    """Replaying a plain file leaves no file open (no ResourceWarning)."""
    assert await _resource_warnings(CRASH) == []


async def test_gzip_replay_closes_its_file(tmp_path: Path) -> None:
    """Replaying a gzip file closes the file it opened (no ResourceWarning)."""
    path = _gzip(tmp_path / "crash.jsonl.gz", CRASH.read_bytes())
    assert await _resource_warnings(path) == []


def test_cli_replays_gzip(tmp_path: Path) -> None:
    """``liqmon replay FILE.gz`` writes the golden events."""
    out = tmp_path / "events.jsonl"
    result = _cli("replay", _gzip(tmp_path / "c.jsonl.gz", CRASH.read_bytes()), "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()


# -- (d) unreadable files -----------------------------------------------------------------------


def _tail(count: int) -> list[str]:
    """Ticks that repeat the scenario's last XRPUSDT mark (at its ts): applied, no events.
    Each carries random hex so that the gzip stream is not trivially compressible."""
    last = next(json.loads(x) for x in reversed(_crash_lines()) if '"XRPUSDT"' in x)
    rng = random.Random(20211116)
    return [
        _rec(
            type="tick",
            ts=last["ts"],
            symbol="XRPUSDT",
            mark=last["mark"],
            note=f"{rng.getrandbits(128):032x}",
        )
        for _ in range(count)
    ]


def _truncated_gzip(path: Path, lines: list[str], cut: int = 200) -> Path:
    """``lines`` gzipped, minus the last ``cut`` bytes of the stream."""
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    path.write_bytes(data[:-cut])
    return path


def test_missing_file_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    """A missing FILE: exit 1, the summary says FAILED with the path and the reason."""
    missing = tmp_path / "nope.jsonl"
    result = _cli("replay", missing, "--out", tmp_path / "events.jsonl")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"FAILED      cannot open {missing}: No such file or directory" in result.stderr


def test_directory_as_file_exits_1(tmp_path: Path) -> None:
    """A directory given as FILE is unreadable: exit 1 with a message, no traceback."""
    result = _cli("replay", tmp_path, "--out", tmp_path / "events.jsonl")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot open {tmp_path}" in result.stderr


async def test_replay_file_reports_a_missing_file_as_failure(tmp_path: Path) -> None:
    """replay_file does not raise for a missing file: stats.failure says what happened."""
    stats, events = await _replay(tmp_path / "nope.jsonl")
    assert events == []
    assert stats.failure is not None
    assert "No such file or directory" in stats.failure
    assert "FAILED" in render(stats)


def test_truncated_gzip_exits_1_keeping_events_already_published(tmp_path: Path) -> None:
    """A gzip cut short: exit 1 with a clear message; the events published before the
    failure (the whole scenario, long before the cut) are in the output file."""
    path = _truncated_gzip(tmp_path / "cut.jsonl.gz", _crash_lines() + _tail(30_000))
    out = tmp_path / "events.jsonl"
    result = _cli("replay", path, "--out", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"FAILED      {path}: the gzip data is truncated" in result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()


async def test_replay_file_keeps_events_before_a_truncation(tmp_path: Path) -> None:
    """In process: the sink holds the events published before the gzip ran out."""
    path = _truncated_gzip(tmp_path / "cut.jsonl.gz", _crash_lines() + _tail(30_000))
    stats, events = await _replay(path)
    assert stats.failure is not None
    assert "the gzip data is truncated" in stats.failure
    assert [encode(e) for e in events] == _golden()


def test_truncated_gzip_applies_every_complete_line_before_the_cut(tmp_path: Path) -> None:
    """Everything that can be decompressed before the truncation is applied: a scenario
    followed by 50 lines, cut within those 50, still gives all the scenario's events."""
    lines = _crash_lines() + _tail(50)
    path = _truncated_gzip(tmp_path / "cut.jsonl.gz", lines)
    readable = zlib.decompressobj(wbits=31).decompress(path.read_bytes())
    assert readable.count(b"\n") >= 254 + 10  # the cut falls well after the scenario
    out = tmp_path / "events.jsonl"
    result = _cli("replay", path, "--out", out)
    assert result.returncode == 1
    assert out.read_bytes() == GOLDEN.read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param("deflate", "Error -3 while decompressing data", id="corrupt-deflate"),
        pytest.param("crc", "incorrect data check", id="crc-mismatch"),
        pytest.param("header", "unknown compression method", id="garbage-after-magic"),
    ],
)
def test_corrupt_gzip_exits_1_with_a_clear_message(
    tmp_path: Path, damage: str, message: str
) -> None:
    """Corrupt gzip data (bad deflate stream, wrong CRC, garbage after the magic bytes):
    exit 1 and a one-line FAILED reason, never a traceback."""
    data = bytearray(gzip.compress(CRASH.read_bytes(), mtime=0))
    if damage == "deflate":
        for i in range(200, 260):
            data[i] ^= 0x55
    elif damage == "crc":
        data[-6] ^= 0xFF
    else:
        data = bytearray(b"\x1f\x8b" + b"garbage" * 10)
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(data))
    result = _cli("replay", path, "--out", tmp_path / "events.jsonl")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"FAILED      {path}: corrupt gzip data" in result.stderr
    assert message in result.stderr


# -- (e) huge files are streamed ----------------------------------------------------------------

_MEASURE = """
import sys

from feeds.files import chunks
from liqmon.cli import main

def peak_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")

before = peak_kib()
if sys.argv[1] == "--slurp":
    data = b"".join(chunks(sys.argv[2]))
    code = 0
else:
    code = main(sys.argv[1:])
print(f"peak-rss-kib {before} {peak_kib()}", file=sys.stderr)
sys.exit(code)
"""
HUGE_TICKS = 100_000
needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="needs Linux /proc/self/status"
)


def _peak_growth_kib(*args: object) -> tuple[int, str]:
    """Run ``_MEASURE`` in a fresh interpreter; return how much its peak RSS (VmHWM) grew after
    the imports, and its stderr. (The process reads its own VmHWM: a child's ``ru_maxrss``
    would include the parent's RSS at fork time.)"""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("peak-rss-kib"))
    _, before, after = line.split()
    return int(after) - int(before), result.stderr


def _write_tick_gzip(path: Path, ticks: int) -> int:
    """``ticks`` ticks of ~670 bytes after a contract and one position, gzipped; returns the
    uncompressed size."""
    head = [
        _contract(),
        _rec(
            type="position",
            ts=1,
            account="alice",
            symbol="TESTUSDT",
            side="both",
            mode="isolated",
            qty="10",
            entry="100",
            leverage="10",
            isolated_wallet="100",
        ),
    ]
    pad = "x" * 560
    size = 0
    with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as out:
        for start in range(0, ticks, 10_000):
            chunk = "".join(
                f'{{"type":"tick","ts":{1000 + i},"symbol":"TESTUSDT",'
                f'"mark":"{100 + (i % 89) / 100:.2f}","note":"{pad}"}}\n'
                for i in range(start, min(start + 10_000, ticks))
            ).encode()
            if start == 0:
                chunk = ("\n".join(head) + "\n").encode() + chunk
            size += len(chunk)
            out.write(chunk)
    return size


@pytest.fixture(scope="module")
def huge_gzip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """About 64 MiB of records (100,000 ticks of ~670 bytes) gzipped to about 1 MiB; returns
    the path and the uncompressed size."""
    path = tmp_path_factory.mktemp("huge") / "huge.jsonl.gz"
    size = _write_tick_gzip(path, HUGE_TICKS)
    assert size > 60 * 2**20
    return path, size


@needs_proc
def test_huge_gzip_is_streamed_in_bounded_memory(
    huge_gzip: tuple[Path, int], tmp_path: Path
) -> None:
    """A 64 MiB (uncompressed) gzip file is replayed to the end while the process's peak RSS
    grows no more than for a file of the same lines a sixteenth its size (4 MiB, several read
    buffers) plus an eighth of the difference: memory does not grow with the file, it is never
    loaded whole. (Imports done inside the command and the fixed read buffers cost the same for
    both files, so they cancel out instead of eating into the bound.)"""
    path, size = huge_gzip
    small = tmp_path / "small.jsonl.gz"
    small_size = _write_tick_gzip(small, HUGE_TICKS // 16)
    assert small_size > 3 * 2**20
    growth_kib, stderr = _peak_growth_kib("replay", path, "--out", tmp_path / "events.jsonl")
    assert f"ticks       {HUGE_TICKS:,} applied, 0 dropped" in stderr
    small_growth_kib, _ = _peak_growth_kib("replay", small, "--out", tmp_path / "small.jsonl")
    extra = (growth_kib - small_growth_kib) * 1024
    assert extra < (size - small_size) / 8, (
        f"peak RSS grew {growth_kib} KiB for {size} bytes, {small_growth_kib} KiB for "
        f"{small_size} bytes"
    )


@needs_proc
def test_peak_rss_measurement_sees_a_whole_file_load(huge_gzip: tuple[Path, int]) -> None:
    """Control for the test above: the same measurement, on a process that does read the file
    whole, reports a growth of at least the file's size."""
    path, size = huge_gzip
    growth_kib, _ = _peak_growth_kib("--slurp", path)
    assert growth_kib * 1024 > 0.9 * size


# -- (f) output and summary ---------------------------------------------------------------------


def test_out_dash_writes_json_lines_when_stdout_is_not_a_tty(tmp_path: Path) -> None:
    """``--out -`` on a pipe writes JSON Lines (the golden events) to stdout; the summary goes
    to stderr; ``--summary-json`` writes the counters."""
    summary = tmp_path / "summary.json"
    result = _cli("replay", CRASH, "--out", "-", "--summary-json", summary)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _golden()
    assert "liqmon replay:" in result.stderr
    counters = json.loads(summary.read_text())
    assert counters["source"] == str(CRASH)
    assert counters["lines"] == 254
    assert counters["records"] == {
        "contract": 2,
        "position": 7,
        "balance": 4,
        "margin": 1,
        "tick": 240,
    }
    assert counters["ticks_applied"] == 240
    assert counters["dropped"] == {}
    assert counters["rejected"] == {}
    assert counters["events"] == {"margin_warning": 5, "margin_recovered": 5, "liquidation": 3}
    assert counters["failure"] is None
    assert counters["elapsed_s"] >= 0


def test_default_out_is_stdout(tmp_path: Path) -> None:
    """Without ``--out`` the events go to stdout."""
    result = _cli("replay", CRASH)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _golden()


def test_summary_json_records_rejections_and_failure(tmp_path: Path) -> None:
    """The JSON summary carries the rejected counts, their first lines and the failure."""
    summary = tmp_path / "summary.json"
    bad = _with_bad_lines(tmp_path / "bad.jsonl")
    result = _cli("replay", bad, "--out", tmp_path / "e.jsonl", "--summary-json", summary)
    assert result.returncode == 0, result.stderr
    counters = json.loads(summary.read_text())
    assert counters["rejected"] == EXPECTED_REJECTED
    assert counters["rejected_first_lines"]["invalid_json"] == [4, 30, 31, 40, 50]

    missing = tmp_path / "missing.jsonl"
    result = _cli("replay", missing, "--out", tmp_path / "e.jsonl", "--summary-json", summary)
    assert result.returncode == 1
    assert "No such file or directory" in json.loads(summary.read_text())["failure"]


def test_unwritable_summary_json_is_a_usage_error(tmp_path: Path) -> None:
    """``--summary-json`` into a missing directory: exit 2 with a message naming the path."""
    target = tmp_path / "no-such-dir" / "summary.json"
    result = _cli("replay", CRASH, "--out", tmp_path / "e.jsonl", "--summary-json", target)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert str(target) in result.stderr


def test_unwritable_out_is_a_usage_error(tmp_path: Path) -> None:
    """``--out`` into a missing directory: exit 2 and one message naming the path."""
    target = tmp_path / "no-such-dir" / "events.jsonl"
    result = _cli("replay", CRASH, "--out", target)
    assert result.returncode == 2
    assert f"liqmon: cannot write {target}: No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_dash_on_a_terminal_prints_readable_lines() -> None:
    """On a TTY, ``--out -`` renders events for humans (one headline per event), not JSON."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*LIQMON, "replay", str(CRASH), "--out", "-"],
            stdout=slave,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "no output from liqmon within 30 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=30) == 0
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = b"".join(chunks).decode()
    assert '{"event"' not in text
    assert text.count("LIQUIDATED") == 3
    assert text.count("WARNING") == 5
    assert text.count("RECOVERED") == 5
    assert "carol cross XRP  LIQUIDATED  loss 1,980.00 XRP" in text


def test_progress_line_overwrites_itself_and_is_cleared() -> None:
    """Progress writes one carriage-return status line and erases it at the end."""
    stream = io.StringIO()
    progress = Progress(stream, interval=0.0)
    stats = ReplayStats(lines=12_345, ticks_applied=12_000)
    stats.events["liquidation"] = 2
    progress.update(stats)
    progress.clear()
    text = stream.getvalue()
    assert text.startswith("\r  12,345 lines, 12,000 ticks, 2 events ...")
    assert text.endswith("\r\033[K")
    assert "\n" not in text


def test_progress_stays_silent_when_nothing_was_shown() -> None:
    """clear() writes nothing if no progress line was ever drawn."""
    stream = io.StringIO()
    progress = Progress(stream, interval=3600.0)
    progress.update(ReplayStats())
    progress.clear()
    assert stream.getvalue() == ""


# -- (g) pacing ---------------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that only moves when the code under test 'sleeps'."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_delays_follow_ts_over_speed() -> None:
    """The first record anchors time; each later one is due (ts − ts0) / 1000 / speed
    seconds after the anchor, less the time already elapsed, never negative."""
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock)
    assert pacer.delay(1_000_000) == 0.0
    assert pacer.delay(1_001_500) == pytest.approx(1.5)
    clock.now += 0.4
    assert pacer.delay(1_001_500) == pytest.approx(1.1)
    clock.now += 5.0
    assert pacer.delay(1_002_000) == 0.0  # behind schedule: no waiting, no negative delay
    assert pacer.delay(999_000) == 0.0  # an older ts is due already


@pytest.mark.parametrize(("speed", "expected"), [(60.0, 1.0), (3600.0, 1 / 60), (0.5, 120.0)])
def test_pacer_scales_by_speed(speed: float, expected: float) -> None:
    """A minute of record time takes 60 / speed seconds."""
    pacer = Pacer(speed, clock=FakeClock())
    pacer.delay(0)
    assert pacer.delay(60_000) == pytest.approx(expected)


async def test_replay_sleeps_by_record_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``speed``, replay_file sleeps between records exactly (Δts / 1000 / speed), with a
    fake clock and a fake sleep (no real waiting); the events are unchanged."""
    clock = FakeClock()
    monkeypatch.setattr(replay_module, "Pacer", lambda speed: Pacer(speed, clock=clock))
    monkeypatch.setattr(replay_module, "asyncio", SimpleNamespace(sleep=clock.sleep))
    speed = 3600.0
    stats, events = await _replay(CRASH, speed=speed)
    assert [encode(e) for e in events] == _golden()
    paced = [json.loads(x)["ts"] for x in _crash_lines() if '"type":"contract"' not in x]
    expected = [(b - a) / 1000 / speed for a, b in pairwise(paced) if b > a]
    assert clock.sleeps == pytest.approx(expected)
    assert sum(clock.sleeps) == pytest.approx((paced[-1] - paced[0]) / 1000 / speed)
    assert stats.failure is None


def test_cli_speed_paces_without_changing_events(tmp_path: Path) -> None:
    """``--speed`` (very fast here) gives the same events as an unpaced replay."""
    out = tmp_path / "events.jsonl"
    result = _cli("replay", CRASH, "--out", out, "--speed", "1e9")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == GOLDEN.read_bytes()


# -- (h) levels, hysteresis, policy -------------------------------------------------------------

T0 = 1_700_000_000_000


def _ratio_scenario() -> list[str]:
    """One cross position whose MM is exactly 1 USDT (notional 100 at mmr 0.01, valued at its
    entry, no ticks): the margin ratio is 1 / wallet, set by balance records."""
    return [
        _contract(),
        _rec(type="balance", ts=T0, account="bob", asset="USDT", wallet="10"),
        _rec(
            type="position",
            ts=T0 + 1,
            account="bob",
            symbol="TESTUSDT",
            side="both",
            mode="cross",
            qty="1",
            entry="100",
            leverage="10",
        ),
        _rec(type="balance", ts=T0 + 2, account="bob", asset="USDT", wallet="1.9"),  # 0.526
        _rec(type="balance", ts=T0 + 3, account="bob", asset="USDT", wallet="1.4"),  # 0.714
        _rec(type="balance", ts=T0 + 4, account="bob", asset="USDT", wallet="1.5"),  # 0.667
        _rec(type="balance", ts=T0 + 5, account="bob", asset="USDT", wallet="10"),  # 0.1
    ]


def _cli_events(tmp_path: Path, lines: list[str], *options: str) -> list[dict[str, Any]]:
    out = tmp_path / "events.jsonl"
    result = _cli("replay", _write(tmp_path / "in.jsonl", lines), "--out", out, *options)
    assert result.returncode == 0, result.stderr
    return [json.loads(x) for x in out.read_text().splitlines()]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            (), [("margin_warning", T0 + 3, 0.7), ("margin_recovered", T0 + 5, None)], id="defaults"
        ),
        pytest.param(
            ("--levels", "0.5"),
            [("margin_warning", T0 + 2, 0.5), ("margin_recovered", T0 + 5, None)],
            id="levels-0.5",
        ),
        pytest.param(
            ("--levels", "0.5,0.7"),
            [
                ("margin_warning", T0 + 2, 0.5),
                ("margin_warning", T0 + 3, 0.7),
                ("margin_recovered", T0 + 5, None),
            ],
            id="levels-0.5-0.7",
        ),
        pytest.param(
            ("--hysteresis", "0.02"),
            [("margin_warning", T0 + 3, 0.7), ("margin_recovered", T0 + 4, None)],
            id="hysteresis-0.02",
        ),
    ],
)
def test_levels_and_hysteresis_are_honoured(
    tmp_path: Path, options: tuple[str, ...], expected: list[tuple[str, int, float | None]]
) -> None:
    """Ratios 0.1 → 0.526 → 0.714 → 0.667 → 0.1: warnings fire at the configured levels; at
    0.667 the default hysteresis (re-arm below 0.65) holds the warning, 0.02 (below 0.68)
    recovers."""
    events = _cli_events(tmp_path, _ratio_scenario(), *options)
    assert [(e["event"], e["ts"], e.get("level")) for e in events] == expected
    for event in events:
        if event["event"] == "margin_warning":
            assert event["margin_ratio"] == pytest.approx(
                1 / float({T0 + 2: 1.9, T0 + 3: 1.4}[event["ts"]])
            )


def _hold_scenario() -> list[str]:
    """An isolated long, 10 @ 100 with 100 of margin: MB = 10·P − 900, MM = 0.1·P; it is
    liquidated at P = 90, and still under water at 85 after 10 more margin (MB = −40)."""
    return [
        _contract(),
        _rec(
            type="position",
            ts=T0,
            account="alice",
            symbol="TESTUSDT",
            side="both",
            mode="isolated",
            qty="10",
            entry="100",
            leverage="10",
            isolated_wallet="100",
        ),
        _tick(T0 + 1, "95"),
        _tick(T0 + 2, "90"),  # liquidation
        _tick(T0 + 3, "120"),  # far above: no recovery message under hold
        _tick(T0 + 4, "85"),  # deeper than the liquidation: silent under hold
        _rec(type="margin", ts=T0 + 5, account="alice", symbol="TESTUSDT", side="both", delta="10"),
        _tick(T0 + 6, "80"),
    ]


async def test_close_policy_removes_the_liquidated_position(tmp_path: Path) -> None:
    """Under ``close`` the position is gone after its liquidation: later ticks are silent and
    a margin record for it is rejected."""
    stats, events = await _replay(_write(tmp_path / "h.jsonl", _hold_scenario()))
    assert _kinds(events) == [("liquidation", T0 + 2)]
    assert dict(stats.rejected) == {"margin_not_open_isolated": 1}
    assert stats.rejected_lines["margin_not_open_isolated"] == [7]


async def test_hold_policy_keeps_the_entity_silent_until_a_record_touches_it(
    tmp_path: Path,
) -> None:
    """Under ``hold`` the liquidated position stays, silent through ticks up and down, until
    the margin record re-evaluates it (still under water: a second liquidation)."""
    config = EngineConfig.from_values(policy="hold")
    stats, events = await _replay(_write(tmp_path / "h.jsonl", _hold_scenario()), config)
    assert _kinds(events) == [("liquidation", T0 + 2), ("liquidation", T0 + 5)]
    second = events[1]
    assert isinstance(second, LiquidationTriggered)
    assert second.loss == 110.0
    assert second.margin_balance == -40.0
    assert second.shortfall == 40.0
    assert [p.qty for p in second.positions] == [10.0]
    assert not stats.rejected


def test_cli_policy_option_is_honoured(tmp_path: Path) -> None:
    """``--policy hold`` and ``--policy close`` differ as above through the command line."""
    held = _cli_events(tmp_path, _hold_scenario(), "--policy", "hold")
    closed = _cli_events(tmp_path, _hold_scenario(), "--policy", "close")
    assert [(e["event"], e["ts"]) for e in held] == [
        ("liquidation", T0 + 2),
        ("liquidation", T0 + 5),
    ]
    assert [(e["event"], e["ts"]) for e in closed] == [("liquidation", T0 + 2)]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--levels", "abc", "liqmon: levels: 'abc' is not a number"),
        ("--levels", "0.9,0.8", "liqmon: levels: levels must be strictly increasing"),
        ("--levels", "0.7,0.7", "liqmon: levels: levels must be strictly increasing"),
        ("--levels", "1.5", "liqmon: levels: every level must lie strictly between 0 and 1"),
        ("--levels", "0", "liqmon: levels: every level must lie strictly between 0 and 1"),
        ("--levels", "", "liqmon: levels: at least one level is needed"),
        ("--levels", "nan", "liqmon: levels: 'nan' is not a finite number"),
        ("--hysteresis", "-0.1", "liqmon: hysteresis: must be zero or positive"),
        ("--hysteresis", "x", "liqmon: hysteresis: 'x' is not a number"),
        ("--hysteresis", "inf", "liqmon: hysteresis: 'inf' is not a finite number"),
        ("--policy", "yolo", "argument --policy: invalid choice: 'yolo'"),
        ("--speed", "0", "argument --speed: must be a positive number"),
        ("--speed", "-2", "argument --speed: must be a positive number"),
        ("--speed", "inf", "argument --speed: must be a positive number"),
        ("--speed", "fast", "argument --speed: 'fast' is not a number"),
    ],
)
def test_bad_settings_exit_2_naming_the_setting(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    """A bad setting is a usage error: exit 2, one message naming it, nothing written."""
    out = tmp_path / "events.jsonl"
    result = _cli("replay", CRASH, "--out", out, option, value)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists()


# -- (i) dropped ticks ----------------------------------------------------------------------------


def _tick_rules_scenario() -> list[str]:
    return [
        _contract(),
        _rec(
            type="position",
            ts=T0,
            account="alice",
            symbol="TESTUSDT",
            side="both",
            mode="isolated",
            qty="10",
            entry="100",
            leverage="10",
            isolated_wallet="100",
        ),
        _tick(T0 + 10, "95"),
        _tick(T0 + 5, "50"),  # stale: would liquidate, must be dropped
        _tick(T0 + 10, "96"),  # equal ts: applied
        _tick(T0 + 11, "50", symbol="NOPEUSDT"),  # no contract
        _tick(T0 + 12, "97"),
        _tick(T0 + 12, "90"),  # equal ts again: applied, liquidates
        _tick(T0 + 11, "200"),  # stale again
    ]


async def test_stale_and_unknown_symbol_ticks_are_dropped_by_reason(tmp_path: Path) -> None:
    """Older ticks and ticks without a contract are counted as dropped, by reason, and never
    applied (the stale crash to 50 liquidates nothing); equal-ts ticks are applied."""
    stats, events = await _replay(_write(tmp_path / "t.jsonl", _tick_rules_scenario()))
    assert dict(stats.dropped) == {"stale_tick": 2, "unknown_symbol": 1}
    assert stats.records["tick"] == 7
    assert stats.ticks_applied == 4
    assert not stats.rejected
    assert _kinds(events) == [("liquidation", T0 + 12)]


def test_cli_summary_shows_dropped_ticks_by_reason(tmp_path: Path) -> None:
    """The printed summary says how many ticks were dropped and why."""
    result = _cli(
        "replay",
        _write(tmp_path / "t.jsonl", _tick_rules_scenario()),
        "--out",
        tmp_path / "e.jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert "ticks       4 applied, 3 dropped (stale_tick 2, unknown_symbol 1)" in result.stderr
    assert "  rejected    0\n" in result.stderr


# -- demo -----------------------------------------------------------------------------------------


def test_demo_prints_the_scenario_events() -> None:
    """``liqmon demo`` replays the bundled scenario and prints one headline per event."""
    result = _cli("demo", "--speed", "1e9")
    assert result.returncode == 0, result.stderr
    headlines = [x for x in result.stdout.splitlines() if not x.startswith(" ")]
    assert len(headlines) == 13
    kinds = Counter(x.split("  ")[2].split()[0] for x in headlines)
    assert kinds == {"WARNING": 5, "RECOVERED": 5, "LIQUIDATED": 3}
    assert "events      13" in result.stderr
