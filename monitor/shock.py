"""The what-if shock: what the next ticks would do if some marks moved at once.

``shock(engine, {"BTCUSDT": Decimal("-0.08")})`` answers with exactly the alert events that
ticks carrying those moves would cause if they arrived next, all at once (one evaluation of each
entity at the shocked marks), and changes nothing: the book is valued at hypothetical marks in
one pass over its arrays (:func:`monitor.valuation.value_many` with other marks), the close
calls are re-made exactly with the shocked marks as exact decimals, and only the entities that
would change state are reported, in canonical order, with the numbers their events would carry:

* ``liquidation``: ``loss`` (the isolated wallet, or the whole cross wallet) and ``shortfall``
  (``max(0, −MB)``);
* ``margin_warning``: the level it would reach and its margin ratio;
* ``margin_recovered``: an active warning that the move would clear.

A move is a fraction (``-0.08`` is −8 %) of the symbol's last mark; a symbol with no contract or
no mark yet cannot be shocked and is reported as refused, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.book import NONE
from monitor.events import EntityRef
from monitor.exact import UNBOUNDED
from monitor.valuation import value_exact, value_many
from monitor.views import entity_ref, sort_key

if TYPE_CHECKING:
    from monitor.engine import Engine


@dataclass(frozen=True, slots=True)
class ShockOutcome:
    """One alert event the shock would cause."""

    kind: str  # liquidation | margin_warning | margin_recovered
    entity: EntityRef
    margin_ratio: float | None
    margin_balance: float
    maintenance_margin: float
    level: float | None = None
    loss: float | None = None
    shortfall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        ref = self.entity
        out: dict[str, Any] = {"account": ref.account, "scope": ref.scope, "asset": ref.asset}
        if ref.scope == "isolated":
            out["symbol"] = ref.symbol
            out["side"] = ref.side
        if self.kind == "liquidation":
            out["loss"] = self.loss
            out["shortfall"] = self.shortfall
        elif self.kind == "margin_warning":
            out["level"] = self.level
        out["margin_ratio"] = self.margin_ratio
        out["margin_balance"] = self.margin_balance
        out["maintenance_margin"] = self.maintenance_margin
        return out


@dataclass(frozen=True, slots=True)
class ShockResult:
    """The answer: the moves applied (and the marks they give), the outcomes, the refusals."""

    moves: dict[str, float]
    marks: dict[str, float]
    outcomes: tuple[ShockOutcome, ...]
    refused: dict[str, str] = field(default_factory=dict)
    entities_valued: int = 0

    def of_kind(self, kind: str) -> list[ShockOutcome]:
        return [o for o in self.outcomes if o.kind == kind]

    def as_dict(self) -> dict[str, Any]:
        """The JSON answer (``liqmon replay --shock-json``, MQTT shock responses)."""
        liquidations = self.of_kind("liquidation")
        warnings = self.of_kind("margin_warning")
        recoveries = self.of_kind("margin_recovered")
        return {
            "moves": self.moves,
            "marks": self.marks,
            "refused": self.refused,
            "liquidations": [o.as_dict() for o in liquidations],
            "warnings": [o.as_dict() for o in warnings],
            "recoveries": [o.as_dict() for o in recoveries],
            "totals": {
                "entities_valued": self.entities_valued,
                "liquidations": len(liquidations),
                "warnings": len(warnings),
                "recoveries": len(recoveries),
                "loss": sum(o.loss or 0.0 for o in liquidations),
                "shortfall": sum(o.shortfall or 0.0 for o in liquidations),
            },
        }


def parse_move(text: str) -> tuple[str, Decimal]:
    """``"BTCUSDT=-8%"`` (or ``-0.08``) as ``("BTCUSDT", Decimal("-0.08"))``; ``ValueError``
    when it is not one."""
    symbol, sep, amount = text.partition("=")
    if not sep or not symbol.strip() or not amount.strip():
        raise ValueError(f"{text!r}: expected SYMBOL=MOVE, e.g. BTCUSDT=-8%")
    amount = amount.strip()
    percent = amount.endswith("%")
    try:
        value = Decimal(amount.removesuffix("%"))
    except ArithmeticError:
        raise ValueError(f"{text!r}: {amount!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text!r}: the move must be finite")
    if percent:
        value = value / 100
    if value <= -1:
        raise ValueError(f"{text!r}: a move of -100% or more leaves no price")
    return symbol.strip(), value


def shock(engine: Engine, moves: Mapping[str, Decimal]) -> ShockResult:
    """See the module docstring."""
    book = engine.book
    evaluator = engine._evaluator
    ids = book.symbol_names.ids
    marks = book.symbols.price[: book.symbols.size].copy()
    exact_marks: dict[int, Decimal] = {}
    refused: dict[str, str] = {}
    applied: dict[str, float] = {}
    shocked: dict[str, float] = {}
    for symbol, move in moves.items():
        sid = ids.get(symbol)
        if sid is None or book.contracts[sid] is None:
            refused[symbol] = "unknown_symbol"
            continue
        current = engine._exact_mark_id(sid)
        if current is None:
            refused[symbol] = "no_mark_yet"
            continue
        if move <= -1:
            refused[symbol] = "move_leaves_no_price"
            continue
        new = UNBOUNDED.multiply(current, UNBOUNDED.add(Decimal(1), move))
        exact_marks[sid] = new
        marks[sid] = float(new)
        applied[symbol] = float(move)
        shocked[symbol] = float(new)
    due: list[int] = []
    for sid in exact_marks:
        due.extend(engine._holders(sid))
    entities = np.unique(np.array(due, dtype=np.int64))
    if not len(entities):
        return ShockResult(applied, shocked, (), refused, 0)
    evaluator.tiers.refresh(book, evaluator.contracts_version)
    mb, mm, tol, _ = value_many(book, evaluator.tiers, entities, marks)

    def exact_mark(sid: int) -> Decimal | None:
        found = exact_marks.get(sid)
        return found if found is not None else engine._exact_mark_id(sid)

    level = book.entities.level[entities].astype(np.int64)
    levels_f = evaluator.levels_f
    # an entity is quiet when every decision clears the float error bound and changes nothing
    quiet = (mb - mm) > tol
    if evaluator.negative_mm_possible:
        quiet &= mb > tol
    top = np.full(len(entities), -1, dtype=np.int64)
    for i, beta in enumerate(levels_f):
        gap = mm - beta * mb
        quiet &= np.abs(gap) > tol
        top[gap > tol] = i
    quiet &= top <= level
    rearm = np.array([*evaluator.rearm_f, 0.0])[level]
    quiet &= (level < 0) | ((mm - rearm * mb) > tol)
    flagged = entities[~quiet].tolist()
    flagged.sort(key=lambda e: sort_key(book, e))
    outcomes = [
        outcome
        for entity in flagged
        if (outcome := _outcome(engine, entity, exact_mark)) is not None
    ]
    return ShockResult(applied, shocked, tuple(outcomes), refused, len(entities))


def _outcome(engine: Engine, entity: int, exact_mark: Any) -> ShockOutcome | None:
    """The event the state machine would emit for ``entity`` at the shocked marks, decided
    exactly."""
    book = engine.book
    evaluator = engine._evaluator
    mb, mm = value_exact(book, entity, exact_mark)
    ref = entity_ref(book, entity)
    ratio = float(mm / mb) if mb > 0 else None
    numbers = {"margin_ratio": ratio, "margin_balance": float(mb), "maintenance_margin": float(mm)}
    liquidated = mb <= mm or (
        evaluator.negative_mm_possible and evaluator.mm_can_be_negative(entity) and mb <= 0
    )
    if liquidated:
        wallet = Fraction(book.wallet(entity))
        return ShockOutcome(
            "liquidation",
            ref,
            loss=float(wallet),
            shortfall=float(-mb) if mb < 0 else 0.0,
            **numbers,  # type: ignore[arg-type]
        )
    top = -1
    for i in range(len(evaluator.levels) - 1, -1, -1):
        if mm - evaluator.levels[i] * mb >= 0:
            top = i
            break
    h = book.entities.v_level[entity]
    if h == NONE:
        h = -1
    if top >= 0 and top > h:
        return ShockOutcome(
            "margin_warning",
            ref,
            level=float(evaluator.levels[top]),
            **numbers,  # type: ignore[arg-type]
        )
    if h >= 0 and top < 0 and mm - evaluator.rearm[h] * mb < 0:
        return ShockOutcome("margin_recovered", ref, **numbers)  # type: ignore[arg-type]
    return None
