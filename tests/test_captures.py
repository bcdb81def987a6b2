"""Capture readers (feeds/captures.py): format detection, exact receive times, malformed lines
passed on to the parser, streaming of large files, and damaged gzip.

Real captures are the copies in ``tests/data/captures``; synthetic ones are written to
``tmp_path`` (the large one of the streaming test is generated on the fly: about 48 MiB of text,
under 1 MiB gzipped, in well under a second).
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import pytest

from feeds.captures import (
    FORMATS,
    MAX_LINE_BYTES,
    UnknownFormat,
    detect_format,
    line_format,
    numbered_frames,
    prefixed,
    read_frames,
    wrapped,
)
from feeds.files import UnreadableFile
from feeds.frames import FrameParser
from feeds.normalized import RECORD_TYPES
from feeds.tardis import TardisDerivativeTicker
from feeds.ticks import MAX_FRAME_BYTES, NOTHING
from monitor.errors import LiqmonError
from tests.conftest import DATA

CAPTURES = DATA / "captures"
HFT_BTC = CAPTURES / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz"
BYBIT = CAPTURES / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"
MARK = (
    b'{"stream":"btcusdt@markPrice","data":{"e":"markPriceUpdate","E":1569888003001,'
    b'"s":"BTCUSDT","p":"8291.34697815","r":"0.00010000","T":1569916800000}}'
)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz", "prefixed"),
        ("hftbacktest_ethusdt_20240808_bookticker_trade.jsonl.gz", "prefixed"),
        ("bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz", "wrapped"),
        ("deribit_derivative_ticker_BTC-PERPETUAL_nautilus.csv", "tardis"),
        ("okex_futures_BTC-USD_UM_XPERP_derivative_ticker_nautilus.csv", "tardis"),
        ("okex_swap_BTC-USDC-SWAP_derivative_ticker_nautilus.csv", "tardis"),
        # a test-fixture file, not a capture: one JSON object per line reads as "raw", and its
        # lines (frames nested under "frame") are then rejected one by one by the parser
        ("binance_markprice_real_message_variants.jsonl", "raw"),
    ],
)
def test_each_real_file_is_recognised(name: str, fmt: str) -> None:
    """Every real file in tests/data/captures is detected as its format, gzip or not."""
    assert detect_format(CAPTURES / name) == fmt


def test_the_examples_replay_file_is_normalized() -> None:
    """liqmon's own bundled replay file is recognised as normalized records."""
    assert detect_format(Path(__file__).parents[1] / "examples" / "crash.jsonl") == "normalized"


SYNTHETIC = {
    "prefixed": b"1723161255088169167 " + MARK + b"\n",
    "wrapped": json.dumps({"local_ts": 1.5, "raw": MARK.decode()}).encode() + b"\n",
    "raw": MARK + b"\n",
    "tardis": b"exchange,symbol,timestamp,local_timestamp,mark_price\nderibit,X,1000,2000,5\n",
    "normalized": b'{"type":"tick","ts":1,"symbol":"BTCUSDT","mark":"1"}\n',
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_synthetic_files_of_every_format(tmp_path: Path, fmt: str, compress: bool) -> None:
    """A small file of each format is recognised from its content, whatever its name, plain or
    gzipped; blank and unrecognisable leading lines (an OKX ``pong``) are skipped."""
    path = tmp_path / "capture.dat"
    content = b"\n\npong\n" + SYNTHETIC[fmt] if fmt != "tardis" else SYNTHETIC[fmt]
    path.write_bytes(gzip.compress(content) if compress else content)
    assert detect_format(path) == fmt


@pytest.mark.parametrize("record_type", sorted(RECORD_TYPES))
def test_a_file_starting_with_any_record_type_is_normalized(
    tmp_path: Path, record_type: str
) -> None:
    """Whichever record opens a file of normalized records (an account snapshot or update
    dumped by a trading system, an asset mode, ...), the file is recognised as normalized:
    detection knows every type the parser does, from the same list."""
    path = tmp_path / "accounts.jsonl"
    path.write_bytes(json.dumps({"type": record_type, "ts": 1, "account": "a"}).encode() + b"\n")
    assert detect_format(path) == "normalized"


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01\x02garbage\xff\n",
        b"a,b,c\n1,2,3\n",
        b"hello world\n",
        b"42\n",
        b'"a string"\n',
        b"pong\n" * 20 + MARK + b"\n",  # nothing recognisable within the sampled lines
    ],
    ids=["binary", "other-csv", "text", "number", "string", "late"],
)
def test_unknown_formats_are_refused_clearly(tmp_path: Path, content: bytes) -> None:
    """Anything else raises UnknownFormat, naming the file and the formats it looked for; it
    is an UnreadableFile (the CLI's "exit non-zero" path) and a LiqmonError."""
    path = tmp_path / "mystery.jsonl"
    path.write_bytes(content)
    with pytest.raises(UnknownFormat, match=r"mystery\.jsonl: not a recognised capture") as caught:
        detect_format(path)
    assert isinstance(caught.value, UnreadableFile)
    assert isinstance(caught.value, LiqmonError)
    assert "prefixed, wrapped, raw, tardis, normalized" in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"], ids=["empty", "blank"])
