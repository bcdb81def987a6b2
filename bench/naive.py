"""The deliberately naive baseline: on every tick, re-evaluate every entity holding the symbol.

It shares the engine's book, valuation and alert state machine (so its events are the
reference the indexed engine must reproduce exactly) and replaces only the routing: no trigger
index, no bands, and every holder of the ticked symbol run through the scalar evaluation, one
entity at a time.
"""

from __future__ import annotations

from monitor.config import EngineConfig
from monitor.engine import Engine


class NaiveEngine(Engine):
    """:class:`monitor.engine.Engine` without the trigger index."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config)
        self._indexed = False
        self._evaluator.indexing = False
        self._evaluator.batching = False

    def _crossed(self, sid: int, mark: float) -> list[int]:
        return self._holders(sid)


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
