"""Crash safety for the service: a snapshot of the engine plus a journal of what changed it.

Layout of the state directory::

    snapshot.npz           the engine state (monitor.snapshot: the book's arrays) and the
                           service metadata, written atomically (temporary file, fsync, rename)
    journal-000007.jsonl   normalized records applied since snapshot generation 7, one per
                           line (readable by ``liqmon replay`` too)
    run.json               the inputs the state was made from (see liqmon.runtime.restart)
    outbox/                the MQTT sink's durable outbox

What is journaled, before its events reach any sink: every account record (balance, position,
margin, snapshot, update, contract) and every tick that changed an entity's alert state (an
event, or a level lowered silently within hysteresis). Ticks that changed nothing are not: after
a restart the engine holds the marks of the snapshot and of journaled ticks, and the next tick of
each symbol brings them up to date. A snapshot starts a new journal generation and removes the
older ones (compaction).

Restoring: load the snapshot (or start empty), then re-apply the journal in order. The engine is
deterministic, so this rebuilds the exact alert state and event counter; the events re-applying
produces carry their sequence numbers, and each durable sink is given those after the last alert
it holds (:func:`liqmon.runtime.restart.sink_resume`). A torn last journal line (``kill -9``
during a write) is dropped: it was never followed by its events.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import structlog

from feeds.normalized import parse_line
from liqmon.runtime.restart import RunIdentity, Seen
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import RecordRefused
from monitor.records import Record
from monitor.snapshot import EngineSnapshot, SnapshotError, export_state, restore_state

log = structlog.get_logger("liqmon.state")

SNAPSHOT = "snapshot.npz"
JOURNAL_PREFIX = "journal-"
IDENTITY = "run.json"


def file_identity(path: Path) -> Seen:
    """``path`` (absolute) and a digest of its content: a seed is the same only if both are."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return (str(path.resolve()), digest.hexdigest())


def run_identity(
    *, out: Path | None, accounts: Path | None, replay: Path | None, brackets: Sequence[Path]
) -> RunIdentity:
    """What a run's state is made from: the ``--out`` path, and each seed by its content."""
    return RunIdentity(
        out=None if out is None else (str(out.resolve()), ""),
        accounts=None if accounts is None else file_identity(accounts),
        replay=None if replay is None else file_identity(replay),
        brackets=tuple(file_identity(p) for p in brackets),
    )


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


def snapshot_from_bytes(data: bytes) -> EngineSnapshot:
    """What :func:`save_snapshot` made, from bytes (a store that is not a file, such as a
    JetStream object store)."""
    return _load_snapshot(io.BytesIO(data), "in the store")


def load_snapshot(path: Path) -> EngineSnapshot:
    """What :func:`save_snapshot` wrote to ``path``."""
    return _load_snapshot(path, str(path))


def _load_snapshot(path: Path | IO[bytes], name: str) -> EngineSnapshot:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # what numpy lets through
        raise SnapshotError(f"unreadable snapshot {name}: {exc}") from exc
    meta = arrays.pop("__meta__", None)
    if meta is None:
        raise SnapshotError(f"unreadable snapshot {name}: no metadata")
    try:
        return EngineSnapshot(arrays, orjson.loads(meta.tobytes()))
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"unreadable snapshot {name}: its metadata is not JSON") from exc


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

    def journal(self, lines: Sequence[bytes]) -> None:
        """Append normalized records, one per line, in one write (durable to the OS, or to
        disk with fsync, before returning)."""
        assert self._journal is not None, "restore() opens the journal"  # noqa: S101
        self._journal.write(b"\n".join(lines) + b"\n")
        self._journal.flush()
        if self._fsync:
            os.fsync(self._journal.fileno())
        self.journaled += len(lines)

    # -- what the state was made from ----------------------------------------------------------

    def has_state(self) -> bool:
        """A snapshot or a journal is here (a run left state behind)."""
        return (self.directory / SNAPSHOT).exists() or bool(self._generations())

    def identity(self) -> dict[str, Any] | None:
        """The inputs the state was made from, as the run that made it wrote them."""
        try:
            data = orjson.loads((self.directory / IDENTITY).read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError:
            log.warning("state_identity_unreadable", directory=str(self.directory))
            return None
        return data if isinstance(data, dict) else None

    def set_identity(self, identity: dict[str, Any]) -> None:
        write_atomically(
            self.directory / IDENTITY, orjson.dumps(identity, option=orjson.OPT_INDENT_2)
        )

    def clear(self) -> None:
        """Discard the state (snapshot, journals, identity); the MQTT outbox is kept (what it
        holds was emitted, and is still owed to the broker)."""
        self.close()
        (self.directory / SNAPSHOT).unlink(missing_ok=True)
        (self.directory / IDENTITY).unlink(missing_ok=True)
        for generation in self._generations():
            self._journal_path(generation).unlink(missing_ok=True)
        self._generation = 0
        self.journaled = 0

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
