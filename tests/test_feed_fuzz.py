"""Fuzzing the frame parsers: nothing escapes, every bad frame is counted, every tick is sound.

10,000 mutations of real frames (Binance mark, trade and book frames, Bybit tickers, OKX's
documented pushes, Tardis rows) from a fixed seed: truncations, byte flips, type swaps,
NaN/inf/negative/huge prices, bad timestamps and symbols, wrong and deep nesting, oversized
frames, non-UTF-8 bytes. For each, the parser must return (never raise); its reject reasons must
be stable codes; every tick it gives must be sound (a finite positive mark below 1e30 that is
its text's value, an integer ms time, a plain symbol); and where the mutation is known to break
the frame, the expected reason must be among the rejects. Hypothesis adds arbitrary bytes and
arbitrary JSON.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.frames import FrameParser
from feeds.normalized import MAX_TS
from feeds.tardis import TardisDerivativeTicker
from feeds.ticks import MAX_FRAME_BYTES, Parsed
from tests.conftest import DATA
from tests.test_feed_parsers import OKX_PUSH, OKX_PUSH_MARGIN

CAPTURES = DATA / "captures"
REASONS = frozenset(
    {"invalid_json", "oversized", "unknown_shape", "invalid_price", "invalid_field"}
)
"""What the mutations of real frames must produce (each of them, somewhere in the corpus)."""
DOCUMENTED = REASONS | {"venue_error", "unknown_account"}
"""Every reject reason a parser may give (``feeds/ticks.py``): an arbitrary frame shaped like a
venue's error reply is one."""
FRAMES = 10_000
SEED = 20240808

Path_ = tuple[str | int, ...]


class Seed:
    """A real frame, the parser settings that make it carry a price, and where its fields are."""

    def __init__(
        self, obj: Any, source: str, price: Path_, ts: Path_, symbol: Path_, *, ts_text: bool
    ) -> None:
        self.obj = obj
        self.source = source
        self.price, self.ts, self.symbol = price, ts, symbol
        self.ts_text = ts_text  # OKX sends ts as a string of digits


def _seeds() -> list[Seed]:
    seeds: list[Seed] = []
    variants = CAPTURES / "binance_markprice_real_message_variants.jsonl"
    for line in variants.read_text(encoding="utf-8").splitlines():
        frame = json.loads(line)["frame"]
        item: Path_ = (0,) if isinstance(frame["data"], list) else ()
        for obj, at in ((frame, ("data", *item)), (frame["data"], item)):  # wrapped and bare
            seeds.append(Seed(obj, "mark", (*at, "p"), (*at, "E"), (*at, "s"), ts_text=False))
    hft = CAPTURES / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz"
    with gzip.open(hft) as lines:
        for _, line in zip(range(60), lines, strict=False):
            frame = json.loads(line.split(b" ", 1)[1])
            trade = frame["data"]["e"] == "trade"
            source, price, ts = ("trade", "p", "T") if trade else ("mid", "b", "E")
            paths = (("data", price), ("data", ts), ("data", "s"))
            seeds.append(Seed(frame, source, *paths, ts_text=False))
    bybit = CAPTURES / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"
    with gzip.open(bybit) as lines:
        for line in lines:
            frame = json.loads(json.loads(line)["raw"])
            if "markPrice" in frame["data"]:
                paths = (("data", "markPrice"), ("ts",), ("data", "symbol"))
                seeds.append(Seed(frame, "mark", *paths, ts_text=False))
    for text in (OKX_PUSH, OKX_PUSH_MARGIN):
        paths = (("data", 0, "markPx"), ("data", 0, "ts"), ("data", 0, "instId"))
        seeds.append(Seed(json.loads(text), "mark", *paths, ts_text=True))
    return seeds


def _set(obj: Any, path: Path_, value: Any) -> Any:
    """A deep copy of ``obj`` with the value at ``path`` replaced."""
    copy = json.loads(json.dumps(obj))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


