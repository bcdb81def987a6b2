"""One partition's log applied to a runtime, and the snapshot that restarts it (pure).

A partition's log (its subjects of the cluster's stream, in stream order) is everything its
owner applies: account input of its accounts and the venue frames every instance relays. The
owner is a deterministic function of that log, so whoever owns the partition, from whatever
snapshot, gives the same events with the same ids for the same log. Rules:

* a message at or below the last applied stream sequence is a redelivery: skipped;
* a venue frame each of whose ticks is older than the last applied tick of its symbol is a
  copy relayed late (after JetStream's de-duplication window) or out of order: skipped and
  counted. The rule reads only the log, so every owner skips the same frames;
* account input whose record names another account than its subject is refused (it would
  belong to another partition), like any bad input: counted, logged, on the rejects topic.

A snapshot is the engine's arrays plus ``cluster`` metadata: the partition, the last applied
stream sequence, the newest venue tick and the runtime's own metadata. Restoring it and applying
the log after that sequence gives the state the owner had, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feeds.frames import FrameParser
from feeds.input_topics import parse_input
from liqmon.cluster.subjects import LogSubject
from liqmon.persistence import snapshot_from_bytes
from liqmon.runtime import Runtime
from liqmon.runtime.effects import Effects
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import RecordRefused, SnapshotError
from monitor.records import Record
from monitor.snapshot import EngineSnapshot, export_state, restore_state

SOURCE = "cluster"


class ShardCore:
    """See the module docstring."""

    def __init__(
        self,
        runtime: Runtime,
        partition: int,
        *,
        venue: str,
        price_source: str = "mark",
        applied_seq: int = 0,
        venue_ts: dict[str, int] | None = None,
    ) -> None:
        self.runtime = runtime
        self.partition = partition
        self.venue = venue
        self.applied_seq = applied_seq
        """The stream sequence of the last message applied (0: none)."""
        self.venue_ts: dict[str, int] = dict(venue_ts or {})
        """Each symbol's last exchange time (ms) in the venue frames applied."""
        self.late_frames = 0
        self.redelivered = 0
        self._parser = FrameParser(venue, price_source=price_source)

    # -- the log ---------------------------------------------------------------------------

    def apply(
        self, seq: int, subject: LogSubject | None, payload: bytes, *, now_ms: int
    ) -> Effects | None:
        """Message ``seq`` of the log (``subject`` parsed by
        :func:`~liqmon.cluster.subjects.parse_log_subject`); ``None`` if it was skipped as a
        redelivery or a late frame."""
        if seq <= self.applied_seq:
            self.redelivered += 1
            return None
        self.applied_seq = seq
        runtime = self.runtime
        if subject is None:
            error = RecordRefused("unknown_subject", "not an input or venue subject of liqmon")
            return runtime.refused(error, source=SOURCE, now_ms=now_ms, raw=payload)
        if subject.kind == "venue":
            return self._frame(payload, now_ms)
        assert subject.account is not None  # noqa: S101  # input subjects name an account
        topic = "records" if subject.kind == "records" else f"binance/{subject.account}"
        try:
            record = parse_input(topic, payload)
        except RecordRefused as exc:
            return runtime.refused(exc, source=SOURCE, now_ms=now_ms, raw=payload, topic=topic)
        if record is None:
            return Effects()
        account = getattr(record, "account", None)
        if account is not None and account != subject.account:
            error = RecordRefused(
                "wrong_partition",
                f"a record of account {account!r} published as input of {subject.account!r}",
            )
            return runtime.refused(error, source=SOURCE, now_ms=now_ms, raw=payload, topic=topic)
        return runtime.record(record, source=SOURCE, now_ms=now_ms, raw=payload, topic=topic)

    def _frame(self, payload: bytes, now_ms: int) -> Effects | None:
        parsed = self._parser.parse(payload, None)
        last = self.venue_ts
        if parsed.ticks and all(t.exchange_ts_ms < last.get(t.symbol, -1) for t in parsed.ticks):
            self.late_frames += 1
            return None
        for tick in parsed.ticks:
            if tick.exchange_ts_ms > last.get(tick.symbol, -1):
                last[tick.symbol] = tick.exchange_ts_ms
        runtime = self.runtime
        out = runtime.frame(parsed.ticks, None, source=f"venue:{self.venue}")
        for record in parsed.records:
            out.extend(runtime.record(record, source=f"venue:{self.venue}", now_ms=now_ms))
        for reason, detail in parsed.rejects:
            error = RecordRefused(reason, detail)
            out.extend(runtime.refused(error, source=f"venue:{self.venue}", now_ms=now_ms))
        return out

    # -- snapshots -------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "applied_seq": self.applied_seq,
            "venue_ts": dict(self.venue_ts),
            "runtime": self.runtime.snapshot_meta(),
        }

    def capture(self) -> EngineSnapshot:
        """The state now (the book's arrays, copied): serialize it anywhere (with
        :func:`~liqmon.persistence.save_snapshot`) while the engine goes on."""
        captured = export_state(self.runtime.engine)
        return EngineSnapshot(captured.arrays, {**captured.meta, "cluster": self.meta()})


def fresh_runtime(config: EngineConfig) -> Runtime:
    """The runtime of a partition's owner: no local journal (the log is the journal), no
    staleness judged on receive times (an owner applies frames as the log holds them, not as
    they arrived: its decisions must not depend on when it read them)."""
    return Runtime(Engine(config), deduplicate=True, publish_rejects=True)


def seeded(
    config: EngineConfig, partition: int, venue: str, price_source: str, seeds: Sequence[Record]
) -> ShardCore:
    """A partition with nothing applied yet, but the seeds (contracts) every owner starts from."""
    core = ShardCore(fresh_runtime(config), partition, venue=venue, price_source=price_source)
    for record in seeds:
        core.runtime.record(record, source="seed", now_ms=0)
    return core


def restored(
    data: bytes, config: EngineConfig, partition: int, venue: str, price_source: str
) -> ShardCore:
    """The partition as its snapshot ``data`` left it."""
    snapshot = snapshot_from_bytes(data)
    meta = snapshot.meta.get("cluster")
    if not isinstance(meta, dict) or meta.get("partition") != partition:
        raise SnapshotError(f"not a snapshot of partition {partition}")
    runtime = Runtime(restore_state(snapshot, config), deduplicate=True, publish_rejects=True)
    runtime.restore([], dict(meta["runtime"]))
    return ShardCore(
        runtime,
        partition,
        venue=venue,
        price_source=price_source,
        applied_seq=int(meta["applied_seq"]),
        venue_ts={str(k): int(v) for k, v in meta["venue_ts"].items()},
    )
