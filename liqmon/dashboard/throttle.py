"""Coalescing in time: at most one push every ``interval_s``, however many changes came.

The first change after a quiet spell goes out at once (a lone alert is not held back); changes
that follow within the interval wait for its end and go out together. Times are whatever
monotonic clock the caller passes (seconds), so a test drives it with plain numbers.
"""

from __future__ import annotations

import math


class Throttle:
    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError("the interval must be positive")
        self.interval_s = interval_s
        self.pending = False
        self._last = -math.inf

    def note(self) -> None:
        """Something changed and waits to be pushed."""
        self.pending = True

    def delay(self, now: float) -> float | None:
        """Seconds until a push is due (0: now); ``None`` while nothing is pending."""
        if not self.pending:
            return None
        return max(0.0, self._last + self.interval_s - now)

    def pushed(self, now: float) -> None:
        """Everything pending went out at ``now``."""
        self.pending = False
        self._last = now
