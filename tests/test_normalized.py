"""The normalized JSON Lines parser (docs/records.md): what it accepts and how it refuses the rest.

Every refusal is a :class:`MalformedRecord` whose ``reason`` is one of the stable codes listed in
``feeds/normalized.py``; the tests below pin the code for each kind of bad input, because
summaries, logs and metrics count by it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from feeds.normalized import MAX_LINE_BYTES, parse_line, parse_object, price_of, to_decimal
from monitor.contracts import Tier
from monitor.errors import MalformedRecord
from monitor.records import (
    BalanceRecord,
    ContractRecord,
    MarginRecord,
    PositionRecord,
    TickRecord,
)

TS = 1_636_956_000_000  # 2021-11-15 06:00 UTC

# The first two tiers of Binance's real BTCUSDT table (tests/data, Oct 2024).
CONTRACT: dict[str, Any] = {
    "type": "contract",
    "symbol": "BTCUSDT",
    "kind": "linear",
    "margin_asset": "USDT",
    "contract_size": "1",
    "brackets": [
        {"floor": "0", "cap": "50000", "mmr": "0.004", "cum": "0"},
        {"floor": "50000", "cap": "600000", "mmr": "0.005", "cum": "50"},
    ],
}
BALANCE: dict[str, Any] = {
    "type": "balance",
    "ts": TS,
    "account": "bob",
    "asset": "USDT",
    "wallet": "3750.5",
}
POSITION: dict[str, Any] = {
    "type": "position",
    "ts": TS,
    "account": "alice",
    "symbol": "BTCUSDT",
    "side": "both",
    "mode": "isolated",
    "qty": "0.25",
    "entry": "61800.3",
    "leverage": "25",
    "isolated_wallet": "617.99",
}
MARGIN: dict[str, Any] = {
    "type": "margin",
    "ts": TS,
    "account": "alice",
    "symbol": "BTCUSDT",
    "side": "both",
    "delta": "-100.5",
}
TICK: dict[str, Any] = {"type": "tick", "ts": TS, "symbol": "BTCUSDT", "mark": "61800.30"}

BTC_TIERS = (
    Tier(Decimal("0"), Decimal("50000"), Decimal("0.004"), Decimal("0")),
    Tier(Decimal("50000"), Decimal("600000"), Decimal("0.005"), Decimal("50")),
)


def _line(record: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**record, **changes})


def _raw(record: dict[str, Any], field: str, raw: str) -> str:
    """``record`` as a JSON line whose ``field`` is the literal JSON text ``raw``."""
    rest = {k: v for k, v in record.items() if k != field}
    return json.dumps(rest)[:-1] + f', "{field}": {raw}}}'


def _without(record: dict[str, Any], field: str) -> str:
    return json.dumps({k: v for k, v in record.items() if k != field})


def _reason(line: str | bytes) -> str:
    with pytest.raises(MalformedRecord) as caught:
        parse_line(line)
    return caught.value.reason


# -- every record type parses, from strings and from numbers ----------------------------------


def test_contract_parses_from_strings() -> None:
    """A contract with string quantities becomes a validated Contract with exact tiers."""
    record = parse_line(_line(CONTRACT))
    assert isinstance(record, ContractRecord)
    contract = record.contract
    assert (contract.symbol, contract.kind, contract.margin_asset) == ("BTCUSDT", "linear", "USDT")
    assert contract.contract_size == Decimal(1)
    assert contract.tiers == BTC_TIERS
    assert contract.warnings == ()


def test_contract_parses_from_numbers() -> None:
    """JSON numbers give the same contract as the same quantities sent as strings."""
    numeric = {
        **CONTRACT,
        "contract_size": 1,
        "brackets": [
            {"floor": 0, "cap": 50000, "mmr": 0.004, "cum": 0},
            {"floor": 50000.0, "cap": 600000, "mmr": 0.005, "cum": 50.0},
        ],
    }
    record = parse_line(_line(numeric))
    assert isinstance(record, ContractRecord)
    assert record.contract.tiers == BTC_TIERS
    assert record.contract == parse_line(_line(CONTRACT)).contract  # type: ignore[union-attr]


def test_inverse_contract_parses() -> None:
    """An inverse (COIN-M) contract keeps its kind, coin margin asset and contract size."""
    record = parse_line(
        _line(
            CONTRACT,
            symbol="BTCUSD_PERP",
            kind="inverse",
            margin_asset="BTC",
            contract_size="100",
            brackets=[{"floor": "0", "cap": "5", "mmr": "0.004", "cum": "0"}],
        )
    )
    assert isinstance(record, ContractRecord)
    assert record.contract.kind == "inverse"
    assert record.contract.margin_asset == "BTC"
    assert record.contract.contract_size == Decimal(100)


def test_contract_with_discontinuous_cum_is_kept_with_a_warning() -> None:
    """A cum that breaks continuity is not fatal: the table is kept as published, with a warning."""
    brackets = [CONTRACT["brackets"][0], {**CONTRACT["brackets"][1], "cum": "40"}]
    record = parse_line(_line(CONTRACT, brackets=brackets))
    assert isinstance(record, ContractRecord)
    assert record.contract.tiers[1].cum == Decimal(40)
    assert len(record.contract.warnings) == 1
    assert "continuity needs 50" in record.contract.warnings[0]


def test_balance_parses_from_strings_and_numbers() -> None:
    """A balance sets an exact wallet, whether sent as a string or a number."""
    expected = BalanceRecord(TS, "bob", "USDT", Decimal("3750.5"))
    assert parse_line(_line(BALANCE)) == expected
    assert parse_line(_line(BALANCE, wallet=3750.5)) == expected


def test_position_parses_from_strings() -> None:
    """An isolated position keeps every field exactly, isolated wallet included."""
    assert parse_line(_line(POSITION)) == PositionRecord(
        TS,
        "alice",
        "BTCUSDT",
        "both",
        "isolated",
        Decimal("0.25"),
        Decimal("61800.3"),
        Decimal(25),
        Decimal("617.99"),
    )


def test_position_parses_from_numbers_as_their_shortest_decimal() -> None:
    """JSON numbers are read as the decimal they denote (0.1 is 0.1, not its binary expansion)."""
    record = parse_line(
        _line(POSITION, qty=0.1, entry=61800.3, leverage=25, isolated_wallet=617.99)
    )
    assert isinstance(record, PositionRecord)
    assert record.qty == Decimal("0.1")
    assert record.entry == Decimal("61800.3")
    assert record.leverage == Decimal(25)
    assert record.isolated_wallet == Decimal("617.99")


def test_short_cross_position_parses_and_ignores_isolated_wallet() -> None:
    """A short cross position keeps its signed qty; an isolated_wallet on it is dropped."""
    record = parse_line(
        _line(POSITION, mode="cross", side="short", qty="-1.5", isolated_wallet="100")
    )
    assert isinstance(record, PositionRecord)
    assert record.qty == Decimal("-1.5")
    assert record.mode == "cross"
    assert record.isolated_wallet is None


def test_isolated_close_needs_no_wallet() -> None:
    """``qty`` 0 closes a slot; an isolated close without isolated_wallet is valid."""
    line = _without({**POSITION, "qty": "0"}, "isolated_wallet")
    record = parse_line(line)
    assert isinstance(record, PositionRecord)
    assert record.qty == 0
    assert record.isolated_wallet is None


def test_margin_parses_from_strings_and_numbers() -> None:
    """A margin record's signed delta is exact from a string or a number."""
    expected = MarginRecord(TS, "alice", "BTCUSDT", "both", Decimal("-100.5"))
    assert parse_line(_line(MARGIN)) == expected
    assert parse_line(_line(MARGIN, delta=-100.5)) == expected


