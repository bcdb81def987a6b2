"""Real inputs of docs/collateral.md: Binance's asset index, the multi-assets flag, multi-wallet
``ACCOUNT_UPDATE``, and the funding fields of mark streams, as the parsers in ``feeds/`` read them.

Frames are real: Binance's documented examples (``tests/data/binance_docs``: the asset index
stream and REST response, both ``ACCOUNT_CONFIG_UPDATE`` payloads, the USDⓈ-M
``ACCOUNT_UPDATE`` with two wallets) and the recorded Binance and Bybit captures of
``tests/data/captures`` (see ``tests/data/PROVENANCE.md``). Expected values are read from the
raw frames independently of the parsers (with ``json``), or quoted from the documentation.
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from feeds.accounts import parse_account_config, parse_account_update, parse_user_data
from feeds.binance import BinanceFrames
from feeds.bybit import BybitTickers
from feeds.captures import detect_format, read_frames
from feeds.collateral import (
    HaircutTable,
    asset_index_response,
    binance_haircuts,
    load_haircuts,
)
from feeds.frames import FrameParser
from feeds.normalized import record_json
from feeds.ticks import NOTHING
from monitor import Engine
from monitor.contracts import Tier, make_contract
from monitor.errors import ConfigError, MalformedRecord
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    BalanceRecord,
    CollateralRecord,
    ContractRecord,
    PositionRecord,
    TickRecord,
)
from tests.conftest import DATA
from tests.oracle import Oracle

D = Decimal
DOCS = DATA / "binance_docs"
BYBIT = DATA / "captures" / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"


def _doc(name: str) -> Any:
    return json.loads((DOCS / name).read_text(encoding="utf-8"))


def _config_examples() -> list[dict[str, Any]]:
    text = (DOCS / "account_config_update_examples.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


# ---------------------------------------------------------------------------------------------
# The haircut table


def test_the_default_table_is_binances_published_collateral_value_ratios() -> None:
    """BTC, ETH, BNB 95 %; XRP, ADA, DOT, SOL 90 %; USDT, USDC 99.99 % (haircut = 1 − ratio);
    nothing else is collateral."""
    table = binance_haircuts()
    assert dict(table.haircuts) == {
        **dict.fromkeys(("BTC", "ETH", "BNB"), D("0.05")),
        **dict.fromkeys(("XRP", "ADA", "DOT", "SOL"), D("0.10")),
        **dict.fromkeys(("USDT", "USDC"), D("0.0001")),
    }
    assert table.haircut("BFUSD") is None
    assert load_haircuts() is table


def test_a_table_file_overrides_the_default(tmp_path: Path) -> None:
    """A TOML file of ratios (strings or numbers) replaces the table; a top-level ``default``
    values every asset it does not list."""
    path = tmp_path / "ratios.toml"
    path.write_text('default = "0.5"\n[ratios]\nBTC = 0.9\nUSDT = "1"\n', encoding="utf-8")
    table = load_haircuts(path)
    assert dict(table.haircuts) == {"BTC": D("0.1"), "USDT": D("0")}
    assert (table.haircut("BTC"), table.haircut("ADA")) == (D("0.1"), D("0.5"))
    assert table.source == str(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[ratios]\nBTC = 0\n", "(0, 1]"),
        ("[ratios]\nBTC = 1.5\n", "(0, 1]"),
        ('[ratios]\nBTC = "x"\n', "not a decimal"),
        ("[ratios]\n", "at least one asset"),
        ('haircuts = "x"\n[ratios]\nBTC = 0.9\n', "unknown keys"),
        ("[ratios\n", "ratios.toml"),
    ],
)
def test_a_bad_table_is_a_config_error_naming_the_file(
    tmp_path: Path, text: str, says: str
) -> None:
    """A ratio outside (0, 1], a word, an empty table, an unknown key or bad TOML stops with
    one message naming the file (and what is wrong)."""
    path = tmp_path / "ratios.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"ratios\.toml") as caught:
        load_haircuts(path)
    assert says in str(caught.value)


def test_a_missing_table_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable file is a ConfigError too."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_haircuts(tmp_path / "nope.toml")


# ---------------------------------------------------------------------------------------------
# Binance's asset index → collateral records


def test_the_documented_asset_index_stream_gives_collateral_records() -> None:
    """Binance's documented ``!assetIndex@arr`` frame (bare and in the combined-stream wrapper):
    ADAUSD at index 0.27462452 is ADA with the table's 10 % haircut, USDTUSD at 0.99987691 is
    USDT at 0.01 %, both at the event time E. The buffers and rates are not read."""
    events = _doc("asset_index_stream_example.json")
    want = tuple(
        CollateralRecord(e["E"], e["s"].removesuffix("USD"), D(e["i"]), haircut)
        for e, haircut in zip(events, (D("0.10"), D("0.0001")), strict=True)
    )
    assert want[0] == CollateralRecord(1686749230000, "ADA", D("0.27462452"), D("0.10"))
    for frame in (events, {"stream": "!assetIndex@arr", "data": events}):
        for parser in (BinanceFrames(), FrameParser(), FrameParser("binance-usdm")):
            parsed = parser.parse(orjson.dumps(frame), 5)
            assert (parsed.ticks, parsed.rejects, parsed.records) == ((), (), want)


def test_asset_index_is_read_whatever_the_price_source() -> None:
    """Collateral prices are not marks: the trade and mid price sources read them too."""
    events = _doc("asset_index_stream_example.json")
    for source in ("trade", "mid"):
        assert (
            len(BinanceFrames(price_source=source).parse(orjson.dumps(events), None).records) == 2
        )


def test_one_asset_index_event_is_one_record() -> None:
    """The per-asset stream ``<asset>@assetIndex`` sends one event at a time."""
    event = _doc("asset_index_stream_example.json")[1]
    parsed = BinanceFrames().parse(
        orjson.dumps({"stream": "usdtusd@assetIndex", "data": event}), None
    )
    assert parsed.records == (
        CollateralRecord(1686749230000, "USDT", D("0.99987691"), D("0.0001")),
    )


def test_assets_the_table_does_not_list_give_no_record() -> None:
    """With a table of USDT only, ADA's index gives nothing (it is not collateral) and no
    reject; with a default haircut it is collateral at that haircut."""
    events = _doc("asset_index_stream_example.json")
    only_usdt = HaircutTable({"USDT": D("0.001")})
    parsed = BinanceFrames(haircuts=only_usdt).parse(orjson.dumps(events), None)
    assert [(r.asset, r.haircut) for r in parsed.records] == [("USDT", D("0.001"))]
    assert parsed.rejects == ()
    everything = HaircutTable({}, default=D("0.2"))
    parsed = BinanceFrames(haircuts=everything).parse(orjson.dumps(events), None)
    assert [(r.asset, r.haircut) for r in parsed.records] == [("ADA", D("0.2")), ("USDT", D("0.2"))]


def test_bad_asset_index_items_are_refused_and_the_good_ones_kept() -> None:
    """In one array: a non-positive index (invalid_price), a symbol that is not <asset>USD, a
    missing event time (invalid_field) are counted once per reason; the good item gives its
    record."""
    good = _doc("asset_index_stream_example.json")[1]
    items = [
        good,
        {**good, "i": "0"},
        {**good, "s": "USD"},
        {**good, "s": "BTCUSDT"},
        {**good, "E": None},
    ]
    parsed = BinanceFrames().parse(orjson.dumps(items), None)
    assert [r.asset for r in parsed.records] == ["USDT"]
    assert dict(parsed.rejects).keys() == {"invalid_price", "invalid_field"}
    assert dict(parsed.rejects)["invalid_field"].endswith("(and 2 more items)")


def test_the_documented_rest_asset_index_gives_a_record_at_its_time() -> None:
    """``GET /fapi/v1/assetIndex?symbol=ADAUSD`` (Binance's example): ADA at 1.92957370, haircut
    10 %, at ``time`` 1635740268004; the list form (no symbol asked) gives one per item."""
    body = _doc("asset_index_rest_example.json")
    want = CollateralRecord(1635740268004, "ADA", D("1.92957370"), D("0.10"))
    assert asset_index_response(json.dumps(body)).records == (want,)
    assert asset_index_response(json.dumps([body, body])).records == (want, want)
    assert asset_index_response(b'{"code":-1121,"msg":"Invalid symbol."}').rejects[0][0] == (
        "invalid_field"
    )
    assert asset_index_response(b"7").rejects[0][0] == "unknown_shape"
    assert asset_index_response(b"[").rejects[0][0] == "invalid_json"


def test_an_asset_index_record_reads_back_as_the_normalized_collateral_record() -> None:
    """What the parser makes is an ordinary ``collateral`` record: written as normalized JSON
    it is the line the oracle reads, with the same price and haircut."""
    (record,) = asset_index_response(json.dumps(_doc("asset_index_rest_example.json"))).records
    oracle = Oracle()
    assert oracle.apply_line(record_json(record).decode()).status == "applied"
    assert oracle.collateral == {"ADA": (D("1.92957370"), D("0.10"))}


# ---------------------------------------------------------------------------------------------
# User data: ACCOUNT_CONFIG_UPDATE and multi-wallet ACCOUNT_UPDATE


def test_the_documented_account_config_updates() -> None:
    """The multi-assets payload (``ai.j`` true) is ``asset_mode`` true at E; the leverage
    payload (``ac``) is nothing; ``j`` false switches back; the combined-stream wrapper is read."""
    leverage, multi = _config_examples()
    assert parse_account_config(leverage, "acc") is None
    assert parse_account_config(multi, "acc") == AssetModeRecord(1611646737479, "acc", True)
    off = {**multi, "ai": {"j": False}}
    assert parse_user_data({"stream": "key", "data": off}, "acc") == AssetModeRecord(
        1611646737479, "acc", False
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"e": "ACCOUNT_CONFIG_UPDATE", "ai": {"j": True}}, "missing_field"),
        ({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1, "ai": {"j": "true"}}, "invalid_field"),
        ({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1, "ai": {}}, "missing_field"),
        ({"e": "ACCOUNT_CONFIG_UPDATE", "E": -1, "ai": {"j": True}}, "invalid_field"),
        ({"e": "ORDER_TRADE_UPDATE", "E": 1}, "invalid_field"),
    ],
)
def test_bad_user_data_is_refused_with_a_reason(message: dict[str, Any], reason: str) -> None:
    """No event time, a flag that is not a JSON boolean, an empty ``ai``, a negative time, an
    event that is neither of the two: MalformedRecord with a stable reason."""
    with pytest.raises(MalformedRecord) as caught:
        parse_user_data(message, "acc")
    assert caught.value.reason == reason


def test_the_documented_multi_wallet_account_update_is_one_record() -> None:
    """Binance's USDⓈ-M ``ACCOUNT_UPDATE`` example carries two wallets (USDT, BUSD) and three
    BTCUSDT slots: one merge record at E, every wallet its cross wallet ``cw``, every position
    as sent (the closed BOTH slot as qty 0)."""
    record = parse_account_update(_doc("account_update_usdm_example.json"), "acc")
    assert (record.ts, record.account, record.replace) == (1564745798939, "acc", False)
    assert record.balances == (("USDT", D("100.12345678")), ("BUSD", D("0.00000000")))
    assert [(p.side, p.mode, p.qty, p.entry, p.isolated_wallet) for p in record.positions] == [
        ("both", "isolated", D("0"), D("0.00000"), D("0.00000000")),
        ("long", "isolated", D("20"), D("6563.66500"), D("13200.70726908")),
        ("short", "isolated", D("-10"), D("6563.86000"), D("6570.42511771")),
    ]


BTCUSDT = make_contract("BTCUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.004"), D(0))])
ETHUSDT = make_contract("ETHUSDT", "linear", "USDT", D(1), [Tier(D(0), D(10**9), D("0.004"), D(0))])


def test_the_multi_wallet_account_update_applies_at_once() -> None:
    """An account holds a cross long of 1 ETHUSDT at 2,500 (MM 10) on a USDT wallet of 10.2
    (ratio 0.98: warned). The documented update sets both wallets (USDT 100.12345678, BUSD 0)
    and the three BTCUSDT slots in one step: one evaluation per touched entity at E — the
    cross entity recovers (10 / 100.12 < 0.65), the two new isolated legs are healthy."""
    engine = Engine()
    for contract, mark in ((BTCUSDT, "6563.7"), (ETHUSDT, "2500")):
        engine.apply(ContractRecord(contract))
        engine.apply(TickRecord(1, contract.symbol, float(mark), mark))
    engine.apply(BalanceRecord(2, "acc", "USDT", D("10.2")))
    (warning,) = engine.apply(
        PositionRecord(2, "acc", "ETHUSDT", "both", "cross", D(1), D(2500), D(10), None)
    )
    assert warning.kind == "margin_warning"
    events = engine.apply(parse_account_update(_doc("account_update_usdm_example.json"), "acc"))
    assert [(e.kind, e.ts, e.entity.scope, e.entity.asset) for e in events] == [
        ("margin_recovered", 1564745798939, "cross", "USDT")
    ]
    assert (engine.balance("acc", "USDT"), engine.balance("acc", "BUSD")) == (D("100.12345678"), 0)
    assert engine.position_count == 3


def test_a_pool_refuses_the_documented_update_whole_and_a_single_asset_account_takes_it() -> None:
    """Through the oracle (the update written as the normalized ``account_update`` it is): a
    multi-assets account refuses it whole, its isolated positions being what a pool cannot
    hold, and keeps its wallets; in single-asset mode it is applied, both wallets set."""
    record = parse_account_update(_doc("account_update_usdm_example.json"), "acc")
    contract = record_json(ContractRecord(BTCUSDT)).decode()
    line = record_json(record).decode()
    pool = Oracle()
    for text in (contract, '{"type":"asset_mode","ts":1,"account":"acc","multi_assets":true}'):
        pool.apply_line(text)
    assert pool.apply_line(line).status == "rejected"
    assert pool.wallets == {}
    single = Oracle()
    single.apply_line(contract)
    assert single.apply_line(line).status == "applied"
    assert single.wallets == {("acc", "USDT"): D("100.12345678"), ("acc", "BUSD"): 0}


def test_user_data_frames_need_their_account_named() -> None:
    """In a Binance stream, ``ACCOUNT_UPDATE`` and the multi-assets ``ACCOUNT_CONFIG_UPDATE`` are
    records of the named account; without one they are refused as ``unknown_account``. A
    leverage change or an order update carries nothing either way."""
    leverage, multi = _config_examples()
    update = _doc("account_update_usdm_example.json")
    named = FrameParser(account="acc")
    assert named.parse(orjson.dumps(multi), None).records == (
        AssetModeRecord(1611646737479, "acc", True),
    )
    (record,) = named.parse(orjson.dumps({"stream": "key", "data": update}), None).records
    assert isinstance(record, AccountUpdateRecord)
    assert record == parse_account_update(update, "acc")
    for frame in (leverage, {"e": "ORDER_TRADE_UPDATE", "E": 1, "o": {}}):
        assert named.parse(orjson.dumps(frame), None) == NOTHING
        assert FrameParser().parse(orjson.dumps(frame), None) == NOTHING
    for frame in (multi, update):
        assert [code for code, _ in FrameParser().parse(orjson.dumps(frame), None).rejects] == [
            "unknown_account"
        ]


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_captured_account_update_reads_json_numbers_from_their_text(wrapped: bool) -> None:
    """A user-data ``ACCOUNT_UPDATE`` frame whose wallet, quantity and price are JSON numbers
    of 20 significant digits (Binance sends strings; a relay may not): the record holds the
    decimals written, not the doubles nearest to them (which ``float`` would give)."""
    text = (
        '{"e":"ACCOUNT_UPDATE","E":7,"a":{"m":"ORDER","B":[{"a":"USDT","wb":1,'
        '"cw":1234567890.1234567891}],"P":[{"s":"BTCUSDT","pa":0.12345678901234567891,'
        '"ep":61800.123456789012345,"mt":"cross","iw":0,"ps":"BOTH"}]}}'
    )
    if wrapped:
        text = '{"stream":"key","data":' + text + "}"
    (record,) = FrameParser(account="acc").parse(text, None).records
    assert isinstance(record, AccountUpdateRecord)
    assert record.balances == (("USDT", D("1234567890.1234567891")),)
    (position,) = record.positions
    assert position.qty == D("0.12345678901234567891")
    assert position.entry == D("61800.123456789012345")
    assert float(position.qty) == 0.12345678901234568  # what a double would have kept


# ---------------------------------------------------------------------------------------------
# Funding fields of mark streams


def test_binance_funding_fields_are_checked() -> None:
    """``r``/``T`` become the tick's funding (the text as sent, a negative rate too); ``T`` 0 or
    an empty ``r`` is no funding; a rate that is not a decimal, or a ``T`` that is not a
    non-negative integer, refuses the event as ``invalid_field``."""
    base = {"e": "markPriceUpdate", "E": 5, "s": "BTCUSDT", "p": "60000"}
    cases: list[tuple[dict[str, Any], tuple[str | None, int | None] | str]] = [
        ({"r": "-0.00012", "T": 9}, ("-0.00012", 9)),
        ({"r": 0.0001, "T": 9}, ("0.0001", 9)),
        ({"r": "0.00000000", "T": 0}, (None, None)),
        ({"r": "", "T": 9}, (None, None)),
        ({"r": "abc", "T": 9}, "invalid_field"),
        ({"r": "0.1", "T": "9"}, "invalid_field"),
        ({"r": "0.1", "T": -9}, "invalid_field"),
    ]
    for extra, want in cases:
        parsed = BinanceFrames().parse(orjson.dumps({**base, **extra}), None)
        if isinstance(want, str):
            assert [code for code, _ in parsed.rejects] == [want], extra
        else:
            (tick,) = parsed.ticks
            assert (tick.funding_rate, tick.funding_ts) == want, extra


def test_binance_trades_and_book_mids_carry_no_funding() -> None:
    """Only mark price events report funding."""
    frame = {"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "p": "2", "X": "MARKET", "r": "1"}
    (tick,) = BinanceFrames(price_source="trade").parse(orjson.dumps(frame), None).ticks
    assert (tick.funding_rate, tick.funding_ts) == (None, None)


def _bybit_messages() -> list[dict[str, Any]]:
    with gzip.open(BYBIT, "rt", encoding="utf-8") as lines:
        return [json.loads(json.loads(line)["raw"]) for line in lines]


def test_bybit_ticks_carry_the_latest_funding_of_their_symbol() -> None:
    """Over the real capture, every tick carries the last ``fundingRate`` and
    ``nextFundingTime`` its symbol's messages gave (the snapshots give both, two deltas a new
    rate alone, without a mark): computed here from the raw messages, independently."""
    rate: dict[str, str] = {}
    due: dict[str, int] = {}
    want = []
    for message in _bybit_messages():
        data = message["data"]
        symbol = data["symbol"]
        if "fundingRate" in data:
            rate[symbol] = data["fundingRate"]
        if "nextFundingTime" in data:
            due[symbol] = int(data["nextFundingTime"])
        if "markPrice" in data:
            want.append((symbol, rate.get(symbol), due.get(symbol)))
    tickers = BybitTickers()
    got = []
    for receive, raw in read_frames(BYBIT):
        got.extend(
            (t.symbol, t.funding_rate, t.funding_ts) for t in tickers.parse(raw, receive).ticks
        )
    assert got == want
    assert {(s, r) for s, r, _ in got} >= {("ETHUSDT", "0.00004709"), ("SOLUSDT", "0.00000952")}
    assert all(r is not None and d == 1786320000000 for _, r, d in got)
    assert tickers.funding("ETHUSDT") == ("0.00004709", 1786320000000)


def _bybit(data: dict[str, Any], kind: str = "delta") -> bytes:
    return orjson.dumps({"topic": f"tickers.{data['symbol']}", "type": kind, "ts": 7, "data": data})


def test_bybit_funding_state_rules() -> None:
    """A tick before both funding fields are known carries none; an empty value changes
    nothing; ``nextFundingTime`` "0" clears the pair; a malformed value refuses the frame and
    leaves the state as it was."""
    tickers = BybitTickers()
    (tick,) = tickers.parse(
        _bybit({"symbol": "X", "markPrice": "1", "fundingRate": "0.001"}), None
    ).ticks
    assert (tick.funding_rate, tick.funding_ts) == (None, None)
    assert tickers.parse(_bybit({"symbol": "X", "nextFundingTime": "1000"}), None) == NOTHING
    (tick,) = tickers.parse(
        _bybit({"symbol": "X", "markPrice": "2", "fundingRate": ""}), None
    ).ticks
    assert (tick.funding_rate, tick.funding_ts) == ("0.001", 1000)
    bad = tickers.parse(_bybit({"symbol": "X", "markPrice": "3", "fundingRate": "1_0"}), None)
    assert [code for code, _ in bad.rejects] == ["invalid_field"]
    bad = tickers.parse(_bybit({"symbol": "X", "fundingRate": "0.5", "nextFundingTime": "x"}), None)
    assert [code for code, _ in bad.rejects] == ["invalid_field"]
    assert tickers.funding("X") == ("0.001", 1000)
    last = tickers.last("X")
    assert last is not None
    assert last.mark_text == "2"
    tickers.parse(_bybit({"symbol": "X", "nextFundingTime": "0"}), None)
    assert tickers.funding("X") == (None, None)


# ---------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("kind", ["asset_mode", "collateral", "account_update", "account_snapshot"])
def test_normalized_files_starting_with_the_new_records_are_normalized(
    tmp_path: Path, kind: str
) -> None:
    """A replay file whose first line is one of the records of v1.1 is recognised as
    normalized records, not as a raw capture."""
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"type": kind, "ts": 1}) + "\n", encoding="utf-8")
    assert detect_format(path) == "normalized"
