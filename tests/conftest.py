"""Shared test configuration. Fixtures used by one module live in that module."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.mqtt_support"]  # the real-broker fixture

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """The project's own copies of third-party test data (see tests/data/PROVENANCE.md)."""
    return DATA
