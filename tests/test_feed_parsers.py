"""The exchange frame parsers (feeds/binance, bybit, okx, tardis, frames) on real recorded data.

Every real capture in ``tests/data/captures`` (see tests/data/PROVENANCE.md) is parsed whole and
must give exact tick counts with zero rejects; ticks are checked field by field against the raw
frames, read independently with the standard ``json`` module. OKX has no recorded capture here:
its frames are the examples of OKX's own API documentation, quoted where they are used.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from feeds.binance import COINM, USDM, BinanceFrames, venue_of_symbol
from feeds.bybit import BybitTickers
from feeds.captures import read_frames
from feeds.frames import FrameParser
from feeds.okx import OkxMarkPrice
from feeds.tardis import TardisDerivativeTicker
from feeds.ticks import MAX_FRAME_BYTES, NOTHING, MarkTick, Parsed
from monitor.errors import ConfigError
from tests.conftest import DATA

CAPTURES = DATA / "captures"
VARIANTS = CAPTURES / "binance_markprice_real_message_variants.jsonl"
BYBIT = CAPTURES / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"
HFT_BTC = CAPTURES / "hftbacktest_btcusdt_20240808_bookticker_trade.jsonl.gz"
HFT_ETH = CAPTURES / "hftbacktest_ethusdt_20240808_bookticker_trade.jsonl.gz"
RECEIVED = 1_700_000_000_123_456_789

COINM_ERAS = {
    "2020-06 COIN-M dated (no r, no T, no i)",
    "2021-04 COIN-M perpetual per-symbol (no i)",
    "2021-04 COIN-M !markPrice@arr",
}


def _variants() -> list[dict[str, Any]]:
    return [json.loads(line) for line in VARIANTS.read_text(encoding="utf-8").splitlines()]


def _events(frame: Any) -> list[dict[str, Any]]:
    """The markPriceUpdate objects of a Binance frame, read without the parser."""
    data = frame["data"] if isinstance(frame, dict) and "data" in frame else frame
    return data if isinstance(data, list) else [data]


def _parse_all(parse: Any, frames: Any) -> tuple[list[MarkTick], Counter[str], int]:
    """Ticks, reject reasons and the number of NOTHING results of parsing every frame."""
    ticks: list[MarkTick] = []
    reasons: Counter[str] = Counter()
    nothing = 0
    for receive, raw in frames:
        parsed = parse(raw, receive)
        ticks.extend(parsed.ticks)
        reasons.update(reason for reason, _ in parsed.rejects)
        nothing += parsed == NOTHING
    return ticks, reasons, nothing


# --- Binance -------------------------------------------------------------------------------


def _funding(event: dict[str, Any]) -> tuple[str | None, int | None]:
    """An event's funding as docs/collateral.md reads it: ``r`` and ``T`` when the contract
    has funding (dated contracts send neither, or ``T`` 0)."""
    if "r" not in event or not event.get("T"):
        return None, None
    return event["r"], event["T"]


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v["era"])
def test_every_binance_field_era_gives_its_marks(variant: dict[str, Any]) -> None:
    """Each real frame of every era 2019–2021 (wrapped, @1s, dated, COIN-M, arrays) gives one
    tick per event: the symbol as sent, the mark's exact text, ``E`` as exchange time, and the
    funding rate ``r`` and next funding time ``T`` of perpetuals (none for dated contracts)."""
    venue = COINM if variant["era"] in COINM_ERAS else USDM
    parsed = BinanceFrames(venue).parse(orjson.dumps(variant["frame"]), RECEIVED)
    expected = [
        MarkTick(
            venue, event["s"], float(event["p"]), event["p"], event["E"], RECEIVED, *_funding(event)
        )
        for event in _events(variant["frame"])
    ]
    assert parsed == Parsed(tuple(expected))


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v["era"])
def test_binance_bare_and_wrapped_frames_agree(variant: dict[str, Any]) -> None:
    """The combined-stream wrapper changes nothing: the bare event (or bare array) gives the
    same ticks, also as text rather than bytes."""
    parser = BinanceFrames(USDM)
    wrapped = parser.parse(json.dumps(variant["frame"]), None)
    bare = parser.parse(json.dumps(variant["frame"]["data"]), None)
    assert bare == wrapped
    assert len(bare.ticks) == len(_events(variant["frame"]))


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: v["era"])
def test_auto_detection_tells_coin_m_from_usds_m(variant: dict[str, Any]) -> None:
    """Without a venue, every real frame is recognised as Binance, and each tick is named
    USDⓈ-M or COIN-M from its symbol (BTCUSD_PERP and BTCUSD_200925 are COIN-M; BTCUSDT and
    BTCBUSD_210129 are USDⓈ-M)."""
    parsed = FrameParser().parse(orjson.dumps(variant["frame"]), RECEIVED)
    expected = COINM if variant["era"] in COINM_ERAS else USDM
    assert parsed.rejects == ()
    assert {tick.venue for tick in parsed.ticks} == {expected}


def test_a_symbol_named_in_chinese_is_a_symbol() -> None:
    """Binance lists contracts named in Chinese (币安人生USDT, 2025): they are symbols too."""
    event = {"e": "markPriceUpdate", "E": 1, "s": "币安人生USDT", "p": "0.2"}
    (tick,) = BinanceFrames().parse(orjson.dumps(event), None).ticks
    assert tick.symbol == "币安人生USDT"


def test_symbol_venue_guess_and_its_documented_limit() -> None:
    """COIN-M is <coin>USD_PERP or <coin>USD_<yymmdd>; stablecoin-dated contracts are USDⓈ-M;
    BNBUSD_210625 reads as a BUSD contract (the documented reason to name the venue)."""
    assert venue_of_symbol("ETHUSD_PERP") == COINM
    assert venue_of_symbol("BTCUSD_210625") == COINM
    assert venue_of_symbol("BTCUSDT") == USDM
    assert venue_of_symbol("BTCUSDT_210625") == USDM
    assert venue_of_symbol("BTCBUSD_210129") == USDM
    assert venue_of_symbol("BNBUSD_210625") == USDM


def test_an_array_keeps_its_good_items_and_counts_the_bad_once_per_reason() -> None:
    """In !markPrice@arr, bad items do not drop good ones: each good item is a tick, and the bad
    ones give one reject per reason, naming the first bad item and how many more."""
    frame = _variants()[5]["frame"]  # the real USDⓈ-M array of two
    good = frame["data"][0]
    items = [good, {**good, "p": "NaN"}, {**good, "s": "ETHUSDT", "p": "-1"}, {**good, "E": "x"}]
    parsed = BinanceFrames().parse(orjson.dumps({**frame, "data": items}), None)
    assert [tick.mark_text for tick in parsed.ticks] == [good["p"]]
    assert dict(parsed.rejects).keys() == {"invalid_price", "invalid_field"}
    assert dict(parsed.rejects)["invalid_price"].startswith("item 1: ")
    assert dict(parsed.rejects)["invalid_price"].endswith("(and 1 more items)")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"result": None, "id": 1}, None),
        ({"result": ["btcusdt@markPrice"], "id": 3}, None),
        ({"error": {"code": 2, "msg": "Invalid request: unknown variable"}, "id": 4}, "error"),
        ({"code": 0, "msg": "Unknown property", "id": 5}, "error"),
        ({"e": "kline", "E": 1, "s": "BTCUSDT"}, "unknown_shape"),
        ({"e": "markPriceUpdate", "E": 1, "p": "1"}, "invalid_field"),
        ({"e": "markPriceUpdate", "E": 1.5, "s": "BTCUSDT", "p": "1"}, "invalid_field"),
        ({"e": "markPriceUpdate", "E": True, "s": "BTCUSDT", "p": "1"}, "invalid_field"),
        ({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT"}, "invalid_field"),
        ({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "0"}, "invalid_price"),
        ({"e": "markPriceUpdate", "E": 1, "s": "BTCUSDT", "p": "١٢٣"}, "invalid_price"),
        ({"e": "markPriceUpdate", "E": 1, "s": "BTC USDT", "p": "1"}, "invalid_field"),
        ({"stream": 5, "data": {}}, "invalid_field"),
        ({"stream": "x", "data": 5}, "unknown_shape"),
        ([1, 2], "unknown_shape"),
        ("text", "unknown_shape"),
    ],
)
def test_binance_replies_and_refusals(frame: object, reason: str | None) -> None:
    """Subscription acks are NOTHING; error replies are rejects whose detail says it is the
    venue's error; unknown events and bad fields get their stable reason."""
    parsed = BinanceFrames().parse(orjson.dumps(frame), None)
    if reason is None:
        assert parsed == NOTHING
    elif reason == "error":
        ((code, detail),) = parsed.rejects
        assert code == "venue_error"
        assert detail.startswith("venue error from binance")
    else:
        assert parsed.ticks == ()
        assert [code for code, _ in parsed.rejects] == [reason]


