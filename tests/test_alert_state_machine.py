"""Table tests of the per-entity alert state machine (``docs/alerts.md``).

Each scenario drives one entity through a list of target margin ratios. The mark that produces a
target is solved exactly (see :class:`Book`), so a step can sit *exactly* on a level or on a
re-arm threshold ``h − hysteresis``; every step asserts the exact list of events it caused.

The instruments are single-tier linear contracts (``mmr = 0.05``, ``cum = 0``), which keeps the
margin ratio a simple function of the mark:

    MB = W + Σ s·q·(P − EP),   MM = 0.05·Σ q·P,   ratio = MM / MB

With one moving mark ``P`` (the others held) ``ratio = r`` solves to
``P = (B − r·A) / (q·(r·s − mmr))``, ``A`` and ``B`` being the rest of MB and MM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, EngineEvent, Record, to_payload

MMR = Fraction(1, 20)
CAP = "1000000000000"


def record(**fields: Any) -> Record:
    """A record exactly as a replay file would carry it (decimals as strings)."""
    return parse_line(json.dumps(fields))


def contract(symbol: str) -> Record:
    return record(
        type="contract",
        symbol=symbol,
        kind="linear",
        margin_asset="USDT",
        contract_size="1",
        brackets=[{"floor": "0", "cap": CAP, "mmr": "0.05", "cum": "0"}],
    )


def decimal_text(value: Fraction) -> tuple[str, bool]:
    """``value`` as decimal text, and whether that text is exact (a terminating decimal)."""
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        exact = Decimal(value.numerator) / Decimal(value.denominator)
        return format(exact.normalize(), "f"), True
    return format(round(Decimal(value.numerator) / Decimal(value.denominator), 12), "f"), False


@dataclass
class Book:
    """The positions of one entity, kept alongside the engine to solve marks for ratios."""

    wallet: Fraction
    positions: dict[str, tuple[Fraction, Fraction]]  # symbol -> (signed qty, entry)
    marks: dict[str, Fraction] = field(default_factory=dict)

    def mark(self, symbol: str) -> Fraction:
        return self.marks.get(symbol, self.positions[symbol][1])

    def ratio(self) -> Fraction:
        mb = self.wallet + sum(q * (self.mark(s) - e) for s, (q, e) in self.positions.items())
        mm = sum(MMR * abs(q) * self.mark(s) for s, (q, _) in self.positions.items())
        return mm / mb

    def solve(self, symbol: str, ratio: Fraction) -> Fraction:
        """The mark of ``symbol`` at which the entity's ratio is exactly ``ratio``."""
        qty, _ = self.positions[symbol]
        a = self.wallet + sum(
            q * (self.mark(s) - e) for s, (q, e) in self.positions.items() if s != symbol
        )
        a -= qty * self.positions[symbol][1]
        b = sum(MMR * abs(q) * self.mark(s) for s, (q, _) in self.positions.items() if s != symbol)
        sign = 1 if qty > 0 else -1
        price = (b - ratio * a) / (abs(qty) * (ratio * sign - MMR))
        assert price > 0
        return price


def summary(event: EngineEvent) -> str:
    """``warning 0.8``, ``recovered`` or ``liquidation``."""
    payload = to_payload(event)
    if payload["event"] == "margin_warning":
        return f"warning {payload['level']}"
    return payload["event"].removeprefix("margin_")


class Driver:
    """Feeds marks that hit target ratios into an engine and records what each step emitted."""

    def __init__(self, engine: Engine, book: Book) -> None:
        self.engine = engine
        self.book = book
        self.ts = 100
        config = engine.config
        self.boundaries = {Fraction(1)} | {
            Fraction(level) - Fraction(config.hysteresis) * k
            for level in config.levels
            for k in (0, 1)
        }

    def to_ratio(self, target: str, symbol: str | None = None) -> list[EngineEvent]:
        symbol = symbol or next(iter(self.book.positions))
        price, exact = decimal_text(self.book.solve(symbol, Fraction(target)))
        self.book.marks[symbol] = Fraction(price)
        if Fraction(target) in self.boundaries:
            assert exact, f"the mark for the boundary ratio {target} must be exact"
        if exact:
            assert self.book.ratio() == Fraction(target)
        self.ts += 1
        return list(self.engine.apply(record(type="tick", ts=self.ts, symbol=symbol, mark=price)))

    def run(self, steps: list[tuple[str, list[str]]], symbol: str | None = None) -> None:
        for n, (target, expected) in enumerate(steps):
            events = self.to_ratio(target, symbol)
            assert [summary(e) for e in events] == expected, f"step {n}: ratio {target}"
            for event in events:
                ratio = to_payload(event)["margin_ratio"]
                if ratio is not None:
                    assert ratio == pytest.approx(float(target), rel=1e-9, abs=0)


