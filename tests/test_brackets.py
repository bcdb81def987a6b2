"""Tier tables from real sources: Binance ``leverageBracket`` (fapi and dapi) and ccxt tiers.

The real tables are the project's copies in ``tests/data`` (see PROVENANCE.md). The COIN-M
documents below are small hand-written ones modelled on the response example of Binance's
``GET /dapi/v2/leverageBracket`` documentation (``symbol`` BTCUSD_PERP, ``qtyCap`` and the
documented misspelling ``qtylFloor``); their tier numbers are illustrative.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feeds.brackets import BracketFileError, BracketLoad, load_brackets, parse_brackets
from monitor.contracts import Contract, Tier
from tests import cli_support
from tests.conftest import DATA, ROOT

FAPI_2022 = DATA / "binance_leverage_brackets_major_symbols_2022-02.json"
FAPI_2024 = DATA / "binance_leverage_brackets_major_symbols_2024-10.json"
CCXT_2024 = DATA / "binance_leverage_tiers_ccxt_shape_2024-10.json.gz"
_SCRIPT = Path(sys.executable).with_name("liqmon")
LIQMON = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "liqmon.cli"]


def _tier(floor: str, cap: str, mmr: str, cum: str) -> Tier:
    return Tier(Decimal(floor), Decimal(cap), Decimal(mmr), Decimal(cum))


def _by_symbol(load: BracketLoad) -> dict[str, Contract]:
    return {c.symbol: c for c in load.contracts}


def _ccxt_document() -> Any:
    with gzip.open(CCXT_2024, "rb") as stream:
        return json.load(stream)


def _dapi_bracket(
    n: int, floor: float, cap: float, mmr: float, cum: float, floor_key: str
) -> dict[str, Any]:
    return {
        "bracket": n,
        "initialLeverage": [125, 100, 50, 20][n - 1],
        "qtyCap": cap,
        floor_key: floor,
        "maintMarginRatio": mmr,
        "cum": cum,
    }


def _dapi_document(floor_key: str = "qtyFloor") -> list[dict[str, Any]]:
    """A COIN-M ``/dapi/v2/leverageBracket`` response for BTCUSD_PERP (quantities in BTC)."""
    rows = [
        (0, 5, 0.004, 0.0),
        (5, 10, 0.005, 0.005),
        (10, 20, 0.01, 0.055),
        (20, 50, 0.025, 0.355),
    ]
    return [
        {
            "symbol": "BTCUSD_PERP",
            "notionalCoef": 1.50,
            "brackets": [
                _dapi_bracket(n, *row, floor_key=floor_key) for n, row in enumerate(rows, start=1)
            ],
        }
    ]


DAPI_TIERS = (
    _tier("0", "5", "0.004", "0.0"),
    _tier("5", "10", "0.005", "0.005"),
    _tier("10", "20", "0.01", "0.055"),
    _tier("20", "50", "0.025", "0.355"),
)


# -- the real tables ----------------------------------------------------------------------------


def test_binance_2022_table_loads() -> None:
    """The Feb 2022 fapi response gives five linear USDT contracts, without complaint."""
    load = load_brackets(FAPI_2022)
    assert [c.symbol for c in load.contracts] == [
        "BTCUSDT",
        "ETHUSDT",
        "XRPUSDT",
        "SOLUSDT",
        "BNBUSDT",
    ]
    assert load.errors == []
    assert load.warnings == []
    btc = _by_symbol(load)["BTCUSDT"]
    assert (btc.kind, btc.margin_asset, btc.contract_size) == ("linear", "USDT", Decimal(1))
    assert len(btc.tiers) == 10
    assert btc.tiers[0] == _tier("0", "50000", "0.004", "0")
    assert btc.tiers[3] == _tier("1000000", "7500000", "0.025", "16300")
    assert btc.tiers[-1] == _tier("600000000", "1000000000", "0.5", "199703800")


def test_binance_2024_table_loads() -> None:
    """The Oct 2024 fapi response gives eleven contracts, USDC ones margined in USDC."""
    load = load_brackets(FAPI_2024)
    contracts = _by_symbol(load)
    assert len(load.contracts) == 11
    assert load.errors == []
    assert load.warnings == []
    btc = contracts["BTCUSDT"]
    assert len(btc.tiers) == 12
    assert btc.tiers[1] == _tier("50000", "600000", "0.005", "50")
    assert btc.tiers[2] == _tier("600000", "3000000", "0.0065", "950")
    assert contracts["BTCUSDC"].margin_asset == "USDC"
    assert contracts["1000PEPEUSDT"].margin_asset == "USDT"
    assert {c.kind for c in load.contracts} == {"linear"}


def test_ccxt_table_parses() -> None:
    """The ccxt fetch_leverage_tiers result (349 Binance markets, 2,805 tiers) all loads."""
    load = parse_brackets(_ccxt_document())
    assert len(load.contracts) == 349
    assert load.errors == []
    assert sum(len(c.tiers) for c in load.contracts) == 2805
    assert Counter(c.margin_asset for c in load.contracts) == {"USDT": 322, "USDC": 26, "BTC": 1}


def test_ccxt_symbols_map_to_binance_ids() -> None:
    """``BTC/USDT:USDT`` → BTCUSDT, dated ``BTC/USDT:USDT-241227`` → BTCUSDT_241227, and
    ``ETH/BTC:BTC`` (settled in its quote) → a linear ETHBTC margined in BTC."""
    contracts = _by_symbol(parse_brackets(_ccxt_document()))
    btc = contracts["BTCUSDT"]
    assert (btc.kind, btc.margin_asset) == ("linear", "USDT")
    assert btc.tiers[2] == _tier("600000", "3000000", "0.0065", "950")
    dated = contracts["BTCUSDT_241227"]
    assert (dated.kind, dated.margin_asset, dated.contract_size) == ("linear", "USDT", Decimal(1))
    assert dated.tiers[1] == _tier("50000", "375000", "0.02", "500")
    ethbtc = contracts["ETHBTC"]
    assert (ethbtc.kind, ethbtc.margin_asset, ethbtc.contract_size) == ("linear", "BTC", Decimal(1))
    assert ethbtc.tiers[1] == _tier("5", "10", "0.006", "0.005")
    assert "BTC/USDT:USDT" not in contracts


def test_ccxt_and_fapi_snapshots_of_the_same_month_agree() -> None:
    """Both Oct 2024 sources give identical contracts for the eleven symbols they share."""
    fapi = _by_symbol(load_brackets(FAPI_2024))
    ccxt = _by_symbol(parse_brackets(_ccxt_document()))
    for symbol, contract in fapi.items():
        assert ccxt[symbol] == contract, symbol


def test_load_brackets_reads_the_gzipped_ccxt_table() -> None:
    """load_brackets accepts the gzipped file as it is stored, like replay input."""
    load = load_brackets(CCXT_2024)
    assert len(load.contracts) == 349


# -- COIN-M (dapi) ------------------------------------------------------------------------------


@pytest.mark.parametrize("floor_key", ["qtyFloor", "qtylFloor"])
def test_dapi_document_gives_an_inverse_btc_contract(floor_key: str) -> None:
    """A COIN-M response (with the correct key or Binance's documented ``qtylFloor`` typo) is an
    inverse contract margined in BTC, 100 USD per contract, tiers in BTC as published."""
    load = parse_brackets(_dapi_document(floor_key))
    assert load.errors == []
    assert load.warnings == []
    (contract,) = load.contracts
    assert contract.symbol == "BTCUSD_PERP"
    assert contract.kind == "inverse"
    assert contract.margin_asset == "BTC"
    assert contract.contract_size == Decimal(100)
    assert contract.tiers == DAPI_TIERS


def test_dapi_pair_form_and_missing_cum() -> None:
    """The per-pair form (``pair`` ETHUSD, no ``cum``) is ETHUSD_PERP, 10 USD contracts, with cum
    derived by continuity: cum₂ = 0 + 100 · (0.01 − 0.005) = 0.5."""
    document = [
        {
            "pair": "ETHUSD",
            "brackets": [
                {"bracket": 1, "qtyCap": 100, "qtyFloor": 0, "maintMarginRatio": 0.005},
                {"bracket": 2, "qtyCap": 1000, "qtyFloor": 100, "maintMarginRatio": 0.01},
            ],
        }
    ]
    (contract,) = parse_brackets(document).contracts
    assert (contract.symbol, contract.kind, contract.margin_asset) == (
        "ETHUSD_PERP",
        "inverse",
        "ETH",
    )
    assert contract.contract_size == Decimal(10)
    assert contract.tiers[1].cum == Decimal("0.5")
    assert contract.warnings == ()


def test_dapi_delivery_symbol_is_kept() -> None:
    """A dated COIN-M symbol keeps its delivery suffix."""
    document = [{**_dapi_document()[0], "symbol": "BTCUSD_241227"}]
    (contract,) = parse_brackets(document).contracts
    assert (contract.symbol, contract.kind, contract.contract_size) == (
        "BTCUSD_241227",
        "inverse",
        Decimal(100),
    )


def test_ccxt_inverse_markets_map_to_coin_m_ids() -> None:
    """ccxt ``BTC/USD:BTC`` is BTCUSD_PERP and ``ETH/USD:ETH-241227`` is ETHUSD_241227, both
    inverse and margined in their coin."""
    tier = {"minNotional": 0, "maxNotional": 5, "maintenanceMarginRate": 0.004, "info": {}}
    load = parse_brackets({"BTC/USD:BTC": [tier], "ETH/USD:ETH-241227": [tier]})
    contracts = _by_symbol(load)
    assert set(contracts) == {"BTCUSD_PERP", "ETHUSD_241227"}
    assert (contracts["BTCUSD_PERP"].margin_asset, contracts["BTCUSD_PERP"].contract_size) == (
        "BTC",
        Decimal(100),
    )
    assert contracts["ETHUSD_241227"].kind == "inverse"
    assert contracts["ETHUSD_241227"].contract_size == Decimal(10)


def test_single_fapi_object_is_accepted() -> None:
    """The response to a request with ``symbol`` is one object rather than a list."""
    document = json.loads(FAPI_2024.read_text())[0]
    (contract,) = parse_brackets(document).contracts
    assert contract.symbol == "BTCUSDT"


# -- what cannot be used ------------------------------------------------------------------------


def _fapi(symbol: str, rows: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "brackets": [
            {"bracket": n, "notionalFloor": f, "notionalCap": c, "maintMarginRatio": m, "cum": k}
            for n, (f, c, m, k) in enumerate(rows, start=1)
        ],
    }


def _mixed_document() -> list[dict[str, Any]]:
    """BTCUSDT and XRPUSDT are fine; ETHUSDT has a gap between its tiers 1 and 2."""
    return [
        _fapi("BTCUSDT", [(0, 50000, 0.004, 0), (50000, 600000, 0.005, 50)]),
        _fapi("ETHUSDT", [(0, 10000, 0.005, 0), (20000, 100000, 0.0065, 15)]),
        _fapi("XRPUSDT", [(0, 10000, 0.0065, 0), (10000, 50000, 0.01, 35)]),
    ]


def test_inconsistent_table_is_reported_and_skipped() -> None:
    """A table with a gap is named in ``errors`` and skipped; the others load."""
    load = parse_brackets(_mixed_document())
    assert [c.symbol for c in load.contracts] == ["BTCUSDT", "XRPUSDT"]
    (error,) = load.errors
    assert error.startswith("ETHUSDT: inconsistent tier table")
    assert "gap between tier 1 (cap 10000) and tier 2 (floor 20000)" in error


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([(0, 10000, 0.005, 0), (5000, 100000, 0.0065, 15)], "overlaps tier 2"),
        ([(100, 10000, 0.005, 0)], "the first tier starts at 100"),
        ([(0, 10000, 1.5, 0)], "outside [0, 1)"),
        ([(0, 10000, "x", 0)], "maintMarginRatio"),
        ([(0, 10000, None, 0)], "maintMarginRatio"),
    ],
)
def test_unusable_table_errors_are_specific(rows: list[Any], words: str) -> None:
    """Overlaps, a first floor above 0, impossible or missing rates: one precise error each."""
    load = parse_brackets([_fapi("SOLUSDT", rows), _fapi("BNBUSDT", [(0, 10, 0.01, 0)])])
    assert [c.symbol for c in load.contracts] == ["BNBUSDT"]
    (error,) = load.errors
    assert error.startswith("SOLUSDT")
    assert words in error


def test_unknown_quote_is_an_error() -> None:
    """A USDⓈ-M symbol without a known quote suffix cannot be given a margin asset."""
    load = parse_brackets([_fapi("BTCEUR", [(0, 10, 0.01, 0)])])
    assert load.contracts == []
    assert load.errors == ["BTCEUR: cannot tell the margin asset (no known quote suffix)"]


def test_ccxt_inconsistent_market_is_skipped() -> None:
    """A ccxt market with overlapping tiers is reported; the other markets load."""
    document = _ccxt_document()
    document["BTC/USDT:USDT"][1]["minNotional"] = 40000.0
    load = parse_brackets(document)
    assert len(load.contracts) == 348
    (error,) = load.errors
    assert error.startswith("BTCUSDT: inconsistent tier table")
    assert "overlaps" in error


def test_discontinuous_cum_is_kept_with_a_warning() -> None:
    """A cum that breaks continuity is kept as published and reported as a warning."""
    load = parse_brackets([_fapi("BTCUSDT", [(0, 50000, 0.004, 0), (50000, 600000, 0.005, 40)])])
    (contract,) = load.contracts
    assert contract.tiers[1].cum == Decimal(40)
    assert load.errors == []
    (warning,) = load.warnings
    assert warning.startswith("BTCUSDT: tier 2 has cum 40, continuity needs 50")


@pytest.mark.parametrize("document", [[], {}, "brackets", 42, None])
def test_document_without_tables_is_refused(document: object) -> None:
    """A document with no tier tables at all is a BracketFileError."""
    with pytest.raises(BracketFileError):
        parse_brackets(document)


def test_load_brackets_reports_missing_and_non_json_files(tmp_path: Path) -> None:
    """Unreadable and non-JSON files raise BracketFileError naming the path."""
    with pytest.raises(BracketFileError, match=r"cannot (open|read) .*nope\.json"):
        load_brackets(tmp_path / "nope.json")
    text = tmp_path / "notes.txt"
    text.write_text("not a table")
    with pytest.raises(BracketFileError, match=r"notes\.txt is not JSON"):
        load_brackets(text)


# -- through the command line ------------------------------------------------------------------

T0 = 1_700_000_000_000


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return cli_support.run(
        [*LIQMON, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def _write_lines(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _btc_scenario() -> list[dict[str, Any]]:
    """No contract records: BTCUSDT must come from --brackets. Isolated long 1 BTC @ 60000 with
    600 USDT. At mark P the notional P sits in Binance's tier 2 (mmr 0.005, cum 50), so
    MB = 600 + (P − 60000) and MM = 0.005·P − 50: ratio 248.5 / 300 at 59700 (a warning at
    0.8) and liquidation at 59600 (MB 200 ≤ MM 248); the liquidation price is 59350 / 0.995."""
    return [
        {
            "type": "position",
            "ts": T0,
            "account": "alice",
            "symbol": "BTCUSDT",
            "side": "both",
            "mode": "isolated",
            "qty": "1",
            "entry": "60000",
            "leverage": "100",
            "isolated_wallet": "600",
        },
        {"type": "tick", "ts": T0 + 1, "symbol": "BTCUSDT", "mark": "59700"},
        {"type": "tick", "ts": T0 + 2, "symbol": "BTCUSDT", "mark": "59600"},
    ]


def test_cli_brackets_define_contracts(tmp_path: Path) -> None:
    """``--brackets`` with a real table defines BTCUSDT: the position is accepted and the
    events match the hand computation on Binance's tiers."""
    source = _write_lines(tmp_path / "btc.jsonl", _btc_scenario())
    out = tmp_path / "events.jsonl"
    result = _cli("replay", source, "--out", out, "--brackets", FAPI_2024)
    assert result.returncode == 0, result.stderr
    assert "  rejected    0\n" in result.stderr
    warning, liquidation = (json.loads(x) for x in out.read_text().splitlines())
    assert (warning["event"], warning["level"]) == ("margin_warning", 0.8)
    assert warning["margin_balance"] == 300.0
    assert warning["maintenance_margin"] == 248.5
    assert warning["margin_ratio"] == pytest.approx(248.5 / 300)
    assert warning["liquidation_price"] == pytest.approx(59350 / 0.995, rel=1e-12)
    assert liquidation["event"] == "liquidation"
    assert (liquidation["loss"], liquidation["shortfall"]) == (600.0, 0.0)


def test_cli_without_brackets_rejects_the_positions(tmp_path: Path) -> None:
    """Without a contract the same file is refused: unknown symbol, no events."""
    source = _write_lines(tmp_path / "btc.jsonl", _btc_scenario())
    out = tmp_path / "events.jsonl"
    result = _cli("replay", source, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == ""
    assert "unknown_symbol 1: line 1" in result.stderr
    assert "2 dropped (unknown_symbol 2)" in result.stderr


def test_cli_brackets_with_a_coin_m_table(tmp_path: Path) -> None:
    """A COIN-M table (``qtylFloor`` spelling) given to ``--brackets`` defines BTCUSD_PERP: a
    cross position of 1000 contracts on 0.1 BTC is accepted and liquidated in BTC at 45000
    (MB = 0.1 + 100000·(1/50000 − 1/45000) < 0)."""
    table = tmp_path / "dapi.json"
    table.write_text(json.dumps(_dapi_document("qtylFloor")))
    records = [
        {"type": "balance", "ts": T0, "account": "carol", "asset": "BTC", "wallet": "0.1"},
        {
            "type": "position",
            "ts": T0,
            "account": "carol",
            "symbol": "BTCUSD_PERP",
            "side": "both",
            "mode": "cross",
            "qty": "1000",
            "entry": "50000",
            "leverage": "20",
        },
        {"type": "tick", "ts": T0 + 1, "symbol": "BTCUSD_PERP", "mark": "45000"},
    ]
    out = tmp_path / "events.jsonl"
    result = _cli(
        "replay", _write_lines(tmp_path / "c.jsonl", records), "--out", out, "--brackets", table
    )
    assert result.returncode == 0, result.stderr
    (event,) = (json.loads(x) for x in out.read_text().splitlines())
    assert (event["event"], event["scope"], event["asset"]) == ("liquidation", "cross", "BTC")
    assert event["loss"] == 0.1
    expected = 0.1 + 100000 * (1 / 50000 - 1 / 45000)
    assert event["margin_balance"] == pytest.approx(expected, rel=1e-12)
    assert event["shortfall"] == pytest.approx(-expected, rel=1e-12)


def test_cli_skips_an_unusable_table_and_uses_the_others(tmp_path: Path) -> None:
    """An inconsistent table in a --brackets file is reported on stderr and skipped; the
    file's other contracts are defined and the replay succeeds."""
    table = tmp_path / "mixed.json"
    table.write_text(json.dumps(_mixed_document()))
    source = _write_lines(tmp_path / "btc.jsonl", _btc_scenario())
    out = tmp_path / "events.jsonl"
    result = _cli("replay", source, "--out", out, "--brackets", table)
    assert result.returncode == 0, result.stderr
    assert (
        f"liqmon: {table}: skipped an unusable tier table: ETHUSDT: inconsistent" in result.stderr
    )
    assert len(out.read_text().splitlines()) == 2


def test_cli_reports_tier_warnings_in_the_summary(tmp_path: Path) -> None:
    """A discontinuous cum in a --brackets table is shown as a warning in the summary."""
    table = tmp_path / "jump.json"
    table.write_text(
        json.dumps([_fapi("BTCUSDT", [(0, 50000, 0.004, 0), (50000, 600000, 0.005, 40)])])
    )
    source = _write_lines(tmp_path / "btc.jsonl", _btc_scenario())
    result = _cli("replay", source, "--out", tmp_path / "e.jsonl", "--brackets", table)
    assert result.returncode == 0, result.stderr
    assert "  warning     BTCUSDT: tier 2 has cum 40, continuity needs 50" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot open"), ("not json", "is not JSON"), ("[]", "no tier tables found")],
)
def test_cli_bad_brackets_file_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    """A --brackets file that is missing, not JSON or holds no table: exit 2, one message."""
    table = tmp_path / "table.json"
    if content is not None:
        table.write_text(content)
    result = _cli(
        "replay",
        ROOT / "examples" / "crash.jsonl",
        "--out",
        tmp_path / "e.jsonl",
        "--brackets",
        table,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith("liqmon: ")
    assert "Traceback" not in result.stderr
