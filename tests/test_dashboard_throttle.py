"""``liqmon.dashboard.throttle``: pushes coalesced to at most one per interval (fake clock)."""

from __future__ import annotations

import pytest

from liqmon.dashboard.throttle import Throttle


def test_a_lone_change_goes_at_once_and_a_burst_waits_for_the_interval() -> None:
    """The first change after a quiet spell is due now; changes right after a push wait for
    the rest of the interval, and all go out in that one push."""
    throttle = Throttle(0.25)
    assert throttle.delay(10.0) is None
    throttle.note()
    assert throttle.delay(10.0) == 0.0
    throttle.pushed(10.0)
    assert throttle.delay(10.05) is None
    for _ in range(1000):
        throttle.note()
    assert throttle.delay(10.05) == pytest.approx(0.2)
    assert throttle.delay(10.3) == 0.0
    throttle.pushed(10.3)
    throttle.note()
    assert throttle.delay(11.0) == 0.0


def test_pushes_per_second_stay_bounded_however_fast_changes_come() -> None:
    """A change every millisecond for ten seconds gives about four pushes a second."""
    throttle = Throttle(0.25)
    pushes = 0
    for ms in range(10_000):
        now = ms / 1000
        throttle.note()
        if throttle.delay(now) == 0.0:
            throttle.pushed(now)
            pushes += 1
    assert 39 <= pushes <= 41


def test_the_interval_must_be_positive() -> None:
    """A zero interval would push on every change: refused."""
    with pytest.raises(ValueError, match="positive"):
        Throttle(0.0)
