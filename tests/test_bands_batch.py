"""The trigger bands computed for many entities at once (``monitor.bands_batch``) are the bands
the scalar path (``monitor.bands``) computes for each entity alone: edge for edge, within a
relative 1e-12 (both are then shrunk by 1e-9 before use), on every entity of books built by
random workloads (isolated and cross, hedged, linear and inverse, real and toy tiers, with and
without state tracking, at every alert level)."""

from __future__ import annotations

import argparse
from contextlib import suppress

import numpy as np
import orjson
import pytest

from bench.generate import Workload
from feeds.normalized import parse_line
from monitor import Engine, EngineConfig, RecordRefused
from monitor.valuation import value_one


def _book(seed: int, config: EngineConfig) -> Engine:
    args = argparse.Namespace(
        accounts=1200,
        far_accounts=200,
        ticks=15_000,
        symbols=20,
        inverse_share=0.25,
        record_every=40,
        jump_probability=0.003,
        seed=seed,
    )
    engine = Engine(config)
    for record in Workload(args).records():
        with suppress(RecordRefused):
            engine.apply(parse_line(orjson.dumps(record)))
    return engine


@pytest.mark.parametrize(
    ("seed", "state_move"), [(11, None), (12, "0.05"), (13, None), (14, "0.1")]
)
def test_batch_bands_equal_scalar_bands(seed: int, state_move: str | None) -> None:
    """Every band edge of every entity, computed both ways, agrees."""
    engine = _book(seed, EngineConfig.from_values(state_move=state_move))
    book, evaluator = engine.book, engine._evaluator
    entities = [int(e) for e in book.live_entities() if not book.entities.v_liquidating[int(e)]]
    levels = {int(book.entities.v_level[e]) for e in entities}
    assert len(levels) >= 3  # entities at several alert levels, not all calm
    scalar: dict[int, tuple[float, float]] = {}
    for entity in entities:
        evaluator.index_one(entity, *value_one(book, entity))
        for row in book.entity_rows(entity):
            scalar[row] = (book.rows.v_lo[row], book.rows.v_hi[row])
    evaluator.band_many(np.array(entities, dtype=np.int64))
    finite = 0
    for row, (lo, hi) in scalar.items():
        batch_lo, batch_hi = book.rows.v_lo[row], book.rows.v_hi[row]
        for one, many in ((lo, batch_lo), (hi, batch_hi)):
            if np.isfinite(one) and one > 0:
                finite += 1
                assert many == pytest.approx(one, rel=1e-12, abs=0)
            else:
                assert many == one
    assert finite > 2000
