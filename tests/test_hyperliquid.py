"""``feeds.hyperliquid`` (websocket frames) and ``feeds.hyperliquid_state`` (meta, states) on
recorded data; the venue's subscriptions, heartbeat and chatter in ``feeds.live``."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.frames import FrameParser
from feeds.hyperliquid import HyperliquidFrames
from feeds.hyperliquid_state import parse_meta, parse_state, snapshot
from feeds.live import FeedSpec, classify, subscription
from feeds.ticks import NOTHING
from monitor.errors import ConfigError, MalformedRecord

DATA = Path(__file__).parent / "data" / "hyperliquid"
TRADES = (DATA / "ws" / "jkorf_ws_trades_HYPE_2025-12-04.json").read_bytes()
FIRST_DEX = json.loads((DATA / "meta" / "docs_example_metaAndAssetCtxs_first_dex.json").read_text())
XYZ = json.loads((DATA / "meta" / "docs_example_metaAndAssetCtxs_hip3_dex_xyz.json").read_text())
MIDS = json.loads((DATA / "meta" / "sdk_cassette_allMids_2023-07-17.json").read_text())
RECEIVED = 1_764_835_620_123_456_789


def _frame(channel: str, data: Any) -> bytes:
    return orjson.dumps({"channel": channel, "data": data})


def _post_meta(meta: Any) -> bytes:
    payload = {"type": "meta", "data": meta}
    return _frame("post", {"id": 1, "response": {"type": "info", "payload": payload}})


def _all_dexs() -> bytes:
    """An ``allDexsAssetCtxs`` frame of the recorded contexts of the docs' two dexes."""
    return _frame("allDexsAssetCtxs", {"ctxs": [["", FIRST_DEX[1]], ["xyz", XYZ[1]]]})


def test_recorded_trades_frame_gives_its_trade_at_trade_time() -> None:
    """The recorded ``trades`` frame (HYPE 35.276 at 1764835613064, with ``users``) is one tick
    at its exchange time with ``price_source="trade"``, and a valid frame without a tick for
    marks; its receive time stays apart."""
    trade = HyperliquidFrames(price_source="trade").parse(TRADES, RECEIVED)
    assert trade.rejects == ()
    ((venue, symbol, mark, text, ts, received, *funding),) = trade.ticks
    assert funding == [None, None]
    assert (venue, symbol, mark, text, ts, received) == (
        "hyperliquid",
        "HYPE",
        35.276,
        "35.276",
        1764835613064,
        RECEIVED,
    )
    assert HyperliquidFrames().parse(TRADES, RECEIVED) == NOTHING


def test_active_asset_ctx_mark_at_receive_time_else_at_the_stream_clock() -> None:
    """``activeAssetCtx`` (the recorded BTC context of 2023-11 in the documented frame) gives
    its ``markPx`` stamped with the receive time in ms; read without a receive time it takes
    the latest exchange time the stream has shown (the trade's), never a time from nowhere."""
    ctx = json.loads(
        (DATA / "meta" / "hummingbot_metaAndAssetCtxs_BTC_ETH_2023-11.json").read_text()
    )
    frame = _frame("activeAssetCtx", {"coin": "BTC", "ctx": ctx[1][0]})
    parser = HyperliquidFrames()
    (tick,) = parser.parse(frame, RECEIVED).ticks
    assert (tick.symbol, tick.mark_text, tick.exchange_ts_ms) == ("BTC", "36733.0", 1764835620123)
    assert parser.parse(frame, None).ticks[0].exchange_ts_ms == 0
    assert parser.parse(TRADES, None).ticks == ()  # a trade still advances the stream clock
    assert parser.parse(frame, None).ticks[0].exchange_ts_ms == 1764835613064