def test_tick_parses_from_a_string_keeping_the_exact_text() -> None:
    """A string mark gives the float for the hot path and keeps its exact text."""
    record = parse_line(_line(TICK))
    assert record == TickRecord(TS, "BTCUSDT", 61800.3, "61800.30")
    assert isinstance(record, TickRecord)
    assert record.mark_exact == Decimal("61800.30")


@pytest.mark.parametrize(
    ("mark", "expected"),
    [(61800.3, Decimal("61800.3")), (2, Decimal(2)), (1e-8, Decimal("1e-8"))],
)
def test_tick_parses_from_a_number(mark: float, expected: Decimal) -> None:
    """A numeric mark (float or integer) parses; its exact value is its shortest decimal."""
    record = parse_line(_line(TICK, mark=mark))
    assert isinstance(record, TickRecord)
    assert record.mark == float(mark)
    assert record.mark_exact == expected


def test_bytes_and_str_lines_parse_alike() -> None:
    """A line read from a file (bytes, with its newline) parses like the same text."""
    text = _line(TICK)
    assert parse_line((text + "\n").encode()) == parse_line(text)


@pytest.mark.parametrize("record", [CONTRACT, BALANCE, POSITION, MARGIN, TICK])
def test_unknown_extra_fields_are_ignored(record: dict[str, Any]) -> None:
    """Producers may add fields: every record type ignores fields it does not know."""
    extra = {"venue": "binance", "note": None, "nested": {"a": [1, 2.5, "x"]}, "ts_init": "x"}
    plain = parse_line(_line(record))
    assert parse_line(_line({**extra, **record})) == plain