def _hft_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [
            (int(ns), json.loads(raw)["data"]) for ns, raw in (line.split(" ", 1) for line in lines)
        ]


@pytest.mark.parametrize(
    ("path", "frames", "trades", "books"),
    [(HFT_BTC, 87_402, 21_313, 66_089), (HFT_ETH, 68_068, 14_076, 53_992)],
    ids=["btcusdt", "ethusdt"],
)
def test_real_binance_book_and_trade_captures(
    path: Path, frames: int, trades: int, books: int
) -> None:
    """The real hftbacktest captures (bookTicker + trade) parse with zero rejects under each
    price source: no mark for ``mark``, one tick per trade for ``trade``, one per book update
    for ``mid`` — each equal to the tick computed from the raw line, with the line's receive
    time."""
    raw = _hft_lines(path)
    assert len(raw) == frames
    for source, count in (("mark", 0), ("trade", trades), ("mid", books)):
        parser = FrameParser(USDM, price_source=source)
        ticks, reasons, nothing = _parse_all(parser.parse, read_frames(path))
        assert reasons == Counter()
        assert len(ticks) == count
        assert nothing == frames - count
    expected_trades = [
        MarkTick(USDM, d["s"], float(d["p"]), d["p"], d["T"], ns)
        for ns, d in raw
        if d["e"] == "trade"
    ]
    trade_ticks, _, _ = _parse_all(FrameParser(USDM, price_source="trade").parse, read_frames(path))
    assert trade_ticks == expected_trades


