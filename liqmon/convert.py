"""``liqmon convert``: exchange account states as normalized records, and the book as JSON.

``liqmon convert hyperliquid --state FILE [--meta FILE] [--account NAME]`` reads a saved
``clearinghouseState`` response (see :mod:`feeds.hyperliquid_state`) and prints, one JSON
object per line (``feeds.normalized``):

1. the contracts: every asset of ``--meta`` when given (its margin tiers), and for each
   position not in it a single tier at the state's own ``maxLeverage``;
2. one tick per position's coin at the mark the state implies (``positionValue / |szi|``),
   stamped with the state's ``time``;
3. the account snapshot (stamped the same), after the ticks so that it is valued at those
   marks at once (not at the entries first).

``liqmon replay`` of that output then shows liqmon's liquidation price of every position,
which for a current state is the exchange's ``liquidationPx``.

:func:`book_payloads` is the final book of a replay (``--book-json``): one retained-state
payload per open entity (``alerts.encoding.state_payload``), in canonical order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from alerts.encoding import state_payload
from feeds.hyperliquid_state import AccountState, parse_meta, parse_state, snapshot
from monitor.engine import Engine
from monitor.errors import MalformedRecord
from monitor.records import ContractRecord, Record, TickRecord

DEFAULT_ACCOUNT = "hyperliquid"


def mark_text(mark: Decimal) -> str:
    """A mark as plain decimal text (no exponent), as a tick carries it."""
    return format(mark.normalize(), "f")


@dataclass
class Converted:
    """The records of one state, and what the conversion noticed."""

    records: list[Record] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    state: AccountState | None = None


def unwrap_state(obj: object) -> tuple[object, str | None, str | None]:
    """``(state, user, dex)`` of a bare ``clearinghouseState`` response or of the websocket
    subscription's ``{"dex", "user", "clearinghouseState"}`` wrapper."""
    if type(obj) is dict and type(obj.get("clearinghouseState")) is dict:
        user, dex = obj.get("user"), obj.get("dex")
        return (
            obj["clearinghouseState"],
            user if type(user) is str else None,
            dex if type(dex) is str else None,
        )
    return obj, None, None


def hyperliquid_records(
    state_obj: object,
    meta_obj: object | None = None,
    *,
    account: str | None = None,
    dex: str | None = None,
    ts: int | None = None,
) -> Converted:
    """The normalized records of a ``clearinghouseState`` (see the module docstring).

    Raises :class:`MalformedRecord` when the state (or the meta) cannot be read.
    """
    out = Converted()
    inner, user, wrapped_dex = unwrap_state(state_obj)
    state = parse_state(inner, dex if dex is not None else wrapped_dex)
    out.state = state
    account = account or user or DEFAULT_ACCOUNT
    stamp = ts if ts is not None else state.time_ms
    if stamp is None:
        stamp = 0
        out.warnings.append("the state has no time: its records are stamped 0 (use --ts)")
    contracts = {}
    if meta_obj is not None:
        meta = parse_meta(meta_obj)
        if meta.dex != state.dex and state.positions:
            raise MalformedRecord(
                "invalid_field", f"the meta is of dex {meta.dex!r}, the state of {state.dex!r}"
            )
        contracts = meta.by_symbol
    for position in state.positions:
        if position.coin not in contracts:
            contracts[position.coin] = position.contract_from_state(state.dex)
            if meta_obj is not None:
                out.warnings.append(
                    f"{position.coin} is not in the meta: one tier at its maxLeverage "
                    f"{position.max_leverage}"
                )
    for contract in contracts.values():
        out.records.append(ContractRecord(contract))
        out.warnings.extend(contract.warnings)
    for coin, mark in state.marks().items():
        text = mark_text(mark)
        out.records.append(TickRecord(stamp, coin, float(text), text))
    out.records.append(snapshot(account, stamp, [state]))
    return out


def book_payloads(engine: Engine) -> list[dict[str, Any]]:
    """Every open entity as its retained state payload (the ``--book-json`` document)."""
    return [state_payload(event) for event in engine.book_states()]