def test_parse_object_takes_decoded_json() -> None:
    """parse_object applies the same rules to an already decoded value."""
    assert parse_object(dict(TICK)) == parse_line(_line(TICK))
    with pytest.raises(MalformedRecord) as caught:
        parse_object([dict(TICK)])
    assert caught.value.reason == "not_an_object"


# -- marks ------------------------------------------------------------------------------------

NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity"]
"""Python's ``json`` accepts these tokens; strict JSON (RFC 8259) does not."""
OVERFLOWING_NUMBERS = ["1e400", "-1e400", str(10**400)]
"""Valid JSON grammar, beyond the range of a double."""

BAD_MARKS = [
    '"NaN"',
    '"nan"',
    '"Infinity"',
    '"-Infinity"',
    '"inf"',
    '"-1"',
    "-1",
    '"-0.5"',
    '"0"',
    "0",
    "0.0",
    '"-0"',
    "-0.0",
    '"1e400"',
    str(10**40),
    '"1e30"',
    "1e30",
    "true",
    "false",
    "null",
    "[61800.3]",
    '{"value": 1}',
    '"abc"',
    '""',
    '"0x10"',
    '"' + "1" * 65 + '"',
]


@pytest.mark.parametrize("raw", BAD_MARKS)
def test_bad_mark_is_an_invalid_price(raw: str) -> None:
    """NaN, infinities, zero, negatives, overflowing, non-numeric marks: ``invalid_price``."""
    assert _reason(_raw(TICK, "mark", raw)) == "invalid_price"


@pytest.mark.parametrize("raw", NOT_JSON_NUMBERS)
def test_non_json_number_literal_as_mark_is_invalid_json(raw: str) -> None:
    """A bare ``NaN`` or ``Infinity`` is not JSON: the line is refused as ``invalid_json``."""
    assert _reason(_raw(TICK, "mark", raw)) == "invalid_json"


@pytest.mark.parametrize("raw", OVERFLOWING_NUMBERS)
def test_overflowing_number_literal_as_mark_is_refused(raw: str) -> None:
    """A JSON number beyond double range never becomes a mark: the decoder refuses it
    (``invalid_json``) or it reads as infinity (``invalid_price``)."""
    assert _reason(_raw(TICK, "mark", raw)) in {"invalid_json", "invalid_price"}


@pytest.mark.parametrize("raw", ['"9.99e29"', "9.99e29", '"0.00001"', '"1e-8"'])
def test_mark_at_the_edges_of_the_range_is_accepted(raw: str) -> None:
    """Marks just inside (0, 1e30) are valid."""
    assert isinstance(parse_line(_raw(TICK, "mark", raw)), TickRecord)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("2", 2.0), ("0.5", 0.5), ('"1.25"', 1.25)],
)
def test_price_of_reads_positive_marks(raw: str, expected: float) -> None:
    """price_of turns a decoded JSON string or number into the float mark."""
    assert price_of(json.loads(raw)) == expected


