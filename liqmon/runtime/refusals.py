"""Refused input in the log: each reason's first few one by one, then only counted."""

from __future__ import annotations

import structlog

from monitor.errors import RecordRefused, TickDropped

log = structlog.get_logger("liqmon.runtime")

LOGGED_PER_REASON = 10
"""Refusals logged one by one per reason; beyond that they are only counted."""


class RefusalLog:
    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, error: RecordRefused, source: str, line: int | None) -> None:
        count = self._seen.get(error.reason, 0) + 1
        self._seen[error.reason] = count
        if count > LOGGED_PER_REASON:
            return
        log.warning(
            "input_refused",
            source=source,
            line=line,
            reason=error.reason,
            detail=error.detail,
            outcome="dropped" if isinstance(error, TickDropped) else "rejected",
        )
        if count == LOGGED_PER_REASON:
            log.warning(
                "input_refused_quiet",
                reason=error.reason,
                note="further refusals of this reason are only counted",
            )
