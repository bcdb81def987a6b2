"""Readers of recorded exchange captures: ``(receive_ts_ns | None, raw frame)`` per line, lazily.

Formats (plain or gzip, recognised by content; see :func:`detect_format`):

``prefixed``    ``<receive ns> <raw frame>`` — hftbacktest's captures, and what ``liqmon record``
                writes
``wrapped``     ``{"local_ts": <seconds, float>, "raw": "<exact frame text>"}`` (cryptofeed)
``raw``         one frame per line, no receive time
``tardis``      Tardis CSV; each row is yielded as it is (the header too, so that
                :class:`feeds.tardis.TardisDerivativeTicker` learns the columns), its receive
                time from ``local_timestamp`` (µs)
``normalized``  liqmon's own records (``feeds.normalized``); detected so a caller can route the
                file there, and otherwise yielded like ``raw``

A malformed line is never an exception here: it is yielded whole, with receive time ``None``,
so that the frame parser rejects it and the replay counts it with its line number (a prefixed
line whose prefix is not a number, a wrapped line that is not such an object, ...). A wrapped
line whose ``local_ts`` alone is bad yields its frame with receive time ``None``.

Lines are cut by :func:`feeds.files.numbered_lines`, at :data:`MAX_LINE_BYTES` (twice
the frame limit, room for a wrapped frame's escaping) rather than the normalized-record limit:
a frame a live feed accepts is read whole from its capture, and a longer line reaches the
parser cut to just over the limit, so it is rejected as ``oversized`` exactly as it would be live.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from itertools import islice
from pathlib import Path

import orjson

from feeds.files import chunks, numbered_lines
from feeds.normalized import RECORD_TYPES
from feeds.ticks import MAX_FRAME_BYTES
from monitor.errors import UnknownFormat as UnknownFormat

FORMATS = ("prefixed", "wrapped", "raw", "tardis", "normalized")
SAMPLE_LINES = 8
""":func:`detect_format` decides on the first of this many non-blank lines that it recognises."""
MAX_LINE_BYTES = 2 * MAX_FRAME_BYTES + 4096

_PREFIX = re.compile(rb"(\d{1,19}) ")
_PREFIXED_LINE = re.compile(rb"\d{1,19} (?:[\[{]|pong)")  # what detection takes as prefixed
_NS_PER_S = Decimal(1_000_000_000)

Frame = tuple[int | None, bytes]
"""``(receive_ts_ns | None, raw frame)``: the frame's exact bytes (UTF-8 text for JSON frames)."""


def capture_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for every non-blank line of a capture, gzip or plain."""
    return numbered_lines(chunks(path), MAX_LINE_BYTES)


def line_format(line: bytes) -> str | None:
    """The format one line belongs to, or ``None`` when it tells nothing (blank, garbage)."""
    text = line.strip()
    if b"local_timestamp" in text.split(b","):
        return "tardis"
    if _PREFIXED_LINE.match(text):
        return "prefixed"
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is dict:
        if "raw" in obj and "local_ts" in obj:
            return "wrapped"
        if obj.get("type") in RECORD_TYPES:
            return "normalized"
        return "raw"
    return "raw" if type(obj) is list else None


def detect_format(path: str | Path) -> str:
    """The format of the capture at ``path``, from its first recognisable line.

    A file without a non-blank line is ``normalized`` (an empty replay: nothing to apply).
    Raises :class:`UnknownFormat` when none of the first :data:`SAMPLE_LINES` non-blank lines is
    recognised, :class:`~feeds.files.UnreadableFile` when it cannot be read.
    """
    lines = capture_lines(path)
    seen = False
    try:
        for _, line in islice(lines, SAMPLE_LINES):
            found = line_format(line)
            if found is not None:
                return found
            seen = seen or bool(line.strip())
    finally:
        close = getattr(lines, "close", None)
        if close is not None:
            close()  # the file, now rather than when the generator is collected
    if not seen:
        return "normalized"
    raise UnknownFormat(
        f"{path}: not a recognised capture (expected {', '.join(FORMATS)}) "
        f"in its first {SAMPLE_LINES} non-blank lines"
    )


def numbered_frames(path: str | Path, fmt: str | None = None) -> Iterator[tuple[int, Frame]]:
    """``(line number, (receive_ts_ns | None, raw frame))`` for every line of a capture.

    ``fmt`` is one of :data:`FORMATS`, or ``None`` to detect it. Raises
    :class:`~feeds.files.UnreadableFile` when the file cannot be read, after the lines read
    before the damage (a truncated gzip delivers every line it holds).
    """
    if fmt is None:
        fmt = detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    lines = capture_lines(path)
    if fmt == "prefixed":
        return ((number, prefixed(line)) for number, line in lines)
    if fmt == "wrapped":
        return ((number, wrapped(line)) for number, line in lines)
    if fmt == "tardis":
        return _tardis(lines)
    return ((number, (None, line)) for number, line in lines)


def read_frames(path: str | Path, fmt: str | None = None) -> Iterator[Frame]:
    """``(receive_ts_ns | None, raw frame)`` for every line of a capture (see
    :func:`numbered_frames`)."""
    return (frame for _, frame in numbered_frames(path, fmt))


def prefixed(line: bytes) -> Frame:
    """``<receive ns> <frame>`` split; a line without a numeric prefix is the frame itself."""
    match = _PREFIX.match(line)
    if match is None:
        return None, line
    return int(match[1]), line[match.end() :]


def wrapped(line: bytes) -> Frame:
    """The ``raw`` text (as UTF-8) of a ``{"local_ts", "raw"}`` line and ``local_ts`` in ns.

    ``local_ts`` is read from its shortest decimal text, so ``1786310819.526357`` is exactly
    ``1786310819526357000`` ns (a double times 1e9 is off by up to a few hundred ns).
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line
    if type(obj) is not dict or type(obj.get("raw")) is not str:
        return None, line
    seconds = obj.get("local_ts")
    receive: int | None = None
    if type(seconds) is int and seconds >= 0:
        receive = seconds * 1_000_000_000
    elif type(seconds) is float and seconds >= 0:
        receive = int(Decimal(repr(seconds)) * _NS_PER_S)
    return receive, obj["raw"].encode()  # cannot fail: orjson refuses lone surrogates


def _tardis(lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, Frame]]:
    at = 3  # local_timestamp's column in Tardis' fixed order, until a header says otherwise
    for number, line in lines:
        fields = line.rstrip(b"\r").split(b",")
        if b"local_timestamp" in fields:
            at = fields.index(b"local_timestamp")
            yield number, (None, line)
            continue
        local = fields[at] if at < len(fields) else b""
        receive = int(local) * 1000 if 0 < len(local) <= 19 and local.isdigit() else None
        yield number, (receive, line)
