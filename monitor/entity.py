"""Entities: what can be liquidated on its own (interfaces §2), and their valuation.

* isolated: one isolated position, keyed (account, symbol, side); its wallet is the position's
  isolated margin;
* cross: every cross position of an account in one margin asset, keyed (account, asset); its
  wallet is the account's wallet in that asset.

Both are one :class:`Entity`: a wallet plus positions grouped by symbol. For an entity,

* margin balance ``MB = wallet + Σ uPnL`` and maintenance margin ``MM = Σ (N·mmr − cum)``,
* margin ratio ``MM / MB`` (reported as ``None`` when ``MB <= 0``),
* liquidated when ``MB <= MM`` (or ``MB <= 0``).

A symbol without a mark yet values each of its positions at that position's entry price.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from monitor.events import EntityRef
from monitor.margin import (
    Leg,
    maintenance_margin,
    maintenance_margin_exact,
    unrealized_pnl,
    unrealized_pnl_exact,
)
from monitor.records import Mode, Side

FLOAT_TOLERANCE = 1e-12
"""Relative bound on the float error of a valuation: below it, decisions are made exactly."""


class Position(NamedTuple):
    """An open position in slot (account, symbol, side)."""

    account: str
    symbol: str
    side: Side
    mode: Mode
    leverage: Decimal
    leg: Leg


class Entity:
    """Mutable live state of one entity (owned by the engine)."""

    __slots__ = (
        "alive",
        "exposures",
        "level",
        "liquidating",
        "ref",
        "shown_level",
        "shown_ratio",
        "sort_key",
        "version",
        "wallet",
        "wallet_f",
    )

    def __init__(self, ref: EntityRef, wallet: Decimal) -> None:
        self.ref = ref
        self.sort_key = ref.sort_key
        self.exposures: dict[str, dict[str, Position]] = {}
        self.wallet = wallet
        self.wallet_f = float(wallet)
        self.level = -1  # index of the highest active alert level, -1 for none
        self.liquidating = False  # under the ``hold`` policy, after a liquidation
        self.version = 0  # bumped whenever its trigger bands are replaced
        self.alive = True
        self.shown_ratio: float | None = None  # ratio of the last state event (state tracking)
        self.shown_level = -1

    def set_wallet(self, wallet: Decimal) -> None:
        self.wallet = wallet
        self.wallet_f = float(wallet)

    def positions(self) -> list[Position]:
        """Positions in canonical order (symbol, then side)."""
        ordered: list[Position] = []
        for symbol in sorted(self.exposures):
            slots = self.exposures[symbol]
            ordered.extend(slots[side] for side in sorted(slots))
        return ordered

    def legs(self, symbol: str) -> list[Leg]:
        return [p.leg for p in self.exposures[symbol].values()]

    @property
    def mm_can_be_negative(self) -> bool:
        return any(
            p.leg.contract.mm_can_be_negative for s in self.exposures.values() for p in s.values()
        )


def measure(entity: Entity, prices: dict[str, float]) -> tuple[float, float, float]:
    """``(MB, MM, tolerance)`` in floats; ``tolerance`` bounds their absolute float error.

    The tolerance is :data:`FLOAT_TOLERANCE` times the sum of the magnitudes that enter the sums,
    so a comparison of ``α·MM − β·MB`` with 0 is exact whenever it clears the tolerance.
    """
    mb = entity.wallet_f
    mm = 0.0
    scale = abs(mb)
    for symbol, slots in entity.exposures.items():
        price = prices.get(symbol)
        for position in slots.values():
            leg = position.leg
            contract = leg.contract
            qcs = leg.qcs
            p = leg.entry_f if price is None else price
            if contract.is_inverse:
                inv = 1.0 / p
                n = qcs * inv
                mb += leg.sign * qcs * (leg.inv_entry_f - inv)
                scale += qcs * (leg.inv_entry_f + inv)
            else:
                n = qcs * p
                mb += leg.sign * qcs * (p - leg.entry_f)
                scale += qcs * (p + leg.entry_f)
            t = contract.tier_index(n)
            cum = contract.cum_f[t]
            mm += n * contract.mmr_f[t] - cum
            scale += cum
    return mb, mm, scale * FLOAT_TOLERANCE


def measure_exact(
    entity: Entity, exact_mark: Callable[[str], Fraction | None]
) -> tuple[Fraction, Fraction]:
    """``(MB, MM)`` in exact rational arithmetic."""
    mb = Fraction(entity.wallet)
    mm = Fraction(0)
    for symbol, slots in entity.exposures.items():
        mark = exact_mark(symbol)
        for position in slots.values():
            leg = position.leg
            price = Fraction(leg.entry) if mark is None else mark
            mb += unrealized_pnl_exact(leg, price)
            mm += maintenance_margin_exact(leg, price)
    return mb, mm


def symbol_terms(entity: Entity, prices: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Per symbol, ``(Σ uPnL, Σ MM)`` of the entity's positions in it (floats)."""
    terms: dict[str, tuple[float, float]] = {}
    for symbol, slots in entity.exposures.items():
        price = prices.get(symbol)
        upnl = mm = 0.0
        for position in slots.values():
            leg = position.leg
            p = leg.entry_f if price is None else price
            upnl += unrealized_pnl(leg, p)
            mm += maintenance_margin(leg, p)
        terms[symbol] = (upnl, mm)
    return terms
