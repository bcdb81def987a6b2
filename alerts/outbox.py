"""A durable, ordered outbox: messages are on disk before they count as accepted.

The MQTT sink appends every outbound message here and removes it only once the broker has
acknowledged it, so a broker outage or a ``kill -9`` of liqmon loses nothing: on the next start
the outbox still holds every unacknowledged message, in order. Delivery is therefore *at least
once*; every payload carries a stable ``id`` for subscribers to de-duplicate.

Layout of the directory::

    segment-000000000001.jsonl   one JSON object per message, in sequence order (a segment
                                 after the first starts with the marks so far, see ``marks``)
    segment-000000004097.jsonl   (a new segment every ``segment_bytes``)
    acked                        the highest sequence number the broker acknowledged

Memory is bounded: at most ``memory_limit`` unsent messages are held in memory; beyond that they
stay only on disk (*spilled*) and are read back in order as the window drains. The last line of
the newest segment may be incomplete after a crash; it is dropped on open (it was never
acknowledged to anyone, since :meth:`Outbox.append` returns only after the write).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

log = structlog.get_logger("liqmon.outbox")

SEGMENT_PREFIX = "segment-"
ACKED_FILE = "acked"


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One message waiting for the broker. ``queued_at`` is wall time (seconds)."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    message_id: str
    expiry_s: int | None
    queued_at: float

    def record(self) -> bytes:
        return orjson.dumps(
            {
                "seq": self.seq,
                "topic": self.topic,
                "payload": self.payload.decode(),
                "qos": self.qos,
                "retain": self.retain,
                "id": self.message_id,
                "expiry_s": self.expiry_s,
                "queued_at": self.queued_at,
            }
        )

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> OutboundMessage:
        return cls(
            seq=int(data["seq"]),
            topic=str(data["topic"]),
            payload=str(data["payload"]).encode(),
            qos=int(data["qos"]),
            retain=bool(data["retain"]),
            message_id=str(data["id"]),
            expiry_s=None if data.get("expiry_s") is None else int(data["expiry_s"]),
            queued_at=float(data["queued_at"]),
        )


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Back-pressure, as shown in logs and summaries."""

    depth: int  # unacknowledged messages
    in_memory: int
    spilled: int  # messages ever written beyond the memory window
    oldest_unsent_age_s: float | None
    appended: int
    acknowledged: int