BAD_PRICES: list[Any] = [
    "NaN", "nan", "Infinity", "-Infinity", "inf", "-5", "0", "0.0", "-0", "1e30", "1e400",
    "1e-400", "abc", "1,5", "0x10", " 1", "1_0", "١٢٣", "9" * 70, -1, 0, -0.5, 1e300, True,
    False, [], {}, [1], {"p": "1"},
]  # fmt: skip
BAD_MS: list[Any] = [-1, 1.5, True, "123", [], {}, 2**63, "", None]
BAD_MS_TEXT: list[Any] = [-1, 1597026383085, "-1", "12a", "", "1" * 20, "١٢", True, None, []]
BAD_SYMBOLS: list[Any] = ["", 5, [], {}, "A B", "x" * 300, "A\u200bB", "\n", "\t", True]
OK_PRICES = ["1e29", "1e-29", "0.00000001", 12345, 1.5]


def _check(parsed: Parsed) -> None:
    """The invariants every parse result holds, whatever the input."""
    assert isinstance(parsed, Parsed)
    for reason, detail in parsed.rejects:
        assert reason in DOCUMENTED
        assert isinstance(detail, str)
        assert len(detail) < 400
    for tick in parsed.ticks:
        assert math.isfinite(tick.mark)
        assert 1e-30 <= tick.mark < 1e30
        assert tick.mark == float(tick.mark_text)
        assert tick.mark_text.isascii()
        assert type(tick.exchange_ts_ms) is int
        assert 0 <= tick.exchange_ts_ms <= MAX_TS
        assert tick.symbol
        assert tick.symbol.isprintable()
        assert " " not in tick.symbol


Mutation = Callable[[random.Random, Seed], tuple[bytes | str, str | None]]
"""A mutated frame and the reason it must be rejected with (``None``: unknown, check only)."""


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj)


