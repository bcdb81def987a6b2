"""A readable rendering of events for terminals (colours when the stream is a TTY).

Each event is a headline (time in UTC, entity, what happened, the numbers); warnings and
liquidations add one indented line with the positions and their liquidation and bankruptcy
prices. Rendering works on the wire payload (``docs/alerts.md``), so the same code prints events
from the engine and events received over MQTT (``liqmon tail``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from alerts.sink import OutputEvent
from alerts.topics import ALERT_KINDS
from feeds.health import FeedEvent
from monitor.events import AlertEvent, StateEvent, to_payload
from monitor.notices import Notice

_RESET = "\033[0m"
_COLOURS = {
    "margin_warning": "\033[33m",  # yellow
    "margin_recovered": "\033[32m",  # green
    "liquidation": "\033[1;31m",  # bold red
    "feed_stale": "\033[35m",  # magenta
    "input_rejected": "\033[35m",
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


def _label(p: Mapping[str, Any]) -> str:
    if p["scope"] == "cross":
        return f"{p['account']} cross {p['asset']}"
    if p["scope"] == "pool":
        return f"{p['account']} pool (USD)"
    return f"{p['account']} {p['symbol']} {p['side']} isolated"


def _positions(p: Mapping[str, Any]) -> str:
    return "; ".join(
        f"{q['symbol']} {q['side']} {q['qty']:g} @ {_price(q['entry'])} mark {_price(q['mark'])} "
        f"liq {_price(q['liquidation_price'])} bkr {_price(q['bankruptcy_price'])}"
        for q in p.get("positions", ())
    )


def render_notice(p: Mapping[str, Any]) -> str:
    """A feed health event or a service notice (``docs/alerts.md``) in one line."""
    head = format_time(p["ts"])
    kind = p["event"]
    if kind == "feed_stale":
        return (
            f"{head}  FEED STALE  {p['venue']} {p['symbol']}: no mark for "
            f"{p['stale_ms'] / 1000:g} s (last {_price(p.get('last_mark'))})"
        )
    if kind == "feed_recovered":
        return (
            f"{head}  FEED RECOVERED  {p['venue']} {p['symbol']} after "
            f"{p['stale_ms'] / 1000:g} s at {_price(p.get('mark'))}"
        )
    if kind == "input_rejected":
        where = p.get("topic") or (f"line {p['line']}" if p.get("line") is not None else "")
        return f"{head}  REJECTED  {p['source']} {where}: {p['reason']} ({p['detail']})"
    if kind == "service_started":
        return f"{head}  STARTED  {p['instance']}: {p['summary']}"
    if kind == "service_stopped":
        return f"{head}  STOPPED  {p['instance']} ({p['reason']})"
    return f"{head}  {str(kind).upper()}"


def render_payload(p: Mapping[str, Any]) -> str:
    """An event payload (``docs/alerts.md``) for a human: for an alert a headline, plus a
    positions line for warnings and liquidations; feed health events and service notices in
    one line (:func:`render_notice`)."""
    if p["event"] not in ALERT_KINDS:
        return render_notice(p)
    head = f"{format_time(p['ts'])}  {_label(p)}"
    asset = p["asset"]
    margins = f"MB {_num(p['margin_balance'])} MM {_num(p['maintenance_margin'])} {asset}"
    kind = p["event"]
    if kind == "margin_warning":
        body = f"WARNING  level {p['level']:g}  ratio {_ratio(p['margin_ratio'])}  {margins}"
    elif kind == "margin_recovered":
        body = f"RECOVERED  ratio {_ratio(p['margin_ratio'])}  {margins}"
    elif kind == "liquidation":
        body = (
            f"LIQUIDATED  loss {_num(p['loss'])} {asset}  "
            f"shortfall {_num(p['shortfall'])} {asset}  ratio {_ratio(p['margin_ratio'])}"
        )
    else:
        body = kind.upper()
    detail = _positions(p)
    text = f"{head}  {body}" + (f"\n    {detail}" if detail else "")
    breakdown = _assets(p)
    return text + (f"\n    {breakdown}" if breakdown else "")


def _assets(p: Mapping[str, Any]) -> str:
    """A pool's equity by asset: ``BTC 0.1 → 5,415.00 USD (@ 57,000 −5%)``."""
    return "; ".join(
        f"{a['asset']} {_num(a['equity'], 6)} → {_num(a['value'])} USD "
        f"(@ {_price(a['price'])}" + (f" −{a['haircut'] * 100:g}%" if a["haircut"] else "") + ")"
        for a in p.get("assets", ())
    )


def render_state(p: Mapping[str, Any]) -> str:
    """A retained state payload (see ``alerts.schema.StatePayload``) in one line."""
    level = "—" if p.get("level") is None else f"{p['level']:g}"
    flag = "  LIQUIDATING" if p.get("liquidating") else ""
    return (
        f"{format_time(p['ts'])}  {_label(p)}  state: level {level}  "
        f"ratio {_ratio(p['margin_ratio'])}  MB {_num(p['margin_balance'])} "
        f"MM {_num(p['maintenance_margin'])} {p['asset']}{flag}"
    )


def render(event: AlertEvent | FeedEvent | Notice) -> str:
    """An alert, feed health event or notice for a human (see :func:`render_payload`)."""
    if isinstance(event, AlertEvent):
        return render_payload(to_payload(event))
    return render_notice(event.to_payload())


def colour_for(kind: str, text: str) -> str:
    colour = _COLOURS.get(kind)
    return f"{colour}{text}{_RESET}" if colour else text


class ConsoleSink:
    """Renders events for a human reading a terminal: alerts, feed health and notices (state
    updates are not shown)."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self._stream = stream
        self._colour = stream.isatty() if colour is None else colour

    async def publish(self, event: OutputEvent) -> None:
        if isinstance(event, StateEvent):
            return
        text = render(event)
        self._stream.write((colour_for(event.kind, text) if self._colour else text) + "\n")
        self._stream.flush()

    async def flush(self) -> None:
        self._stream.flush()

    async def close(self) -> None:
        self._stream.flush()
