"""Crash safety for the service: a snapshot of the engine plus a journal of what changed it.

Layout of the state directory::

    snapshot.npz           the engine state (monitor.snapshot: the book's arrays) and the
                           service metadata, written atomically (temporary file, fsync, rename)
    journal-000007.jsonl   normalized records applied since snapshot generation 7, one per
                           line (readable by ``liqmon replay`` too)
    outbox/                the MQTT sink's durable outbox

What is journaled, before its events reach any sink: every account record (balance, position,
margin, snapshot, update, contract) and every tick that changed an entity's alert state (an
event, or a level lowered silently within hysteresis). Ticks that changed nothing are not: after
a restart the engine holds the marks of the snapshot and of journaled ticks, and the next tick of
each symbol brings them up to date. A snapshot starts a new journal generation and removes the
older ones (compaction).

Restoring: load the snapshot (or start empty), then re-apply the journal in order. The engine is
deterministic, so this rebuilds the exact alert state and event counter; the events re-applying
produces carry their sequence numbers, and each durable sink skips those it already wrote
(:class:`SinkMark`). A torn last journal line (``kill -9`` during a write) is dropped: it was
never followed by its events.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import structlog

from feeds.normalized import parse_line
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import RecordRefused
from monitor.records import Record
from monitor.snapshot import EngineSnapshot, SnapshotError, export_state, restore_state

log = structlog.get_logger("liqmon.state")

SNAPSHOT = "snapshot.npz"
JOURNAL_PREFIX = "journal-"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_snapshot(snapshot: EngineSnapshot) -> bytes:
    """The snapshot as the bytes of one uncompressed ``.npz`` file: its arrays as they are,
    its metadata as JSON in a byte array (fast to write, fast to load)."""
    buffer = io.BytesIO()
    meta = np.frombuffer(orjson.dumps(snapshot.meta), dtype=np.uint8)
    np.savez(buffer, __meta__=meta, **snapshot.arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def load_snapshot(path: Path) -> EngineSnapshot:
    """What :func:`save_snapshot` wrote to ``path``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # what numpy lets through
        raise SnapshotError(f"unreadable snapshot {path}: {exc}") from exc
    meta = arrays.pop("__meta__", None)
    if meta is None:
        raise SnapshotError(f"unreadable snapshot {path}: no metadata")
    try:
        return EngineSnapshot(arrays, orjson.loads(meta.tobytes()))
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"unreadable snapshot {path}: its metadata is not JSON") from exc


@dataclass
class Restored:
    """What :meth:`StateStore.restore` found."""

    engine: Engine
    meta: dict[str, Any]
    from_snapshot: bool
    journal_records: list[Record]
    torn_lines: int
    last_source_line: int  # the highest ``_line`` (position in a replayed source) journaled


class StateStore:
    """See the module docstring. Owned by the service's engine task."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._generation = 0
        self._journal: IO[bytes] | None = None
        self.journaled = 0

    def _journal_path(self, generation: int) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{generation:06d}.jsonl"

    def _generations(self) -> list[int]:
        return sorted(
            int(p.stem.removeprefix(JOURNAL_PREFIX))
            for p in self.directory.glob(f"{JOURNAL_PREFIX}*.jsonl")
        )

    def restore(self, config: EngineConfig) -> Restored:
        """The engine as it was (or a fresh one) and the journaled records to re-apply."""
        path = self.directory / SNAPSHOT
        meta: dict[str, Any] = {}
        if path.exists():
            snapshot = load_snapshot(path)
            engine = restore_state(snapshot, config)
            meta = dict(snapshot.meta.get("service", {}))
            self._generation = int(snapshot.meta["generation"])
            from_snapshot = True
        else:
            engine = Engine(config)
            from_snapshot = False
        records: list[Record] = []
        torn = 0
        last_line = 0
        for generation in self._generations():
            if generation < self._generation:
                continue
            for record, source_line in self._read(self._journal_path(generation)):
                if record is None:
                    torn += 1
                    continue
                records.append(record)
                last_line = max(last_line, source_line)
            self._generation = max(self._generation, generation)
        if torn:
            log.warning("journal_torn_lines_dropped", count=torn)
        self._open_journal()
        return Restored(engine, meta, from_snapshot, records, torn, last_line)

    def _read(self, path: Path) -> Iterator[tuple[Record | None, int]]:
        """Each journaled record (``None`` for an unreadable line) and its ``_line``."""
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                record = parse_line(line)
            except RecordRefused:
                yield None, 0
                continue
            source_line = orjson.loads(line).get("_line", 0)
            yield record, int(source_line) if isinstance(source_line, int) else 0

    def _open_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
        self._journal = open(self._journal_path(self._generation), "ab")  # noqa: SIM115

    def journal(self, line: bytes) -> None:
        """Append one normalized record (durable to the OS, or to disk with fsync)."""
        assert self._journal is not None, "restore() opens the journal"  # noqa: S101
        self._journal.write(line + b"\n")
        self._journal.flush()
        if self._fsync:
            os.fsync(self._journal.fileno())
        self.journaled += 1

    def snapshot(self, engine: Engine, meta: dict[str, Any]) -> None:
        """Write the engine's state, start a new journal generation, drop the old ones."""
        self.begin_snapshot(engine, meta)()

    def begin_snapshot(self, engine: Engine, meta: dict[str, Any]) -> Callable[[], None]:
        """Capture the engine's state and start a new journal generation now; return the rest
        (serialize, write, drop the older journals), which touches no live state and may run
        on another thread. Until it has run, a restart restores the previous snapshot and
        replays the older journals and the new one: nothing is lost either way."""
        generation = self._generation + 1
        captured = export_state(engine)
        snapshot = EngineSnapshot(
            captured.arrays, {**captured.meta, "generation": generation, "service": meta}
        )
        entities = engine.entity_count
        journaled = self.journaled
        self._generation = generation
        self._open_journal()
        self.journaled = 0

        def finish() -> None:
            write_atomically(self.directory / SNAPSHOT, save_snapshot(snapshot))
            for old in self._generations():
                if old < generation:
                    self._journal_path(old).unlink(missing_ok=True)
            log.info(
                "state_snapshot",
                generation=generation,
                entities=entities,
                journaled_since_last=journaled,
            )

        return finish

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


class SinkMark:
    """The highest event sequence number a durable sink wrote, kept in the state directory.

    Updated after each write. A crash between a write and its update is resolved at start with
    the sink's own record of its last event id (:meth:`settle`), so a sink never writes an
    event twice or skips one.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self._path = directory / f"sink-{name}.seq"
        try:
            self.seq = int(self._path.read_text().strip())
        except (FileNotFoundError, ValueError):
            self.seq = -1
        self._fd: int | None = None

    def settle(self, seq: int, event_id: str, last_written_id: str | None) -> None:
        """Called for the regenerated event right after the mark: if the sink already holds
        it (its last written id), the mark was simply not updated before the crash."""
        if seq == self.seq + 1 and last_written_id == event_id:
            self.advance(seq)

    def advance(self, seq: int) -> None:
        """Record ``seq``: one fixed-width write in place at the start of the file (a single
        small ``pwrite`` is never half done when the process is killed; this is on the alert
        path, so no temporary file and rename per event)."""
        self.seq = seq
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        os.pwrite(self._fd, b"%020d\n" % seq, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
