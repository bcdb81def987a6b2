"""One MQTT account-input message to one record, or the reason it is refused.

The trading system publishes account state to ``{prefix}/in/records`` (one normalized record
per message) and Binance user-data events to ``{prefix}/in/binance/{account}`` (``asyncapi.yaml``,
``docs/records.md``). These topics are open to whatever can publish to the broker, so
:func:`parse_input_message` assumes nothing of a message: it is pure (bytes in, a record or a
:class:`~monitor.errors.RecordRefused` out), bounded in time and memory by the size limit, never
recursive on the input, and it reads every number exactly from its text. It applies nothing: the
engine decides whether a valid record applies (``stale_snapshot``, ``unknown_symbol``, ...).

Checks, in order; each refusal is a :class:`~monitor.errors.MalformedRecord` (or
:class:`~monitor.errors.MessageIgnored`) with its own reason:

``unknown_topic``          the topic is neither ``records`` nor ``binance/{account}`` (one level)
``invalid_account``        the ``{account}`` level is empty, over 256 characters, holds control
                           (or other non-printable) characters, or is not valid percent-encoded
                           UTF-8 (it is percent-decoded: ``a%2Fb`` is the account ``a/b``); on
                           ``records``, the same rule for the record's ``account``
``oversized``              the payload is over :data:`MAX_MESSAGE_BYTES` (1 MiB): refused unread
``invalid_utf8``           the payload is not UTF-8
``too_deep``               arrays and objects nested deeper than :data:`MAX_DEPTH`
``non_finite_number``      a ``NaN``, ``Infinity`` or ``-Infinity`` literal (or such a string
                           where a decimal belongs)
``number_out_of_range``    a number beyond a double (``1e400``, a 400-digit integer) or, where a
                           decimal belongs, outside ``[1e-30, 1e30)`` in magnitude
``invalid_json``           anything else that is not strict JSON (RFC 8259)
``not_an_object``          valid JSON, not an object
``non_ascii_digits``       a decimal string with digits of another script (``"١٢"``, ``"１２"``)
``tick_on_account_topic``  a ``tick`` on ``records``: the account channel never moves a price
``unknown_type``           ``records``: a ``type`` that is not an account record;
                           ``binance/...``: not a Binance user-data event
``ignored_event``          ``binance/...``: a user-data event that changes no account state (an
                           order update, a leverage change): :class:`MessageIgnored`

and the record parser's own (``missing_field``, ``invalid_field``, ``invalid_brackets``, ...).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_to_bytes

import numpy as np
import orjson

from feeds.accounts import USER_DATA_EVENTS, parse_user_data
from feeds.normalized import holds_float, parse_object
from monitor.errors import MalformedRecord, MessageIgnored
from monitor.records import Record

MAX_MESSAGE_BYTES = 1 << 20
"""Larger payloads are refused before anything reads them (a snapshot of 10,000 positions is
about 1.3 MB written compactly; nothing else comes near)."""
MAX_DEPTH = 8
"""The deepest legitimate message, a wrapped ``ACCOUNT_UPDATE``, nests 5 levels."""
MAX_ACCOUNT_CHARS = 256
RECORDS = "records"
BINANCE = "binance/"
ACCOUNT_RECORD_TYPES = frozenset(
    {
        "balance",
        "position",
        "margin",
        "contract",
        "account_snapshot",
        "account_update",
        "asset_mode",
        "collateral",
    }
)
"""What ``records`` carries: every normalized record but ``tick``."""
_ACCOUNT_EVENTS = ("ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE")
_MAX_INTEGER_DIGITS = 400
"""An integer this long is already beyond a double; Python's ``int()`` refuses 4,300 digits."""
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def parse_input_message(topic_suffix: str, payload: bytes) -> Record:
    """The record of one input message; raises :class:`~monitor.errors.RecordRefused` (see the
    module docstring). ``topic_suffix`` is the topic after ``{prefix}/in/``."""
    if topic_suffix == RECORDS:
        account = None
    elif topic_suffix.startswith(BINANCE) and "/" not in topic_suffix[len(BINANCE) :]:
        account = account_of_level(topic_suffix[len(BINANCE) :])
    else:
        raise MalformedRecord("unknown_topic", f"no input topic in/{topic_suffix[:200]}")
    message = decode_message(payload)
    if type(message) is not dict:
        raise MalformedRecord("not_an_object", f"a JSON {type(message).__name__}, not an object")
    if account is None:
        return _record(message)
    return _user_data(message, account)


