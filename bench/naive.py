"""The deliberately naive baseline: on every tick, re-evaluate every entity holding the symbol.

It shares the engine's valuation and alert state machine (so its events are the reference the
indexed engine must reproduce exactly) and replaces only the routing: no trigger index, no
bands, a full scan of the symbol's holders per tick.
"""

from __future__ import annotations

from monitor.engine import Engine, _Valuation
from monitor.entity import Entity


class NaiveEngine(Engine):
    """:class:`monitor.engine.Engine` without the trigger index."""

    def _due(self, symbol: str, price: float) -> list[Entity]:
        holders = self._holders.get(symbol)
        if not holders:
            return []
        return [entity for entity in holders.values() if not entity.liquidating]

    def _index(self, entity: Entity, valuation: _Valuation) -> None:
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.naive replay FILE ...``: the ``liqmon`` command line on this engine."""
    from liqmon import cli

    original = cli.Engine
    cli.Engine = NaiveEngine  # type: ignore[misc]
    try:
        return cli.main(argv)
    finally:
        cli.Engine = original  # type: ignore[misc]


if __name__ == "__main__":
    import sys

    sys.exit(main())