class Outbox:
    """See the module docstring. Not thread-safe; owned by one task."""

    def __init__(
        self,
        directory: str | Path,
        *,
        memory_limit: int = 10_000,
        segment_bytes: int = 16 << 20,
        fsync: bool = False,
        ack_persist_interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._memory_limit = max(1, memory_limit)
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._ack_interval = ack_persist_interval_s
        self._clock = clock
        self._window: deque[OutboundMessage] = deque()
        self._acked = self._read_acked()
        self._persisted_acked = self._acked
        self._last_persist = clock()
        self._spilled = 0
        self._appended = 0
        self._acknowledged = 0
        segments = self._segments()
        self._last_seq = self._acked
        self.last_message_id: str | None = None
        """The id of the last message appended (before a restart too)."""
        self.marks: dict[str, str] = {}
        """The id of the last message appended with each ``mark`` (before a restart too, even
        once its segment is deleted): a sink's exactly-once mark, kept in the outbox itself."""
        for path in segments:
            last = self._repair_and_last_seq(path)
            if last is not None:
                self._last_seq = max(self._last_seq, last)
        self._unloaded_from = self._acked + 1  # the lowest pending seq not in the window
        self._writer: IO[bytes] | None = None
        self._writer_path: Path | None = None
        self._refill()
        if self.depth:
            log.info("outbox_restored", directory=str(self.directory), pending=self.depth)

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        message_id: str = "",
        expiry_s: int | None = None,
        mark: str | None = None,
    ) -> OutboundMessage:
        """Journal a message (flushed to the OS before returning) and queue it. ``mark``: the
        message is the latest of its kind (see :attr:`marks`)."""
        self._last_seq += 1
        message = OutboundMessage(
            self._last_seq, topic, payload, qos, retain, message_id, expiry_s, self._clock()
        )
        writer = self._current_writer()
        record = message.record()
        if mark is not None:
            record = record[:-1] + b',"mark":' + orjson.dumps(mark) + b"}"
            self.marks[mark] = message_id
        writer.write(record + b"\n")
        writer.flush()
        if self._fsync:
            os.fsync(writer.fileno())
        self._appended += 1
        self.last_message_id = message_id
        if len(self._window) < self._memory_limit and self._unloaded_from == message.seq:
            self._window.append(message)
            self._unloaded_from = message.seq + 1
        else:
            self._spilled += 1
        return message

    def _current_writer(self) -> IO[bytes]:
        writer = self._writer
        if writer is not None and writer.tell() < self._segment_bytes:
            return writer
        if writer is not None:
            writer.close()
        path = self.directory / f"{SEGMENT_PREFIX}{self._last_seq:012d}.jsonl"
        self._writer = open(path, "ab")  # noqa: SIM115  # kept open across appends
        self._writer_path = path
        if self.marks and self._writer.tell() == 0:
            # a new segment starts with the marks so far: older segments may be deleted
            self._writer.write(orjson.dumps({"marks": self.marks}) + b"\n")
        return self._writer

    # -- reading and acknowledging -------------------------------------------------------------

    def head(self) -> OutboundMessage | None:
        """The oldest unacknowledged message (it stays at the head until :meth:`ack`)."""
        if not self._window:
            self._refill()
        return self._window[0] if self._window else None

    def pending(self, limit: int) -> list[OutboundMessage]:
        """Up to ``limit`` of the oldest unacknowledged messages, oldest first."""
        if not self._window:
            self._refill()
        window = self._window
        return [window[i] for i in range(min(limit, len(window)))]

    def ack(self, seq: int) -> None:
        """The broker acknowledged the message ``seq`` (the head)."""
        while self._window and self._window[0].seq <= seq:
            self._window.popleft()
            self._acknowledged += 1
        self._acked = max(self._acked, seq)
        if not self._window:
            self._refill()
        if self._clock() - self._last_persist >= self._ack_interval:
            self.persist()

    def persist(self) -> None:
        """Write the acknowledged offset (atomically) and drop fully acknowledged segments."""
        if self._acked != self._persisted_acked:
            tmp = self.directory / f"{ACKED_FILE}.tmp"
            tmp.write_text(f"{self._acked}\n")
            os.replace(tmp, self.directory / ACKED_FILE)
            self._persisted_acked = self._acked
            self._drop_acknowledged_segments()
        self._last_persist = self._clock()

    def close(self) -> None:
        self.persist()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def depth(self) -> int:
        return self._last_seq - self._acked

    @property
    def last_seq(self) -> int:
        """The sequence number of the last message appended."""
        return self._last_seq

    def delivered_through(self, seq: int) -> bool:
        """Whether the broker acknowledged every message up to ``seq``."""
        return self._acked >= seq

    def stats(self) -> OutboxStats:
        head = self._window[0] if self._window else None
        return OutboxStats(
            depth=self.depth,
            in_memory=len(self._window),
            spilled=self._spilled,
            oldest_unsent_age_s=None if head is None else max(0.0, self._clock() - head.queued_at),
            appended=self._appended,
            acknowledged=self._acknowledged,
        )

    # -- disk ----------------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"{SEGMENT_PREFIX}*.jsonl"))

    def _read_acked(self) -> int:
        try:
            return int((self.directory / ACKED_FILE).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.warning("outbox_acked_unreadable", directory=str(self.directory))
            return 0

    def _repair_and_last_seq(self, path: Path) -> int | None:
        """The last sequence number in ``path``; an incomplete last line is cut off."""
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(path, "r+b") as stream:
                stream.truncate(keep)
            log.warning("outbox_truncated_partial_line", segment=path.name)
            data = data[:keep]
        last: int | None = None
        for line in data.splitlines():
            try:
                record = orjson.loads(line)
                if "seq" not in record and isinstance(record.get("marks"), dict):
                    self.marks.update(record["marks"])  # a segment's header
                    continue
                last = int(record["seq"])
                self.last_message_id = str(record.get("id", ""))
                if isinstance(record.get("mark"), str):
                    self.marks[record["mark"]] = self.last_message_id
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("outbox_bad_line", segment=path.name)
        return last

    @staticmethod
    def _first_seq(path: Path) -> int:
        return int(path.stem.removeprefix(SEGMENT_PREFIX))

    def _records_from(self, first_seq: int) -> Iterator[OutboundMessage]:
        segments = self._segments()
        for path, following in zip(segments, [*segments[1:], None], strict=True):
            if following is not None and self._first_seq(following) <= first_seq:
                continue  # every message of this segment is before ``first_seq``
            if self._writer is not None and path == self._writer_path:
                self._writer.flush()
            with open(path, "rb") as stream:
                for line in stream:
                    try:
                        message = OutboundMessage.from_record(orjson.loads(line))
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue
                    if message.seq >= first_seq:
                        yield message

    def _refill(self) -> None:
        """Load spilled messages back into the window, in order."""
        if self._unloaded_from > self._last_seq:
            return
        room = self._memory_limit - len(self._window)
        for message in self._records_from(self._unloaded_from):
            if room <= 0:
                break
            self._window.append(message)
            self._unloaded_from = message.seq + 1
            room -= 1

    def _drop_acknowledged_segments(self) -> None:
        segments = self._segments()
        for path, following in pairwise(segments):
            last_seq_of_path = self._first_seq(following) - 1
            if last_seq_of_path <= self._acked and path != self._writer_path:
                path.unlink(missing_ok=True)