def test_all_dexs_asset_ctxs_are_named_by_the_meta_replies_on_the_stream() -> None:
    """Before any ``meta`` the frame is valid but its contexts are unnamed (counted per dex,
    no tick, no reject); after the ``post`` replies with both dexes' meta (the docs' examples)
    every context is a tick named by its universe index, HIP-3 ones with their dex prefix."""
    parser = FrameParser("hyperliquid")
    assert parser.parse(_all_dexs(), RECEIVED) == NOTHING
    assert parser.hyperliquid.unnamed == {"": 3, "xyz": 3}
    for meta in (FIRST_DEX, XYZ):
        assert parser.parse(_post_meta(meta[0]), RECEIVED) == NOTHING
    parsed = parser.parse(_all_dexs(), RECEIVED)
    assert parsed.rejects == ()
    assert [(t.symbol, t.mark_text) for t in parsed.ticks] == [
        ("BTC", "14.3161"),
        ("ETH", "6.0436"),
        ("HPOS", "8.4542"),
        ("xyz:XYZ100", "25451.0"),
        ("xyz:TSLA", "465.13"),
        ("xyz:NVDA", "177.06"),
    ]
    assert {t.exchange_ts_ms for t in parsed.ticks} == {RECEIVED // 1_000_000}


def test_a_listing_past_the_known_universe_is_counted_not_guessed() -> None:
    """A context past the end of the learned universe (an asset listed since the last meta)
    gives no tick and is counted; one bad ``markPx`` is one reject, the good ones stay."""
    parser = HyperliquidFrames()
    parser.learn(parse_meta(XYZ))
    contexts = [*XYZ[1], dict(XYZ[1][0])]
    contexts[1] = {**contexts[1], "markPx": "-1"}
    parsed = parser.parse(_frame("allDexsAssetCtxs", {"ctxs": [["xyz", contexts]]}), RECEIVED)
    assert [t.symbol for t in parsed.ticks] == ["xyz:XYZ100", "xyz:NVDA"]
    assert [reason for reason, _ in parsed.rejects] == ["invalid_price"]
    assert parser.unnamed == {"xyz": 1}


def test_all_mids_only_with_price_source_mid_and_only_perps() -> None:
    """The recorded REST mids (2023-07) in the websocket ``allMids`` frame: every perp coin is
    a tick with ``price_source="mid"``; spot entries (``@142``, ``PURR/USDC``) are skipped;
    with marks the frame gives nothing."""
    frame = _frame("allMids", {"mids": {**MIDS, "@142": "80907.5", "PURR/USDC": "0.067131"}})
    parsed = HyperliquidFrames(price_source="mid").parse(frame, RECEIVED)
    assert parsed.rejects == ()
    assert {t.symbol: t.mark_text for t in parsed.ticks} == MIDS
    assert HyperliquidFrames().parse(frame, RECEIVED) == NOTHING


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"channel":"error","data":"Invalid subscription"}', "venue_error"),
        (_frame("post", {"id": 3, "response": {"type": "error", "payload": "429"}}), "venue_error"),
        (b'{"channel":"candle","data":{}}', "unknown_shape"),
        (b'{"method":"ping"}', "unknown_shape"),
        (b'{"channel":"trades","data":[{"coin":"BTC","px":"1"}]}', "invalid_field"),
        (
            b'{"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":{"markPx":"nan"}}}',
            "invalid_price",
        ),
        (b"not json", "invalid_json"),
    ],
)
def test_bad_frames_are_refused_with_a_stable_reason(raw: bytes, reason: str) -> None:
    """Venue errors, unknown channels, missing times and bad prices: no tick, one reason."""
    parsed = HyperliquidFrames().parse(raw, RECEIVED)
    assert parsed.ticks == ()
    assert [r for r, _ in parsed.rejects] == [reason]


def test_chatter_is_quiet_and_frames_route_to_hyperliquid_by_shape() -> None:
    """``subscriptionResponse``, ``pong``, books and spot contexts are valid frames without a
    tick; a parser without a venue recognises Hyperliquid frames by their ``channel``."""
    for raw in (
        b'{"channel":"pong"}',
        b'{"channel":"subscriptionResponse","data":{"method":"subscribe"}}',
        b'{"channel":"l2Book","data":{"coin":"SHIA","time":1730160007687,"levels":[[],[]]}}',
        b'{"channel":"activeSpotAssetCtx","data":{"coin":"@2","ctx":{"markPx":"0.1"}}}',
    ):
        assert HyperliquidFrames().parse(raw, RECEIVED) == NOTHING
    assert FrameParser(None, price_source="trade").parse(TRADES, RECEIVED).ticks[0].symbol == "HYPE"
    with pytest.raises(ConfigError):
        HyperliquidFrames(price_source="last")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "channel",
                        "data",
                        "coin",
                        "ctx",
                        "markPx",
                        "ctxs",
                        "mids",
                        "px",
                        "time",
                        "response",
                        "payload",
                        "type",
                    ]
                )
                | st.text(max_size=4),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    ),
    st.sampled_from(["mark", "mid", "trade"]),
)
def test_no_frame_makes_the_parser_raise(obj: Any, source: str) -> None:
    """Any JSON value, whatever its shape, gives ticks or reasons: never an exception, and every
    tick has a positive finite mark."""
    parsed = HyperliquidFrames(price_source=source).message(obj, RECEIVED)
    assert all(0 < tick.mark < 1e30 for tick in parsed.ticks)


# --- meta and states ---------------------------------------------------------------------


