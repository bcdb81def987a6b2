"""``liqmon record``: raw frames to gzip files, as ``<receive ns> <frame text>`` lines.

This is the ``prefixed`` capture format (:mod:`feeds.captures`, the one of hftbacktest's
captures), so a recording replays through the same parsers as the live feed. One frame per line:
a line break inside a frame (legal JSON whitespace, never inside a JSON string) is written as a
space, which keeps JSON meaning intact; such rewrites are counted.

Files are named after their first frame's receive time (UTC), ``<prefix>-20240809T000001.123Z
.frames.gz``, created exclusively (an existing file is never overwritten: a ``-1``, ``-2``, ...
suffix is added). A file is closed and the next one started when the next line would take it
past ``rotate_bytes`` of frame text (uncompressed, so the limit does not depend on how well the
data compresses), or when a frame arrives ``rotate_seconds`` or more after the file's first.

Durability: every ``flush_interval_s`` the compressor is flushed with ``Z_SYNC_FLUSH`` and the
file handed to the operating system, so a killed recorder loses at most that interval; the
readers deliver every line of such a truncated file before reporting it truncated. A clean stop
(the frames end, or cancellation) finishes the gzip stream.

Errors (in :mod:`monitor.errors`): :class:`~monitor.errors.RecordingFailed`, a file cannot be
created or written (disk full, permissions, ...).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from monitor.errors import ConfigError
from monitor.errors import RecordingFailed as RecordingFailed

SUFFIX = ".frames.gz"
DEFAULT_ROTATE_BYTES = 1 << 30
DEFAULT_ROTATE_SECONDS = 3600.0
DEFAULT_FLUSH_INTERVAL_S = 1.0


class RawFrame(Protocol):
    """What is recorded: a frame's text and its receive time (``feeds.live.Frame`` fits)."""

    @property
    def raw(self) -> str: ...

    @property
    def receive_ts_ns(self) -> int: ...


@dataclass(slots=True)
class RecorderStats:
    """What a recorder wrote; ``current`` is the file being written (``None`` between files)."""

    frames: int = 0
    bytes: int = 0
    files: int = 0
    rotations: int = 0
    flushes: int = 0
    newlines_replaced: int = 0
    current: Path | None = None