def account_of_level(level: str) -> str:
    """The account named by one percent-encoded topic level (``invalid_account`` if none)."""
    if "%" in level and re.search(r"%(?![0-9A-Fa-f]{2})", level):
        raise MalformedRecord("invalid_account", f"malformed percent-encoding in {level[:80]!r}")
    try:
        account = unquote_to_bytes(level).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRecord(
            "invalid_account", f"{level[:80]!r} is not percent-encoded UTF-8"
        ) from None
    check_account(account)
    return account


def check_account(account: str) -> None:
    """An account name: 1 to 256 characters, all printable (no control, format or line
    separator characters, which would garble logs, consoles and dashboards)."""
    if not account:
        raise MalformedRecord("invalid_account", "the account name is empty")
    if len(account) > MAX_ACCOUNT_CHARS:
        raise MalformedRecord(
            "invalid_account", f"an account name of {len(account)} characters (at most 256)"
        )
    if not account.isprintable():
        raise MalformedRecord(
            "invalid_account", f"the account name {account[:80]!r} has control characters"
        )


def decode_message(payload: bytes) -> object:
    """The JSON value of a payload with every number exact (fractions and exponents as
    :class:`~decimal.Decimal`), or the envelope's reason for refusing it."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedRecord(
            "oversized", f"a message of {len(payload)} bytes (at most {MAX_MESSAGE_BYTES})"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRecord("invalid_utf8", f"not UTF-8 at byte {exc.start}") from None
    depth = nesting(payload)
    if depth > MAX_DEPTH:
        raise MalformedRecord("too_deep", f"nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _why_not_json(text, exc) from None
    if holds_float(value):
        value = json.loads(text, parse_float=Decimal)  # valid and shallow: safe to re-read
    return value


def nesting(payload: bytes) -> int:
    """How deep arrays and objects nest in ``payload``, brackets inside strings not counted
    (exact for valid JSON), without parsing it."""
    skeleton = _STRINGS.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if not skeleton:
        return 0
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = np.where((codes == 0x5B) | (codes == 0x7B), 1, -1)
    return int(np.cumsum(steps).max())


class _NonFinite(ValueError):
    pass


class _HugeInteger(ValueError):
    pass


def _non_finite(token: str) -> object:
    raise _NonFinite(token)


def _integer(text: str) -> int:
    if len(text) > _MAX_INTEGER_DIGITS:
        raise _HugeInteger(text)
    return int(text)


def _why_not_json(text: str, error: orjson.JSONDecodeError) -> MalformedRecord:
    """Why orjson refused a shallow, UTF-8 payload. Python's decoder also reads ``NaN`` and
    ``Infinity`` and numbers beyond a double, which orjson refuses; it tells them apart."""
    try:
        decoded = json.loads(
            text, parse_constant=_non_finite, parse_float=Decimal, parse_int=_integer
        )
    except _NonFinite as exc:
        return MalformedRecord("non_finite_number", f"{exc} is not a JSON number")
    except _HugeInteger:
        return MalformedRecord("number_out_of_range", "an integer beyond the range of a double")
    except ValueError:  # json.JSONDecodeError: orjson's message is as good
        return MalformedRecord("invalid_json", str(error)[:120])
    if _has_lone_surrogate(decoded):
        return MalformedRecord("invalid_json", "a string holds a lone surrogate escape")
    return MalformedRecord("number_out_of_range", "a number beyond the range of a double")


def _has_lone_surrogate(value: object) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _record(message: dict[str, Any]) -> Record:
    kind = message.get("type")
    if kind == "tick":
        raise MalformedRecord(
            "tick_on_account_topic", "marks come from the feed, never from the account input"
        )
    if type(kind) is not str or kind not in ACCOUNT_RECORD_TYPES:
        raise MalformedRecord("unknown_type", f"no account record of type {str(kind)[:80]!r}")
    account = message.get("account")
    if type(account) is str:
        check_account(account)
    return parse_object(message)


def _user_data(message: dict[str, Any], account: str) -> Record:
    event = message
    if "data" in message and "stream" in message:
        event = message["data"]
    kind = event.get("e") if type(event) is dict else None
    if type(kind) is not str or kind not in USER_DATA_EVENTS:
        raise MalformedRecord("unknown_type", f"not a Binance user-data event: {str(kind)[:80]!r}")
    if kind not in _ACCOUNT_EVENTS:
        raise MessageIgnored("ignored_event", f"the event {kind} changes no account state")
    record = parse_user_data(message, account)
    if record is None:
        raise MessageIgnored("ignored_event", "an ACCOUNT_CONFIG_UPDATE of a leverage only")
    return record
