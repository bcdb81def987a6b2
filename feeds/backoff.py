"""How long to wait before reconnecting: the one backoff of every connection liqmon makes.

Venue websockets (:mod:`feeds.live`), Hyperliquid's info API (:mod:`feeds.hyperliquid_info`),
the MQTT publisher (:mod:`alerts.publisher`), the MQTT link (:mod:`alerts.link`), the MQTT
input session (:mod:`feeds.mqtt_input`) and the cluster's JetStream requests all wait
:func:`reconnect_delay` between attempts; only their :class:`ReconnectPolicy` differs.

Pure: the randomness is a parameter (callers pass ``random.random``; tests pass fixed draws),
and nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

MAX_DOUBLINGS = 64
"""Attempts beyond this count as this one: ``2**64`` already exceeds any cap, and a larger
exponent would overflow the float."""


class ReconnectPolicy(BaseModel):
    """Capped exponential backoff with full jitter and a floor (see :func:`reconnect_delay`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_s: float = Field(default=0.5, gt=0)
    cap_s: float = Field(default=30.0, gt=0)
    minimum_s: float = Field(default=0.5, ge=0)


FEED_BACKOFF = ReconnectPolicy()
"""Venue websockets: a floor of 0.5 s, so a venue that closes cleanly is not hammered."""
MQTT_BACKOFF = ReconnectPolicy(minimum_s=0.2)
"""The broker: the same window, a lower floor (the broker is ours, and usually close)."""
CLUSTER_BACKOFF = ReconnectPolicy(base_s=0.05, cap_s=1.0, minimum_s=0.05)
"""NATS JetStream requests (:mod:`liqmon.cluster.nats_io`): a node restarting or a leader
election lasts a second or two, and an owner must be back as soon as it is over."""


def reconnect_delay(attempt: int, policy: ReconnectPolicy, rand: Callable[[], float]) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0, 1, 2, ...).

    ``delay = max(minimum, min(cap, base · 2^attempt) · u)`` with ``u = rand()`` uniform in
    [0, 1) — "full jitter" — so that many clients dropped together do not return together, and
    never sooner than ``minimum`` (venues ban IPs that reconnect in a tight loop; a library's
    own reconnect loop would reconnect at once after a clean close). A negative ``attempt``
    counts as 0; a huge one neither overflows nor exceeds the cap.
    """
    window = min(policy.cap_s, policy.base_s * 2.0 ** min(max(attempt, 0), MAX_DOUBLINGS))
    return max(policy.minimum_s, window * rand())
