"""Decoding a file a buffer at a time (``feeds.batches``) gives, line for line, what the line
parser gives: the same records, the same refusals (reason, detail and line number), blank lines
counted and skipped — whatever mix of valid, malformed and unusual lines a buffer holds, and
wherever a buffer boundary falls."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feeds.batches import AccountRun, OneRecord, Refused, TickRun, buffers, decode_buffer
from feeds.decimals import parse_decimals
from feeds.files import read_lines
from feeds.normalized import parse_line
from monitor.errors import RecordRefused
from monitor.exact import split
from monitor.records import TickRecord

GOOD = [
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":"60000.5"}',
    '{"type":"tick","ts":6,"symbol":"ETHUSDT","mark":"3000"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"0.5","entry":"60000","leverage":"10"}',
    '{"type":"position","ts":7,"account":"b","symbol":"BTCUSDT","side":"long","mode":"isolated",'
    '"qty":"1.25","entry":"59000.10","leverage":"20","isolated_wallet":"3000.5"}',
    '{"type":"balance","ts":8,"account":"a","asset":"USDT","wallet":"1000.00"}',
    '{"type":"margin","ts":9,"account":"b","symbol":"BTCUSDT","side":"long","delta":"-5"}',
    '{"type":"contract","symbol":"X","kind":"linear","margin_asset":"USDT","contract_size":"1",'
    '"brackets":[{"floor":"0","cap":"1e9","mmr":"0.01","cum":"0"}]}',
    '{"type":"account_snapshot","ts":10,"account":"a","balances":[],"positions":[]}',
    '{"type":"tick","ts":11,"symbol":"BTCUSDT","mark":"60001","funding_rate":"-0.0001",'
    '"funding_ts":28800000}',
    '{"type":"asset_mode","ts":12,"account":"a","multi_assets":true}',
    '{"type":"collateral","ts":13,"asset":"BTC","price":"60000","haircut":"0.05"}',
]
ODD = [
    "",
    "   ",
    "{bad json",
    "[1, 2]",
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":61800.123456789012345}',  # a number
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":"NaN"}',
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":"+5"}',
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":"1e40"}',
    '{"type":"tick","ts":5,"symbol":"BTCUSDT","mark":"١٢"}',
    '{"type":"tick","ts":-1,"symbol":"BTCUSDT","mark":"1"}',
    '{"type":"tick","ts":5,"symbol":"","mark":"1"}',
    '{"type":"tick","ts":true,"symbol":"X","mark":"1"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"1_000","entry":"60000","leverage":"10"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":0.1,"entry":"60000","leverage":"10"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"isolated",'
    '"qty":"1","entry":"60000","leverage":"10"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"1","entry":"-1","leverage":"10"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"0","entry":"-1","leverage":"-3"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"2","entry":"0","leverage":"3"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"both","mode":"cross",'
    '"qty":"1e2","entry":"60000","leverage":"10"}',
    '{"type":"position","ts":7,"account":"a","symbol":"BTCUSDT","side":"sideways","mode":"cross",'
    '"qty":"1","entry":"60000","leverage":"10"}',
    '{"type":"balance","ts":8,"account":"a","asset":"USDT","wallet":"-0"}',
    '{"type":"balance","ts":8,"account":"a","asset":"USDT","wallet":"١٢"}',
    '{"type":"balance","ts":8,"account":"' + "x" * 300 + '","asset":"USDT","wallet":"1"}',
    '{"type":"balance","ts":8,"account":"a","asset":"USDT","wallet":"99999999999999999999.5"}',
    '{"type":"margin","ts":9,"account":"b","symbol":"BTCUSDT","side":"long","delta":"x"}',
    '{"type":"mystery","ts":1}',
    '{"type":"tick","ts":11,"symbol":"BTCUSDT","mark":"60001","funding_rate":"x",'
    '"funding_ts":28800000}',
    '{"type":"tick","ts":11,"symbol":"BTCUSDT","mark":"60001","funding_ts":28800000}',
    '{"type":"tick","ts":11,"symbol":"BTCUSDT","mark":"60001","funding_rate":0.0001,'
    '"funding_ts":5}',
    '{"type":"asset_mode","ts":12,"account":"a","multi_assets":"yes"}',
]


def _expected(text: str) -> list[tuple[int, Any]]:
    """What the line parser says of every non-blank line."""
    out: list[tuple[int, Any]] = []
    for number, line in read_lines_of(text):
        try:
            record = parse_line(line)
        except RecordRefused as exc:
            out.append((number, ("refused", exc.reason, exc.detail)))
            continue
        out.append((number, _canonical(record, line)))
    return out


def _canonical(record: Any, line: bytes) -> Any:
    if isinstance(record, TickRecord):
        return (
            "tick",
            record.ts,
            record.symbol,
            record.mark,
            record.mark_exact,
            record.funding_rate,
            record.funding_ts,
        )
    return record


def read_lines_of(text: str) -> list[tuple[int, bytes]]:
    return list(read_lines_from_bytes(text.encode()))


def read_lines_from_bytes(data: bytes) -> list[tuple[int, bytes]]:
    from feeds.files import numbered_lines

    return list(numbered_lines([data]))


def _decoded(text: str, cut: int | None = None) -> list[tuple[int, Any]]:
    """What the buffer decoder says, line by line (``cut``: split the text in two buffers)."""
    data = text.encode()
    pieces = [(1, data)]
    if cut is not None:
        at = data.find(b"\n", cut)
        if 0 <= at < len(data) - 1:
            head = data[: at + 1]
            pieces = [(1, head), (1 + head.count(b"\n"), data[at + 1 :])]
    out: list[tuple[int, Any]] = []
    for first, piece in pieces:
        for item in decode_buffer(piece, first):
            if isinstance(item, TickRun):
                for i, number in enumerate(item.lines):
                    rate, when = item.funding[i] if item.funding else (None, None)
                    record = TickRecord(
                        item.stamps[i], item.symbols[i], item.marks[i], item.texts[i], rate, when
                    )
                    out.append((number, _canonical(record, b"")))
            elif isinstance(item, AccountRun):
                for i, number in enumerate(item.lines):
                    out.append((number, item.batch.record(i)))
            elif isinstance(item, OneRecord):
                out.append((item.line, item.record))
            else:
                assert isinstance(item, Refused)
                out.append((item.line, ("refused", item.error.reason, item.error.detail)))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(GOOD + ODD), min_size=1, max_size=60),
    st.integers(min_value=0, max_value=4000),
)
def test_buffer_decoding_equals_line_parsing(lines: list[str], cut: int) -> None:
    """Any mix of lines, cut into buffers anywhere: the same verdict on every line."""
    text = "\n".join(lines) + "\n"
    assert _decoded(text) == _expected(text)
    assert _decoded(text, cut) == _expected(text)


def test_long_runs_take_the_fast_path() -> None:
    """A buffer of well-formed ticks and accounts becomes a few runs, not a record per line."""
    lines = [GOOD[0].replace('"ts":5', f'"ts":{i}') for i in range(500)]
    lines += [GOOD[3].replace('"account":"b"', f'"account":"b{i}"') for i in range(100)]
    items = decode_buffer(("\n".join(lines) + "\n").encode(), 1)
    assert [type(i).__name__ for i in items] == ["TickRun", "AccountRun"]
    assert len(items[0].symbols) == 500  # type: ignore[union-attr]


@pytest.mark.parametrize("odd", ["0\\n", "\\n5", " 1", "1 ", "\\t2"])
@pytest.mark.parametrize("field", ["wallet", "qty"])
def test_a_decimal_with_white_space_in_a_long_run_is_refused_like_its_line(
    odd: str, field: str
) -> None:
    """A balance or position inside a run long enough for the column parser, one decimal of
    which holds a newline or a space (escaped in the JSON string): the buffer decoder refuses
    that record exactly as the line parser does, and takes the others (``float()`` would read
    ``"0\\n"`` as 0; the column parser used to fail on it)."""
    position = (
        '{"type":"position","ts":7,"account":"a%d","symbol":"BTCUSDT","side":"both",'
        '"mode":"cross","qty":"%s","entry":"60000","leverage":"10"}'
    )
    balance = '{"type":"balance","ts":8,"account":"a%d","asset":"USDT","wallet":"%s"}'
    template = balance if field == "wallet" else position
    lines = [template % (i, "1.5") for i in range(40)]
    lines[20] = template % (20, odd)
    text = "\n".join(lines) + "\n"
    assert _decoded(text) == _expected(text)
    assert _expected(text)[20][1][0] == "refused"


def test_buffers_cut_at_line_boundaries_and_count_lines(tmp_path: Path) -> None:
    """``buffers`` hands out whole lines with the number of the first, gzip or not, with or
    without a final newline."""
    rng = random.Random(3)
    lines = [json.dumps({"n": i, "pad": "x" * rng.randint(0, 300)}) for i in range(5000)]
    for name, data in (
        ("plain.jsonl", ("\n".join(lines)).encode()),
        ("packed.jsonl.gz", gzip.compress(("\n".join(lines) + "\n").encode())),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        seen: list[tuple[int, bytes]] = []
        for first, piece in buffers(str(path), chunk_bytes=4096):
            assert piece.endswith(b"\n")
            seen.extend((first + k, line) for k, line in enumerate(piece.split(b"\n")[:-1]))
        assert seen == list(read_lines(path))


DECIMAL_TEXT = st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{0,8})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(DECIMAL_TEXT, st.text(max_size=6)), max_size=40))
@example(["0\n"])
@example(["1", "2\n3", " 4"])
def test_decimal_columns_are_exact(texts: list[str]) -> None:
    """Every text the column parser takes gives the float ``float()`` gives and the exact
    mantissa and exponent of its ``Decimal``; what it does not take is flagged, never guessed."""
    from decimal import Decimal, InvalidOperation

    column = parse_decimals(texts)
    for i, text in enumerate(texts):
        if column.slow[i]:
            continue
        try:
            exact = Decimal(text)
        except InvalidOperation:
            pytest.fail(f"{text!r} was taken but is no decimal")
        assert text.isascii()
        assert "_" not in text
        assert text == text.strip()
        assert column.value[i] == float(exact)
        assert split(exact) == (int(column.mantissa[i]), int(column.exponent[i]))
