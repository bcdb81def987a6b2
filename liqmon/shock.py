"""The what-if shock as a question and its answers: requests, one instance's answer, the sum of
several instances' answers, and their rendering for a terminal. Sans-I/O: no clock, no socket
(the MQTT adapter is :mod:`liqmon.shock_mqtt`; the engine call is :func:`monitor.shock.shock`).

A request is ``{"moves": {"BTCUSDT": "-8%", "ETHUSDT": -0.05}}`` (a percentage, or a fraction of
the last mark). Each instance answers for its own book (:func:`answer`): the events the moves
would cause as its next ticks, all at once, or a refusal saying why it could not. A requester in
front of several instances (several books) adds the answers up (:class:`Collection`,
:func:`combine`): outcomes are listed with the instance that holds them, and money is summed per
margin asset, since a loss in USDT and one in XRP do not add.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from alerts.console import format_time
from monitor.errors import BadRequest as BadRequest
from monitor.shock import parse_move, shock

if TYPE_CHECKING:
    from monitor.engine import Engine

MAX_REQUEST_BYTES = 65_536
MAX_MOVES = 64
MAX_SYMBOL_LENGTH = 64
OUTCOME_KINDS = ("liquidations", "warnings", "recoveries")


def parse_moves(moves: object) -> dict[str, Decimal]:
    """``{"BTCUSDT": "-8%", "ETHUSDT": -0.05}`` as fractions; :class:`BadRequest` otherwise."""
    if not isinstance(moves, dict) or not moves:
        raise BadRequest("invalid_request", "moves must be a non-empty object: symbol -> move")
    if len(moves) > MAX_MOVES:
        raise BadRequest("invalid_request", f"at most {MAX_MOVES} symbols in one request")
    parsed: dict[str, Decimal] = {}
    for symbol, move in moves.items():
        if not symbol or len(symbol) > MAX_SYMBOL_LENGTH or "=" in symbol:
            raise BadRequest("invalid_request", f"{symbol[:80]!r} is not a symbol")
        if isinstance(move, bool) or not isinstance(move, str | int | float):
            raise BadRequest("invalid_request", f"{symbol}: a move is a string or a number")
        try:
            _, parsed[symbol] = parse_move(f"{symbol}={move}")
        except ValueError as exc:
            raise BadRequest("invalid_request", str(exc)) from None
    return parsed


def parse_request(payload: bytes) -> dict[str, Decimal]:
    """The moves of a request message (see ``alerts.schema.ShockRequestPayload``)."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise BadRequest("invalid_request", f"a request is at most {MAX_REQUEST_BYTES} bytes")
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid_request", "the request is not JSON") from None
    if not isinstance(body, dict) or set(body) - {"moves"}:
        raise BadRequest("invalid_request", 'expected {"moves": {"SYMBOL": "-8%", ...}}')
    return parse_moves(body.get("moves"))


def request_payload(moves: Mapping[str, str]) -> bytes:
    """A request message, ``moves`` as the user wrote them (``{"BTCUSDT": "-8%"}``)."""
    return orjson.dumps({"moves": dict(moves)})