def test_price_of_refuses_a_negative_mark() -> None:
    """price_of raises the stable invalid_price reason."""
    with pytest.raises(MalformedRecord) as caught:
        price_of("-3")
    assert caught.value.reason == "invalid_price"


# -- other numbers ------------------------------------------------------------------------------

BAD_DECIMALS = [
    ('"NaN"', "non_finite_number"),
    ('"sNaN"', "non_finite_number"),
    ('"-Infinity"', "non_finite_number"),
    ('"1e400"', "number_out_of_range"),
    (str(10**40), "number_out_of_range"),
    ('"-1e31"', "number_out_of_range"),
    ('"1e-31"', "number_out_of_range"),
    ('"\\u0661\\u0662"', "non_ascii_digits"),  # Arabic-Indic 12
    ('"\\uff11\\uff12"', "non_ascii_digits"),  # fullwidth 12
    ('"1\\u00bd"', "non_ascii_digits"),  # a vulgar fraction is numeric too
    ('"12\\u20ac"', "invalid_field"),  # non-ASCII, but no digit
    ("true", "invalid_field"),
    ("false", "invalid_field"),
    ('"abc"', "invalid_field"),
    ('""', "invalid_field"),
    ("[1]", "invalid_field"),
    ('{"v": 1}', "invalid_field"),
    ('"' + "1" * 65 + '"', "invalid_field"),
]
DECIMAL_FIELDS = [
    (POSITION, "qty"),
    (POSITION, "entry"),
    (POSITION, "leverage"),
    (POSITION, "isolated_wallet"),
    (BALANCE, "wallet"),
    (MARGIN, "delta"),
    (CONTRACT, "contract_size"),
]
DECIMAL_IDS = [f"{r['type']}-{f}" for r, f in DECIMAL_FIELDS]


@pytest.mark.parametrize(("raw", "reason"), BAD_DECIMALS)
@pytest.mark.parametrize(("record", "field"), DECIMAL_FIELDS, ids=DECIMAL_IDS)
def test_bad_decimal_is_refused_with_its_reason(
    record: dict[str, Any], field: str, raw: str, reason: str
) -> None:
    """Non-finite words, out-of-range values and digits of other scripts each have their own
    reason; booleans, containers and other text are ``invalid_field``. Nothing of it is read
    as a number (``Decimal("\u0661\u0662")`` would be 12)."""
    assert _reason(_raw(record, field, raw)) == reason


@pytest.mark.parametrize("raw", NOT_JSON_NUMBERS)
@pytest.mark.parametrize(("record", "field"), DECIMAL_FIELDS, ids=DECIMAL_IDS)
def test_non_json_number_literal_as_quantity_is_invalid_json(
    record: dict[str, Any], field: str, raw: str
) -> None:
    """``NaN`` / ``Infinity`` literals in any quantity make the line invalid JSON."""
    assert _reason(_raw(record, field, raw)) == "invalid_json"