def test_an_empty_file_is_an_empty_normalized_replay(tmp_path: Path, content: bytes) -> None:
    """Nothing to detect is nothing to apply: ``liqmon replay`` of an empty file succeeds with
    zero records (a service's empty hand-off file is not an error)."""
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    assert detect_format(path) == "normalized"


def test_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    """A missing file is UnreadableFile (not UnknownFormat), from detection and from reading."""
    with pytest.raises(UnreadableFile) as caught:
        detect_format(tmp_path / "nope.jsonl")
    assert not isinstance(caught.value, UnknownFormat)
    with pytest.raises(UnreadableFile):
        list(read_frames(tmp_path / "nope.jsonl", "raw"))


def test_prefixed_lines_split_exactly() -> None:
    """The real first line of the BTC capture splits into its receive time in ns and the frame
    text, byte for byte; a line without a numeric prefix is passed on whole, without a time."""
    with gzip.open(HFT_BTC) as lines:
        first = lines.readline().rstrip(b"\n")
    receive, frame = next(iter(read_frames(HFT_BTC)))
    assert (receive, frame) == (1723161255088169167, first.split(b" ", 1)[1])
    assert prefixed(b"garbage {}") == (None, b"garbage {}")
    assert prefixed(b"12345") == (None, b"12345")
    assert prefixed(b"-5 {}") == (None, b"-5 {}")


def test_wrapped_lines_keep_the_exact_text_and_time() -> None:
    """Each real Bybit line yields its ``raw`` text unchanged and ``local_ts`` in ns exactly as
    written (1786310819.5264041 s is 1786310819526404100 ns, not a rounded double)."""
    frames = list(read_frames(BYBIT))
    with gzip.open(BYBIT, "rt", encoding="utf-8") as lines:
        expected = [json.loads(line) for line in lines]
    assert [raw for _, raw in frames] == [line["raw"].encode() for line in expected]
    assert frames[1][0] == 1786310819526404100
    assert frames[0][0] == 1786310819526357000


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"local_ts": 2, "raw": "x"}', (2_000_000_000, b"x")),
        (b'{"local_ts": -1.0, "raw": "x"}', (None, b"x")),
        (b'{"local_ts": "1.5", "raw": "x"}', (None, b"x")),
        (b'{"raw": "x"}', (None, b"x")),
        (b'{"local_ts": 1.5, "raw": 5}', (None, b'{"local_ts": 1.5, "raw": 5}')),
        (b'{"local_ts": 1.5, "raw": "x"', (None, b'{"local_ts": 1.5, "raw": "x"')),
        (b"[1, 2]", (None, b"[1, 2]")),
    ],
)
def test_wrapped_lines_with_damage(line: bytes, expected: tuple[int | None, object]) -> None:
    """A bad ``local_ts`` loses only the receive time; a line that is not a wrapper at all is
    passed on whole, for the parser to reject."""
    assert wrapped(line) == expected


