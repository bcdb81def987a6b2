"""A readable rendering of events for terminals (colours when the stream is a TTY).

Each event is a headline (time in UTC, entity, what happened, the numbers); warnings and
liquidations add one indented line with the positions and their liquidation and bankruptcy
prices.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from monitor.events import (
    EngineEvent,
    MarginRecovered,
    MarginWarningRaised,
    PositionView,
)

_RESET = "\033[0m"
_COLOURS = {
    "margin_warning": "\033[33m",  # yellow
    "margin_recovered": "\033[32m",  # green
    "liquidation": "\033[1;31m",  # bold red
}


def format_time(ts_ms: int) -> str:
    """``2021-11-15 06:00:00.000Z`` (UTC) for an exchange timestamp in milliseconds."""
    moment = datetime.fromtimestamp(ts_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude != 0 and magnitude < 1:
        return f"{value:.6g}"
    return f"{value:,.{digits}f}"


def _price(value: float | None) -> str:
    """Prices keep six significant digits (XRP at 1.20932, BTC at 61,800.3)."""
    if value is None:
        return "—"
    return f"{value:,.2f}" if abs(value) >= 100_000 else f"{value:,.6g}"


def _ratio(value: float | None) -> str:
    return "n/a (MB≤0)" if value is None else f"{value * 100:.1f}%"


def _position(p: PositionView) -> str:
    return (
        f"{p.symbol} {p.side} {p.qty:g} @ {_price(p.entry)} mark {_price(p.mark)} "
        f"liq {_price(p.liquidation_price)} bkr {_price(p.bankruptcy_price)}"
    )


def render(event: EngineEvent) -> str:
    """The event for a human: a headline, plus a positions line for warnings and liquidations."""
    head = f"{format_time(event.ts)}  {event.entity.label()}"
    asset = event.entity.asset
    if isinstance(event, MarginWarningRaised):
        body = (
            f"WARNING  level {event.level:g}  ratio {_ratio(event.margin_ratio)}  "
            f"MB {_num(event.margin_balance)} MM {_num(event.maintenance_margin)} {asset}"
        )
        detail = "; ".join(_position(p) for p in event.positions)
    elif isinstance(event, MarginRecovered):
        body = (
            f"RECOVERED  ratio {_ratio(event.margin_ratio)}  "
            f"MB {_num(event.margin_balance)} MM {_num(event.maintenance_margin)} {asset}"
        )
        detail = ""
    else:
        body = (
            f"LIQUIDATED  loss {_num(event.loss)} {asset}  "
            f"shortfall {_num(event.shortfall)} {asset}  ratio {_ratio(event.margin_ratio)}"
        )
        detail = "; ".join(_position(p) for p in event.positions)
    return f"{head}  {body}" + (f"\n    {detail}" if detail else "")


class ConsoleSink:
    """Renders events for a human reading a terminal."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self._stream = stream
        self._colour = stream.isatty() if colour is None else colour

    async def publish(self, event: EngineEvent) -> None:
        text = render(event)
        if self._colour:
            text = f"{_COLOURS[event.kind]}{text}{_RESET}"
        self._stream.write(text + "\n")
        self._stream.flush()

    async def flush(self) -> None:
        self._stream.flush()

    async def close(self) -> None:
        self._stream.flush()