def test_book_mid_is_exact_and_timed_by_event_time() -> None:
    """The first real BTCUSDT book update (b 61800.20, a 61800.30, E 1723161256313, received at
    1723161255088169167 ns) gives the mid 61800.25, computed in decimal."""
    receive, raw = next(iter(read_frames(HFT_BTC)))
    (tick,) = FrameParser(price_source="mid").parse(raw, receive).ticks
    assert tick == MarkTick(USDM, "BTCUSDT", 61800.25, "61800.25", 1723161256313, receive)
    assert receive == 1723161255088169167


def test_trades_give_a_real_rate_stream() -> None:
    """Driven by trades, the BTC capture is a non-decreasing stream of exchange times spanning
    about 5.7 minutes (what a paced replay would take), at about 60 trades a second."""
    ticks, _, _ = _parse_all(FrameParser(price_source="trade").parse, read_frames(HFT_BTC))
    times = [tick.exchange_ts_ms for tick in ticks]
    assert times == sorted(times)
    span_s = (times[-1] - times[0]) / 1000
    assert 5 * 60 < span_s < 6 * 60
    assert 50 < len(times) / span_s < 70


@pytest.mark.parametrize(
    ("frame", "source", "expected"),
    [
        ({"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "2", "X": "MARKET"}, "trade", "2"),
        ({"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "2", "X": "ADL"}, "trade", None),
        ({"e": "trade", "T": 4, "s": "BTCUSDT", "p": "2", "X": "INSURANCE_FUND"}, "trade", None),
        ({"e": "aggTrade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "3"}, "trade", "3"),
        ({"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "2", "X": "MARKET"}, "mark", None),
        ({"e": "bookTicker", "T": 4, "s": "BTCUSDT", "b": "1", "a": "2"}, "mid", "1.5"),
        ({"e": "bookTicker", "E": 4, "s": "BTCUSDT", "b": "1", "a": "2"}, "mark", None),
        ({"e": "markPriceUpdate", "E": 4, "s": "BTCUSDT", "p": "9"}, "trade", None),
    ],
)
def test_price_sources_pick_their_events(
    frame: dict[str, Any], source: str, expected: str | None
) -> None:
    """Each price source reads only its own events (others are NOTHING, not rejects); trades
    other than ordinary market trades (ADL, insurance fund) are skipped; a book without ``E``
    is timed by ``T``."""
    parsed = BinanceFrames(price_source=source).parse(orjson.dumps(frame), None)
    if expected is None:
        assert parsed == NOTHING
    else:
        (tick,) = parsed.ticks
        assert tick.mark_text == expected
        assert tick.exchange_ts_ms == 4


# --- Bybit -----------------------------------------------------------------------------------


def _bybit_lines() -> list[dict[str, Any]]:
    with gzip.open(BYBIT, "rt", encoding="utf-8") as lines:
        return [json.loads(line, parse_float=Decimal) for line in lines]  # local_ts exactly


def test_every_real_bybit_message_parses() -> None:
    """All 758 real Bybit v5 ticker messages parse with zero rejects: the 89 that carry
    markPrice (4 snapshots, 85 deltas) are ticks, the 669 others are NOTHING — and each tick is
    the one computed from its raw message (symbol, exact text, ``ts`` and ``local_ts`` in ns)."""
    lines = _bybit_lines()
    expected = []
    for line in lines:
        message = json.loads(line["raw"])
        if "markPrice" in message["data"]:
            expected.append(
                (
                    message["data"]["symbol"],
                    message["data"]["markPrice"],
                    message["ts"],
                    int(line["local_ts"] * 1_000_000_000),  # the text's seconds, in ns
                )
            )
    ticks, reasons, nothing = _parse_all(BybitTickers().parse, read_frames(BYBIT))
    assert len(lines) == 758
    assert reasons == Counter()
    assert (len(ticks), nothing) == (89, 669)
    got = [(t.symbol, t.mark_text, t.exchange_ts_ms, t.receive_ts_ns) for t in ticks]
    assert got == expected
    assert Counter(t.symbol for t in ticks) == Counter(s for s, *_ in expected)
    assert {t.venue for t in ticks} == {"bybit"}


def test_bybit_first_tick_is_the_btc_snapshot() -> None:
    """Spot check: the first message, the BTCUSDT snapshot, gives mark 65117.44 at
    1786310817583 ms, received at 1786310819.526357 s, with its funding rate 0.0001 due at
    1786320000000 ms."""
    receive, raw = next(iter(read_frames(BYBIT)))
    assert BybitTickers().parse(raw, receive).ticks == (
        MarkTick(
            "bybit",
            "BTCUSDT",
            65117.44,
            "65117.44",
            1786310817583,
            1786310819526357000,
            "0.0001",
            1786320000000,
        ),
    )


def test_bybit_delta_keeps_the_last_mark() -> None:
    """The state is the last mark each symbol was given: a delta without markPrice changes
    nothing, a delta with one replaces it; at the end of the capture each symbol's last mark is
    the one of its last markPrice-carrying message."""
    tickers = BybitTickers()
    last: dict[str, str] = {}
    for receive, raw in read_frames(BYBIT):
        before = {symbol: tickers.last(symbol) for symbol in tickers.symbols}
        parsed = tickers.parse(raw, receive)
        data = json.loads(raw)["data"]
        if "markPrice" in data:
            last[data["symbol"]] = data["markPrice"]
            assert tickers.last(data["symbol"]) == parsed.ticks[0]
        else:
            assert parsed == NOTHING
            assert {s: tickers.last(s) for s in tickers.symbols} == before
    assert tickers.symbols == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"}
    assert {s: tickers.last(s).mark_text for s in last} == last  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        # the replies of Bybit's v5 "Connect" docs (public ping, private pong, subscribe)
        ({"success": True, "ret_msg": "pong", "conn_id": "0970e817", "op": "ping"}, None),
        ({"req_id": "t", "op": "pong", "args": ["1675418560633"], "conn_id": "cfcb4o"}, None),
        (
            {
                "success": True,
                "ret_msg": "",
                "conn_id": "3cd84cb1",
                "req_id": "",
                "op": "subscribe",
            },
            None,
        ),
        ({"success": False, "ret_msg": "error:handler not found", "op": "subscribe"}, "error"),
        (
            {"topic": "orderbook.50.BTCUSDT", "type": "snapshot", "ts": 1, "data": {}},
            "unknown_shape",
        ),
        ({"topic": "tickers.BTCUSDT", "type": "weird", "ts": 1, "data": {}}, "unknown_shape"),
        ({"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1, "data": []}, "invalid_field"),
        (
            {"topic": "tickers.BTCUSDT", "type": "delta", "data": {"markPrice": "1"}},
            "invalid_field",
        ),
        (
            {"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1, "data": {"markPrice": "-1"}},
            "invalid_price",
        ),
        ({"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1, "data": {"markPrice": ""}}, None),
        ({"ts": 1}, "unknown_shape"),
    ],
)
def test_bybit_replies_and_refusals(frame: dict[str, Any], reason: str | None) -> None:
    """Pong and subscribe replies are NOTHING, ``success: false`` is the venue's error; other
    topics, bad types and bad fields get their stable reason; an empty markPrice is no mark."""
    parsed = BybitTickers().parse(orjson.dumps(frame), None)
    if reason is None:
        assert parsed == NOTHING
    elif reason == "error":
        assert parsed.rejects[0][0] == "venue_error"
        assert parsed.rejects[0][1].startswith("venue error from bybit")
    else:
        assert [code for code, _ in parsed.rejects] == [reason]


def test_bybit_symbol_falls_back_to_the_topic() -> None:
    """A ticker whose data lacks ``symbol`` is named by its topic (``tickers.<symbol>``)."""
    frame = {"topic": "tickers.SOLUSDT", "type": "delta", "ts": 7, "data": {"markPrice": "150"}}
    (tick,) = BybitTickers().parse(orjson.dumps(frame), None).ticks
    assert (tick.symbol, tick.exchange_ts_ms) == ("SOLUSDT", 7)


# --- OKX -------------------------------------------------------------------------------------

# OKX API v5 docs, "Mark price channel"
# (https://www.okx.com/docs-v5/en/#public-data-websocket-mark-price-channel; text as stored
# 2026-07-18), quoted verbatim: the English page's push, success and failure examples, and the
# Chinese page's push example (a MARGIN instrument).
OKX_PUSH = """{
  "arg": {
    "channel": "mark-price",
    "instId": "LTC-USD-190628"
  },
  "data": [
    {
      "instType": "FUTURES",
      "instId": "LTC-USD-190628",
      "markPx": "0.1",
      "ts": "1597026383085"
    }
  ]
}"""
OKX_PUSH_MARGIN = """{
  "arg": {
    "channel": "mark-price",
    "instId": "BTC-USDT"
  },
  "data": [
    {
      "instType": "MARGIN",
      "instId": "BTC-USDT",
      "markPx": "42310.6",
      "ts": "1630049139746"
    }
  ]
}"""
OKX_SUBSCRIBED = """{
  "id": "1512",
  "event": "subscribe",
  "arg": {
    "channel": "mark-price",
    "instId": "LTC-USD-190628"
  },
  "connId": "a4d3ae55"
}"""
OKX_FAILURE = r"""{
  "id": "1512",
  "event": "error",
  "code": "60012",
  "msg": "Invalid request: {\"op\": \"subscribe\", \"argss\":[{ \"channel\" : \"mark-price\", \"instId\" : \"LTC-USD-190628\"}]}",
  "connId": "a4d3ae55"
}"""  # noqa: E501
# OKX API v5 docs, "WebSocket service upgrade notice" (event "notice", code 64008).
OKX_NOTICE = """{
  "event": "notice",
  "code": "64008",
  "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
  "connId": "a4d3ae55"
}"""


def test_okx_push_examples_from_the_docs() -> None:
    """The documented pushes give one tick each: instId, markPx's exact text, and ``ts`` — a
    string of ms in OKX's format — as an integer."""
    okx = OkxMarkPrice()
    assert okx.parse(OKX_PUSH, RECEIVED) == Parsed(
        (MarkTick("okx", "LTC-USD-190628", 0.1, "0.1", 1597026383085, RECEIVED),)
    )
    assert okx.parse(OKX_PUSH_MARGIN.encode(), None).ticks == (
        MarkTick("okx", "BTC-USDT", 42310.6, "42310.6", 1630049139746, None),
    )


def test_okx_replies_from_the_docs() -> None:
    """The documented subscribe reply, the service-upgrade notice and the plain-text ``pong``
    are NOTHING; the documented failure reply is a reject (``venue_error``, detail ``venue
    error from okx: 60012: Invalid request ...``), so a refused subscription shows in counts."""
    okx = OkxMarkPrice()
    assert okx.parse(OKX_SUBSCRIBED, None) == NOTHING
    assert okx.parse(OKX_NOTICE, None) == NOTHING
    assert okx.parse("pong", None) == NOTHING
    assert okx.parse(b"pong", None) == NOTHING
    ((reason, detail),) = okx.parse(OKX_FAILURE, None).rejects
    assert reason == "venue_error"
    assert detail.startswith("venue error from okx: '60012: Invalid request")


def test_okx_several_items_and_bad_ones() -> None:
    """A push with several items gives a tick per good item; ``ts`` sent as a JSON number (the
    docs say String) and other bad fields are rejected per reason, the good items kept."""
    push = json.loads(OKX_PUSH)
    item = push["data"][0]
    push["data"] = [
        item,
        {**item, "instId": "BTC-USD-SWAP", "markPx": "65000.5"},
        {**item, "ts": 1597026383085},
        {**item, "markPx": "inf"},
        "not an item",
    ]
    parsed = OkxMarkPrice().parse(orjson.dumps(push), None)
    assert [(t.symbol, t.mark_text) for t in parsed.ticks] == [
        ("LTC-USD-190628", "0.1"),
        ("BTC-USD-SWAP", "65000.5"),
    ]
    assert sorted(reason for reason, _ in parsed.rejects) == [
        "invalid_field",
        "invalid_price",
        "unknown_shape",
    ]


@pytest.mark.parametrize(
    "frame",
    [
        {"arg": {"channel": "tickers", "instId": "BTC-USDT"}, "data": []},
        {"arg": {"channel": "mark-price"}, "data": {}},
        {"event": "mystery"},
        {"data": []},
        [],
    ],
)
def test_okx_other_shapes_are_unknown(frame: object) -> None:
    """Other channels, a non-list ``data``, unknown events and foreign shapes are
    ``unknown_shape``."""
    assert OkxMarkPrice().parse(orjson.dumps(frame), None).rejects[0][0] == "unknown_shape"


# --- Tardis ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "venue", "symbol", "rows"),
    [
        ("deribit_derivative_ticker_BTC-PERPETUAL_nautilus.csv", "deribit", "BTC-PERPETUAL", 3),
        (
            "okex_futures_BTC-USD_UM_XPERP_derivative_ticker_nautilus.csv",
            "okex-futures",
            "BTC-USD_UM_XPERP-310404",
            8,
        ),
        ("okex_swap_BTC-USDC-SWAP_derivative_ticker_nautilus.csv", "okex-swap", "BTC-USDC-SWAP", 6),
    ],
)
def test_real_tardis_files(name: str, venue: str, symbol: str, rows: int) -> None:
    """Every row of the three real Tardis files is a tick (the header is NOTHING), zero rejects;
    each has the row's exchange as venue, ``timestamp // 1000`` as ms and ``local_timestamp *
    1000`` as ns, checked against the CSV read with the standard library."""
    path = CAPTURES / name
    ticks, reasons, nothing = _parse_all(TardisDerivativeTicker().parse, read_frames(path))
    assert (len(ticks), nothing, reasons) == (rows, 1, Counter())
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    columns = header.split(",")
    for tick, line in zip(ticks, lines, strict=True):
        row = dict(zip(columns, line.split(","), strict=True))
        assert tick == MarkTick(
            venue,
            symbol,
            float(row["mark_price"]),
            row["mark_price"],
            int(row["timestamp"]) // 1000,
            int(row["local_timestamp"]) * 1000,
        )


def test_tardis_microseconds_spot_check() -> None:
    """The first Deribit row (timestamp 1786320665523000 µs, local 1786320665533324 µs, mark
    65220.13) is the tick at 1786320665523 ms received at 1786320665533324000 ns."""
    row = "deribit,BTC-PERPETUAL,1786320665523000,1786320665533324,,0.00000459,,705041730,65255.5,65203.53,65220.13"  # noqa: E501
    assert TardisDerivativeTicker().parse(row).ticks == (
        MarkTick(
            "deribit", "BTC-PERPETUAL", 65220.13, "65220.13", 1786320665523, 1786320665533324000
        ),
    )


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("deribit,BTC-PERPETUAL,1786320665523000,1786320665533324,,0.1,,7,1,2,", None),
        ("deribit,BTC-PERPETUAL,1786320665523000,1786320665533324,,0.1,,7,1,2", "unknown_shape"),
        ("deribit,BTC-PERPETUAL,1786320665523000,17863206655333x4,,0.1,,7,1,2,3", "invalid_field"),
        ("deribit,BTC-PERPETUAL,-1786320665523000,1786320665533324,,0.1,,7,1,2,3", "invalid_field"),
        ("deribit,,1786320665523000,1786320665533324,,0.1,,7,1,2,3", "invalid_field"),
        (
            "deribit,BTC-PERPETUAL,1786320665523000,1786320665533324,,0.1,,7,1,2,NaN",
            "invalid_price",
        ),
        ("exchange,symbol,timestamp,local_timestamp", "unknown_shape"),
    ],
)
def test_tardis_bad_rows(row: str, reason: str | None) -> None:
    """A row without mark_price is NOTHING; a wrong field count, bad timestamps, an empty
    symbol, a NaN mark or a header lacking the needed columns get their stable reason."""
    parsed = TardisDerivativeTicker().parse(row)
    assert [code for code, _ in parsed.rejects] == ([] if reason is None else [reason])
    assert parsed.ticks == ()


def test_tardis_header_sets_the_column_order() -> None:
    """A header in another order (and with CRLF endings, as bytes) is followed by the rows."""
    tardis = TardisDerivativeTicker()
    assert tardis.parse(b"mark_price,local_timestamp,timestamp,symbol,exchange\r\n") == NOTHING
    (tick,) = tardis.parse(b"101.5,2000,1999,X-PERP,deribit\r\n").ticks
    assert (tick.venue, tick.symbol, tick.mark_text) == ("deribit", "X-PERP", "101.5")
    assert (tick.exchange_ts_ms, tick.receive_ts_ns) == (1, 2_000_000)


# --- FrameParser -----------------------------------------------------------------------------


def test_auto_detection_reads_every_venue_in_one_stream() -> None:
    """Without a venue, one parser reads a stream that mixes every venue's frames and replies."""
    binance = _variants()[0]["frame"]
    receive, bybit = next(iter(read_frames(BYBIT)))
    frames = [
        orjson.dumps(binance),
        bybit,
        OKX_PUSH,
        OKX_SUBSCRIBED,
        "pong",
        '{"result":null,"id":1}',
        '{"success":true,"ret_msg":"pong","conn_id":"0970e817","op":"ping"}',
    ]
    parser = FrameParser()
    results = [parser.parse(frame, receive) for frame in frames]
    assert [tick.venue for r in results for tick in r.ticks] == [USDM, "bybit", "okx"]
    assert all(r.rejects == () for r in results)
    assert parser.bybit.last("BTCUSDT") is not None


@pytest.mark.parametrize("venue", ["binance-usdm", "binance-coinm", "bybit", "okx"])
def test_a_named_venue_refuses_the_others_frames(venue: str) -> None:
    """A parser for one venue rejects another venue's frames as ``unknown_shape`` (a feed wired
    to the wrong parser shows at once in the counts)."""
    parser = FrameParser(venue)
    others = {
        "binance": orjson.dumps(_variants()[0]["frame"]),
        "bybit": next(iter(read_frames(BYBIT)))[1],
        "okx": OKX_PUSH,
    }
    for name, frame in others.items():
        parsed = parser.parse(frame, None)
        if venue.startswith(name):
            assert parsed.ticks
        else:
            assert [reason for reason, _ in parsed.rejects] == ["unknown_shape"]


def test_pong_is_only_okx() -> None:
    """The plain text ``pong`` is NOTHING for OKX and for auto-detection, and not JSON to a
    Binance parser."""
    assert FrameParser().parse("pong", None) == NOTHING
    assert FrameParser("okx").parse("pong", None) == NOTHING
    assert FrameParser("binance-usdm").parse("pong", None).rejects[0][0] == "invalid_json"


def test_oversized_frames_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame over MAX_FRAME_BYTES is ``oversized`` without being decoded — also text whose
    UTF-8 form is over the limit though it has fewer characters — and one at the limit is read."""

    def refuse(_: object) -> object:
        raise AssertionError("decoded an oversized frame")

    parser = FrameParser()
    at_limit = b"[" + b" " * (MAX_FRAME_BYTES - 2) + b"]"
    assert parser.parse(at_limit, None) == NOTHING  # an empty Binance array
    monkeypatch.setattr(orjson, "loads", refuse)
    for frame in (at_limit + b" ", "[" + "é" * (MAX_FRAME_BYTES // 2) + "]"):
        assert parser.parse(frame, None) == Parsed.reject(
            "oversized", f"a frame of more than {MAX_FRAME_BYTES} bytes"
        )


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b'{"p": NaN}', "invalid_json"),
        (b'"\xff"', "invalid_json"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),
        (b"42", "unknown_shape"),
        (b"{}", "unknown_shape"),
        (b'{"hello": "world"}', "unknown_shape"),
    ],
)
def test_frames_no_venue_sends(frame: bytes, reason: str) -> None:
    """Not JSON, not UTF-8 or nested past the decoder's limit is ``invalid_json``; JSON that no
    venue sends is ``unknown_shape``."""
    assert FrameParser().parse(frame, None).rejects[0][0] == reason


@pytest.mark.parametrize(
    ("venue", "source"),
    [("kraken", "mark"), (None, "last"), ("bybit", "trade"), ("okx", "mid")],
)
def test_bad_configuration_is_refused(venue: str | None, source: str) -> None:
    """Unknown venues and price sources, and a price source other than the mark for a venue
    that has only marks, are configuration errors (raised at construction, never per frame)."""
    with pytest.raises(ConfigError):
        FrameParser(venue, price_source=source)
