"""Reading recorded files line by line: plain or gzip (recognised by content, not by name).

Files are streamed, never loaded whole. Lines come in batches so that the async pipeline pays
its per-await cost once per batch rather than once per record.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from feeds.normalized import MAX_LINE_BYTES
from monitor.errors import LiqmonError

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20
BATCH_LINES = 4096


class UnreadableFile(LiqmonError):
    """The file cannot be opened or read (missing, unreadable, a corrupt or truncated gzip)."""


def open_binary(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading, transparently decompressing gzip."""
    try:
        raw = open(path, "rb")  # noqa: SIM115  # returned to the caller, who closes it
    except OSError as exc:
        raise UnreadableFile(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
    except OSError as exc:
        raw.close()
        raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def numbered_lines(
    stream: BinaryIO, path: str | Path = "<stream>", chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for every non-blank line, numbering from 1.

    Reads ``chunk_bytes`` at a time and splits them (much cheaper than ``readline`` through a
    gzip stream). Memory stays bounded by the chunk plus ``MAX_LINE_BYTES``: a longer line is
    cut just past the limit (so the parser rejects it, with its number) and the rest of it is
    skipped.
    """
    number = 0
    pending = b""
    overflow = False
    try:
        while chunk := stream.read(chunk_bytes):
            if overflow:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                number += 1
                yield number, pending
                pending, overflow = b"", False
                chunk = chunk[cut + 1 :]
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                number += 1
                if line.strip():
                    yield number, line
            if len(pending) > MAX_LINE_BYTES:
                pending, overflow = pending[: MAX_LINE_BYTES + 1], True
        if overflow or pending.strip():
            yield number + 1, pending
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UnreadableFile(f"{path}: read failed after line {number}: {exc}") from exc


async def line_batches(
    path: str | Path, batch_lines: int = BATCH_LINES
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """Batches of numbered lines of ``path``; yields to the event loop between batches."""
    with open_binary(path) as stream:
        batch: list[tuple[int, bytes]] = []
        for item in numbered_lines(stream, path):
            batch.append(item)
            if len(batch) >= batch_lines:
                yield batch
                batch = []
                await asyncio.sleep(0)
        if batch:
            yield batch
