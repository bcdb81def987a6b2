"""Binance user-data ``ACCOUNT_UPDATE`` messages as account records.

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
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feeds.normalized import ExactDecimal, Timestamp
from monitor.errors import MalformedRecord
from monitor.records import AccountUpdateRecord, PositionRecord

_SIDES = {"BOTH": "both", "LONG": "long", "SHORT": "short"}


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


def parse_account_update(message: Any, account: str) -> AccountUpdateRecord:
    """A record from a decoded ``ACCOUNT_UPDATE`` of ``account``; raises
    :class:`MalformedRecord` when it is not one."""
    if isinstance(message, dict) and "data" in message and "stream" in message:
        message = message["data"]
    try:
        update = AccountUpdateIn.model_validate(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        reason = "missing_field" if first["type"] == "missing" else "invalid_field"
        raise MalformedRecord(reason, f"ACCOUNT_UPDATE {where}: {first['msg']}") from None
    ts = update.E
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