@pytest.mark.parametrize("raw", OVERFLOWING_NUMBERS)
@pytest.mark.parametrize(("record", "field"), DECIMAL_FIELDS, ids=DECIMAL_IDS)
def test_overflowing_number_literal_as_quantity_is_refused(
    record: dict[str, Any], field: str, raw: str
) -> None:
    """A number beyond double range is refused by the decoder or as out of range."""
    assert _reason(_raw(record, field, raw)) in {"invalid_json", "number_out_of_range"}


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (POSITION, "qty", "invalid_field"),
        (POSITION, "entry", "invalid_field"),
        (BALANCE, "wallet", "invalid_field"),
        (MARGIN, "delta", "invalid_field"),
        (POSITION, "isolated_wallet", "missing_field"),
    ],
)
def test_null_quantity_is_refused(record: dict[str, Any], field: str, reason: str) -> None:
    """``null`` is not a number; for the optional isolated_wallet it counts as absent."""
    assert _reason(_raw(record, field, "null")) == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('"NaN"', "non_finite_number"),
        ('"1e400"', "number_out_of_range"),
        ("true", "invalid_field"),
        ('"abc"', "invalid_field"),
        ("null", "invalid_field"),
    ],
)
@pytest.mark.parametrize("field", ["floor", "cap", "mmr", "cum"])
def test_bad_bracket_number_is_refused_as_a_number(field: str, raw: str, reason: str) -> None:
    """A bracket value that is not a finite number is refused for the number, not as a tier
    problem."""
    first = json.loads(_raw(CONTRACT["brackets"][0], field, raw))
    line = _line(CONTRACT, brackets=[first, CONTRACT["brackets"][1]])
    assert _reason(line) == reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("entry", "-1"),
        ("entry", "0"),
        ("entry", -61800.3),
        ("leverage", "-25"),
    ],
)
def test_impossible_position_value_is_an_invalid_field(field: str, value: object) -> None:
    """An open position's entry must be positive, its leverage not negative (0: not reported,
    the previous leverage is kept — Binance's ACCOUNT_UPDATE does not carry it)."""
    assert _reason(_line(POSITION, **{field: value})) == "invalid_field"


def test_a_close_needs_no_meaningful_entry_or_leverage() -> None:
    """``qty`` 0 closes the slot: its entry and leverage are not used, so 0 is accepted."""
    record = parse_line(_line(POSITION, qty="0", entry="0", leverage="0"))
    assert isinstance(record, PositionRecord)
    assert record.qty == 0


def test_a_negative_isolated_wallet_is_a_fact_not_malformed_input() -> None:
    """A reported isolated wallet below zero is applied as reported (the engine then
    liquidates the position at once), like a margin removal larger than the wallet."""
    record = parse_line(_line(POSITION, isolated_wallet="-0.01"))
    assert isinstance(record, PositionRecord)
    assert record.isolated_wallet == Decimal("-0.01")


def test_isolated_position_without_wallet_is_a_missing_field() -> None:
    """An open isolated position needs its isolated_wallet."""
    assert _reason(_without(POSITION, "isolated_wallet")) == "missing_field"


def test_to_decimal_accepts_strings_integers_and_floats() -> None:
    """to_decimal is exact for strings and integers, shortest-decimal for floats."""
    assert to_decimal("0.1") == Decimal("0.1")
    assert to_decimal(10**29) == Decimal(10**29)
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal("-5") == Decimal(-5)


@pytest.mark.parametrize(
    "value", [True, float("nan"), float("inf"), "1e30", "Infinity", None, [1], "x"]
)
def test_to_decimal_refuses_non_finite_and_non_numbers(value: object) -> None:
    """to_decimal raises ValueError for anything that is not a finite number below 1e30."""
    with pytest.raises(ValueError, match=r"."):
        to_decimal(value)


# -- wrong types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ['"1636956000000"', "1636956000000.0", "1.5", "true", "-1", str(2**63), "null", "[1]"],
)
@pytest.mark.parametrize("record", [TICK, POSITION, BALANCE, MARGIN])
def test_bad_ts_is_an_invalid_field(record: dict[str, Any], raw: str) -> None:
    """``ts`` is a non-negative integer of milliseconds: not a string, float, bool or null."""
    assert _reason(_raw(record, "ts", raw)) == "invalid_field"


@pytest.mark.parametrize("raw", ['["BTCUSDT"]', '""', "42", "null", '{"s": 1}', "true"])
@pytest.mark.parametrize("record", [TICK, POSITION, MARGIN, CONTRACT])
def test_bad_symbol_is_an_invalid_field(record: dict[str, Any], raw: str) -> None:
    """``symbol`` is a non-empty string: a list, number, null or empty string is refused."""
    assert _reason(_raw(record, "symbol", raw)) == "invalid_field"


