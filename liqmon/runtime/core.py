"""The runtime: every decision between the inputs and the sinks, without I/O.

One :class:`Runtime` is fed everything a run receives (tick batches, account records, input
messages, the passing of time) with the time passed in, and answers each with
:class:`~liqmon.runtime.effects.Effects`: journal lines to make durable, then events for every
sink, and whether a snapshot is due. ``liqmon replay``, the replay of exchange captures and
``liqmon run`` are three small drivers of it; tests drive it with a fake clock.

What it decides:

* **Journal** (with ``journal=True``): every account record, and every tick batch that changed
  state the marks alone do not restore (:attr:`Engine.changes`), preceded by the last mark of
  every symbol that ticked since the previous journal write, so that re-applying the journal
  values each record at the marks it was valued at. A tick that changed nothing is not journaled.
* **De-duplication** (``deduplicate=True``): a ``margin`` record is a delta, so one redelivered
  by the broker (same account, symbol, side, amount and ``ts``) is applied once. Other records
  set absolute values and are idempotent.
* **Staleness** (with a :class:`~feeds.health.FeedHealth`): judged on receive times, before each
  batch of ticks (at its receive time) and on :meth:`clock`; never by a clock that runs ahead of
  ticks still queued.
* **Rejects**: every refused input is counted and logged; with ``publish_rejects`` it is also an
  :class:`~monitor.notices.InputRejected` event for the sinks.
* **Snapshots**: due every ``snapshot_interval_s`` once the journal since the last one is worth
  it (see :meth:`clock`).
* **Counters** of everything, in :attr:`stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import structlog

from feeds.batches import AccountRun, Funding, Item, OneRecord, TickRun
from feeds.health import FeedEvent, FeedHealth
from feeds.input_topics import parse_input
from feeds.ticks import MarkTick
from liqmon.runtime.effects import Effects
from liqmon.runtime.feed_watch import FeedWatch
from liqmon.runtime.journal import Journal, SnapshotPolicy
from liqmon.runtime.refusals import RefusalLog
from liqmon.summary import ReplayStats
from monitor.bulk import apply_batch
from monitor.engine import Engine
from monitor.errors import RecordRefused, TickDropped
from monitor.events import AlertEvent, EngineEvent, StateEvent
from monitor.notices import InputRejected
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    ContractRecord,
    MarginRecord,
    MarkSource,
    Record,
    TickRecord,
)

log = structlog.get_logger("liqmon.runtime")

MARGIN_KEYS_KEPT = 100_000
"""Margin records remembered for de-duplication (and kept in snapshots)."""
MarginKey = tuple[str, str, str, str, int]


def record_kind(record: Record) -> str:
    """The record's ``type`` as in the input (``tick``, ``position``, ``account_snapshot``...)."""
    if isinstance(record, AccountUpdateRecord):
        return "account_snapshot" if record.replace else "account_update"
    if isinstance(record, AssetModeRecord):
        return "asset_mode"
    return type(record).__name__.removesuffix("Record").lower()


def margin_key(record: MarginRecord) -> MarginKey:
    """Identifies a margin record, to recognise a redelivered one (identical content and ts)."""
    return (record.account, record.symbol, record.side, str(record.delta), record.ts)


