"""Hostile input on the MQTT account topics (``feeds.input_messages``), without a broker: a
seeded corpus of about 2,000 messages. Every hostile message is refused with the reason of its
one fault; every valid one parses to exactly its record; through the engine, the refused ones
change nothing and the valid ones have exactly their effect."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import pytest

from alerts.topics import level
from feeds.input_messages import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    nesting,
    parse_input_message,
)
from feeds.normalized import parse_line
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import MessageIgnored, RecordRefused, RecordRejected
from monitor.records import (
    AccountUpdateRecord,
    AssetModeRecord,
    BalanceRecord,
    CollateralRecord,
    MarginRecord,
    PositionRecord,
    Record,
)

D = Decimal
SEED = 20260512


class Raw(str):
    """A JSON number written as this exact text (not quoted)."""


def dumps(value: object) -> str:
    """JSON text of ``value``; :class:`Raw` values are written as they are."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return orjson.dumps(value).decode()


@dataclass
class Message:
    topic: str
    obj: dict[str, Any]
    record: Record
    decimal_fields: list[tuple[Any, str]]  # (container, key) of every decimal value
    numeric_fields: list[tuple[Any, str]]  # ... and of every number (ts, E)

    @property
    def payload(self) -> bytes:
        return dumps(self.obj).encode()


ACCOUNTS = ["alice", "bob", "a/b", "50%", "币安人生", "x y", "ünï", "+#", "q" * 256]
SYMBOLS = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]
ASSETS = ["USDT", "USDC", "BTC"]