@pytest.mark.parametrize(
    ("record", "field", "value"),
    [
        (POSITION, "side", "sideways"),
        (POSITION, "side", "LONG"),
        (POSITION, "mode", "portfolio"),
        (MARGIN, "side", None),
        (POSITION, "account", ""),
        (POSITION, "account", 7),
        (BALANCE, "asset", ["USDT"]),
        (CONTRACT, "kind", "quanto"),
        (CONTRACT, "margin_asset", None),
        (CONTRACT, "brackets", []),
        (CONTRACT, "brackets", "0-50000"),
        (CONTRACT, "brackets", [5]),
    ],
)
def test_wrong_type_or_value_is_an_invalid_field(
    record: dict[str, Any], field: str, value: object
) -> None:
    """Enumerations, names and the bracket list are type-checked."""
    assert _reason(_line(record, **{field: value})) == "invalid_field"


# -- missing fields ---------------------------------------------------------------------------

REQUIRED = [
    (TICK, "ts"),
    (TICK, "symbol"),
    (TICK, "mark"),
    (BALANCE, "ts"),
    (BALANCE, "account"),
    (BALANCE, "asset"),
    (BALANCE, "wallet"),
    (POSITION, "ts"),
    (POSITION, "account"),
    (POSITION, "symbol"),
    (POSITION, "side"),
    (POSITION, "mode"),
    (POSITION, "qty"),
    (POSITION, "entry"),
    (POSITION, "leverage"),
    (MARGIN, "ts"),
    (MARGIN, "account"),
    (MARGIN, "symbol"),
    (MARGIN, "side"),
    (MARGIN, "delta"),
    (CONTRACT, "symbol"),
    (CONTRACT, "kind"),
    (CONTRACT, "margin_asset"),
    (CONTRACT, "contract_size"),
    (CONTRACT, "brackets"),
]


@pytest.mark.parametrize(
    ("record", "field"), REQUIRED, ids=[f"{r['type']}-{f}" for r, f in REQUIRED]
)
def test_missing_field_is_reported_by_name(record: dict[str, Any], field: str) -> None:
    """Every required field, when absent, gives ``missing_field`` naming that field."""
    with pytest.raises(MalformedRecord) as caught:
        parse_line(_without(record, field))
    assert caught.value.reason == "missing_field"
    assert field in caught.value.detail


def test_missing_bracket_value_is_a_missing_field() -> None:
    """A bracket without its cum is reported as a missing field of that bracket."""
    brackets = [{"floor": "0", "cap": "50000", "mmr": "0.004"}]
    with pytest.raises(MalformedRecord) as caught:
        parse_line(_line(CONTRACT, brackets=brackets))
    assert caught.value.reason == "missing_field"
    assert "brackets.0.cum" in caught.value.detail


# -- unknown type, non-objects, not JSON ------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '{"type": "trade", "ts": 1}',
        '{"type": "TICK", "ts": 1, "symbol": "BTCUSDT", "mark": "1"}',
        '{"type": "", "ts": 1}',
        '{"type": null}',
        '{"type": 5}',
        '{"ts": 1, "symbol": "BTCUSDT", "mark": "1"}',
        "{}",
    ],
)
def test_unknown_or_missing_type_is_unknown_type(line: str) -> None:
    """A record whose ``type`` is absent or not one of the five is ``unknown_type``."""
    assert _reason(line) == "unknown_type"


@pytest.mark.parametrize("line", ['{"type": ["tick"]}', '{"type": {"name": "tick"}}'])
def test_unhashable_type_is_unknown_type(line: str) -> None:
    """A list or object as ``type`` is refused as ``unknown_type`` like any other bad type."""
    assert _reason(line) == "unknown_type"


@pytest.mark.parametrize("line", ["[1, 2]", '"tick"', "42", "null", "true", "[]"])
def test_non_object_json_is_not_an_object(line: str) -> None:
    """Valid JSON that is not an object is ``not_an_object``."""
    assert _reason(line) == "not_an_object"


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"type": "tick", "ts": 1,',
        "",
        "   ",
        '{"type": "tick"} {"type": "tick"}',
        "{'type': 'tick'}",
        '{"type": "tick", "mark": 1.2.3}',
        b'{"type": "tick", "ts": 1, "symbol": "BTC\xff", "mark": "1"}',
        b"\xc3\x28",
        b'{"type": "balance", "account": "\xed\xa0\x80"}',
    ],
)
def test_invalid_json_or_utf8_is_invalid_json(line: str | bytes) -> None:
    """Unparsable text, and bytes that are not UTF-8, are ``invalid_json``."""
    assert _reason(line) == "invalid_json"


