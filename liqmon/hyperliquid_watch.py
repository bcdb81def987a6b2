"""Watched Hyperliquid accounts for ``liqmon run --feed hyperliquid --watch ADDRESS,...``.

:class:`HyperliquidWatch` turns what :func:`feeds.hyperliquid_info.poll` fetches into engine
records: each dex's ``meta`` into contracts (when it changed), each address's states into one
``account_snapshot`` (account = the address, lower case; one margin asset per dex, see
:mod:`feeds.hyperliquid_state`). The service puts them on its queue like any account input.

It also keeps the exchange's own ``liquidationPx`` of every watched position beside liqmon's:

* :meth:`position_extras` gives the retained state its ``exchange_liquidation_price``;
* every polled state is valued by liqmon's engine at the marks the state itself implies (a
  scratch engine: the contracts, a tick per coin, the snapshot), which is the like-for-like
  comparison: the live book is valued at the feed's marks, which are never exactly the state's.
  Where liqmon's price and the exchange's differ by more than 1e-6 relative (or one is null and
  the other not), the exchange's rules changed or liqmon is wrong: one warning is logged when a
  position starts to disagree (and one line when it agrees again), never one per poll, and
  ``liqmon_liquidation_price_disagreements_total`` counts the starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from decimal import Decimal
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from feeds.hyperliquid_info import InfoFailed, MetaFetched, StatesFetched, WatchSpec, poll
from feeds.hyperliquid_state import AccountState, snapshot
from liqmon.convert import book_payloads, mark_text
from monitor.config import EngineConfig
from monitor.contracts import Contract
from monitor.engine import Engine
from monitor.errors import RecordRefused
from monitor.events import EntityRef, PositionView
from monitor.records import AccountUpdateRecord, ContractRecord, Record

log = structlog.get_logger("liqmon.hyperliquid")

TOLERANCE = 1e-6
_SCRATCH = EngineConfig.from_values("0.7,0.8,0.9", "0.05", "hold")

Key = tuple[str, str]  # (account, symbol)


def liqmon_liquidation_prices(
    account: str, states: tuple[AccountState, ...], contracts: Mapping[str, Contract]
) -> dict[str, float | None]:
    """liqmon's liquidation price of every position of ``states``, valued at the marks the
    states imply (contracts from ``contracts``, else from each state's ``maxLeverage``)."""
    engine = Engine(_SCRATCH)
    ts = max((s.time_ms or 0 for s in states), default=0)
    for state in states:
        for position in state.positions:
            contract = contracts.get(position.coin) or position.contract_from_state(state.dex)
            engine.apply(ContractRecord(contract))
            text = mark_text(position.mark)
            engine.apply_tick(position.coin, float(text), text, ts)
    engine.apply(snapshot(account, ts, states))
    return {
        p["symbol"]: p["liquidation_price"]
        for entity in book_payloads(engine)
        for p in entity["positions"]
    }


def disagree(ours: float | None, theirs: float | None) -> bool:
    """Beyond 1e-6 relative, or exactly one of them null."""
    if ours is None or theirs is None:
        return (ours is None) != (theirs is None)
    return abs(ours - theirs) > TOLERANCE * abs(theirs)


class HyperliquidWatch:
    """See the module docstring. ``registry`` receives its metrics."""

    def __init__(self, spec: WatchSpec, registry: CollectorRegistry) -> None:
        self.spec = spec
        self.contracts: dict[str, Contract] = {}
        self.exchange: dict[Key, float | None] = {}
        self.liqmon: dict[Key, float | None] = {}
        self.disagreeing: set[Key] = set()
        self.polls = Counter(
            "liqmon_hyperliquid_polls",
            "Info requests to Hyperliquid, by request kind and outcome",
            ["request", "outcome"],
            registry=registry,
        )
        self.disagreements = Counter(
            "liqmon_liquidation_price_disagreements",
            "Times a watched position's liquidation price started to differ from the "
            "exchange's by more than 1e-6 relative",
            registry=registry,
        )
        self.disagreeing_now = Gauge(
            "liqmon_liquidation_price_disagreeing",
            "Watched positions whose liquidation price differs from the exchange's now",
            registry=registry,
        )

    async def records(self) -> AsyncIterator[Record]:
        """The records of every poll, for as long as the caller iterates."""
        async with aclosing(poll(self.spec)) as updates:
            async for update in updates:
                for record in self.handle(update):
                    yield record

    def handle(self, update: MetaFetched | StatesFetched | InfoFailed) -> list[Record]:
        """The records one poll result gives (and the bookkeeping of the comparison)."""
        if isinstance(update, InfoFailed):
            self.polls.labels(update.request.split(" ", 1)[0], update.reason).inc()
            return []
        if isinstance(update, MetaFetched):
            self.polls.labels("meta", "ok").inc()
            changed = [
                c for c in update.meta.contracts if self.contracts.get(c.symbol) != c
            ]  # fmt: skip
            self.contracts.update((c.symbol, c) for c in update.meta.contracts)
            log.info("hyperliquid_meta", dex=update.meta.dex, assets=len(update.meta.names),
                     changed=len(changed))  # fmt: skip
            return [ContractRecord(c) for c in changed]
        self.polls.labels("clearinghouseState", "ok").inc()
        return [self._states(update)]

    def _states(self, update: StatesFetched) -> AccountUpdateRecord:
        account = update.address
        record = snapshot(account, update.time_ms, update.states)
        for key in [k for k in self.exchange if k[0] == account]:
            del self.exchange[key]
            self.liqmon.pop(key, None)
        try:
            ours = liqmon_liquidation_prices(account, update.states, self.contracts)
        except RecordRefused as exc:  # a state the engine refuses: the snapshot will say why
            log.warning("liquidation_check_failed", account=account, reason=exc.reason)
            ours = {}
        for state in update.states:
            for coin, price in state.exchange_liquidation().items():
                key = (account, coin)
                theirs = _float(price)
                self.exchange[key] = theirs
                self.liqmon[key] = ours.get(coin)
                self._compare(key, ours.get(coin), theirs)
        for key in [k for k in self.disagreeing if k not in self.exchange]:
            self.disagreeing.discard(key)  # the position is gone
        self.disagreeing_now.set(len(self.disagreeing))
        return record

    def _compare(self, key: Key, ours: float | None, theirs: float | None) -> None:
        account, symbol = key
        if disagree(ours, theirs):
            if key not in self.disagreeing:
                self.disagreeing.add(key)
                self.disagreements.inc()
                relative = None if ours is None or theirs is None else (ours - theirs) / theirs
                log.warning(
                    "liquidation_price_disagrees",
                    account=account,
                    symbol=symbol,
                    liqmon=ours,
                    exchange=theirs,
                    relative=relative,
                )
        elif key in self.disagreeing:
            self.disagreeing.discard(key)
            log.info("liquidation_price_agrees", account=account, symbol=symbol, exchange=theirs)

    def position_extras(self, entity: EntityRef, position: PositionView) -> dict[str, Any]:
        """``{"exchange_liquidation_price": ...}`` for a watched position, else nothing."""
        key = (entity.account, position.symbol)
        if key not in self.exchange:
            return {}
        return {"exchange_liquidation_price": self.exchange[key]}


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
