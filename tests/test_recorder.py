"""The recorder (``feeds.recorder``): prefixed lines that the capture reader reads back, gzip,
rotation by size and by time, names from start times, and what a kill leaves readable.

Files are read back with the project's own capture reader (``feeds.captures``), the one the
replay uses, so "readable" means readable by liqmon.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from feeds.captures import detect_format, read_frames
from feeds.files import UnreadableFile
from feeds.recorder import Recorder, RecorderStats, file_name, frame_line, record
from monitor.errors import ConfigError

T0 = 1_723_161_255_088_169_167  # the first receive time of the hftbacktest BTCUSDT capture
S = 1_000_000_000


class F(NamedTuple):
    """A frame as ``feeds.live.Frame`` has it."""

    raw: str
    receive_ts_ns: int


def frame(number: int, at_s: float = 0.0) -> F:
    raw = orjson.dumps({"stream": "btcusdt@markPrice@1s", "data": {"n": number}}).decode()
    return F(raw, T0 + round(at_s * S))


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def read_back(path: Path) -> list[tuple[int | None, str]]:
    return [(ns, bytes(raw).decode()) for ns, raw in read_frames(path)]  # type: ignore[arg-type]


async def aiter_frames(items: list[F]) -> AsyncIterator[F]:
    for item in items:
        yield item


def test_lines_are_the_prefixed_capture_format() -> None:
    """A line is ``<receive ns> <frame>\\n``; a line break inside a frame becomes a space (JSON
    meaning kept), so the line stays one line."""
    assert frame_line('{"a":1}', 5) == (b'5 {"a":1}\n', False)
    line, rewritten = frame_line('{\n  "a": "x y"\r\n}', 7)
    assert rewritten
    assert line.count(b"\n") == 1
    assert orjson.loads(line.split(b" ", 1)[1]) == {"a": "x y"}


def test_names_carry_the_start_time_in_utc() -> None:
    """The file name is the prefix and its first frame's receive time, to the millisecond."""
    assert file_name("binance-usdm", T0) == "binance-usdm-20240808T235415.088Z.frames.gz"


def test_a_recording_reads_back_exactly_through_the_capture_reader(tmp_path: Path) -> None:
    """What is written is gzip, detected as ``prefixed``, and gives back every frame with its
    receive time, in order."""
    written = [frame(n, n * 0.1) for n in range(50)]
    recorder = Recorder(tmp_path)
    for item in written:
        recorder.write(item)
    recorder.close()

    (path,) = files(tmp_path)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert detect_format(path) == "prefixed"
    assert read_back(path) == [(item.receive_ts_ns, item.raw) for item in written]
    assert recorder.stats.frames == 50
    assert recorder.stats.files == 1
    assert recorder.stats.current is None


def test_size_rotation_starts_a_new_file_before_the_limit_is_passed(tmp_path: Path) -> None:
    """With rotate_bytes fitting two lines, files hold two lines each, are named after their
    first frame, and together hold every frame in order."""
    written = [frame(n, n * 0.001) for n in range(7)]
    line_bytes = len(frame_line(written[0].raw, written[0].receive_ts_ns)[0])
    recorder = Recorder(tmp_path, prefix="bybit", rotate_bytes=2 * line_bytes)
    for item in written:
        recorder.write(item)
    recorder.close()

    paths = files(tmp_path)
    assert [len(read_back(path)) for path in paths] == [2, 2, 2, 1]
    assert [path.name for path in paths] == [
        file_name("bybit", written[index].receive_ts_ns) for index in (0, 2, 4, 6)
    ]
    assert [raw for path in paths for _, raw in read_back(path)] == [item.raw for item in written]
    assert recorder.stats.rotations == 3
    assert recorder.stats.files == 4


def test_time_rotation_counts_from_each_files_first_frame(tmp_path: Path) -> None:
    """With rotate_seconds=1 a frame 1 s or more after its file's first frame opens a new file."""
    times = [0.0, 0.5, 0.999, 1.0, 1.9, 2.0, 3.5]
    recorder = Recorder(tmp_path, rotate_seconds=1.0)
    for number, seconds in enumerate(times):
        recorder.write(frame(number, seconds))
    recorder.close()
    groups = [[(ns - T0) / S for ns, _ in read_back(path)] for path in files(tmp_path)]
    assert groups == [[0.0, 0.5, 0.999], [1.0, 1.9], [2.0], [3.5]]


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    """Two recordings starting in the same millisecond get distinct names (a -1 suffix)."""
    for _ in range(2):
        recorder = Recorder(tmp_path)
        recorder.write(frame(0))
        recorder.close()
    assert {path.name for path in files(tmp_path)} == {
        file_name("frames", T0),
        file_name("frames", T0).replace(".frames.gz", "-1.frames.gz"),
    }


