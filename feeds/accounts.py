"""Binance user-data ``ACCOUNT_UPDATE`` and ``ACCOUNT_CONFIG_UPDATE`` messages as account records.

Binance pushes ``ACCOUNT_UPDATE`` on the futures user-data stream whenever balances or positions
change; it lists only what changed, so liqmon merges it (an :class:`AccountUpdateRecord` with
``replace=False``, applied atomically)::

    {"e": "ACCOUNT_UPDATE", "E": 1564745798939, "T": 1564745798938,
     "a": {"m": "ORDER",
           "B": [{"a": "USDT", "wb": "122624.12", "cw": "100.12", "bc": "50.12"}],
           "P": [{"s": "BTCUSDT", "pa": "0", "ep": "0.0", "bep": "0", "cr": "200",
                  "up": "0", "mt": "isolated", "iw": "0.0", "ps": "BOTH"}]}}

Mapping: ``E`` (event time) is ``ts``; a balance's cross wallet ``cw`` is the wallet backing
cross positions (``wb`` includes isolated margin); a position's ``pa`` is the signed quantity,
``ep`` the entry, ``mt`` the margin type, ``iw`` the isolated wallet, ``ps`` the slot
(``BOTH``/``LONG``/``SHORT``). The message does not name the account (the user-data stream is
per account) nor the leverage: the account comes from where the message was received, and an
updated position keeps its previous leverage. The combined-stream wrapper ``{"stream", "data"}``
is accepted.

A multi-assets account's ``ACCOUNT_UPDATE`` lists several wallets (USDT, USDC, BTC, ...) in one
message: they become one record, applied at once (docs/collateral.md).

``ACCOUNT_CONFIG_UPDATE`` with ``ai`` reports the account's Multi-Assets Mode (``j``) and
becomes an ``asset_mode`` record at ``E``; with ``ac`` it reports a symbol's leverage, which
the margin math does not use, and becomes nothing::

    {"e":"ACCOUNT_CONFIG_UPDATE","E":1611646737479,"T":1611646737476,"ai":{"j":true}}
    {"e":"ACCOUNT_CONFIG_UPDATE","E":1611646737479,"T":1611646737476,"ac":{"s":"BTCUSDT","l":25}}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from feeds.normalized import ExactDecimal, Timestamp, malformed
from monitor.errors import MalformedRecord
from monitor.records import AccountUpdateRecord, AssetModeRecord, PositionRecord

_SIDES = {"BOTH": "both", "LONG": "long", "SHORT": "short"}
USER_DATA_EVENTS = frozenset(
    {
        "ACCOUNT_UPDATE",
        "ACCOUNT_CONFIG_UPDATE",
        "ORDER_TRADE_UPDATE",
        "TRADE_LITE",
        "MARGIN_CALL",
        "listenKeyExpired",
        "STRATEGY_UPDATE",
        "GRID_UPDATE",
        "CONDITIONAL_ORDER_TRIGGER_REJECT",
        "ALGO_UPDATE",
    }
)
"""The events of Binance's USDⓈ-M user-data stream; only the first two change what liqmon
knows of an account."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Balance(_Model):
    a: Annotated[str, Field(min_length=1, max_length=64)]
    cw: ExactDecimal


class _Position(_Model):
    s: Annotated[str, Field(min_length=1, max_length=256)]
    pa: ExactDecimal
    ep: ExactDecimal
    mt: Literal["isolated", "cross"]
    iw: ExactDecimal = Decimal(0)
    ps: Literal["BOTH", "LONG", "SHORT"]


class _Update(_Model):
    B: list[_Balance] = Field(default_factory=list, max_length=1_000)
    P: list[_Position] = Field(default_factory=list, max_length=10_000)


class AccountUpdateIn(_Model):
    """A Binance user-data ``ACCOUNT_UPDATE`` (only the fields liqmon reads)."""

    e: Literal["ACCOUNT_UPDATE"]
    E: Timestamp
    a: _Update


class _AssetConfig(_Model):
    j: StrictBool


class AccountConfigIn(_Model):
    """A Binance user-data ``ACCOUNT_CONFIG_UPDATE`` (only the fields liqmon reads)."""

    e: Literal["ACCOUNT_CONFIG_UPDATE"]
    E: Timestamp
    ai: _AssetConfig | None = None


def _unwrapped(message: Any) -> Any:
    if isinstance(message, dict) and "data" in message and "stream" in message:
        return message["data"]
    return message


def parse_account_config(message: Any, account: str) -> AssetModeRecord | None:
    """The ``asset_mode`` record of a decoded ``ACCOUNT_CONFIG_UPDATE`` of ``account``, or
    ``None`` when it reports no Multi-Assets Mode (a leverage change); raises
    :class:`MalformedRecord` when it is not one."""
    try:
        config = AccountConfigIn.model_validate(_unwrapped(message))
    except ValidationError as exc:
        raise malformed(exc, "ACCOUNT_CONFIG_UPDATE") from None
    if config.ai is None:
        return None
    return AssetModeRecord(config.E, account, config.ai.j)


def parse_user_data(message: Any, account: str) -> AccountUpdateRecord | AssetModeRecord | None:
    """The record of a decoded Binance user-data event of ``account``: ``ACCOUNT_UPDATE`` or
    ``ACCOUNT_CONFIG_UPDATE`` (``None`` for a leverage change); any other message is a
    :class:`MalformedRecord`."""
    event = _unwrapped(message)
    kind = event.get("e") if isinstance(event, dict) else None
    if kind == "ACCOUNT_CONFIG_UPDATE":
        return parse_account_config(event, account)
    return parse_account_update(event, account)


def parse_account_update(message: Any, account: str) -> AccountUpdateRecord:
    """A record from a decoded ``ACCOUNT_UPDATE`` of ``account``; raises
    :class:`MalformedRecord` when it is not one."""
    try:
        update = AccountUpdateIn.model_validate(_unwrapped(message))
    except ValidationError as exc:
        raise malformed(exc, "ACCOUNT_UPDATE") from None
    ts = update.E
    assets = [b.a for b in update.a.B]
    if len(set(assets)) != len(assets):
        raise MalformedRecord("invalid_field", "ACCOUNT_UPDATE a.B: an asset appears twice")
    slots = [(p.s, p.ps) for p in update.a.P]
    if len(set(slots)) != len(slots):
        raise MalformedRecord(
            "invalid_field", "ACCOUNT_UPDATE a.P: a slot (symbol, side) appears twice"
        )
    positions = []
    for p in update.a.P:
        side = _SIDES[p.ps]
        if p.pa != 0 and p.ep <= 0:
            raise MalformedRecord("invalid_field", f"ACCOUNT_UPDATE {p.s}: entry must be positive")
        positions.append(
            PositionRecord(
                ts,
                account,
                p.s,
                side,  # type: ignore[arg-type]  # one of the three literals
                p.mt,
                p.pa,
                p.ep,
                Decimal(0),  # not reported: the engine keeps the previous leverage
                p.iw if p.mt == "isolated" else None,
            )
        )
    return AccountUpdateRecord(
        ts,
        account,
        tuple((b.a, b.cw) for b in update.a.B),
        tuple(positions),
        replace=False,
    )