# An isolated short: 100 units entered at 10,000 with 1,034,900 of isolated margin. Its ratio
# rises with the mark; 0.65, 0.7, 0.75, 0.8, 0.85, 0.9 and 1 all fall on terminating decimals
# (0.8 at 19,152 exactly, liquidation at 19,380 exactly).
ISOLATED_QTY = Fraction(-100)
ISOLATED_ENTRY = Fraction(10_000)
ISOLATED_WALLET = Fraction(1_034_900)


def isolated(config: EngineConfig | None = None) -> Driver:
    engine = Engine(config)
    engine.apply(contract("TOYUSDT"))
    engine.apply(record(type="tick", ts=1, symbol="TOYUSDT", mark="10000"))
    opened = engine.apply(
        record(
            type="position",
            ts=2,
            account="alice",
            symbol="TOYUSDT",
            side="both",
            mode="isolated",
            qty=str(ISOLATED_QTY),
            entry=str(ISOLATED_ENTRY),
            leverage="1",
            isolated_wallet=str(ISOLATED_WALLET),
        )
    )
    assert list(opened) == []
    book = Book(ISOLATED_WALLET, {"TOYUSDT": (ISOLATED_QTY, ISOLATED_ENTRY)})
    book.marks["TOYUSDT"] = Fraction(10_000)
    return Driver(engine, book)


DEFAULT_TABLES: dict[str, list[tuple[str, list[str]]]] = {
    "rising through the levels one at a time warns once per level": [
        ("0.5", []),
        ("0.69", []),
        ("0.71", ["warning 0.7"]),
        ("0.79", []),
        ("0.81", ["warning 0.8"]),
        ("0.85", []),
        ("0.91", ["warning 0.9"]),
        ("0.99", []),
    ],
    "a jump over several levels gives one warning at the top level": [
        ("0.3", []),
        ("0.95", ["warning 0.9"]),
        ("0.92", []),
        ("0.97", []),
    ],
    "a jump from an active level over the next ones gives one warning": [
        ("0.72", ["warning 0.7"]),
        ("0.93", ["warning 0.9"]),
    ],
    "falling back within the hysteresis is silent, and so is rising back": [
        ("0.82", ["warning 0.8"]),
        ("0.79", []),
        ("0.76", []),
        ("0.75", []),  # exactly h − hysteresis: not below it
        ("0.8", []),
        ("0.89", []),
    ],
    "below h − hysteresis with a lower level active: h drops silently, re-rising warns": [
        ("0.91", ["warning 0.9"]),
        ("0.85", []),  # exactly 0.9 − 0.05: h stays 0.9
        ("0.849", []),  # below: h becomes 0.8 silently
        ("0.9", ["warning 0.9"]),
        ("0.72", []),  # below 0.85 and below 0.75: h becomes 0.7 (top), silently
        ("0.8", ["warning 0.8"]),
    ],
    "below the lowest level − hysteresis: margin_recovered, then the levels re-arm": [
        ("0.7", ["warning 0.7"]),
        ("0.66", []),
        ("0.65", []),  # exactly 0.7 − 0.05: not below
        ("0.6499", ["recovered"]),
        ("0.6", []),
        ("0.7", ["warning 0.7"]),
    ],
    "from the top level straight to safety: one margin_recovered": [
        ("0.95", ["warning 0.9"]),
        ("0.1", ["recovered"]),
        ("0.5", []),
    ],
    "a ratio exactly at a level reaches it": [
        ("0.7", ["warning 0.7"]),
        ("0.8", ["warning 0.8"]),
        ("0.9", ["warning 0.9"]),
        ("1", ["liquidation"]),  # MB == MM exactly
    ],
    "liquidation takes precedence over the warnings it jumps": [
        ("0.5", []),
        ("1.2", ["liquidation"]),
        ("0.5", []),  # closed: the position is gone
    ],
    "liquidation from an active level": [
        ("0.82", ["warning 0.8"]),
        ("1.0001", ["liquidation"]),
    ],
}


