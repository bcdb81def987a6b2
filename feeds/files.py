"""Reading recorded files line by line: plain or gzip (recognised by content, not by name).

Files are streamed, never loaded whole. gzip is decoded incrementally here (not through
:class:`gzip.GzipFile`) so that a truncated or corrupt file still delivers every line decoded
before the damage, and only then fails with :class:`UnreadableFile`. Lines come in batches so
that the async pipeline pays its per-await cost once per batch rather than once per record.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from feeds.normalized import MAX_LINE_BYTES
from monitor.errors import UnreadableFile as UnreadableFile

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20
BATCH_LINES = 4096


def chunks(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file's bytes (decompressed when it is gzip), in chunks of about ``chunk_bytes``."""
    try:
        raw = open(path, "rb")  # noqa: SIM115  # closed below, also when the consumer stops early
    except OSError as exc:
        raise UnreadableFile(f"cannot open {path}: {exc.strerror or exc}") from exc
    try:
        try:
            head = raw.read(2)
        except OSError as exc:
            raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
        if head == GZIP_MAGIC:
            raw.seek(0)
            yield from _gunzip(raw, path, chunk_bytes)
            return
        if head:
            yield head
        while True:
            try:
                data = raw.read(chunk_bytes)
            except OSError as exc:
                raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
            if not data:
                return
            yield data
    finally:
        raw.close()


def _gunzip(raw: BinaryIO, path: str | Path, chunk_bytes: int) -> Iterator[bytes]:
    """Decompressed chunks of a (possibly multi-member) gzip stream; input that stops inside a
    member is truncated, anything but padding after the last member is garbage."""
    decoder = zlib.decompressobj(wbits=31)
    in_member = False
    while True:
        try:
            data = raw.read(chunk_bytes)
        except OSError as exc:
            raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not data:
            break
        while data:
            in_member = True
            try:
                # bounded output: a small compressed chunk may expand a hundredfold
                out = decoder.decompress(data, chunk_bytes)
            except zlib.error as exc:
                raise UnreadableFile(f"{path}: corrupt gzip data: {exc}") from exc
            if out:
                yield out
            if decoder.unconsumed_tail:
                data = decoder.unconsumed_tail
                continue
            if decoder.eof:
                in_member = False
                data = decoder.unused_data
                decoder = zlib.decompressobj(wbits=31)
                if data and not data.startswith(GZIP_MAGIC):
                    if data.strip(b"\x00"):
                        raise UnreadableFile(f"{path}: trailing garbage after the gzip data")
                    data = b""
            else:
                data = b""
    if in_member:
        raise UnreadableFile(f"{path}: the gzip data is truncated")


def numbered_lines(
    pieces: Iterable[bytes], limit: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for every non-blank line of a stream of byte chunks.

    Memory stays bounded by a chunk plus ``limit``: a longer line is cut just past the limit (so
    the parser rejects it, with its number) and the rest of it is skipped.
    """
    number = 0
    pending = b""
    overflow = False
    for chunk in pieces:
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
        if len(pending) > limit:
            pending, overflow = pending[: limit + 1], True
    if overflow or pending.strip():
        yield number + 1, pending


def read_lines(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Every non-blank, numbered line of the file at ``path`` (see :func:`numbered_lines`)."""
    return numbered_lines(chunks(path, chunk_bytes))


async def line_batches(
    path: str | Path, batch_lines: int = BATCH_LINES
) -> AsyncIterator[list[tuple[int, bytes]]]:
    """Batches of numbered lines of ``path``; yields to the event loop between batches.

    When the file turns out to be unreadable part-way, the lines read before the failure are
    delivered first, then :class:`UnreadableFile` is raised.
    """
    batch: list[tuple[int, bytes]] = []
    try:
        for item in read_lines(path):
            batch.append(item)
            if len(batch) >= batch_lines:
                yield batch
                batch = []
                await asyncio.sleep(0)
    except UnreadableFile:
        if batch:
            yield batch
        raise
    if batch:
        yield batch