class Gen:
    """Valid messages of every kind, with the record each must give."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def decimal(self, positive: bool = False) -> tuple[object, Decimal]:
        """A decimal as a JSON string or a JSON number (up to 20 significant digits, which a
        double cannot hold: read exactly or not at all)."""
        r = self.rng
        whole = r.randint(1 if positive else -(10**9), 10**9)
        frac = r.randint(0, 10**10)
        text = f"{whole}.{frac:010d}" if r.random() < 0.7 else str(whole)
        if positive and D(text) <= 0:
            text = "1.5"
        if r.random() < 0.5:
            return text, D(text)
        return Raw(text), D(text)

    def ts(self) -> int:
        return self.rng.randint(0, 2**53)

    def account(self) -> str:
        return self.rng.choice(ACCOUNTS)

    def balance(self) -> Message:
        value, exact = self.decimal()
        obj = {
            "type": "balance",
            "ts": self.ts(),
            "account": self.account(),
            "asset": self.rng.choice(ASSETS),
            "wallet": value,
        }
        record = BalanceRecord(obj["ts"], obj["account"], obj["asset"], exact)
        return Message("records", obj, record, [(obj, "wallet")], [(obj, "ts")])

    def _position_fields(self) -> tuple[dict[str, Any], dict[str, Decimal]]:
        r = self.rng
        mode = r.choice(["isolated", "cross"])
        side = r.choice(["both", "long", "short"])
        qty, qty_exact = self.decimal()
        entry, entry_exact = self.decimal(positive=True)
        leverage, leverage_exact = self.decimal(positive=True)
        fields: dict[str, Any] = {
            "symbol": r.choice(SYMBOLS),
            "side": side,
            "mode": mode,
            "qty": qty,
            "entry": entry,
            "leverage": leverage,
        }
        exact = {"qty": qty_exact, "entry": entry_exact, "leverage": leverage_exact}
        if mode == "isolated":
            fields["isolated_wallet"], exact["isolated_wallet"] = self.decimal()
        return fields, exact

    def _position_record(
        self, ts: int, account: str, f: dict[str, Any], e: dict[str, Decimal]
    ) -> PositionRecord:
        return PositionRecord(
            ts,
            account,
            f["symbol"],
            f["side"],
            f["mode"],
            e["qty"],
            e["entry"],
            e["leverage"],
            e.get("isolated_wallet"),
        )

    def position(self) -> Message:
        fields, exact = self._position_fields()
        obj = {"type": "position", "ts": self.ts(), "account": self.account(), **fields}
        record = self._position_record(obj["ts"], obj["account"], fields, exact)
        decimals = [(obj, k) for k in exact]
        return Message("records", obj, record, decimals, [(obj, "ts")])

    def margin(self) -> Message:
        value, exact = self.decimal()
        obj = {
            "type": "margin",
            "ts": self.ts(),
            "account": self.account(),
            "symbol": self.rng.choice(SYMBOLS),
            "side": self.rng.choice(["both", "long", "short"]),
            "delta": value,
        }
        record = MarginRecord(obj["ts"], obj["account"], obj["symbol"], obj["side"], exact)
        return Message("records", obj, record, [(obj, "delta")], [(obj, "ts")])

    def snapshot(self, kind: str = "account_snapshot") -> Message:
        ts, account = self.ts(), self.account()
        assets = self.rng.sample(ASSETS, self.rng.randint(0, 3))
        balances, exact_balances = [], []
        for asset in assets:
            value, exact = self.decimal()
            balances.append({"asset": asset, "wallet": value})
            exact_balances.append((asset, exact))
        positions, records, decimals = [], [], []
        slots = set()
        for _ in range(self.rng.randint(0, 4)):
            fields, exact = self._position_fields()
            if (fields["symbol"], fields["side"]) in slots:
                continue
            slots.add((fields["symbol"], fields["side"]))
            positions.append(fields)
            records.append(self._position_record(ts, account, fields, exact))
            decimals += [(fields, k) for k in exact]
        obj = {
            "type": kind,
            "ts": ts,
            "account": account,
            "balances": balances,
            "positions": positions,
        }
        record = AccountUpdateRecord(
            ts, account, tuple(exact_balances), tuple(records), replace=kind == "account_snapshot"
        )
        decimals += [(b, "wallet") for b in balances]
        return Message("records", obj, record, decimals, [(obj, "ts")])

    def asset_mode(self) -> Message:
        obj = {
            "type": "asset_mode",
            "ts": self.ts(),
            "account": self.account(),
            "multi_assets": self.rng.random() < 0.5,
        }
        record = AssetModeRecord(obj["ts"], obj["account"], obj["multi_assets"])
        return Message("records", obj, record, [], [(obj, "ts")])

    def collateral(self) -> Message:
        price, price_exact = self.decimal(positive=True)
        haircut = self.rng.choice(["0", "0.05", "0.1"])
        obj = {
            "type": "collateral",
            "ts": self.ts(),
            "asset": self.rng.choice(ASSETS),
            "price": price,
            "haircut": haircut,
        }
        record = CollateralRecord(obj["ts"], obj["asset"], price_exact, D(haircut))
        return Message("records", obj, record, [(obj, "price"), (obj, "haircut")], [(obj, "ts")])

    def account_update(self) -> Message:
        """A Binance ``ACCOUNT_UPDATE`` on ``binance/{account}``, bare or wrapped."""
        r = self.rng
        account = self.account()
        ts = self.ts()
        balances, exact_balances = [], []
        for asset in r.sample(ASSETS, r.randint(0, 3)):
            value, exact = self.decimal()
            balances.append({"a": asset, "wb": "1", "cw": value, "bc": "0"})
            exact_balances.append((asset, exact))
        positions, records, decimals = [], [], []
        slots = set()
        for _ in range(r.randint(0, 4)):
            symbol, side = r.choice(SYMBOLS), r.choice(["BOTH", "LONG", "SHORT"])
            if (symbol, side) in slots:
                continue
            slots.add((symbol, side))
            mode = r.choice(["isolated", "cross"])
            qty, qty_exact = self.decimal()
            entry, entry_exact = self.decimal(positive=True)
            wallet, wallet_exact = self.decimal()
            positions.append(
                {"s": symbol, "pa": qty, "ep": entry, "cr": "0", "up": "0", "mt": mode}
                | {"iw": wallet, "ps": side}
            )
            records.append(
                PositionRecord(
                    ts,
                    account,
                    symbol,
                    side.lower(),  # type: ignore[arg-type]
                    mode,  # type: ignore[arg-type]
                    qty_exact,
                    entry_exact,
                    D(0),
                    wallet_exact if mode == "isolated" else None,
                )
            )
            decimals += [(positions[-1], k) for k in ("pa", "ep", "iw")]
        event = {"e": "ACCOUNT_UPDATE", "E": ts, "T": ts, "a": {"m": "ORDER", "B": balances}}
        event["a"]["P"] = positions
        obj = event if r.random() < 0.7 else {"stream": "listenkey", "data": event}
        record = AccountUpdateRecord(
            ts, account, tuple(exact_balances), tuple(records), replace=False
        )
        decimals += [(b, "cw") for b in balances]
        return Message(f"binance/{level(account)}", obj, record, decimals, [(event, "E")])

    def asset_config(self) -> Message:
        account, ts = self.account(), self.ts()
        obj = {"e": "ACCOUNT_CONFIG_UPDATE", "E": ts, "T": ts, "ai": {"j": True}}
        record = AssetModeRecord(ts, account, True)
        return Message(f"binance/{level(account)}", obj, record, [], [(obj, "E")])

    def any(self) -> Message:
        makers: list[Callable[[], Message]] = [
            self.balance,
            self.position,
            self.margin,
            self.snapshot,
            lambda: self.snapshot("account_update"),
            self.asset_mode,
            self.collateral,
            self.account_update,
            self.account_update,
            self.asset_config,
        ]
        return self.rng.choice(makers)()

    def with_decimals(self) -> Message:
        while True:
            message = self.any()
            if message.decimal_fields:
                return message


CONTRACT = {
    "type": "contract",
    "symbol": "BTCUSDT",
    "kind": "linear",
    "margin_asset": "USDT",
    "contract_size": "1",
    "brackets": [
        {"floor": "0", "cap": "50000", "mmr": "0.004", "cum": "0"},
        {"floor": "50000", "cap": "1e9", "mmr": "0.005", "cum": "50"},
    ],
}


# -- the hostile corpus: one fault each ----------------------------------------------------------


def _text(message: Message) -> str:
    return message.payload.decode()


def _set(message: Message, where: tuple[Any, str], value: object) -> bytes:
    container, key = where
    saved = container[key]
    container[key] = value
    try:
        return message.payload
    finally:
        container[key] = saved


BAD_UTF8 = [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80"]
NON_ASCII_DIGITS = ["١٢", "۱۲", "१२", "１２", "๑๒", "1٢", "৩.৫", "²", "1½", "-５"]
NON_FINITE_STRINGS = ["NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN", "+inf"]
NON_FINITE_LITERALS = ["NaN", "Infinity", "-Infinity"]
HUGE_LITERALS = ["1e400", "-1e400", "1" + "0" * 400, "9" * 5000, "-1" + "0" * 320]
OUT_OF_RANGE_DECIMALS: list[object] = ["1e31", "-1e31", "1e-31", Raw("1e31"), Raw("1e-31")]
OUT_OF_RANGE_DECIMALS += [Raw(str(10**40)), "1" + "0" * 40]
BAD_TOPICS = ["record", "records/x", "binance", "binance/a/b", "BINANCE/a", "", "okx/a", "in/x"]
BAD_LEVELS = ["", "%00", "%0A", "a%09b", "%7F", "%C2%85", "%E2%80%AE", "%E2%80%A8", "%",
              "%G1", "ab%2", "%C3", "%FF", "\t", "q" * 257, "%71" * 257]  # fmt: skip
IGNORED = ["ORDER_TRADE_UPDATE", "TRADE_LITE", "MARGIN_CALL", "listenKeyExpired", "ALGO_UPDATE"]


def hostile(rng: random.Random, gen: Gen) -> list[tuple[str, str, bytes, str]]:
    """``(what, topic, payload, reason)`` for each hostile message."""
    out: list[tuple[str, str, bytes, str]] = []

    def add(what: str, topic: str, payload: bytes, reason: str) -> None:
        out.append((what, topic, payload, reason))

    for i in range(4):  # 2 MB: refused before decoding, whatever they hold
        base = gen.any()
        junk = [b" " * (2 << 20), b"\xff" * (2 << 20), b"[" * (2 << 20), b"x" * (2 << 20)][i]
        add("2 MB", base.topic, base.payload + junk, "oversized")
    add("just over 1 MiB", "records", b" " * (MAX_MESSAGE_BYTES + 1), "oversized")
    for _ in range(120):
        base = gen.any()
        data = base.payload
        at = rng.randrange(len(data) + 1)
        add(
            "invalid UTF-8",
            base.topic,
            data[:at] + rng.choice(BAD_UTF8) + data[at:],
            "invalid_utf8",
        )
    for _ in range(120):
        base = gen.any()
        depth = rng.choice([MAX_DEPTH + 1, MAX_DEPTH + 2, 50, 1000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"x":', "}")])
        if rng.random() < 0.5:  # the whole message inside
            payload = (opener * depth + _text(base) + closer * depth).encode()
        else:  # an extra field nested deep
            deep = opener * depth + "1" + closer * depth
            payload = (_text(base)[:-1] + f',"extra":{deep}}}').encode()
        add(f"nested {depth}", base.topic, payload, "too_deep")
    for _ in range(150):
        base = gen.any()
        text = _text(base)
        kind = rng.randrange(8)
        if kind == 0:
            bad = text[: rng.randrange(1, len(text))]  # cut short (at a character)
        elif kind == 1:
            bad = text[:-1] + ",}"
        elif kind == 2:
            bad = text.replace('"type"', "'type'").replace('"e"', "'e'")
            if bad == text:
                bad = "{'a': 1}"
        elif kind == 3:
            bad = text + text
        elif kind == 4:
            bad = "// liqmon\n" + text
        elif kind == 5:
            bad = text[:-1] + ',"note":"a\x01b"}'  # a raw control character in a string
        elif kind == 6:
            bad = text[:-1] + ',"note":"\\ud800"}'  # a lone surrogate
        else:
            bad = "\ufeff" + text
        add(f"invalid JSON {kind}", base.topic, bad.encode(), "invalid_json")
    for _ in range(110):
        base = gen.any()
        where = rng.choice(base.decimal_fields + base.numeric_fields)
        add("NaN literal", base.topic, _set(base, where, Raw(rng.choice(NON_FINITE_LITERALS))),
            "non_finite_number")  # fmt: skip
    for _ in range(60):
        base = gen.with_decimals()
        where = rng.choice(base.decimal_fields)
        add("NaN string", base.topic, _set(base, where, rng.choice(NON_FINITE_STRINGS)),
            "non_finite_number")  # fmt: skip
    for _ in range(110):
        base = gen.any()
        where = rng.choice(base.decimal_fields + base.numeric_fields)
        add("huge literal", base.topic, _set(base, where, Raw(rng.choice(HUGE_LITERALS))),
            "number_out_of_range")  # fmt: skip
    for _ in range(60):
        base = gen.with_decimals()
        where = rng.choice(base.decimal_fields)
        add("out of range", base.topic, _set(base, where, rng.choice(OUT_OF_RANGE_DECIMALS)),
            "number_out_of_range")  # fmt: skip
    for _ in range(150):
        base = gen.with_decimals()
        where = rng.choice(base.decimal_fields)
        add("digits", base.topic, _set(base, where, rng.choice(NON_ASCII_DIGITS)),
            "non_ascii_digits")  # fmt: skip
    for value in ["[]", "[1, 2]", '"text"', "12", "null", "true", "1.5"]:
        for topic in ("records", "binance/alice"):
            add("not an object", topic, value.encode(), "not_an_object")
    for _ in range(40):
        base = gen.any()
        add("in a list", base.topic, b"[" + base.payload + b"]", "not_an_object")
    for _ in range(80):
        value, _ = gen.decimal(positive=True)
        tick = {"type": "tick", "ts": gen.ts(), "symbol": rng.choice(SYMBOLS), "mark": value}
        if rng.random() < 0.3:
            tick |= {"funding_rate": "0.0001", "funding_ts": 28_800_000}
        add("tick", "records", dumps(tick).encode(), "tick_on_account_topic")
    for _ in range(80):
        base = gen.balance()
        kind = rng.choice(["mystery", "TICK", "Balance", "", 5, None, ["balance"], "__missing__"])
        obj = dict(base.obj)
        if kind == "__missing__":
            del obj["type"]
        else:
            obj["type"] = kind
        add("unknown type", "records", dumps(obj).encode(), "unknown_type")
    for _ in range(40):
        base = gen.account_update()
        event = dict(base.obj.get("data", base.obj))
        event["e"] = rng.choice(["markPriceUpdate", "", 5, None, "account_update"])
        add("unknown event", base.topic, dumps(event).encode(), "unknown_type")
    for _ in range(20):
        add("record on binance", f"binance/{level(gen.account())}", gen.balance().payload,
            "unknown_type")  # fmt: skip
    for _ in range(60):
        account = level(gen.account())
        event: dict[str, Any] = {"e": rng.choice(IGNORED), "E": gen.ts()}
        if rng.random() < 0.3:
            event = {"e": "ACCOUNT_CONFIG_UPDATE", "E": gen.ts(), "ac": {"s": "BTCUSDT", "l": 25}}
        add("ignored event", f"binance/{account}", dumps(event).encode(), "ignored_event")
    for topic in BAD_TOPICS:
        for _ in range(8):
            add("unknown topic", topic, gen.any().payload, "unknown_topic")
    for bad_level in BAD_LEVELS:
        for _ in range(6):
            add("bad account", f"binance/{bad_level}", gen.account_update().payload,
                "invalid_account")  # fmt: skip
    for bad_account in ["", "a\nb", "\u202e", "tab\there", "q" * 257, "\x7f"]:
        for make in (gen.balance, gen.position, gen.margin, gen.snapshot, gen.asset_mode):
            message = make()
            add("bad record account", "records", _set(message, (message.obj, "account"),
                bad_account), "invalid_account")  # fmt: skip
    for _ in range(40):  # contradictions inside one message
        base = gen.account_update()
        event = base.obj.get("data", base.obj)
        twice = rng.choice(["B", "P"])
        if twice == "B":
            event["a"]["B"] = [{"a": "USDT", "cw": "1"}, {"a": "USDT", "cw": "2"}]
        else:
            slot = {"s": "BTCUSDT", "pa": "1", "ep": "1", "mt": "cross", "ps": "BOTH"}
            event["a"]["P"] = [slot, {**slot, "pa": "2"}]
        add("listed twice", base.topic, base.payload, "invalid_field")
    for _ in range(40):
        base = gen.snapshot()
        slot = {"symbol": "BTCUSDT", "side": "both", "mode": "cross", "qty": "1"}
        slot |= {"entry": "1", "leverage": "1"}
        base.obj["positions"] = [slot, {**slot, "qty": "2"}]
        add("snapshot slot twice", "records", base.payload, "invalid_field")
    for _ in range(60):
        base = rng.choice([gen.balance, gen.position, gen.margin])()
        kind = rng.randrange(4)
        if kind == 0:
            del base.obj["ts"]
            add("missing ts", "records", base.payload, "missing_field")
            continue
        base.obj["ts"] = [-1, "5", True, Raw("1.5")][kind - 1] if kind < 4 else -1
        add("bad ts", "records", base.payload, "invalid_field")
    return out


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Message], list[tuple[str, str, bytes, str]]]:
    rng = random.Random(SEED)
    gen = Gen(rng)
    valid = [gen.any() for _ in range(500)]
    return valid, hostile(rng, gen)


def test_the_corpus_is_large_and_covers_every_reason(
    corpus: tuple[list[Message], list[tuple[str, str, bytes, str]]],
) -> None:
    """About 2,000 messages, every refusal reason of the module present many times (the checks
    below would be weak on a corpus that missed one)."""
    valid, bad = corpus
    assert len(valid) + len(bad) >= 2_000
    reasons = Counter(reason for _, _, _, reason in bad)
    expected = {
        "oversized",
        "invalid_utf8",
        "too_deep",
        "invalid_json",
        "non_finite_number",
        "number_out_of_range",
        "non_ascii_digits",
        "not_an_object",
        "tick_on_account_topic",
        "unknown_type",
        "ignored_event",
        "unknown_topic",
        "invalid_account",
        "invalid_field",
        "missing_field",
    }
    assert set(reasons) == expected
    assert min(count for reason, count in reasons.items() if reason != "oversized") >= 10


def test_every_hostile_message_is_refused_for_its_fault(
    corpus: tuple[list[Message], list[tuple[str, str, bytes, str]]],
) -> None:
    """Each hostile message raises RecordRefused with the reason of the one fault it was given
    and a detail for humans; none is accepted, none raises anything else."""
    _, bad = corpus
    wrong = []
    for what, topic, payload, reason in bad:
        try:
            record = parse_input_message(topic, payload)
        except RecordRefused as exc:
            if exc.reason != reason or not exc.detail:
                wrong.append((what, topic, payload[:120], reason, exc.reason, exc.detail))
        else:
            wrong.append((what, topic, payload[:120], reason, "accepted", repr(record)[:120]))
    assert wrong == []


def test_every_valid_message_gives_exactly_its_record(
    corpus: tuple[list[Message], list[tuple[str, str, bytes, str]]],
) -> None:
    """Valid messages of every kind (records, snapshots, merges, Binance ACCOUNT_UPDATE bare and
    wrapped, asset modes; decimals as strings and as JSON numbers of up to 20 significant
    digits; percent-encoded account names) give the record they describe, numbers exact."""
    valid, _ = corpus
    kinds = Counter(type(m.record).__name__ for m in valid)
    assert len(kinds) == 6
    for message in valid:
        assert parse_input_message(message.topic, message.payload) == message.record


def test_the_account_level_is_percent_decoded() -> None:
    """``binance/a%2Fb`` is the account ``a/b``; an encoded ``%`` is a percent sign, and a
    name with no reserved character is used as it is."""
    event = b'{"e":"ACCOUNT_UPDATE","E":1,"a":{"B":[{"a":"USDT","cw":"1"}],"P":[]}}'
    for name in ["a/b", "50%", "alice", "币安人生", "+#"]:
        record = parse_input_message(f"binance/{level(name)}", event)
        assert isinstance(record, AccountUpdateRecord)
        assert record.account == name
    assert parse_input_message("binance/a%2fb", event).account == "a/b"  # type: ignore[union-attr]


def test_account_update_numbers_are_read_from_their_text() -> None:
    """A Binance ACCOUNT_UPDATE with JSON numbers (not strings) of 20 significant digits: every
    wallet, quantity and price is the decimal written, not the double nearest to it."""
    event = (
        b'{"e":"ACCOUNT_UPDATE","E":1,"a":{"B":[{"a":"USDT","cw":1234567890.1234567891}],'
        b'"P":[{"s":"BTCUSDT","pa":0.12345678901234567891,"ep":61800.123456789012345,'
        b'"mt":"isolated","iw":0.1,"ps":"BOTH"}]}}'
    )
    record = parse_input_message("binance/a", event)
    assert isinstance(record, AccountUpdateRecord)
    assert record.balances == (("USDT", D("1234567890.1234567891")),)
    (position,) = record.positions
    assert (position.qty, position.entry) == (
        D("0.12345678901234567891"),
        D("61800.123456789012345"),
    )
    assert position.isolated_wallet == D("0.1")


def test_a_2_mb_payload_is_refused_before_it_is_read() -> None:
    """A 2 MB payload of bytes that are neither UTF-8 nor JSON is refused as ``oversized`` (not
    ``invalid_utf8``): the size is checked before anything reads it, and at once."""
    started = time.perf_counter()
    with pytest.raises(RecordRefused) as caught:
        parse_input_message("records", b"\xff" * 2_000_000)
    assert caught.value.reason == "oversized"
    assert time.perf_counter() - started < 0.05


def test_nesting_is_measured_without_parsing() -> None:
    """The depth counts brackets outside strings only, so a string full of brackets is shallow
    and a deep array is deep however it is spelled."""
    assert nesting(b'{"a":"[[[[[[[[[[[[[[[[[[","b":[1,{"c":"]]]]"}]}') == 3
    assert nesting(b'{"a":"\\"[[[[[[[[[[[[["}') == 1
    assert nesting(b"[" * 100_000 + b"]" * 100_000) == 100_000
    assert nesting(b"12") == 0


def test_deep_nesting_is_refused_quickly() -> None:
    """A megabyte of ``[`` is refused as too deep in well under a second (no recursion)."""
    started = time.perf_counter()
    with pytest.raises(RecordRefused) as caught:
        parse_input_message("records", b"[" * (MAX_MESSAGE_BYTES - 1))
    assert caught.value.reason == "too_deep"
    assert time.perf_counter() - started < 0.5


def test_ignored_events_are_their_own_kind_of_refusal() -> None:
    """An order update is a MessageIgnored (valid, nothing to apply), not malformed input."""
    with pytest.raises(MessageIgnored):
        parse_input_message("binance/a", b'{"e":"ORDER_TRADE_UPDATE","E":1,"o":{}}')


def test_a_record_reads_the_same_from_mqtt_as_from_a_file(
    corpus: tuple[list[Message], list[tuple[str, str, bytes, str]]],
) -> None:
    """A record on ``in/records`` gives what the same line gives to ``liqmon replay`` (one
    record layer): the input function adds checks, never another reading."""
    valid, _ = corpus
    for message in valid:
        if message.topic == "records":
            assert parse_input_message("records", message.payload) == parse_line(message.payload)


# -- through the engine --------------------------------------------------------------------------


def _engine() -> Engine:
    engine = Engine(EngineConfig(policy="hold"))
    for symbol in SYMBOLS:
        engine.apply(parse_input_message("records", dumps({**CONTRACT, "symbol": symbol}).encode()))
    return engine


def _book(engine: Engine) -> list[object]:
    return [
        *engine.book_states(),
        *(
            (account, asset, engine.balance(account, asset))
            for account in ACCOUNTS
            for asset in ASSETS
        ),
    ]


def test_refused_messages_change_nothing_and_valid_ones_have_exactly_their_effect(
    corpus: tuple[list[Message], list[tuple[str, str, bytes, str]]],
) -> None:
    """The whole corpus, shuffled, through parse and the engine (a refusal of either skips the
    message) leaves the book exactly as the valid records alone, in the same order: no hostile
    message moved anything, and no valid one was lost or changed."""
    valid, bad = corpus
    rng = random.Random(SEED + 1)
    stream: list[tuple[str, bytes]] = [(m.topic, m.payload) for m in valid]
    stream += [(topic, payload) for _, topic, payload, _ in bad]
    rng.shuffle(stream)
    everything, only_valid = _engine(), _engine()
    valid_payloads = {m.payload for m in valid}
    for topic, payload in stream:
        try:
            record = parse_input_message(topic, payload)
        except RecordRefused:
            assert payload not in valid_payloads
            continue
        with_engine(everything, record)
        with_engine(only_valid, record)
    assert _book(everything) == _book(only_valid)
    assert everything.position_count == only_valid.position_count > 0


def with_engine(engine: Engine, record: Record) -> None:
    with contextlib.suppress(RecordRefused):  # the engine refuses it in both runs alike
        engine.apply(record)


def test_out_of_order_snapshots_and_contradictions_are_refused_by_the_engine() -> None:
    """What parses but contradicts the book is refused with a reason, and changes nothing: a
    snapshot older than the last one of the account (``stale_snapshot``), a hedge slot whose
    quantity has the other sign (``qty_side_mismatch``), margin for a position that is not open
    and isolated, a contract redefined under open positions."""
    engine = _engine()

    def snapshot(ts: int, wallet: str) -> bytes:
        body = {"type": "account_snapshot", "ts": ts, "account": "alice"}
        body |= {"balances": [{"asset": "USDT", "wallet": wallet}], "positions": []}
        return dumps(body).encode()

    position = {"type": "position", "ts": 20, "account": "alice", "symbol": "BTCUSDT"}
    position |= {"side": "long", "mode": "cross", "qty": "1", "entry": "100", "leverage": "5"}
    engine.apply(parse_input_message("records", snapshot(10, "500")))
    engine.apply(parse_input_message("records", dumps(position).encode()))
    before = _book(engine)
    refused = {
        "stale_snapshot": snapshot(9, "1"),
        "qty_side_mismatch": dumps({**position, "qty": "-1"}).encode(),
        "margin_not_open_isolated": dumps(
            {"type": "margin", "ts": 21, "account": "alice", "symbol": "BTCUSDT"}
            | {"side": "long", "delta": "5"}
        ).encode(),
        "contract_redefined": dumps({**CONTRACT, "contract_size": "2"}).encode(),
        "unknown_symbol": dumps({**position, "symbol": "NOPEUSDT"}).encode(),
    }
    for reason, payload in refused.items():
        with pytest.raises(RecordRejected) as caught:
            engine.apply(parse_input_message("records", payload))
        assert caught.value.reason == reason
        assert _book(engine) == before
    assert engine.balance("alice", "USDT") == D(500)
