"""Hyperliquid's public info API, polled: the dexes' ``meta`` and the watched accounts' states.

:func:`poll` is an async generator of :class:`InfoUpdate`: every dex's ``meta`` at start and
whenever it changed (asked again every ``meta_interval_s``), then every ``interval_s`` each
watched address's ``clearinghouseState`` on every dex, one :class:`StatesFetched` per address
(all its dexes together, so that one snapshot covers the whole account). An address's states
are only asked for once every dex's ``meta`` is known, so a snapshot never names an asset
before its contract exists. Failures (network, HTTP status, a body that does not parse) are
yielded as :class:`InfoFailed` with a stable reason and retried after
:func:`feeds.backoff.reconnect_delay`; they never end the generator.

Requests are ``POST {url}`` with a JSON body (``{"type":"meta","dex":d}``,
``{"type":"clearinghouseState","user":a,"dex":d}``). The API allows 1 200 request weight per
minute per IP; ``clearinghouseState`` weighs 2 and ``meta`` 20, so ``n`` addresses on ``d``
dexes polled every ``t`` seconds use ``120·n·d/t`` a minute (:func:`weight_per_minute`).

Why polling and not the websocket: the ``clearinghouseState`` subscription exists but allows at
most 10 distinct users per IP and its documented shape has no ``time``; polling serves any
number of accounts within the weight budget and stamps each state with the exchange's time.

Transport: :mod:`httpx` (a client may be injected, e.g. with ``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from feeds.backoff import ReconnectPolicy, reconnect_delay
from feeds.hyperliquid_state import AccountState, Meta, parse_meta, parse_state
from monitor.errors import MalformedRecord

log = structlog.get_logger("liqmon.hyperliquid")

INFO_URL = "https://api.hyperliquid.xyz/info"
WEIGHT_LIMIT_PER_MINUTE = 1200
STATE_WEIGHT = 2
META_WEIGHT = 20
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def info_url_of(feed_url: str) -> str:
    """The info endpoint beside a websocket endpoint: ``wss://h/ws`` → ``https://h/info``."""
    scheme, sep, rest = feed_url.partition("://")
    host = rest.split("/", 1)[0]
    http = {"wss": "https", "ws": "http"}.get(scheme, scheme)
    return f"{http}{sep}{host}/info"


class WatchSpec(BaseModel):
    """What to poll and how often (seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    addresses: tuple[str, ...]
    dexes: tuple[str, ...] = ("",)
    url: str = INFO_URL
    interval_s: float = Field(default=10.0, gt=0)
    meta_interval_s: float = Field(default=300.0, gt=0)
    timeout_s: float = Field(default=10.0, gt=0)
    reconnect: ReconnectPolicy = ReconnectPolicy(base_s=1.0, cap_s=60.0, minimum_s=1.0)

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            for address in value:
                if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
                    raise ValueError(f"not an address (0x and 40 hex digits): {address!r}")
            return tuple(dict.fromkeys(address.lower() for address in value))
        return value


def weight_per_minute(spec: WatchSpec) -> float:
    """The request weight the state polls use per minute (``meta`` polls aside)."""
    return len(spec.addresses) * len(spec.dexes) * STATE_WEIGHT * 60.0 / spec.interval_s


@dataclass(frozen=True, slots=True)
class MetaFetched:
    """A dex's ``meta``, fetched for the first time or changed since the last one."""

    meta: Meta
    receive_ts_ns: int


@dataclass(frozen=True, slots=True)
class StatesFetched:
    """One address's state on every watched dex (in the order of ``WatchSpec.dexes``)."""

    address: str
    states: tuple[AccountState, ...]
    receive_ts_ns: int

    @property
    def time_ms(self) -> int:
        """The exchange time of the newest state (the receive time when none has one)."""
        times = [s.time_ms for s in self.states if s.time_ms is not None]
        return max(times) if times else self.receive_ts_ns // 1_000_000


@dataclass(frozen=True, slots=True)
class InfoFailed:
    """A request that gave nothing usable: ``reason`` is ``http_<status>``, ``transport``,
    ``timeout``, ``invalid_json`` or a parser reason (``invalid_field``, ...)."""

    request: str
    reason: str
    detail: str


InfoUpdate = MetaFetched | StatesFetched | InfoFailed


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, str]) -> object:
    try:
        response = await client.post(url, content=orjson.dumps(body), headers=_HEADERS)
    except httpx.TimeoutException as exc:
        raise _Failed("timeout", str(exc) or type(exc).__name__) from exc
    except httpx.HTTPError as exc:
        raise _Failed("transport", str(exc) or type(exc).__name__) from exc
    if response.status_code != 200:
        raise _Failed(f"http_{response.status_code}", response.text[:200])
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise _Failed("invalid_json", str(exc)[:120]) from exc


_HEADERS = {"Content-Type": "application/json"}


async def poll(
    spec: WatchSpec,
    *,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], int] = time.time_ns,
    rand: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[InfoUpdate, None]:
    """Every ``meta`` change and every address's states, for as long as the consumer iterates
    (see the module docstring)."""
    own = client is None
    http = client or httpx.AsyncClient(timeout=spec.timeout_s)
    loop = asyncio.get_running_loop()
    metas: dict[str, Meta] = {}
    next_meta = loop.time()
    failures = 0
    try:
        while True:
            started = loop.time()
            failed = False
            if started >= next_meta or len(metas) < len(spec.dexes):
                for dex in spec.dexes:
                    body = {"type": "meta", "dex": dex} if dex else {"type": "meta"}
                    try:
                        meta = parse_meta(await _post(http, spec.url, body), dex)
                    except (_Failed, MalformedRecord) as exc:
                        failed = True
                        yield _failure(f"meta {dex or '(main)'}", exc)
                        continue
                    if metas.get(dex) != meta:
                        metas[dex] = meta
                        yield MetaFetched(meta, clock())
                if not failed:
                    next_meta = started + spec.meta_interval_s
            if len(metas) == len(spec.dexes):
                for address in spec.addresses:
                    states: list[AccountState] = []
                    for dex in spec.dexes:
                        body = {"type": "clearinghouseState", "user": address}
                        if dex:
                            body["dex"] = dex
                        try:
                            states.append(parse_state(await _post(http, spec.url, body), dex))
                        except (_Failed, MalformedRecord) as exc:
                            failed = True
                            yield _failure(f"clearinghouseState {address} {dex}".strip(), exc)
                            break
                    else:
                        yield StatesFetched(address, tuple(states), clock())
            failures = failures + 1 if failed else 0
            delay = spec.interval_s - (loop.time() - started)
            if failed:
                delay = max(delay, reconnect_delay(failures - 1, spec.reconnect, rand))
            await sleep(max(0.0, delay))
    finally:
        if own:
            await http.aclose()


def _failure(request: str, exc: _Failed | MalformedRecord) -> InfoFailed:
    reason = exc.reason
    detail = exc.detail
    log.warning("info_request_failed", request=request, reason=reason, detail=detail[:200])
    return InfoFailed(request, reason, detail)