class Runtime:
    """See the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        journal: bool = False,
        deduplicate: bool = False,
        publish_rejects: bool = False,
        health: FeedHealth | None = None,
        snapshot_interval_s: float | None = None,
        stats: ReplayStats | None = None,
    ) -> None:
        self.engine = engine
        self.journaling = journal
        self.deduplicate = deduplicate
        self.publish_rejects = publish_rejects
        self.health = health
        self.stats = stats if stats is not None else ReplayStats(source="")
        self.replay_line = 0
        """The last line of a replayed source that was applied or refused (to resume after)."""
        self.last_alert: tuple[int, str] | None = None
        """``(seq, id)`` of the last alert event emitted: what a durable sink's last written
        event is compared with after a restart."""
        self._feed = None if health is None else FeedWatch(health, engine, self.stats)
        self._margin_keys: dict[MarginKey, None] = {}
        self._journal = Journal()
        self._snapshots = SnapshotPolicy(
            round(snapshot_interval_s * 1e9) if snapshot_interval_s and journal else None
        )
        self._log_refusal = RefusalLog()
        self._sweep_cursor = 0

    @property
    def feed_events(self) -> Sequence[FeedEvent]:
        """The latest feed health events (for status and tests)."""
        return () if self._feed is None else self._feed.recent

    # -- inputs --------------------------------------------------------------------------------

    def ticks(
        self,
        symbols: Sequence[str],
        marks: Sequence[float],
        texts: Sequence[MarkSource],
        stamps: Sequence[int],
        funding: Sequence[Funding] | None = None,
        *,
        source: str,
        lines: Sequence[int] | None = None,
    ) -> Effects:
        """A batch of ticks in order (a file's run of tick lines, or one venue frame)."""
        out = Effects()
        self._apply_ticks(symbols, marks, texts, stamps, funding, source, lines, out)
        return out

    def file_item(self, item: Item, *, source: str, now_ms: int) -> Effects:
        """One item of a normalized file (:mod:`feeds.batches`): a run of ticks, a run of
        account records, one record, or a line its parser refused."""
        if isinstance(item, TickRun):
            return self.ticks(
                item.symbols,
                item.marks,
                item.texts,
                item.stamps,
                item.funding,
                source=source,
                lines=item.lines,
            )
        if isinstance(item, AccountRun):
            return self.accounts(item, source=source, now_ms=now_ms)
        if isinstance(item, OneRecord):
            return self.record(item.record, source=source, now_ms=now_ms, line=item.line)
        self.stats.lines += 1
        return self.refused(item.error, source=source, now_ms=now_ms, line=item.line)

    def frame(self, ticks: Sequence[MarkTick], receive_ns: int | None, *, source: str) -> Effects:
        """The ticks of one venue frame, received at ``receive_ns``: first the symbols that went
        stale before it arrived, then those it brings back, then the ticks themselves."""
        out = Effects()
        if self._feed is not None and receive_ns is not None:
            out.events.extend(self._feed.frame(ticks, receive_ns))
        if ticks:
            funding: list[Funding] | None = None
            if any(t.funding_rate is not None for t in ticks):
                funding = [
                    (None, None)
                    if t.funding_rate is None
                    else (Decimal(t.funding_rate), t.funding_ts)
                    for t in ticks
                ]
            self._apply_ticks(
                [t.symbol for t in ticks],
                [t.mark for t in ticks],
                [t.mark_text for t in ticks],
                [t.exchange_ts_ms for t in ticks],
                funding,
                source,
                None,
                out,
            )
        return out

    def record(
        self,
        record: Record,
        *,
        source: str,
        now_ms: int,
        line: int | None = None,
        raw: bytes = b"",
        topic: str | None = None,
    ) -> Effects:
        """One record (an account record, a contract, a tick given as a record)."""
        out = Effects()
        self._one(record, source, now_ms, line, raw, topic, out)
        return out

    def accounts(self, run: AccountRun, *, source: str, now_ms: int) -> Effects:
        """A run of position and balance records, loaded in bulk (identical to one by one)."""
        out = Effects()
        batch = run.batch
        count = len(batch)
        stats = self.stats
        stats.lines += count
        positions = int(batch.is_position.sum())
        stats.records["position"] += positions
        stats.records["balance"] += count - positions
        events, rejected = apply_batch(self.engine, batch)
        refused = {i for i, _ in rejected}
        if self.journaling:
            applied = [(batch.record(i), run.lines[i]) for i in range(count) if i not in refused]
            self._journaled(self._journal.records(applied), out)
        for i, refusal in rejected:
            self._refused(refusal, source, now_ms, run.lines[i], b"", None, out)
        self._emit(events, out)
        if run.lines:
            self.replay_line = max(self.replay_line, run.lines[-1])
        return out

    def refused(
        self,
        error: RecordRefused,
        *,
        source: str,
        now_ms: int,
        line: int | None = None,
        raw: bytes = b"",
        topic: str | None = None,
    ) -> Effects:
        """An input its parser refused (it changes nothing)."""
        out = Effects()
        self._refused(error, source, now_ms, line, raw, topic, out)
        if line is not None:
            self.replay_line = max(self.replay_line, line)
        return out

    def message(self, topic: str, payload: bytes, *, now_ms: int) -> Effects:
        """One message from the input topics (``topic`` without the ``{prefix}/in/`` part):
        parsed by the one input parser, then applied like any record, or refused with a
        reason. A message that carries nothing to apply (a leverage change) changes nothing."""
        try:
            record = parse_input(topic, payload)
        except RecordRefused as exc:
            return self.refused(exc, source="mqtt", now_ms=now_ms, raw=payload, topic=topic)
        if record is None:
            return Effects()
        return self.record(record, source="mqtt", now_ms=now_ms, raw=payload, topic=topic)

    def clock(self, now_ns: int) -> Effects:
        """Time passed: the symbols that went stale by ``now_ns`` and whether a snapshot is due.

        A driver passes the time in order with the frames (the service's clock goes through the
        same queue), so every frame received before ``now_ns`` was applied first: ticks waiting
        in a queue are not a silent venue.
        """
        out = Effects()
        if self._feed is not None:
            out.events.extend(self._feed.at(now_ns))
        out.snapshot_due = self._snapshots.due(now_ns, journaled=self._journal.since_snapshot)
        return out

    def sweep(self, max_entities: int, max_events: int) -> Effects:
        """The next piece of the state sweep (:attr:`monitor.config.EngineConfig.state_sweep`):
        the retained states that moved among the next ``max_entities`` entities, at most
        ``max_events`` of them. A driver calls it between inputs, when it has nothing else to
        do, so that alerts never wait for state publishing; :attr:`sweep_done` tells when a
        pass over the whole book ended."""
        out = Effects()
        events, self._sweep_cursor = self.engine.sweep_states(
            self._sweep_cursor, max_entities, max_events
        )
        self._emit(events, out)
        return out

    @property
    def sweep_done(self) -> bool:
        """Whether the last :meth:`sweep` ended a pass over the book (the next starts one)."""
        return self._sweep_cursor == 0

    # -- restart -------------------------------------------------------------------------------

    def restore(self, records: Sequence[Record], meta: dict[str, Any]) -> list[EngineEvent]:
        """Re-apply the journal to the restored engine (its events carry their sequence numbers:
        the drivers give each durable sink those it never wrote)."""
        self.replay_line = int(meta.get("replay_line", 0))
        self.engine.forget_published_states()  # what the broker holds is not known: sweep all
        last = meta.get("last_alert")
        if isinstance(last, list) and len(last) == 2:
            self.last_alert = (int(last[0]), str(last[1]))
        for key in meta.get("margin_keys", ()):
            account, symbol, side, delta, ts = key
            self._margin_keys[(str(account), str(symbol), str(side), str(delta), int(ts))] = None
        replayed: list[EngineEvent] = []
        engine = self.engine
        for record in records:
            try:
                events = engine.apply(record)
            except RecordRefused:
                continue  # refused when it was first applied too: journaled as it came
            if isinstance(record, MarginRecord):
                self._remember(margin_key(record))
            for event in events:
                if isinstance(event, AlertEvent):
                    self.last_alert = (event.seq, event.id)
            replayed.extend(events)
        return replayed

    def snapshot_meta(self) -> dict[str, Any]:
        """What a snapshot must keep besides the engine (see :meth:`restore`)."""
        return {
            "replay_line": self.replay_line,
            "last_alert": list(self.last_alert) if self.last_alert is not None else None,
            "margin_keys": [list(k) for k in self._margin_keys],
        }

    def snapshot_taken(self, now_ns: int) -> None:
        """A snapshot was captured at ``now_ns`` (the journal starts a new generation)."""
        self._snapshots.taken(now_ns)
        self._journal.snapshot_taken()
        self.stats.snapshots += 1

    # -- internals -----------------------------------------------------------------------------

    def _apply_ticks(
        self,
        symbols: Sequence[str],
        marks: Sequence[float],
        texts: Sequence[MarkSource],
        stamps: Sequence[int],
        funding: Sequence[Funding] | None,
        source: str,
        lines: Sequence[int] | None,
        out: Effects,
    ) -> None:
        engine = self.engine
        stats = self.stats
        count = len(symbols)
        before = engine.changes
        events, dropped = engine.apply_ticks(symbols, marks, texts, stamps, funding)
        stats.lines += count if lines is not None else 0
        stats.records["tick"] += count
        stats.ticks_by_source[source] += count - len(dropped)
        stats.ticks_applied += count - len(dropped)
        for i, drop in dropped:
            stats.dropped[drop.reason] += 1
            self._log_refusal(drop, source, None if lines is None else lines[i])
        if self.journaling:
            skip = {i for i, _ in dropped}
            accepted = [
                (
                    stamps[i],
                    symbols[i],
                    marks[i],
                    texts[i],
                    funding[i] if funding is not None else None,
                    None if lines is None else lines[i],
                )
                for i in range(count)
                if i not in skip
            ]
            changed = engine.changes != before
            self._journaled(self._journal.ticks(accepted, changed=changed), out)
        if lines:
            self.replay_line = max(self.replay_line, lines[-1])
        self._emit(events, out)

    def _one(
        self,
        record: Record,
        source: str,
        now_ms: int,
        line: int | None,
        raw: bytes,
        topic: str | None,
        out: Effects,
    ) -> None:
        if isinstance(record, TickRecord):
            funding = None
            if record.funding_rate is not None:
                funding = [(record.funding_rate, record.funding_ts)]
            lines = None if line is None else [line]
            self._apply_ticks(
                [record.symbol],
                [record.mark],
                [record.mark_text],
                [record.ts],
                funding,
                source,
                lines,
                out,
            )
            return
        stats = self.stats
        engine = self.engine
        if line is not None:
            stats.lines += 1
            self.replay_line = max(self.replay_line, line)
        stats.records[record_kind(record)] += 1
        key: MarginKey | None = None
        if self.deduplicate and isinstance(record, MarginRecord):
            key = margin_key(record)
            if key in self._margin_keys:
                stats.duplicates += 1
                log.info(
                    "margin_redelivery_skipped",
                    account=record.account,
                    symbol=record.symbol,
                    ts=record.ts,
                )
                return
        try:
            events = engine.apply(record)
        except RecordRefused as exc:
            self._refused(exc, source, now_ms, line, raw, topic, out)
            return
        if key is not None:
            self._remember(key)
        if isinstance(record, ContractRecord):
            for warning in record.contract.warnings:
                if warning not in stats.warnings:
                    stats.warnings.append(warning)
                    log.warning("tier_table_warning", detail=warning)
        if self.journaling:
            self._journaled(self._journal.record(record, line), out)
        self._emit(events, out)

    def _emit(self, events: Sequence[EngineEvent], out: Effects) -> None:
        if not events:
            return
        stats = self.stats
        by_kind = stats.events
        last: AlertEvent | None = None
        for event in events:
            if isinstance(event, StateEvent):
                stats.state_updates += 1
            else:
                by_kind[event.kind] += 1
                last = event
        if last is not None:
            self.last_alert = (last.seq, last.id)
        out.events.extend(events)

    def _refused(
        self,
        error: RecordRefused,
        source: str,
        now_ms: int,
        line: int | None,
        raw: bytes,
        topic: str | None,
        out: Effects,
    ) -> None:
        stats = self.stats
        if isinstance(error, TickDropped):
            stats.dropped[error.reason] += 1
        elif line is not None:
            stats.reject(error.reason, line)
        else:
            stats.rejected[error.reason] += 1
        stats.rejected_by_source[(source, error.reason)] += not isinstance(error, TickDropped)
        self._log_refusal(error, source, line)
        if self.publish_rejects and not isinstance(error, TickDropped):
            notice = InputRejected.of(
                ts=now_ms,
                source=source,
                reason=error.reason,
                detail=error.detail,
                payload=raw,
                topic=topic,
                line=line,
            )
            stats.events[notice.kind] += 1
            out.events.append(notice)

    def _remember(self, key: MarginKey) -> None:
        keys = self._margin_keys
        keys[key] = None
        if len(keys) > MARGIN_KEYS_KEPT:
            del keys[next(iter(keys))]

    def _journaled(self, lines: list[bytes], out: Effects) -> None:
        out.journal.extend(lines)
        self.stats.journaled += len(lines)