def test_after_a_flush_a_killed_recording_keeps_every_flushed_line(tmp_path: Path) -> None:
    """Flushed lines are readable from a file that was never finished (as after a kill); the
    reader delivers them all, then reports the file truncated."""
    recorder = Recorder(tmp_path)
    for number in range(20):
        recorder.write(frame(number, number * 0.01))
    recorder.flush()
    (path,) = files(tmp_path)
    delivered: list[tuple[int | None, bytes | str]] = []
    with pytest.raises(UnreadableFile, match="truncated"):
        delivered.extend(read_frames(path))
    assert len(delivered) == 20
    assert recorder.stats.flushes == 1
    recorder.flush()  # nothing new: no flush
    assert recorder.stats.flushes == 1
    recorder.close()
    assert len(read_back(path)) == 20


@pytest.mark.parametrize(
    "options",
    [{"prefix": "../x"}, {"prefix": ""}, {"rotate_bytes": 0}, {"rotate_seconds": 0.0}],
)
def test_bad_settings_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    """A prefix that is not a plain name, or non-positive rotation limits, are ConfigErrors."""
    with pytest.raises(ConfigError, match="record"):
        Recorder(tmp_path, **options)  # type: ignore[arg-type]


async def test_record_writes_until_the_frames_end(tmp_path: Path) -> None:
    """record() consumes an async iterator of frames, rotates, and finishes every file."""
    written = [frame(n, n * 0.4) for n in range(10)]
    stats = await record(aiter_frames(written), tmp_path, rotate_seconds=1.0)
    assert stats.frames == 10
    assert stats.files == 4
    for path in files(tmp_path):
        with gzip.open(path) as complete:  # a finished gzip stream reads without error
            complete.read()
    assert [raw for path in files(tmp_path) for _, raw in read_back(path)] == [
        item.raw for item in written
    ]


async def test_record_flushes_on_its_timer_while_no_frames_arrive(tmp_path: Path) -> None:
    """The flush timer runs while the source is silent, so frames received before a long
    silence are on disk; a cancelled recording then finishes its file."""
    ticks: asyncio.Queue[None] = asyncio.Queue()
    release: asyncio.Queue[None] = asyncio.Queue()

    async def timer(_seconds: float) -> None:  # the flush timer, stepped by the test
        ticks.put_nowait(None)
        await release.get()

    silence = asyncio.Event()

    async def source() -> AsyncIterator[F]:
        for number in range(3):
            yield frame(number)
        silence.set()
        await asyncio.Event().wait()  # silent until cancelled
        yield frame(99)  # pragma: no cover

    stats = RecorderStats()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(record(source(), tmp_path, stats=stats, sleep=timer))
        async with asyncio.timeout(10):
            await silence.wait()
            await ticks.get()  # the timer is waiting
            release.put_nowait(None)  # one interval passes
            await ticks.get()  # flushed, waiting again
        (path,) = files(tmp_path)
        delivered: list[tuple[int | None, bytes | str]] = []
        with pytest.raises(UnreadableFile, match="truncated"):
            delivered.extend(read_frames(path))
        assert len(delivered) == 3
        assert stats.flushes == 1
        task.cancel()
    assert len(read_back(path)) == 3  # finished on cancellation: complete gzip


async def test_a_failing_source_is_reported_after_the_file_is_finished(tmp_path: Path) -> None:
    """An error of the frame source propagates as itself (not wrapped), and what was recorded
    before it is in a finished file."""

    class SourceBroke(Exception):
        pass

    async def source() -> AsyncIterator[F]:
        yield frame(0)
        raise SourceBroke

    with pytest.raises(SourceBroke):
        await record(source(), tmp_path)
    (path,) = files(tmp_path)
    assert len(read_back(path)) == 1


async def test_a_real_capture_survives_a_recording_round_trip(
    tmp_path: Path, data_dir: Path
) -> None:
    """Real Binance frames (hftbacktest's capture, itself in the prefixed format) recorded and
    read back are byte-for-byte the frames and receive times that went in."""
    original = list(
        itertools.islice(
            read_frames(
                data_dir / "captures" / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz"
            ),
            3000,
        )
    )
    frames_in = [F(bytes(raw).decode(), ns) for ns, raw in original]  # type: ignore[arg-type]
    stats = await record(aiter_frames(frames_in), tmp_path, rotate_bytes=200_000)
    assert stats.files > 1
    back = [item for path in files(tmp_path) for item in read_back(path)]
    assert back == [(item.receive_ts_ns, item.raw) for item in frames_in]
