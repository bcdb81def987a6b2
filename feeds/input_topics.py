"""The account input topics: one parser for every message that arrives on them."""

from __future__ import annotations

from feeds.input_messages import parse_input_message
from monitor.errors import MessageIgnored
from monitor.records import Record


def parse_input(topic: str, payload: bytes) -> Record | None:
    """An input message as a record (``None``: nothing to apply), or :class:`RecordRefused`.
    ``records`` takes normalized account records (never a tick: the account channel cannot
    move prices); ``binance/{account}`` takes Binance user-data events of that account (the
    account percent-decoded). Every check is :func:`feeds.input_messages.parse_input_message`'s;
    a user-data event that changes no account state (a leverage change, an order update) is
    nothing to apply."""
    try:
        return parse_input_message(topic, payload)
    except MessageIgnored:
        return None
