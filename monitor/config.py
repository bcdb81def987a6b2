"""Engine settings: alert levels, hysteresis and the liquidation policy (docs/alerts.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from typing import Literal, cast

from monitor.errors import ConfigError

Policy = Literal["close", "hold"]

DEFAULT_LEVELS = (Decimal("0.7"), Decimal("0.8"), Decimal("0.9"))
DEFAULT_HYSTERESIS = Decimal("0.05")
STATE_RATIO_FLOOR = 0.1
"""State moves are measured against at least this ratio, so a ratio far below every alert level
is not republished on every small change: with ``state_move`` 5 %, a ratio under 0.1 is
republished when it moved by 0.005. (At 0.01, the accounts far from any threshold of a 100,000
account book republished — and were re-evaluated — on every few-percent move of a mark.)"""


def _decimal(name: str, value: object) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not number.is_finite():
        raise ConfigError(f"{name}: {value!r} is not a finite number")
    return number


def parse_levels(text: str) -> tuple[Decimal, ...]:
    """Parse ``"0.7,0.8,0.9"`` into validated levels."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    return tuple(_decimal("levels", p) for p in parts)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Validated engine settings. Levels are margin ratios (MM / margin balance)."""

    levels: tuple[Decimal, ...] = DEFAULT_LEVELS
    hysteresis: Decimal = DEFAULT_HYSTERESIS
    policy: Policy = "close"
    funding: bool = False
    """Settle the funding that ticks carry (docs/collateral.md §3): off by default, for in a
    sidecar the trading system reports funding through wallet updates."""
    state_move: Decimal | None = None
    """Emit :class:`MarginStateChanged` when an entity's margin ratio moved by this fraction of
    its last published value (at least of a ratio of ``STATE_RATIO_FLOOR``); ``None``: no state
    events at all (the default: a replay to JSON Lines has no use for them)."""
    state_sweep: bool = False
    """With ``state_move``: find the moved states in sweeps over the book's arrays
    (:meth:`monitor.engine.Engine.sweep_states`, called by the service between inputs) instead of
    on every tick. A tick then costs only what can raise an alert: the trigger bands leave out
    the published ratio's step, and an evaluation builds no state event. Level changes,
    liquidations, feed health and a state unpublished since a restart are found by the next
    sweep; clears (:class:`MarginStateCleared`) are still emitted as they happen."""
    levels_f: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        levels = tuple(_decimal("levels", v) for v in self.levels)
        if not levels:
            raise ConfigError("levels: at least one level is needed")
        if any(not (Decimal(0) < v < Decimal(1)) for v in levels):
            raise ConfigError(
                "levels: every level must lie strictly between 0 and 1 "
                "(a margin ratio of 1 is liquidation)"
            )
        if any(b <= a for a, b in pairwise(levels)):
            raise ConfigError("levels: levels must be strictly increasing, e.g. 0.7,0.8,0.9")
        hysteresis = _decimal("hysteresis", self.hysteresis)
        if hysteresis < 0:
            raise ConfigError("hysteresis: must be zero or positive")
        if self.state_move is not None:
            move = _decimal("state_move", self.state_move)
            if not Decimal(0) < move < Decimal(1):
                raise ConfigError("state_move: must lie strictly between 0 and 1, e.g. 0.05")
            object.__setattr__(self, "state_move", move)
        if self.policy not in ("close", "hold"):
            raise ConfigError(f"policy: must be 'close' or 'hold', not {self.policy!r}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "hysteresis", hysteresis)
        object.__setattr__(self, "levels_f", tuple(float(v) for v in levels))

    @classmethod
    def from_values(
        cls,
        levels: Iterable[object] | str | None = None,
        hysteresis: object | None = None,
        policy: str | None = None,
        state_move: object | None = None,
        funding: bool = False,
        state_sweep: bool = False,
    ) -> EngineConfig:
        """Build from loosely typed values (command line, config file)."""
        if isinstance(levels, str):
            level_values = parse_levels(levels)
        elif levels is None:
            level_values = DEFAULT_LEVELS
        else:
            level_values = tuple(_decimal("levels", v) for v in levels)
        return cls(
            levels=level_values,
            hysteresis=DEFAULT_HYSTERESIS
            if hysteresis is None
            else _decimal("hysteresis", hysteresis),
            policy=cast(Policy, policy or "close"),
            state_move=None if state_move is None else _decimal("state_move", state_move),
            funding=funding,
            state_sweep=state_sweep,
        )

    def rearm_threshold(self, level_index: int) -> Decimal:
        """``h − hysteresis`` for the level at ``level_index``."""
        return self.levels[level_index] - self.hysteresis