def _padded_tick(total_bytes: int) -> bytes:
    head = _line(TICK, note="")[:-2]  # ends inside the empty "note" string
    padding = total_bytes - len(head) - 2
    return (head + "x" * padding + '"}').encode()


def test_over_long_line_is_invalid_json() -> None:
    """A line longer than MAX_LINE_BYTES is refused unparsed, even if it is valid JSON."""
    line = _padded_tick(MAX_LINE_BYTES + 1)
    json.loads(line)  # valid JSON: refused for its length alone
    with pytest.raises(MalformedRecord) as caught:
        parse_line(line)
    assert caught.value.reason == "invalid_json"
    assert str(MAX_LINE_BYTES) in caught.value.detail


def test_line_of_exactly_the_limit_is_parsed() -> None:
    """The limit is inclusive: a line of exactly MAX_LINE_BYTES bytes is a record."""
    line = _padded_tick(MAX_LINE_BYTES)
    assert len(line) == MAX_LINE_BYTES
    assert isinstance(parse_line(line), TickRecord)


# -- tier tables ------------------------------------------------------------------------------

GOOD_FIRST = {"floor": "0", "cap": "50000", "mmr": "0.004", "cum": "0"}


@pytest.mark.parametrize(
    ("brackets", "words"),
    [
        pytest.param(
            [GOOD_FIRST, {"floor": "60000", "cap": "600000", "mmr": "0.005", "cum": "50"}],
            "gap between tier 1 (cap 50000) and tier 2 (floor 60000)",
            id="gap",
        ),
        pytest.param(
            [GOOD_FIRST, {"floor": "40000", "cap": "600000", "mmr": "0.005", "cum": "50"}],
            "tier 1 (cap 50000) overlaps tier 2 (floor 40000)",
            id="overlap",
        ),
        pytest.param(
            [GOOD_FIRST, {**GOOD_FIRST, "cap": "60000"}],
            "share the floor 0",
            id="same-floor",
        ),
        pytest.param(
            [{**GOOD_FIRST, "floor": "100"}],
            "the first tier starts at 100, not 0",
            id="first-floor-not-zero",
        ),
        pytest.param([{**GOOD_FIRST, "cap": "0"}], "is not above floor", id="empty-tier"),
        pytest.param([{**GOOD_FIRST, "mmr": "1"}], "outside [0, 1)", id="mmr-one"),
        pytest.param([{**GOOD_FIRST, "mmr": "-0.01"}], "outside [0, 1)", id="mmr-negative"),
        pytest.param([{**GOOD_FIRST, "cum": "-1"}], "negative floor or cum", id="negative-cum"),
    ],
)
def test_inconsistent_tier_table_is_invalid_brackets(
    brackets: list[dict[str, str]], words: str
) -> None:
    """Gapped, overlapping or impossible tiers: ``invalid_brackets`` with a precise detail."""
    with pytest.raises(MalformedRecord) as caught:
        parse_line(_line(CONTRACT, brackets=brackets))
    assert caught.value.reason == "invalid_brackets"
    assert caught.value.detail.startswith("BTCUSDT: inconsistent tier table")
    assert words in caught.value.detail


def test_unordered_brackets_are_sorted_by_floor() -> None:
    """Tiers listed out of order are valid: they are put in floor order."""
    record = parse_line(_line(CONTRACT, brackets=list(reversed(CONTRACT["brackets"]))))
    assert isinstance(record, ContractRecord)
    assert record.contract.tiers == BTC_TIERS


@pytest.mark.parametrize("size", ["0", "-100"])
def test_non_positive_contract_size_is_an_invalid_field(size: str) -> None:
    """contract_size 0 or negative is an impossible field value, not a tier-table problem."""
    assert _reason(_line(CONTRACT, contract_size=size)) == "invalid_field"