def truncate(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    raw = _dump(seed.obj)
    return raw[: rng.randrange(len(raw))], "invalid_json"


def flip(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    raw = bytearray(_dump(seed.obj))
    for _ in range(rng.randint(1, 3)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    return bytes(raw), None


def bad_price(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    value = rng.choice(BAD_PRICES)
    return _dump(_set(seed.obj, seed.price, value)), "invalid_price"


def nan_literal(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    token = rng.choice(["NaN", "Infinity", "-Infinity"])
    # json.dumps writes the bare tokens, which strict JSON (and every venue) never sends
    return json.dumps(_set(seed.obj, seed.price, float(token))), "invalid_json"


def ok_price(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    return _dump(_set(seed.obj, seed.price, rng.choice(OK_PRICES))), None


def bad_ts(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    value = rng.choice(BAD_MS_TEXT if seed.ts_text else BAD_MS)
    return _dump(_set(seed.obj, seed.ts, value)), "invalid_field"


def bad_symbol(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    return _dump(_set(seed.obj, seed.symbol, rng.choice(BAD_SYMBOLS))), "invalid_field"


def wrong_nesting(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    choice = rng.randrange(3)
    if choice == 0:
        return _dump({"payload": seed.obj}), "unknown_shape"
    if choice == 1:
        return _dump(rng.choice([5, "text", None, True])), "unknown_shape"
    return _dump(_set(seed.obj, seed.price[:1], rng.choice([5, "x", None]))), None


def deep(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    depth = rng.choice([50, 500, 1000, 1100, 5000])
    if depth <= 1000:  # within the decoder's limit: a price that is a deeply nested list
        marked = _dump(_set(seed.obj, seed.price, "__deep__"))
        nested = b"[" * depth + b'"1"' + b"]" * depth
        return marked.replace(b'"__deep__"', nested), "invalid_price"
    text = _dump(seed.obj).decode()
    return "[" * depth + text + "]" * depth, "invalid_json"


def oversized(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    raw = _dump(seed.obj)
    pad = MAX_FRAME_BYTES - len(raw) + rng.randint(1, 100)
    if rng.random() < 0.5:
        return raw + b" " * pad, "oversized"
    return raw.decode() + " " * pad, "oversized"


def not_utf8(rng: random.Random, seed: Seed) -> tuple[bytes | str, str | None]:
    raw = _dump(seed.obj)
    cut = raw.index(b'"', rng.randrange(len(raw) // 2)) + 1  # inside a string
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    return raw[:cut] + bad + raw[cut:], "invalid_json"


MUTATIONS: list[tuple[Mutation, int]] = [
    (truncate, 20),
    (flip, 25),
    (bad_price, 15),
    (nan_literal, 4),
    (ok_price, 4),
    (bad_ts, 10),
    (bad_symbol, 8),
    (wrong_nesting, 6),
    (deep, 3),
    (oversized, 1),
    (not_utf8, 4),
]


def test_ten_thousand_mutated_real_frames() -> None:
    """10,000 mutations of real frames, fixed seed: none raises, every result keeps the
    invariants, every frame broken on purpose is rejected with its expected reason, and every
    mutation kind was exercised."""
    rng = random.Random(SEED)
    seeds = _seeds()
    parsers = {source: FrameParser(price_source=source) for source in ("mark", "trade", "mid")}
    functions = [mutation for mutation, _ in MUTATIONS]
    weights = [weight for _, weight in MUTATIONS]
    done: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for _ in range(FRAMES):
        seed = rng.choice(seeds)
        mutation = rng.choices(functions, weights)[0]
        raw, expected = mutation(rng, seed)
        parsed = parsers[seed.source].parse(raw, rng.choice([None, 1_700_000_000_000_000_000]))
        _check(parsed)
        found = {reason for reason, _ in parsed.rejects}
        assert expected is None or expected in found, (mutation.__name__, raw[:300], parsed)
        done[mutation.__name__] += 1
        reasons.update(found)
    assert set(done) == {mutation.__name__ for mutation in functions}
    assert set(reasons) == REASONS


def test_the_seeds_are_clean() -> None:
    """Unmutated, every seed frame gives ticks and no rejects (so rejects above come from the
    mutations)."""
    for seed in _seeds():
        parsed = FrameParser(price_source=seed.source).parse(_dump(seed.obj), None)
        assert parsed.ticks
        assert parsed.rejects == ()


TARDIS_ROWS = (
    (CAPTURES / "okex_futures_BTC-USD_UM_XPERP_derivative_ticker_nautilus.csv")
    .read_text(encoding="utf-8")
    .splitlines()[1:]
)


def test_mutated_tardis_rows() -> None:
    """2,000 mutated real Tardis rows (truncations, byte flips, bad marks, bad timestamps): none
    raises, the invariants hold, and the known-bad ones get their reason."""
    rng = random.Random(SEED)
    tardis = TardisDerivativeTicker()
    for _ in range(2000):
        fields = rng.choice(TARDIS_ROWS).split(",")
        kind = rng.randrange(4)
        expected: str | None = None
        if kind == 0:
            row: str | bytes = ",".join(fields)[: rng.randrange(60)]
        elif kind == 1:
            data = bytearray(",".join(fields).encode())
            data[rng.randrange(len(data))] = rng.randrange(256)
            row = bytes(data)
        elif kind == 2:
            fields[10] = rng.choice(["NaN", "-1", "0", "inf", "1e999", "x"])
            row, expected = ",".join(fields), "invalid_price"
        else:
            fields[rng.choice([2, 3])] = rng.choice(["-5", "1.5", "x", "9" * 25])
            row, expected = ",".join(fields), "invalid_field"
        parsed = tardis.parse(row)
        _check(parsed)
        assert expected is None or expected in {reason for reason, _ in parsed.rejects}


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    """Any bytes at all: the auto-detecting parser and the Tardis parser return, never raise."""
    _check(FrameParser().parse(raw, None))
    _check(TardisDerivativeTicker().parse(raw))


VENUE_KEYS = (
    *("e", "E", "s", "p", "T", "X", "b", "a", "data", "stream", "result", "id", "code", "msg"),
    *("topic", "type", "ts", "markPrice", "symbol", "op", "success"),
    *("arg", "event", "channel", "markPx", "instId"),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(VENUE_KEYS), children, max_size=6)
    ),
    max_leaves=25,
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(JSON, st.sampled_from(["mark", "trade", "mid"]))
def test_arbitrary_json_with_venue_keys(obj: Any, source: str) -> None:
    """Any JSON built from the venues' own keys (so the shapes get close to real frames): the
    parser returns, and whatever ticks it gives are sound."""
    _check(FrameParser(price_source=source).parse(orjson.dumps(obj), None))