@pytest.mark.parametrize("steps", DEFAULT_TABLES.values(), ids=DEFAULT_TABLES.keys())
def test_isolated_position_under_default_levels(steps: list[tuple[str, list[str]]]) -> None:
    """An isolated position driven through the table emits exactly the listed events per step
    (levels 0.7/0.8/0.9, hysteresis 0.05, close policy)."""
    isolated().run(steps)


def test_exact_marks_really_are_exact() -> None:
    """The marks used for the on-the-boundary rows are terminating decimals, so those rows test
    the boundary itself and not a rounding of it."""
    book = isolated().book
    for target in ("0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "1"):
        _, exact = decimal_text(book.solve("TOYUSDT", Fraction(target)))
        assert exact, target
    assert book.solve("TOYUSDT", Fraction("0.8")) == 19_152
    assert book.solve("TOYUSDT", Fraction(1)) == 19_380


def test_liquidation_clears_h_under_hold() -> None:
    """Under ``hold`` the liquidated position stays; when a margin record makes it healthy again
    its ``h`` is gone: the next rise to 0.9 warns at 0.9 again although 0.9 was active before."""
    driver = isolated(EngineConfig.from_values(policy="hold"))
    driver.run([("0.91", ["warning 0.9"]), ("1.01", ["liquidation"]), ("0.3", [])])
    # A margin record touches the entity: it is re-evaluated at once, at ratio 0.3 — silent.
    driver.ts += 1
    touched = driver.engine.apply(
        record(type="margin", ts=driver.ts, account="alice", symbol="TOYUSDT", side="both", delta=1)
    )
    assert list(touched) == []
    driver.book.wallet += 1
    driver.run([("0.88", ["warning 0.8"]), ("0.91", ["warning 0.9"])])


CUSTOM = EngineConfig.from_values(levels="0.55,0.75,0.95", hysteresis="0.1", policy="close")

CUSTOM_TABLES: dict[str, list[tuple[str, list[str]]]] = {
    "custom levels: one by one, each exactly at its level": [
        ("0.55", ["warning 0.55"]),
        ("0.75", ["warning 0.75"]),
        ("0.95", ["warning 0.95"]),
        ("0.99", []),
    ],
    "custom hysteresis 0.1: re-arm below h − 0.1 only": [
        ("0.96", ["warning 0.95"]),
        ("0.86", []),
        ("0.85", []),  # exactly 0.95 − 0.1
        ("0.84", []),  # h becomes 0.75 silently
        ("0.95", ["warning 0.95"]),
        ("0.6", []),  # h becomes 0.55 silently
        ("0.5", []),
        ("0.45", []),  # exactly 0.55 − 0.1
        ("0.4499", ["recovered"]),
        ("0.8", ["warning 0.75"]),
    ],
}


@pytest.mark.parametrize("steps", CUSTOM_TABLES.values(), ids=CUSTOM_TABLES.keys())
def test_isolated_position_under_custom_levels(steps: list[tuple[str, list[str]]]) -> None:
    """The same machine with levels 0.55/0.75/0.95 and hysteresis 0.1."""
    isolated(CUSTOM).run(steps)


def test_zero_hysteresis_rearms_as_soon_as_the_ratio_drops_below_the_level() -> None:
    """With hysteresis 0 a ratio just below the active level re-arms it (silently, with a lower
    level still active) and touching the level again warns again; below the lowest level the
    entity recovers."""
    driver = isolated(EngineConfig.from_values(levels="0.7,0.8", hysteresis="0"))
    driver.run(
        [
            ("0.8", ["warning 0.8"]),
            ("0.8", []),
            ("0.7999", []),
            ("0.8", ["warning 0.8"]),
            ("0.7", []),
            ("0.6999", ["recovered"]),
            ("0.7", ["warning 0.7"]),
        ]
    )


# A cross entity: two shorts in two symbols on one USDT wallet.
CROSS_WALLET = Fraction(1_500_000)
CROSS_POSITIONS = {
    "AAAUSDT": (Fraction(-50), Fraction(10_000)),
    "BBBUSDT": (Fraction(-2_000), Fraction(250)),
}


def cross() -> Driver:
    engine = Engine()
    ts = 1
    for symbol, (_, entry) in CROSS_POSITIONS.items():
        engine.apply(contract(symbol))
        engine.apply(record(type="tick", ts=ts, symbol=symbol, mark=str(entry)))
        ts += 1
    engine.apply(
        record(type="balance", ts=ts, account="bob", asset="USDT", wallet=str(CROSS_WALLET))
    )
    for symbol, (qty, entry) in CROSS_POSITIONS.items():
        opened = engine.apply(
            record(
                type="position",
                ts=ts,
                account="bob",
                symbol=symbol,
                side="both",
                mode="cross",
                qty=str(qty),
                entry=str(entry),
                leverage="5",
            )
        )
        assert list(opened) == []
    book = Book(CROSS_WALLET, dict(CROSS_POSITIONS))
    book.marks.update({s: e for s, (_, e) in CROSS_POSITIONS.items()})
    return Driver(engine, book)


CROSS_TABLES: dict[str, list[tuple[str, str, list[str]]]] = {
    "cross: levels reached by either symbol's mark, hysteresis across symbols": [
        ("AAAUSDT", "0.6", []),
        ("BBBUSDT", "0.71", ["warning 0.7"]),
        ("AAAUSDT", "0.82", ["warning 0.8"]),
        ("BBBUSDT", "0.76", []),
        ("AAAUSDT", "0.74", []),  # h becomes 0.7 silently
        ("BBBUSDT", "0.81", ["warning 0.8"]),
        ("AAAUSDT", "0.96", ["warning 0.9"]),
        ("BBBUSDT", "0.3", ["recovered"]),
        ("AAAUSDT", "0.92", ["warning 0.9"]),
    ],
    "cross: liquidation takes precedence and forgets the entity": [
        ("AAAUSDT", "0.86", ["warning 0.8"]),
        ("BBBUSDT", "1.5", ["liquidation"]),
        ("AAAUSDT", "0.86", []),
    ],
}


@pytest.mark.parametrize("steps", CROSS_TABLES.values(), ids=CROSS_TABLES.keys())
def test_cross_entity_with_two_symbols(steps: list[tuple[str, str, list[str]]]) -> None:
    """A cross entity's single state machine is driven by the marks of both its symbols (the
    other symbol held at its last mark); events are emitted for the entity, not per symbol."""
    driver = cross()
    for n, (symbol, target, expected) in enumerate(steps):
        events = driver.to_ratio(target, symbol)
        assert [summary(e) for e in events] == expected, f"step {n}: {symbol} to ratio {target}"
        for event in events:
            payload = to_payload(event)
            assert (payload["scope"], payload["account"], payload["asset"]) == (
                "cross",
                "bob",
                "USDT",
            )
            assert "symbol" not in payload


def test_cross_liquidation_under_close_zeroes_the_wallet_and_clears_h() -> None:
    """After a cross liquidation (close policy) the account starts over: new positions on a new
    balance begin with no active level, so reaching 0.8 warns again."""
    driver = cross()
    driver.run([("0.86", ["warning 0.8"]), ("1.01", ["liquidation"])], symbol="AAAUSDT")
    engine = driver.engine
    assert engine.balance("bob", "USDT") == 0
    assert engine.position_count == 0
    driver.ts += 1
    engine.apply(
        record(type="balance", ts=driver.ts, account="bob", asset="USDT", wallet="1000000")
    )
    mark = driver.book.marks["AAAUSDT"]
    reopened = engine.apply(
        record(
            type="position",
            ts=driver.ts,
            account="bob",
            symbol="AAAUSDT",
            side="both",
            mode="cross",
            qty="-50",
            entry=decimal_text(mark)[0],
            leverage="5",
        )
    )
    assert list(reopened) == []
    driver.book = Book(Fraction(1_000_000), {"AAAUSDT": (Fraction(-50), Fraction(mark))})
    driver.book.marks["AAAUSDT"] = mark
    driver.run([("0.81", ["warning 0.8"])], symbol="AAAUSDT")