def file_name(prefix: str, start_ns: int) -> str:
    """``<prefix>-YYYYMMDDTHHMMSS.mmmZ.frames.gz`` for a file whose first frame arrived at
    ``start_ns`` (UTC)."""
    start = datetime.fromtimestamp(start_ns // 1_000_000_000, tz=UTC)
    millis = start_ns // 1_000_000 % 1000
    return f"{prefix}-{start:%Y%m%dT%H%M%S}.{millis:03d}Z{SUFFIX}"


def frame_line(raw: str, receive_ts_ns: int) -> tuple[bytes, bool]:
    """The recorded line of one frame, and whether line breaks had to be replaced."""
    rewritten = "\n" in raw or "\r" in raw
    if rewritten:
        raw = raw.replace("\r", " ").replace("\n", " ")
    return f"{receive_ts_ns} {raw}\n".encode(), rewritten


class Recorder:
    """The synchronous core: write frames, rotate files, flush. :func:`record` drives it."""

    def __init__(
        self,
        directory: str | Path,
        *,
        prefix: str = "frames",
        rotate_bytes: int = DEFAULT_ROTATE_BYTES,
        rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
        compresslevel: int = 6,
        stats: RecorderStats | None = None,
    ) -> None:
        if not prefix or any(char in prefix for char in "/\\\0") or prefix.startswith("."):
            raise ConfigError(f"record: the file prefix must be a plain name, got {prefix!r}")
        if rotate_bytes <= 0 or not rotate_seconds > 0:
            raise ConfigError("record: rotate_bytes and rotate_seconds must be positive")
        self.directory = Path(directory)
        self.prefix = prefix
        self.rotate_bytes = rotate_bytes
        self.rotate_ns = round(rotate_seconds * 1e9)
        self.compresslevel = compresslevel
        self.stats = stats if stats is not None else RecorderStats()
        self._raw: BinaryIO | None = None
        self._gzip: gzip.GzipFile | None = None
        self._start_ns = 0
        self._file_bytes = 0
        self._dirty = False

    def write(self, frame: RawFrame) -> None:
        """Append one frame, starting a new file first when this one is full or old."""
        line, rewritten = frame_line(frame.raw, frame.receive_ts_ns)
        if self._gzip is not None and (
            self._file_bytes + len(line) > self.rotate_bytes
            or frame.receive_ts_ns - self._start_ns >= self.rotate_ns
        ):
            self._finish()
            self.stats.rotations += 1
        gz = self._gzip if self._gzip is not None else self._open(frame.receive_ts_ns)
        try:
            gz.write(line)
        except OSError as exc:
            raise RecordingFailed(f"cannot write {self.stats.current}: {exc}") from exc
        self._file_bytes += len(line)
        self._dirty = True
        self.stats.frames += 1
        self.stats.bytes += len(line)
        self.stats.newlines_replaced += rewritten

    def flush(self) -> None:
        """Make everything written so far readable from the file, if anything is pending."""
        if self._gzip is None or self._raw is None or not self._dirty:
            return
        try:
            self._gzip.flush()  # zlib Z_SYNC_FLUSH: a decodable point in the stream
            self._raw.flush()
        except OSError as exc:
            raise RecordingFailed(f"cannot flush {self.stats.current}: {exc}") from exc
        self._dirty = False
        self.stats.flushes += 1

    def close(self) -> None:
        """Finish the current file (a complete gzip stream)."""
        if self._gzip is not None:
            self._finish()

    def _open(self, start_ns: int) -> gzip.GzipFile:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = file_name(self.prefix, start_ns)
            path = self.directory / name
            for number in range(1, 1000):
                try:
                    raw: BinaryIO = open(path, "xb")  # noqa: SIM115  # closed in _finish
                    break
                except FileExistsError:
                    path = self.directory / name.replace(SUFFIX, f"-{number}{SUFFIX}")
            else:
                raise RecordingFailed(f"no free file name for {name} in {self.directory}")
        except OSError as exc:
            raise RecordingFailed(f"cannot create a recording in {self.directory}: {exc}") from exc
        self._raw = raw
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", compresslevel=self.compresslevel, fileobj=raw, mtime=0
        )
        self._start_ns = start_ns
        self._file_bytes = 0
        self.stats.files += 1
        self.stats.current = path
        return self._gzip

    def _finish(self) -> None:
        gz, raw, path = self._gzip, self._raw, self.stats.current
        self._gzip = self._raw = None
        self.stats.current = None
        self._dirty = False
        try:
            if gz is not None:
                gz.close()
        except OSError as exc:
            raise RecordingFailed(f"cannot finish {path}: {exc}") from exc
        finally:
            if raw is not None:
                raw.close()


async def record(
    frames: AsyncIterable[RawFrame],
    directory: str | Path,
    *,
    rotate_bytes: int = DEFAULT_ROTATE_BYTES,
    rotate_seconds: float = DEFAULT_ROTATE_SECONDS,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    prefix: str = "frames",
    stats: RecorderStats | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RecorderStats:
    """Record ``frames`` into ``directory`` until they end (or the task is cancelled).

    A timer flushes every ``flush_interval_s`` (``sleep`` is that timer; tests inject one), also
    while no frames arrive. Returns the statistics (pass ``stats`` to watch them while it
    runs). An error of the frame source is raised as is, after the file is finished.
    """
    if not flush_interval_s > 0:
        raise ConfigError("record: flush_interval_s must be positive")
    recorder = Recorder(
        directory,
        prefix=prefix,
        rotate_bytes=rotate_bytes,
        rotate_seconds=rotate_seconds,
        stats=stats,
    )
    failure: Exception | None = None
    try:
        async with asyncio.TaskGroup() as group:
            flusher = group.create_task(_flush_every(recorder, flush_interval_s, sleep))
            try:
                async for frame in frames:
                    recorder.write(frame)
            except Exception as exc:  # re-raised below, bare, once the flusher has stopped
                failure = exc
            finally:
                flusher.cancel()
    finally:
        recorder.close()
    if failure is not None:
        raise failure
    return recorder.stats


async def _flush_every(
    recorder: Recorder, interval_s: float, sleep: Callable[[float], Awaitable[None]]
) -> None:
    while True:
        await sleep(interval_s)
        recorder.flush()
