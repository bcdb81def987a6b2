"""What the runtime asks its driver to do, and the stream of events every sink receives."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerts.sink import OutputEvent


@dataclass(slots=True)
class Effects:
    """The outcome of one input, in the order the driver must carry it out:

    1. append ``journal`` (normalized record lines, without newlines) to the journal and flush
       it: nothing below may leave before these are durable;
    2. hand ``events`` to every sink, in order;
    3. if ``snapshot_due``, capture a snapshot (:meth:`Runtime.snapshot_meta` gives its meta)
       and tell the runtime (:meth:`Runtime.snapshot_taken`).
    """

    events: list[OutputEvent] = field(default_factory=list)
    journal: list[bytes] = field(default_factory=list)
    snapshot_due: bool = False

    def __bool__(self) -> bool:
        return bool(self.events or self.journal or self.snapshot_due)

    def extend(self, other: Effects) -> None:
        self.events.extend(other.events)
        self.journal.extend(other.journal)
        self.snapshot_due = self.snapshot_due or other.snapshot_due