def test_state_numbers_as_strings_or_numbers_give_the_same_snapshot() -> None:
    """ccxt's recordings hold ``maxLeverage``, ``leverage.value`` and ``time`` as strings, the
    raw API as numbers: both read the same; the snapshot's wallets are the cross account value
    less the cross PnL and, isolated, ``rawUsd + szi·entryPx``."""
    path = DATA / "clearinghouse" / "ccxt_fetchPositions_isolated_short_HYPE_2025-10-30.json"
    text = json.loads(path.read_text())
    numbers = json.loads(path.read_text())
    numbers["time"] = int(numbers["time"])
    position = numbers["assetPositions"][0]["position"]
    position["maxLeverage"] = 10
    position["leverage"]["value"] = 10
    a, b = parse_state(text), parse_state(numbers)
    assert a == b
    record = snapshot("A", a.time_ms or 0, [a])
    assert record.balances == (("USDC", Decimal("57.6421")),)
    (p,) = record.positions
    assert (p.mode, p.qty, p.isolated_wallet) == ("isolated", Decimal("-4.0"), Decimal("19.171617"))


def test_hip3_state_is_its_own_clearinghouse() -> None:
    """The flx dex's state: the position keeps its prefixed coin, the dex is read from it, and
    the wallet is the flx margin asset's (apart from the main dex's USDC)."""
    path = (
        DATA / "clearinghouse" / "ccxt_fetchPositions_hip3_isolated_long_flx-CRCL_2025-11-28.json"
    )
    state = parse_state(json.loads(path.read_text()))
    assert (state.dex, state.asset) == ("flx", "flx")
    assert snapshot("A", 1, [state]).balances == (("flx", Decimal("3.429999")),)
    with pytest.raises(MalformedRecord, match="dex"):
        parse_state(json.loads(path.read_text()), "xyz")


def test_meta_marks_isolated_only_and_delisted_assets() -> None:
    """``onlyIsolated`` / ``marginMode`` and ``isDelisted`` are read; a 2023 meta without
    leverage gives names (for the asset contexts) but no contract."""
    meta = parse_meta(
        json.loads((DATA / "meta" / "docs_example_meta_with_marginTables.json").read_text())
    )
    assert meta.isolated_only == {"HPOS", "LOOM"}
    assert meta.delisted == {"LOOM"}
    old = parse_meta(json.loads((DATA / "meta" / "sdk_cassette_meta_2023-03-27.json").read_text()))
    assert (len(old.names), old.contracts) == (12, ())


# --- the venue in feeds.live -------------------------------------------------------------


def test_subscriptions_per_price_source_and_dexes() -> None:
    """All marks: one ``allDexsAssetCtxs``; listed coins: ``activeAssetCtx`` each, their HIP-3
    dexes added to the meta requests; mids: ``allMids`` per dex. The ``meta`` posts are also
    the refresh."""
    plan = subscription(FeedSpec(venue="hyperliquid", symbols="all"))
    assert [json.loads(m)["method"] for m in plan.messages] == ["subscribe", "post"]
    listed = FeedSpec(venue="hyperliquid", symbols="BTC,xyz:TSLA")
    plan = subscription(listed)
    assert listed.dexes == ("", "xyz")
    subs = [json.loads(m) for m in plan.messages]
    assert [s.get("subscription", {}).get("coin") for s in subs[:2]] == ["BTC", "xyz:TSLA"]
    assert [s["request"]["payload"] for s in subs[2:]] == [
        {"type": "meta"},
        {"type": "meta", "dex": "xyz"},
    ]
    assert plan.refresh == plan.messages[2:]
    mids = subscription(
        FeedSpec(venue="hyperliquid", symbols="all", price_source="mid", dexes="xyz")
    )
    assert [json.loads(m).get("subscription") for m in mids.messages[:2]] == [
        {"type": "allMids"},
        {"type": "allMids", "dex": "xyz"},
    ]
    with pytest.raises(ValueError, match="trade"):
        FeedSpec(venue="hyperliquid", symbols="all", price_source="trade")


def test_chatter_classification() -> None:
    """``pong`` and ``subscriptionResponse`` are chatter, ``error`` is a logged venue error,
    a data frame mentioning ``pong`` in its data is data."""
    assert classify("hyperliquid", '{"channel":"pong"}').kind == "pong"  # type: ignore[union-attr]
    ack = classify("hyperliquid", '{"channel":"subscriptionResponse","data":{}}')
    assert ack is not None
    assert ack.kind == "ack"
    error = classify("hyperliquid", '{"channel":"error","data":"Invalid subscription"}')
    assert error is not None
    assert (error.kind, error.detail) == ("error", "Invalid subscription")
    assert classify("hyperliquid", '{"channel":"allMids","data":{"mids":{"pong":"1"}}}') is None