def test_malformed_lines_reach_the_parser_with_their_line_numbers(tmp_path: Path) -> None:
    """Malformed lines inside a capture are not exceptions: they are yielded (with their line
    numbers) and the parser rejects and counts them, while the good lines around them parse."""
    path = tmp_path / "capture.jsonl"
    lines = [
        b"1723161255088169167 " + MARK,
        b"",
        b"not a prefix " + MARK,
        b"1723161255088169168 " + MARK[:50],
        b'1723161255088169169 {"e":"kline"}',
        b"1723161255088169170 " + MARK,
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    parser = FrameParser()
    results = {number: parser.parse(raw, ts) for number, (ts, raw) in numbered_frames(path)}
    assert sorted(results) == [1, 3, 4, 5, 6]  # the blank line 2 is skipped, not renumbered
    assert [len(results[n].ticks) for n in (1, 6)] == [1, 1]
    assert results[3].rejects[0][0] == "invalid_json"
    assert results[4].rejects[0][0] == "invalid_json"
    assert results[5].rejects[0][0] == "unknown_shape"


def test_tardis_rows_carry_their_local_time(tmp_path: Path) -> None:
    """Tardis rows are yielded whole with ``local_timestamp`` (µs) as ns, the header too (with
    no time) so the parser learns the columns; CRLF endings and a reordered header work."""
    path = tmp_path / "ticker.csv"
    path.write_bytes(
        b"mark_price,local_timestamp,timestamp,symbol,exchange\r\n"
        b"101.5,1786320665533324,1786320665523000,BTC-PERPETUAL,deribit\r\n"
        b",1786320665533325,1786320665523001,BTC-PERPETUAL,deribit\r\n"
        b"101.5,oops,1786320665523000,BTC-PERPETUAL,deribit\r\n"
    )
    frames = list(read_frames(path))
    assert [ts for ts, _ in frames] == [None, 1786320665533324000, 1786320665533325000, None]
    tardis = TardisDerivativeTicker()
    parsed = [tardis.parse(raw, ts) for ts, raw in frames]
    assert parsed[0] == parsed[2] == NOTHING
    assert parsed[1].ticks[0].receive_ts_ns == 1786320665533324000
    assert parsed[3].rejects[0][0] == "invalid_field"


def test_raw_capture_lines_have_no_time(tmp_path: Path) -> None:
    """In a raw capture each line is a frame with no receive time."""
    path = tmp_path / "raw.jsonl"
    path.write_bytes(MARK + b"\npong\n" + MARK + b"\n")
    assert list(read_frames(path)) == [(None, MARK), (None, b"pong"), (None, MARK)]


def test_real_captures_parse_without_rejects() -> None:
    """Read and parsed end to end, each real capture gives its exact tick count and no reject:
    the hftbacktest BTC capture (21,313 trades, 66,089 book mids), 758 Bybit messages (89
    marks), and the three Tardis files (17 marks)."""
    expectations = [
        (HFT_BTC, FrameParser(price_source="trade").parse, 87_402, 21_313),
        (HFT_BTC, FrameParser(price_source="mid").parse, 87_402, 66_089),
        (BYBIT, FrameParser("bybit").parse, 758, 89),
    ]
    expectations += [
        (path, TardisDerivativeTicker().parse, None, None) for path in CAPTURES.glob("*.csv")
    ]
    tardis_ticks = 0
    for path, parse, frames, ticks in expectations:
        reasons: Counter[str] = Counter()
        count = got = 0
        for receive, raw in read_frames(path):
            parsed = parse(raw, receive)
            reasons.update(reason for reason, _ in parsed.rejects)
            count += 1
            got += len(parsed.ticks)
        assert reasons == Counter(), path.name
        if frames is None:
            tardis_ticks += got
        else:
            assert (count, got) == (frames, ticks)
    assert tardis_ticks == 17


def _write_large_capture(path: Path, lines: int) -> int:
    """A gzip prefixed capture of ``lines`` real-shaped frames; returns its uncompressed size."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    block = b"".join(
        b"%d %s\n" % (1723161255088169167 + i, MARK.replace(b"1569888003001", b"%d" % (10**12 + i)))
        for i in range(1000)
    )
    with path.open("wb") as out:
        for _ in range(lines // 1000):
            out.write(compressor.compress(block))
        out.write(compressor.flush())
    return len(block) * (lines // 1000)


def test_a_large_capture_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A capture of 300,000 frames (about 48 MiB of text) is read lazily: the first frame comes
    before the rest is read, and reading it all peaks at a few MiB — far below its size."""
    path = tmp_path / "large.jsonl.gz"
    size = _write_large_capture(path, 300_000)
    assert size > 40 << 20
    frames = read_frames(path)
    assert next(frames)[0] == 1723161255088169167
    tracemalloc.start()
    try:
        count = 1 + sum(1 for _ in frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300_000
    assert peak < 8 << 20
    assert peak < size / 5


def test_a_truncated_gzip_delivers_what_it_holds_then_fails(tmp_path: Path) -> None:
    """The real BTC capture cut in half: every complete line before the cut is read and parses
    with zero rejects (no torn last line reaches the parser), then UnreadableFile is raised."""
    data = HFT_BTC.read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    parser = FrameParser(price_source="trade")
    reasons: Counter[str] = Counter()
    read: list[object] = []

    def consume() -> None:
        for receive, raw in read_frames(path):
            reasons.update(reason for reason, _ in parser.parse(raw, receive).rejects)
            read.append(receive)

    with pytest.raises(UnreadableFile, match="truncated"):
        consume()
    assert 30_000 < len(read) < 87_402
    assert reasons == Counter()


def test_detection_of_a_truncated_gzip_still_works(tmp_path: Path) -> None:
    """Detection reads only the first lines, so a capture damaged further on is still
    recognised (the damage shows when it is read)."""
    data = HFT_BTC.read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert detect_format(path) == "prefixed"


def test_frames_up_to_the_frame_limit_are_read_whole(tmp_path: Path) -> None:
    """A frame bigger than a normalized line may be (1 MiB) but within MAX_FRAME_BYTES — a
    large ``!markPrice@arr`` — is read whole and parsed; a line past MAX_LINE_BYTES is cut and
    then rejected as ``oversized``, exactly as the same frame would be live."""
    event = b'{"e":"markPriceUpdate","E":1,"s":"BTCUSDT","p":"1.5"}'
    count = (3 << 20) // len(event)
    big = b"[" + b",".join([event] * count) + b"]"
    assert 1 << 20 < len(big) <= MAX_FRAME_BYTES
    huge = b"[" + b" " * MAX_LINE_BYTES + b"]"
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"5 " + big + b"\n6 " + huge + b"\n7 " + MARK + b"\n")
    frames = list(read_frames(path))
    parser = FrameParser()
    assert len(parser.parse(frames[0][1], frames[0][0]).ticks) == count
    assert frames[1][0] == 6  # cut past the limit: the frame is over MAX_FRAME_BYTES
    assert parser.parse(frames[1][1], None).rejects[0][0] == "oversized"
    assert parser.parse(frames[2][1], frames[2][0]).ticks


@pytest.mark.parametrize(
    ("line", "fmt"),
    [
        (b"1723161255088169167 {}", "prefixed"),
        (b"1723161255088169167 []", "prefixed"),
        (b'{"local_ts": 1.0, "raw": "{}"}', "wrapped"),
        (b'{"type": "position"}', "normalized"),
        (b'{"type": "snapshot", "topic": "tickers.X"}', "raw"),  # Bybit's own "type"
        (b"[]", "raw"),
        (b"exchange,symbol,timestamp,local_timestamp", "tardis"),
        (b"pong", None),
        (b"12 x", None),
    ],
)
def test_line_classification(line: bytes, fmt: str | None) -> None:
    """Single lines are classified by shape: a Bybit frame's ``type`` is not a normalized
    record's, and a bare ``pong`` tells nothing."""
    assert line_format(line) == fmt