def _with_id(body: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.blake2b(orjson.dumps(body), digest_size=10).hexdigest()
    return {"id": digest, **body}


def refusal(*, instance: str, now_ms: int, reason: str, detail: str) -> dict[str, Any]:
    """A refusal (see ``alerts.schema.ShockRefusalPayload``)."""
    return _with_id({"ts": now_ms, "instance": instance, "error": reason, "detail": detail})


def answer(
    engine: Engine,
    payload: bytes,
    *,
    instance: str,
    now_ms: int,
    timer: Callable[[], float],
) -> dict[str, Any]:
    """The answer of the instance that holds ``engine`` to the request ``payload`` (see
    ``alerts.schema.ShockAnswerPayload``), or a refusal; never raises for a bad request.
    ``timer`` (seconds, e.g. ``time.perf_counter``) measures ``elapsed_ms``."""
    try:
        moves = parse_request(payload)
    except BadRequest as exc:
        return refusal(instance=instance, now_ms=now_ms, reason=exc.reason, detail=exc.detail)
    started = timer()
    result = shock(engine, moves).as_dict()
    elapsed_ms = round((timer() - started) * 1000, 3)
    return _with_id(
        {
            "ts": now_ms,
            "instance": instance,
            "as_of_ts": engine.clock,
            "elapsed_ms": elapsed_ms,
            **result,
        }
    )


# -- several instances ---------------------------------------------------------------------


def _order(outcome: Mapping[str, Any]) -> tuple[str, int, str, str, str, str]:
    return (
        str(outcome.get("account", "")),
        0 if outcome.get("scope") == "cross" else 1,
        str(outcome.get("asset", "")),
        str(outcome.get("symbol") or ""),
        str(outcome.get("side") or ""),
        str(outcome.get("instance", "")),
    )


def combine(
    answers: Mapping[str, Mapping[str, Any]], expected: Iterable[str] = ()
) -> dict[str, Any]:
    """The sum of the answers of several instances (each for its own book).

    Outcomes are listed together in canonical entity order, each with its ``instance``; counts
    are added up; ``loss`` and ``shortfall`` are summed per margin asset. A symbol is
    ``refused`` only when every answering instance refused it (another may hold it);
    ``missing`` names the expected instances that did not answer, ``refusals`` those that
    answered with an error."""
    ok = {name: a for name, a in answers.items() if "error" not in a}
    refusals = {
        name: {"error": a["error"], "detail": a.get("detail", "")}
        for name, a in answers.items()
        if "error" in a
    }
    outcomes: dict[str, list[dict[str, Any]]] = {kind: [] for kind in OUTCOME_KINDS}
    loss: defaultdict[str, float] = defaultdict(float)
    shortfall: defaultdict[str, float] = defaultdict(float)
    moves: dict[str, float] = {}
    marks: dict[str, dict[str, float]] = {}
    refused_by: defaultdict[str, dict[str, str]] = defaultdict(dict)
    valued = 0
    for name, a in sorted(ok.items()):
        valued += int(a.get("totals", {}).get("entities_valued", 0))
        moves.update(a.get("moves", {}))
        for symbol, mark in a.get("marks", {}).items():
            marks.setdefault(symbol, {})[name] = mark
        for symbol, reason in a.get("refused", {}).items():
            refused_by[symbol][name] = reason
        for kind in OUTCOME_KINDS:
            for outcome in a.get(kind, []):
                outcomes[kind].append({**outcome, "instance": name})
                if kind == "liquidations":
                    loss[outcome["asset"]] += outcome.get("loss") or 0.0
                    shortfall[outcome["asset"]] += outcome.get("shortfall") or 0.0
    for kind in OUTCOME_KINDS:
        outcomes[kind].sort(key=_order)
    refused = {
        symbol: sorted(set(by.values()))[0]
        for symbol, by in refused_by.items()
        if ok and len(by) == len(ok)
    }
    answered = set(answers)
    return {
        "instances": sorted(ok),
        "missing": sorted(set(expected) - answered),
        "refusals": refusals,
        "moves": moves,
        "marks": marks,
        "refused": refused,
        **outcomes,
        "totals": {
            "instances": len(ok),
            "entities_valued": valued,
            "liquidations": len(outcomes["liquidations"]),
            "warnings": len(outcomes["warnings"]),
            "recoveries": len(outcomes["recoveries"]),
            "loss": dict(sorted(loss.items())),
            "shortfall": dict(sorted(shortfall.items())),
        },
        "answers": {name: dict(a) for name, a in sorted(answers.items())},
    }


class Collection:
    """The answers to one request as they arrive: complete once every expected instance
    answered (a requester waits for that, or for its timeout)."""

    def __init__(self, expected: Iterable[str]) -> None:
        self.expected = set(expected)
        self.answers: dict[str, dict[str, Any]] = {}
        self.ignored = 0

    def add(self, body: Mapping[str, Any] | None) -> bool:
        """Take one answer (a duplicate or a body without ``instance`` is ignored); return
        whether the collection is now complete."""
        name = body.get("instance") if body is not None else None
        if not isinstance(name, str) or name in self.answers or body is None:
            self.ignored += 1
            return self.complete
        self.answers[name] = dict(body)
        return self.complete

    @property
    def complete(self) -> bool:
        return bool(self.expected) and self.expected <= set(self.answers)

    def combined(self) -> dict[str, Any]:
        return combine(self.answers, self.expected)


# -- for a terminal ------------------------------------------------------------------------


def _n(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count:,} " + (word[:-1] + "ies" if word.endswith("y") else word + "s")


def _money(value: float) -> str:
    return f"{value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.6g}"


def _ratio(value: float | None) -> str:
    return "n/a (MB≤0)" if value is None else f"{value:.4f}"


def _entity(o: Mapping[str, Any]) -> str:
    if o.get("scope") == "isolated":
        return f"{o['account']} {o['symbol']} {o['side']} isolated"
    return f"{o['account']} cross {o['asset']}"


def _outcome_line(kind: str, o: Mapping[str, Any]) -> str:
    where = f"[{o['instance']}] " if "instance" in o else ""
    if kind == "liquidations":
        return (
            f"    LIQUIDATED  {where}{_entity(o)}  loss {_money(o['loss'])} {o['asset']}  "
            f"shortfall {_money(o['shortfall'])} {o['asset']}  ratio {_ratio(o['margin_ratio'])}"
        )
    if kind == "warnings":
        return (
            f"    WARNING     {where}{_entity(o)}  level {o['level']:g}  "
            f"ratio {_ratio(o['margin_ratio'])}"
        )
    return f"    RECOVERED   {where}{_entity(o)}  ratio {_ratio(o['margin_ratio'])}"


def _moves_line(moves: Mapping[str, float], marks: Mapping[str, Any]) -> str:
    parts = []
    for symbol, move in moves.items():
        mark = marks.get(symbol)
        if isinstance(mark, dict):  # combined: one mark per instance
            shown = sorted({f"{m:.8g}" for m in mark.values()})
            to = f" -> {' / '.join(shown)}" if shown else ""
        else:
            to = f" -> {mark:.8g}" if mark is not None else ""
        parts.append(f"{symbol} {move * 100:+.2f}%{to}")
    return ", ".join(parts) or "nothing"


def _by_asset(amounts: Mapping[str, float]) -> str:
    return " + ".join(f"{_money(v)} {asset}" for asset, v in amounts.items()) or "0"


def render_answer(a: Mapping[str, Any], *, title: str = "what-if") -> str:
    """One instance's answer (or ``liqmon replay --shock``'s result) for a human."""
    if "error" in a:
        return f"{title}: {a.get('instance', '?')} refused: {a['error']}: {a.get('detail', '')}"
    totals = a["totals"]
    lines = [f"{title}  {_moves_line(a['moves'], a['marks'])}"]
    if a.get("as_of_ts"):
        lines[0] += f"  (book as of {format_time(int(a['as_of_ts']))})"
    lines.extend(
        f"  refused     {symbol}: {reason}" for symbol, reason in sorted(a["refused"].items())
    )
    lines.append(
        f"  outcome     {_n(totals['liquidations'], 'liquidation')}, "
        f"{_n(totals['warnings'], 'warning')}, {_n(totals['recoveries'], 'recovery')} among "
        f"{_n(totals['entities_valued'], 'entity')} holding the shocked symbols"
    )
    for kind in OUTCOME_KINDS:
        lines.extend(_outcome_line(kind, o) for o in a[kind])
    loss: defaultdict[str, float] = defaultdict(float)
    short: defaultdict[str, float] = defaultdict(float)
    for o in a["liquidations"]:
        loss[o["asset"]] += o["loss"]
        short[o["asset"]] += o["shortfall"]
    if a["liquidations"]:
        lines.append(f"  loss        {_by_asset(loss)}; shortfall {_by_asset(short)}")
    return "\n".join(lines)


def render_combined(c: Mapping[str, Any]) -> str:
    """The sum of several instances' answers for a human: each instance, then the total."""
    names = c["instances"]
    head = f"liqmon shock  {_moves_line(c['moves'], c['marks'])}"
    lines = [head, f"  answered    {len(names)}: {', '.join(names) or 'none'}"]
    if c["missing"]:
        lines.append(f"  no answer   {', '.join(c['missing'])}")
    for name, refused in sorted(c["refusals"].items()):
        lines.append(f"  refused by  {name}: {refused['error']}: {refused['detail']}")
    lines.extend(render_answer(c["answers"][name], title=f"[{name}]") for name in names)
    totals = c["totals"]
    lines.append(
        f"total ({_n(totals['instances'], 'instance')})  "
        f"{_n(totals['liquidations'], 'liquidation')}, {_n(totals['warnings'], 'warning')}, "
        f"{_n(totals['recoveries'], 'recovery')} among {_n(totals['entities_valued'], 'entity')}"
    )
    if totals["liquidations"]:
        lines.append(
            f"  loss        {_by_asset(totals['loss'])}; shortfall {_by_asset(totals['shortfall'])}"
        )
    for symbol, reason in sorted(c["refused"].items()):
        lines.append(f"  refused     {symbol}: {reason} (by every instance)")
    return "\n".join(lines)
