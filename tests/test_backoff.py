"""The one reconnect backoff (``feeds.backoff``): the venue feeds, the Hyperliquid info poller
and every MQTT client wait :func:`reconnect_delay` between attempts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.backoff import FEED_BACKOFF, MQTT_BACKOFF, ReconnectPolicy, reconnect_delay

policies = st.builds(
    ReconnectPolicy,
    base_s=st.floats(min_value=1e-3, max_value=100.0),
    cap_s=st.floats(min_value=1e-3, max_value=3600.0),
    minimum_s=st.floats(min_value=0.0, max_value=10.0),
)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
attempts = st.integers(min_value=-(10**6), max_value=10**9)


@given(attempt=attempts, policy=policies, u=draws)
def test_the_delay_stays_between_the_floor_and_the_capped_window(
    attempt: int, policy: ReconnectPolicy, u: float
) -> None:
    """For any attempt count (negative and huge ones too), policy and draw, the delay is finite,
    at least ``minimum_s``, at most ``max(minimum_s, cap_s)``, and at most the exponential
    window ``base_s·2^attempt`` when that is above the floor."""
    delay = reconnect_delay(attempt, policy, lambda: u)
    window = min(policy.cap_s, policy.base_s * 2.0 ** min(max(attempt, 0), 64))
    assert policy.minimum_s <= delay <= max(policy.minimum_s, policy.cap_s)
    assert delay <= max(policy.minimum_s, window)
    assert delay == max(policy.minimum_s, window * u)


@given(attempt=st.integers(min_value=0, max_value=200), policy=policies, u=draws)
def test_the_window_never_shrinks_as_attempts_grow(
    attempt: int, policy: ReconnectPolicy, u: float
) -> None:
    """With the same draw, a later attempt never waits less than an earlier one."""
    assert reconnect_delay(attempt, policy, lambda: u) <= reconnect_delay(
        attempt + 1, policy, lambda: u
    )


@pytest.mark.parametrize(
    ("attempt", "u", "expected"),
    [
        (0, 0.0, 0.5),  # the floor, however small the draw
        (0, 0.999, 1.0 * 0.999),  # window base·2^0 = 1
        (1, 0.5, 1.0),  # window 2, half of it
        (3, 0.5, 4.0),  # window 8
        (5, 0.999, 10.0 * 0.999),  # window capped at 10
        (10_000, 0.5, 5.0),  # a huge attempt count neither overflows nor exceeds the cap
        (-3, 0.999, 1.0 * 0.999),  # a negative count is attempt 0
    ],
)
def test_reconnect_delay_is_capped_full_jitter_with_a_floor(
    attempt: int, u: float, expected: float
) -> None:
    """The delay is max(minimum, min(cap, base·2^attempt)·u) at chosen points."""
    policy = ReconnectPolicy(base_s=1.0, cap_s=10.0, minimum_s=0.5)
    assert reconnect_delay(attempt, policy, lambda: u) == pytest.approx(expected)


def test_reconnect_delay_spreads_clients_over_the_window() -> None:
    """With a real random source, delays stay inside [minimum, window] and are not all equal
    (full jitter), so clients dropped together do not return together."""
    policy = ReconnectPolicy(base_s=1.0, cap_s=8.0, minimum_s=0.1)
    delays = [reconnect_delay(3, policy, random.random) for _ in range(200)]
    assert all(0.1 <= delay <= 8.0 for delay in delays)
    assert len({round(delay, 6) for delay in delays}) > 100


def test_feeds_and_mqtt_share_the_window_and_differ_in_the_floor() -> None:
    """The venue feeds and the broker use one window (0.5 s doubling up to 30 s); the feeds
    never retry sooner than 0.5 s, the broker not sooner than 0.2 s."""
    for attempt, u in [(0, 1.0), (3, 1.0), (20, 1.0), (5, 0.5)]:
        assert reconnect_delay(attempt, FEED_BACKOFF, lambda u=u: u) == reconnect_delay(
            attempt, MQTT_BACKOFF, lambda u=u: u
        )
    assert reconnect_delay(3, MQTT_BACKOFF, lambda: 1.0) == 4.0
    assert reconnect_delay(20, MQTT_BACKOFF, lambda: 1.0) == 30.0
    assert reconnect_delay(5, FEED_BACKOFF, lambda: 0.0) == 0.5
    assert reconnect_delay(5, MQTT_BACKOFF, lambda: 0.0) == 0.2
