"""How ``liqmon run`` starts: from which state, and what each sink is still owed.

:func:`prepare` runs before any task: it compares the state directory's inputs with this run's
(:mod:`liqmon.runtime.restart`), starts fresh, restores, or refuses with one line; re-applies
the journal; and compares each durable sink's own mark (the last alert its file holds) with the
state, so that no event is written twice or lost. Only then do the service's tasks start.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from alerts.jsonl import last_alert_id
from alerts.outbox import Outbox
from alerts.sink import OutputEvent
from feeds.health import FeedHealth
from liqmon.persistence import StateStore, run_identity
from liqmon.runtime import Runtime
from liqmon.runtime.restart import RunIdentity, SinkResume, decide_start, sink_resume
from liqmon.settings import ServiceSettings
from monitor.errors import StartRefused
from monitor.events import AlertEvent, EngineEvent, StateEvent

log = structlog.get_logger("liqmon.service")


@dataclass
class Prepared:
    """What :func:`prepare` found: the runtime, the start's one-line summary, and the events
    re-emitted by the journal that each durable sink still needs."""

    runtime: Runtime
    start: str
    summary: str
    restored: dict[str, int]
    owed: dict[str, list[EngineEvent]]
    seed: bool
    marks: dict[str, str | None]
    """Each durable sink's own mark (the last alert its file holds), as found at start."""


def _durable_marks(settings: ServiceSettings, outbox: Outbox | None) -> dict[str, str | None]:
    """Each durable sink's own mark: the last alert its file holds."""
    marks: dict[str, str | None] = {}
    if settings.out is not None:
        marks["jsonl"] = last_alert_id(settings.out)
    if outbox is not None:
        marks["mqtt"] = outbox.marks.get("alert")
    return marks


def prepare(settings: ServiceSettings, store: StateStore, outbox: Outbox | None) -> Prepared:
    """Decide how to start, restore, and compare every durable sink with the state (see
    :mod:`liqmon.runtime.restart`). Raises :class:`StartRefused` with one line to show."""
    state = settings.state
    identity = run_identity(
        out=settings.out,
        accounts=settings.accounts,
        replay=settings.feed.replay,
        brackets=settings.brackets,
    )
    stored = store.identity()
    decision = decide_start(
        str(state.dir),
        None if stored is None else RunIdentity.from_dict(stored),
        identity,
        has_state=store.has_state(),
        choice=state.start,
    )
    if decision.action == "refuse":
        raise StartRefused(decision.line)
    if decision.action == "fresh":
        store.clear()
    restored = store.restore(settings.engine.config())
    feed = settings.feed
    health = None
    if feed.venue is not None:
        spec = feed.spec()
        health = FeedHealth(
            spec.venue, expected_interval_s=spec.expected_interval_s, multiple=feed.stale_after
        )
    runtime = Runtime(
        restored.engine,
        journal=True,
        deduplicate=True,
        publish_rejects=True,
        health=health,
        snapshot_interval_s=state.snapshot_interval_s,
    )
    last = restored.meta.get("last_alert")
    snapshot_last = (int(last[0]), str(last[1])) if isinstance(last, list) else None
    replayed = runtime.restore(restored.journal_records, restored.meta)
    runtime.replay_line = max(runtime.replay_line, restored.last_source_line)
    owed: dict[str, list[EngineEvent]] = {}
    marks = _durable_marks(settings, outbox)
    fresh = not restored.from_snapshot and not restored.journal_records
    for name, mark in marks.items():
        if fresh:
            # nothing restored, nothing to compare: the seeding that follows skips what a
            # sink already holds of it (a crash while seeding), see ``owed_after``; after
            # --fresh a sink's earlier lines stay and new events follow them
            owed[name] = []
            continue
        resume = sink_resume(_sink_name(name, settings), mark, snapshot_last, replayed)
        if not resume.consistent:
            if not (decision.resumed or state.start == "resume"):
                raise StartRefused(
                    f"{resume.detail} (state directory {state.dir}); run again with --resume "
                    "to continue (what it missed is not written again) or --fresh to start over"
                )
            log.warning("sink_resumed_without_its_events", sink=name, detail=resume.detail)
        owed[name] = _owed(replayed, resume)
    store.set_identity(identity.as_dict())
    engine = runtime.engine
    numbers = {
        "from_snapshot": int(restored.from_snapshot),
        "journal_records": len(restored.journal_records),
        "entities": engine.entity_count,
        "positions": engine.position_count,
        "events_reemitted": sum(isinstance(e, AlertEvent) for e in replayed),
        "replay_line": runtime.replay_line,
    }
    if fresh:
        summary = decision.line + " (seeds applied next)"
    else:
        summary = (
            f"{decision.line}: {numbers['entities']:,} entities, {numbers['positions']:,} "
            f"positions ({'snapshot + ' if restored.from_snapshot else ''}"
            f"{numbers['journal_records']:,} journal records)"
            + (
                f", replay resumes after line {runtime.replay_line:,}"
                if runtime.replay_line
                else ""
            )
        )
    start = "fresh" if fresh else ("resumed" if decision.resumed else "restored")
    return Prepared(runtime, start, summary, numbers, owed, seed=fresh, marks=marks)


def _sink_name(name: str, settings: ServiceSettings) -> str:
    return f"the events file {settings.out}" if name == "jsonl" else "the MQTT outbox"


def _owed(replayed: list[EngineEvent], resume: SinkResume) -> list[EngineEvent]:
    skip = resume.skip_through
    return [e for e in replayed if isinstance(e, StateEvent) or e.seq > skip]


def owed_after(mark: str | None, events: list[OutputEvent]) -> list[OutputEvent]:
    """``events`` without the alerts up to ``mark`` if it is among them (a sink that already
    wrote part of a seeding that a crash interrupted); all of them otherwise."""
    alerts: list[EngineEvent] = [e for e in events if isinstance(e, AlertEvent)]
    resume = sink_resume("seeding", mark, None, alerts)
    if not resume.consistent:
        return list(events)
    skip = resume.skip_through
    return [e for e in events if not isinstance(e, AlertEvent) or e.seq > skip]
