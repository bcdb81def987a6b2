"""The account input topics: one parser for every message that arrives on them."""

from __future__ import annotations

from urllib.parse import unquote

from feeds.accounts import parse_user_data
from feeds.normalized import decode, parse_line
from monitor.errors import MalformedRecord, RecordRejected
from monitor.records import Record, TickRecord


def parse_input(topic: str, payload: bytes) -> Record | None:
    """An input message as a record (``None``: nothing to apply), or :class:`RecordRefused`.
    ``records`` takes normalized account records (never a tick: the account channel cannot
    move prices); ``binance/{account}`` takes Binance user-data events of that account (the
    account percent-decoded)."""
    if topic == "records":
        record = parse_line(payload)
        if isinstance(record, TickRecord):
            raise RecordRejected(
                "tick_on_account_topic", "ticks come from the feed, not the account channel"
            )
        return record
    if topic.startswith("binance/"):
        try:
            account = unquote(topic.removeprefix("binance/"), errors="strict")
        except UnicodeDecodeError:
            raise MalformedRecord("invalid_account", "the topic's account is not UTF-8") from None
        return parse_user_data(decode(payload), account)
    raise RecordRejected("unknown_topic", f"no input topic {topic!r}")
