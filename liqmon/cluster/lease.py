"""Who owns which partition: the rules of the leases, without I/O (time passed in).

A lease is a key ``partition.{p}`` of a JetStream key-value bucket whose entries expire
``period_s`` after their last write (the bucket's TTL). An instance takes a free partition by
creating the key (compare-and-set: it fails if the key exists), keeps it by rewriting it with
the revision it last wrote (compare-and-set again) every third of a period, and gives it up:

* when a renewal is refused (someone else holds the key: the lease had expired);
* when it could not renew for a whole period (the lease may have expired and been taken, so
  it stops before it could be acting beside the new owner for long);
* when it stops.

A standby polls for free partitions every quarter of a period. An owner that dies stops
renewing; its key expires within a period; a standby takes it within another quarter.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    period_s: float
    """How long a lease lasts without renewal (the bucket's TTL)."""
    max_owned: int = 1
    """Partitions one instance owns at most (a standby owns none until one is free)."""

    @property
    def renew_every_s(self) -> float:
        return self.period_s / 3

    @property
    def poll_every_s(self) -> float:
        return self.period_s / 4


def lease_key(partition: int) -> str:
    return f"partition.{partition}"


def lease_value(instance: str, since_ms: int) -> bytes:
    """What a lease says: who holds it and since when (for operators reading the bucket)."""
    return orjson.dumps({"owner": instance, "since": since_ms})


@dataclass(slots=True)
class Held:
    revision: int
    renewed_at: float
    """When it was last written (monotonic seconds)."""


class Ownership:
    """One instance's view of its leases: which to try, which to renew, which are lost."""

    def __init__(self, instance: str, partitions: int, terms: LeaseTerms) -> None:
        self.instance = instance
        self.partitions = partitions
        self.terms = terms
        self.held: dict[int, Held] = {}
        self._polled_at: float | None = None
        # instances start their search at different partitions, so that N instances started
        # together mostly find N different free partitions at their first try
        self._first = sum(instance.encode()) % partitions if partitions else 0

    def to_acquire(self, now: float) -> list[int]:
        """The partitions to try to take now (none while this instance owns its maximum or
        before the next poll)."""
        if len(self.held) >= self.terms.max_owned:
            return []
        if self._polled_at is not None and now - self._polled_at < self.terms.poll_every_s:
            return []
        self._polled_at = now
        order = [(self._first + i) % self.partitions for i in range(self.partitions)]
        return [p for p in order if p not in self.held]

    def acquired(self, partition: int, revision: int, now: float) -> bool:
        """The key was created; whether to keep it (``False``: the maximum is reached by a
        lease taken meanwhile, so give this one back)."""
        if len(self.held) >= self.terms.max_owned:
            return False
        self.held[partition] = Held(revision, now)
        return True

    def to_renew(self, now: float) -> list[tuple[int, int]]:
        """``(partition, revision)`` of each lease due for renewal."""
        every = self.terms.renew_every_s
        return [(p, h.revision) for p, h in self.held.items() if now - h.renewed_at >= every]

    def renewed(self, partition: int, revision: int, now: float) -> None:
        held = self.held.get(partition)
        if held is not None:
            held.revision, held.renewed_at = revision, now

    def overdue(self, now: float) -> list[int]:
        """Leases not renewed for a whole period: they may belong to another instance now."""
        period = self.terms.period_s
        return [p for p, h in self.held.items() if now - h.renewed_at >= period]

    def released(self, partition: int) -> None:
        self.held.pop(partition, None)
