"""Service-level events: input refused, service started and stopped. Pure data, past tense.

The engine's events (:mod:`monitor.events`) say what happened to an entity; a feed's health
events (:mod:`feeds.health`) say what happened to its marks. These say what happened to the
service itself and to the input it was given. All of them reach every sink through the one sink
protocol (:mod:`alerts.sink`), each with ``event`` (its kind), a stable ``id`` and a ``ts``.

Times: ``ts`` is milliseconds on the service's clock (receive time), not exchange time: a
refusal is stamped when the input arrived, a start or stop when it happened.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

PAYLOAD_EXCERPT = 4_096
"""A refused input is quoted up to this many bytes (UTF-8 decoded, invalid bytes replaced)."""


def notice_id(*parts: object) -> str:
    """Stable: the same facts give the same id."""
    text = "|".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class InputRejected:
    """An input was refused and changed nothing: why (``reason``, a fixed code, and
    ``detail``), where it came from (``source``: ``mqtt``, ``replay``, ``accounts_file``,
    ``feed:binance``...; with the MQTT ``topic`` or the file's ``line``) and what it was."""

    id: str
    ts: int
    source: str
    reason: str
    detail: str
    topic: str | None
    line: int | None
    payload: str

    kind: ClassVar[str] = "input_rejected"

    @classmethod
    def of(
        cls,
        *,
        ts: int,
        source: str,
        reason: str,
        detail: str,
        payload: bytes,
        topic: str | None = None,
        line: int | None = None,
    ) -> InputRejected:
        excerpt = payload[:PAYLOAD_EXCERPT].decode("utf-8", "replace")
        return cls(
            id=notice_id(cls.kind, ts, source, topic, line, reason, excerpt),
            ts=ts,
            source=source,
            reason=reason,
            detail=detail,
            topic=topic,
            line=line,
            payload=excerpt,
        )

    def to_payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": self.kind,
            "id": self.id,
            "ts": self.ts,
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
        }
        if self.topic is not None:
            body["topic"] = self.topic
        if self.line is not None:
            body["line"] = self.line
        body["payload"] = self.payload
        return body


@dataclass(frozen=True, slots=True)
class ServiceStarted:
    """The service began taking input: how it started (``start``: ``fresh``, ``restored`` or
    ``resumed``, see docs/operations.md) and what it restored, in numbers and in one line."""

    id: str
    ts: int
    instance: str
    version: str
    start: str
    summary: str
    restored: dict[str, int]

    kind: ClassVar[str] = "service_started"

    def to_payload(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "id": self.id,
            "ts": self.ts,
            "instance": self.instance,
            "version": self.version,
            "start": self.start,
            "summary": self.summary,
            "restored": dict(self.restored),
        }


@dataclass(frozen=True, slots=True)
class ServiceStopped:
    """The service stopped taking input and saved its state (``reason``: ``signal``,
    ``end_of_replay``), with what it did while it ran."""

    id: str
    ts: int
    instance: str
    reason: str
    counts: dict[str, int]

    kind: ClassVar[str] = "service_stopped"

    def to_payload(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "id": self.id,
            "ts": self.ts,
            "instance": self.instance,
            "reason": self.reason,
            "counts": dict(self.counts),
        }


Notice = InputRejected | ServiceStarted | ServiceStopped
