"""A local fake exchange for the live-feed tests: a websockets server on 127.0.0.1 (a free port)
that speaks each venue's message shapes.

It accepts the venue's subscriptions (Binance streams in the URL path, or ``SUBSCRIBE``; Bybit
``{"op":"subscribe"}``; OKX ``{"op":"subscribe","args":[{"channel":"mark-price",...}]}``),
answers the venue's heartbeats (Bybit ``{"op":"ping"}``, OKX ``ping``; for Binance it sends RFC
6455 pings itself and counts the client's pongs), and pushes frames for every subscribed topic
at a fixed interval. Tests can drop connections (abruptly, any number of times), close them
cleanly, pause and resume the stream, inject garbage or oversized frames, refuse handshakes
with an HTTP status, and stop answering heartbeats. Everything sent and received is recorded
per connection, and :meth:`FakeExchange.wait_until` waits for a condition without sleeping.

Frames are the real frames below with three fields advanced per frame (event time, sequence,
price) so that every frame is distinct and ordered:

* Binance USDⓈ-M / COIN-M: ``tests/data/captures/binance_markprice_real_message_variants.jsonl``
  (tardis-node and crypto-crawler-rs fixtures): the 2020-08 USDⓈ-M ``@1s`` frame, the 2021-04
  COIN-M perpetual frame, and the 2021-04 ``!markPrice@arr`` arrays.
* Bybit: ``tests/data/captures/bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz``
  (cryptofeed sample data): the BTCUSDT snapshot and its first delta carrying ``markPrice``.

(``tests/data/PROVENANCE.md`` says where each capture comes from.)
* OKX: the push shape of https://www.okx.com/docs-v5/en/#public-data-websocket-mark-price-channel
  with the values of the first row of ``okex_swap_BTC-USDC-SWAP_derivative_ticker_nautilus.csv``
  (nautilus_trader test data: mark 28479, 2023-04-01).
* Hyperliquid: the documented channel shapes (``activeAssetCtx``, ``allDexsAssetCtxs``,
  ``allMids``, ``post`` replies, ``subscriptionResponse``, ``pong``) around the recorded asset
  context of ``tests/data/hyperliquid/meta/hummingbot_metaAndAssetCtxs_BTC_ETH_2023-11.json``
  (BTC, mark 36733.0); each coin's ``markPx`` starts at ``hl_marks[coin]`` and moves by
  ``hl_step`` per frame. ``post`` ``meta`` requests are answered with ``hl_metas[dex]``. The
  HTTP info API beside it is :class:`FakeInfoApi`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

# --- real frames (see the module docstring for provenance) --------------------------------

BINANCE_USDM_1S = (
    '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1597536008000,'
    '"s":"BTCUSDT","p":"11857.56000000","i":"11851.86949091","r":"0.00015640","T":1597564800000}}'
)
BINANCE_COINM_PERP = (
    '{"stream":"btcusd_perp@markPrice","data":{"e":"markPriceUpdate","E":1617309477000,'
    '"s":"BTCUSD_PERP","p":"59012.56007222","P":"58896.00503145","r":"0.00073689",'
    '"T":1617321600000}}'
)
BINANCE_USDM_ARR = (
    '{"stream":"!markPrice@arr","data":[{"e":"markPriceUpdate","E":1617309024002,"s":"BTCUSDT",'
    '"p":"59022.53514719","P":"58902.34482833","i":"58936.68384000","r":"0.00058959",'
    '"T":1617321600000},{"e":"markPriceUpdate","E":1617309024002,"s":"ETHUSDT",'
    '"p":"1981.15704420","P":"1974.79557094","i":"1978.08197502","r":"0.00059142",'
    '"T":1617321600000}]}'
)
BINANCE_COINM_ARR = (
    '{"stream":"!markPrice@arr","data":[{"e":"markPriceUpdate","E":1617309501002,'
    '"s":"BTCUSD_PERP","p":"59003.37984561","P":"58896.41602208","r":"0.00073684",'
    '"T":1617321600000},{"e":"markPriceUpdate","E":1617309501002,"s":"ETHUSD_PERP",'
    '"p":"1981.89000000","P":"1975.18948029","r":"0.00100944","T":1617321600000}]}'
)
BYBIT_SNAPSHOT = (
    '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","tickDirection":'
    '"ZeroPlusTick","price24hPcnt":"0.001624","lastPrice":"65114.30","prevPrice24h":"65008.70",'
    '"highPrice24h":"65282.30","lowPrice24h":"64694.40","prevPrice1h":"65083.80","markPrice":'
    '"65117.44","indexPrice":"65137.76","openInterest":"59891.732","openInterestValue":'
    '"3899996265.01","turnover24h":"1142118412.9021","volume24h":"17573.9120",'
    '"fundingIntervalHour":"8","fundingCap":"0.005","singleOpenInterest":"29945.866",'
    '"singleOpenInterestValue":"1949998132.50","nextFundingTime":"1786320000000","fundingRate":'
    '"0.0001","bid1Price":"65114.20","bid1Size":"5.954","ask1Price":"65114.30","ask1Size":'
    '"10.470","preOpenPrice":"","preQty":"","curPreListingPhase":""},"cs":753843900397,'
    '"ts":1786310817583}'
)
BYBIT_DELTA = (
    '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","markPrice":"65117.43",'
    '"openInterestValue":"3899995666.09","ask1Price":"65114.30","ask1Size":"10.488",'
    '"singleOpenInterestValue":"1949997833.04"},"cs":753843915209,"ts":1786310818183}'
)
OKX_PUSH = (
    '{"arg":{"channel":"mark-price","instId":"BTC-USDC-SWAP"},"data":[{"instType":"SWAP",'
    '"instId":"BTC-USDC-SWAP","markPx":"28479","ts":"1680309048427"}]}'
)

PATHS = {
    "binance-usdm": "/market/stream",
    "binance-coinm": "/stream",
    "bybit": "/v5/public/linear",
    "okx": "/ws/v5/public",
    "hyperliquid": "/ws",
}
"""The path each venue's client must open (Binance: the base URL is the path without
``/stream``)."""

BINANCE_ALL = "!markPrice@arr@1s"
HL_DATA = Path(__file__).parent / "data" / "hyperliquid"
HL_CTX: dict[str, Any] = orjson.loads(
    (HL_DATA / "meta" / "hummingbot_metaAndAssetCtxs_BTC_ETH_2023-11.json").read_bytes()
)[1][0]
"""A recorded perp asset context (BTC, 2023-11): the ``ctx`` of every fake frame."""


def _dump(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _price(base: str, seq: int, step: str) -> str:
    """``base + seq·step`` with the base's number of decimals (exact decimal text)."""
    value = Decimal(base) + Decimal(seq) * Decimal(step)
    return str(value.quantize(Decimal(base)))


@dataclass
class Sent:
    """One data frame the server sent: which connection, its global sequence number, text."""

    connection: int
    seq: int
    text: str
    topic: str


@dataclass
class FakeConnection:
    """What happened on one client connection."""

    index: int
    path: str
    opened_at: float  # time.monotonic()
    closed_at: float | None = None
    topics: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every text the client sent
    heartbeats: int = 0  # venue-level pings received (Bybit op ping, OKX "ping")
    pongs: int = 0  # RFC 6455 pongs the client returned to our pings (Binance)
    sent: list[Sent] = field(default_factory=list)
    subscribed_at: float | None = None  # when the first subscription was accepted
    snapshots: set[str] = field(default_factory=set)  # Bybit topics already given a snapshot


class FakeExchange:
    """One venue's fake websocket server. Use as an async context manager (or the
    ``fake_exchange`` fixture)."""

    def __init__(
        self,
        venue: str,
        *,
        interval_s: float = 0.01,
        server_ping_s: float | None = None,
        script: list[str] | None = None,
        drop_after: frozenset[int] = frozenset(),
        pause_after: dict[int, float] | None = None,
    ) -> None:
        """``script``: instead of generated frames, send these (real recorded frames), each
        exactly once over all connections, in order, once a connection has subscribed;
        ``drop_after``: cut the connection abruptly after sending these script indexes (once
        the frame has left); ``pause_after``: stay silent this many seconds after them."""
        if venue not in PATHS:
            raise ValueError(f"unknown venue {venue!r}")
        self.venue = venue
        self.interval_s = interval_s
        self.server_ping_s = server_ping_s
        self.connections: list[FakeConnection] = []
        self.sent: list[Sent] = []
        self.answer_heartbeats = True
        self.refuse_with: int | None = None  # HTTP status for the next handshakes
        self.refused = 0
        self._seq = 0
        self._running = asyncio.Event()
        self._running.set()
        self._live: dict[int, ServerConnection] = {}
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self.port = 0
        self.script = script
        self.drop_after = drop_after
        self.pause_after = pause_after or {}
        self.cursor = 0  # the next script frame to send
        self.drops = 0
        self.hl_marks: dict[str, Decimal] = {"BTC": Decimal("36733.0")}
        self.hl_step = Decimal("0.01")
        self.hl_metas: dict[str, Any] = {}
        self.posts = 0

    @property
    def script_done(self) -> bool:
        return self.script is not None and self.cursor >= len(self.script)

    # --- lifecycle ---

    async def __aenter__(self) -> FakeExchange:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,
            close_timeout=1,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The URL to give ``FeedSpec.url`` (Binance: the base, without ``/stream``)."""
        path = PATHS[self.venue].removesuffix("/stream")
        return f"ws://127.0.0.1:{self.port}{path}"

    # --- observation ---

    def notify(self) -> None:
        """Wake everything waiting in :meth:`wait_until`."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        """Return once ``predicate()`` holds (re-checked on every change); fail after
        ``within_s`` seconds."""
        try:
            async with asyncio.timeout(within_s):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {within_s} s: {self.describe()}"
            ) from None

    def describe(self) -> str:
        return (
            f"{self.venue}: {len(self.connections)} connections, {len(self.sent)} frames sent; "
            + "; ".join(
                f"#{c.index} topics={c.topics} sent={len(c.sent)} heartbeats={c.heartbeats} "
                f"closed={c.closed_at is not None}"
                for c in self.connections
            )
        )

    def sent_on(self, index: int) -> list[str]:
        """The data frames sent on connection ``index``, in order."""
        return [sent.text for sent in self.connections[index].sent]

    # --- control ---

    def pause(self) -> None:
        """Stop pushing frames (connections stay open; heartbeats are still answered)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def drop(self) -> None:
        """Cut every open connection abruptly (no close frame), like a network failure."""
        for ws in list(self._live.values()):
            ws.transport.abort()

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with a close frame (a clean close)."""
        for ws in list(self._live.values()):
            await ws.close(code, reason)

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as is on every open connection (garbage, an oversized frame, ...)."""
        for ws in list(self._live.values()):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)

    # --- the server ---

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path != PATHS[self.venue]:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no such path {path}\n")
        if self.refuse_with is not None:
            self.refused += 1
            self.notify()
            return connection.respond(self.refuse_with, "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        conn = FakeConnection(len(self.connections), ws.request.path, time.monotonic())
        self.connections.append(conn)
        self._live[conn.index] = ws
        if self.venue.startswith("binance"):
            _, _, query = ws.request.path.partition("?")
            streams = query.removeprefix("streams=")
            if query.startswith("streams=") and streams:
                self._subscribe(conn, streams.split("/"))
        self.notify()
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._pump(ws, conn))
                pinger = group.create_task(self._ping(ws, conn)) if self.server_ping_s else None
                try:
                    async for message in ws:
                        await self._on_message(ws, conn, str(message))
                except ConnectionClosed:
                    pass
                finally:
                    pump.cancel()
                    if pinger is not None:
                        pinger.cancel()
        finally:
            conn.closed_at = time.monotonic()
            del self._live[conn.index]
            self.notify()

    def _subscribe(self, conn: FakeConnection, topics: list[str]) -> None:
        for topic in topics:
            if topic not in conn.topics:
                conn.topics.append(topic)
        if conn.subscribed_at is None:
            conn.subscribed_at = time.monotonic()

    async def _on_message(self, ws: ServerConnection, conn: FakeConnection, text: str) -> None:
        conn.requests.append(text)
        self.notify()
        if self.venue == "okx" and text == "ping":
            conn.heartbeats += 1
            if self.answer_heartbeats:
                await ws.send("pong")
            return
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        if self.venue == "hyperliquid":
            await self._hyperliquid(ws, conn, message)
        elif self.venue.startswith("binance"):
            if message.get("method") == "SUBSCRIBE":
                self._subscribe(conn, list(message.get("params", [])))
                await ws.send(_dump({"result": None, "id": message.get("id")}))
        elif self.venue == "bybit":
            await self._bybit(ws, conn, message)
        else:
            await self._okx(ws, conn, message)
        self.notify()

    async def _bybit(self, ws: ServerConnection, conn: FakeConnection, message: Any) -> None:
        op = message.get("op")
        reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": f"fake-{conn.index}"}
        if "req_id" in message:
            reply["req_id"] = message["req_id"]
        if op == "ping":
            conn.heartbeats += 1
            if self.answer_heartbeats:
                await ws.send(_dump({**reply, "ret_msg": "pong", "op": "ping"}))
            return
        if op != "subscribe":
            return
        args = [str(arg) for arg in message.get("args", [])]
        bad = [arg for arg in args if not arg.startswith("tickers.")]
        if bad or sum(len(arg) for arg in args) > 21_000:
            await ws.send(
                _dump({**reply, "success": False, "ret_msg": f"error:topic:{bad}", "op": op})
            )
            return
        self._subscribe(conn, args)
        await ws.send(_dump({**reply, "op": "subscribe"}))

    async def _hyperliquid(self, ws: ServerConnection, conn: FakeConnection, message: Any) -> None:
        method = message.get("method")
        if method == "ping":
            conn.heartbeats += 1
            if self.answer_heartbeats:
                await ws.send(_dump({"channel": "pong"}))
        elif method == "subscribe":
            subscription = message.get("subscription", {})
            if subscription.get("type") not in ("activeAssetCtx", "allDexsAssetCtxs", "allMids"):
                await ws.send(
                    _dump(
                        {"channel": "error", "data": f"Invalid subscription {_dump(subscription)}"}
                    )
                )
                return
            self._subscribe(conn, [_dump(subscription)])
            await ws.send(_dump({"channel": "subscriptionResponse", "data": message}))
        elif method == "post":
            payload = message.get("request", {}).get("payload", {})
            dex = payload.get("dex", "")
            self.posts += 1
            if payload.get("type") != "meta" or dex not in self.hl_metas:
                response: dict[str, Any] = {"type": "error", "payload": "422 Unprocessable"}
            else:
                body = {"type": "meta", "data": self.hl_metas[dex]}
                response = {"type": "info", "payload": body}
            data = {"id": message.get("id"), "response": response}
            await ws.send(_dump({"channel": "post", "data": data}))

    def hl_mark(self, coin: str, seq: int) -> str:
        """The fake mark of ``coin`` in frame ``seq`` (exact decimal text)."""
        base = self.hl_marks.get(coin, Decimal("36733.0"))
        return str(base + seq * self.hl_step)

    def _hl_frame(self, topic: str, seq: int) -> str:
        subscription = orjson.loads(topic)
        kind = subscription["type"]
        if kind == "activeAssetCtx":
            coin = subscription["coin"]
            ctx = {**HL_CTX, "markPx": self.hl_mark(coin, seq)}
            return _dump({"channel": kind, "data": {"coin": coin, "ctx": ctx}})
        if kind == "allMids":
            mids = {coin: self.hl_mark(coin, seq) for coin in self.hl_marks}
            return _dump({"channel": kind, "data": {"mids": {"@142": "80907.5", **mids}}})
        ctxs = []
        for dex, meta in self.hl_metas.items():
            names = [asset["name"] for asset in meta["universe"]]
            ctxs.append([dex, [{**HL_CTX, "markPx": self.hl_mark(name, seq)} for name in names]])
        return _dump({"channel": kind, "data": {"ctxs": ctxs}})

    async def _okx(self, ws: ServerConnection, conn: FakeConnection, message: Any) -> None:
        if message.get("op") != "subscribe":
            return
        for arg in message.get("args", []):
            if arg.get("channel") != "mark-price" or not arg.get("instId"):
                await ws.send(
                    _dump(
                        {
                            "event": "error",
                            "code": "60018",
                            "msg": f"Wrong URL or channel:{arg}",
                            "connId": f"fake{conn.index}",
                        }
                    )
                )
                continue
            self._subscribe(conn, [arg["instId"]])
            ack: dict[str, Any] = {"event": "subscribe", "arg": arg, "connId": f"fake{conn.index}"}
            if "id" in message:
                ack = {"id": message["id"], **ack}
            await ws.send(_dump(ack))

    async def _play(self, ws: ServerConnection, conn: FakeConnection) -> None:
        """Send the script from where the last connection stopped (see ``__init__``)."""
        assert self.script is not None
        while not conn.topics:
            await self._changed.wait()
        while self.cursor < len(self.script):
            await self._running.wait()
            index = self.cursor
            self.cursor += 1
            self._seq += 1
            sent = Sent(conn.index, self._seq, self.script[index], "script")
            conn.sent.append(sent)
            self.sent.append(sent)
            self.notify()
            await ws.send(sent.text)
            if index in self.drop_after:
                await asyncio.sleep(0.05)  # let the frame leave before the connection is cut
                self.drops += 1
                ws.transport.abort()
                return
            await asyncio.sleep(self.pause_after.get(index, self.interval_s))

    async def _pump(self, ws: ServerConnection, conn: FakeConnection) -> None:
        if self.script is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._play(ws, conn)
            return
        try:
            while True:
                await self._running.wait()
                for topic in list(conn.topics):
                    if not self._running.is_set():
                        break
                    self._seq += 1
                    sent = Sent(conn.index, self._seq, self._frame(conn, topic, self._seq), topic)
                    conn.sent.append(sent)  # before sending: a pause never hides a frame in flight
                    self.sent.append(sent)
                    self.notify()
                    await ws.send(sent.text)
                await asyncio.sleep(self.interval_s)  # the stream's pace, not a wait for anything
        except ConnectionClosed:
            return

    async def _ping(self, ws: ServerConnection, conn: FakeConnection) -> None:
        """Binance-style server pings; counts the pongs the client library sends back."""
        assert self.server_ping_s is not None
        try:
            while True:
                await asyncio.sleep(self.server_ping_s)  # the server's ping period
                waiter = await ws.ping()
                async with asyncio.timeout(5):
                    await waiter
                conn.pongs += 1
                self.notify()
        except ConnectionClosed:
            return

    def _frame(self, conn: FakeConnection, topic: str, seq: int) -> str:
        """The data frame number ``seq`` for ``topic``: a real frame, advanced by ``seq``."""
        if self.venue == "hyperliquid":
            return self._hl_frame(topic, seq)
        if self.venue.startswith("binance"):
            usdm = self.venue == "binance-usdm"
            if topic == BINANCE_ALL:
                frame = orjson.loads(BINANCE_USDM_ARR if usdm else BINANCE_COINM_ARR)
                for item in frame["data"]:
                    item["E"] += seq * 1000
                    item["p"] = _price(item["p"], seq, "0.01")
            else:
                frame = orjson.loads(BINANCE_USDM_1S if usdm else BINANCE_COINM_PERP)
                data = frame["data"]
                data["s"] = topic.split("@")[0].upper()
                data["E"] += seq * 1000
                data["p"] = _price(data["p"], seq, "0.01")
            frame["stream"] = topic
            return _dump(frame)
        if self.venue == "bybit":
            symbol = topic.removeprefix("tickers.")
            snapshot = topic not in conn.snapshots
            conn.snapshots.add(topic)
            frame = orjson.loads(BYBIT_SNAPSHOT if snapshot else BYBIT_DELTA)
            frame["topic"] = topic
            frame["data"]["symbol"] = symbol
            frame["data"]["markPrice"] = _price("65117.44", seq, "0.01")  # the snapshot's mark
            frame["cs"] += seq
            frame["ts"] += seq * 100
            return _dump(frame)
        frame = orjson.loads(OKX_PUSH)
        frame["arg"]["instId"] = topic
        item = frame["data"][0]
        item["instId"] = topic
        item["markPx"] = str(Decimal(item["markPx"]) + Decimal(seq) / 10)
        item["ts"] = str(int(item["ts"]) + seq * 200)
        return _dump(frame)


def revalued(state: dict[str, Any], marks: dict[str, Decimal], time_ms: int) -> dict[str, Any]:
    """A recorded ``clearinghouseState`` as the exchange would report it at other marks: the
    same positions (size, entry, ``rawUsd``) and cross wallet, their value, PnL, isolated margin
    and account values recomputed (``liquidationPx`` kept: for one position per margin scope it
    does not depend on the mark)."""
    out = orjson.loads(orjson.dumps(state))
    cross = out["crossMarginSummary"]
    cross_pnl_before = cross_pnl = Decimal(0)
    isolated_margin = maintenance = Decimal(0)
    for item in out["assetPositions"]:
        position = item["position"]
        coin, qty = position["coin"], Decimal(position["szi"])
        entry, value = Decimal(position["entryPx"]), Decimal(position["positionValue"])
        before = (value if qty > 0 else -value) - qty * entry
        mark = marks.get(coin, value / abs(qty))
        pnl = qty * (mark - entry)
        position["positionValue"] = str(abs(qty) * mark)
        position["unrealizedPnl"] = str(pnl)
        leverage = position["leverage"]
        if leverage["type"] == "isolated":
            margin = Decimal(leverage["rawUsd"]) + qty * mark
            position["marginUsed"] = str(margin)
            isolated_margin += margin
        else:
            cross_pnl_before += before
            cross_pnl += pnl
            maintenance += abs(qty) * mark / (2 * Decimal(str(position["maxLeverage"])))
    account_value = Decimal(cross["accountValue"]) - cross_pnl_before + cross_pnl
    cross["accountValue"] = str(account_value)
    out["marginSummary"]["accountValue"] = str(account_value + isolated_margin)
    out["crossMaintenanceMarginUsed"] = str(maintenance)
    out["time"] = time_ms
    return out


class FakeInfoApi:
    """Hyperliquid's info endpoint on loopback (``POST /info``, JSON): ``meta`` from ``metas``
    (by dex), ``clearinghouseState`` from ``states`` (by user and dex) revalued at the marks of
    ``exchange`` (the fake websocket venue, if any) and stamped with the current time. Answers
    the next requests with the HTTP statuses in ``fail_next``. Every request and every state
    served is recorded."""

    def __init__(self, exchange: FakeExchange | None = None) -> None:
        self.exchange = exchange
        self.metas: dict[str, Any] = {}
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.served: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self._changed = asyncio.Event()

    async def __aenter__(self) -> FakeInfoApi:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/info"

    async def wait_until(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not predicate():
                await self._changed.wait()

    def _marks(self) -> dict[str, Decimal]:
        fake = self.exchange
        if fake is None or not fake.sent:
            return {}
        seq = fake.sent[-1].seq
        return {coin: Decimal(fake.hl_mark(coin, seq)) for coin in fake.hl_marks}

    def _answer(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.fail_next:
            return self.fail_next.pop(0), "busy"
        dex = body.get("dex", "")
        if body.get("type") == "meta" and dex in self.metas:
            return 200, self.metas[dex]
        if body.get("type") == "clearinghouseState" and (body.get("user"), dex) in self.states:
            state = self.states[(body["user"], dex)]
            served = revalued(state, self._marks(), int(time.time() * 1000))
            self.served.append(served)
            return 200, served
        return 422, "Failed to deserialize the JSON body"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (h.partition(":") for h in lines[1:] if h)
                }
                body = orjson.loads(await reader.readexactly(int(headers.get("content-length", 0))))
                self.requests.append(body)
                status, answer = self._answer(body)
                payload = orjson.dumps(answer)
                writer.write(
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                self._changed.set()
                self._changed = asyncio.Event()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Start = Callable[..., Awaitable[FakeExchange]]


@pytest.fixture(name="fake_exchange")
async def fake_exchange_fixture() -> AsyncIterator[Start]:
    """``await fake_exchange(venue, interval_s=..., server_ping_s=...)`` starts a fake exchange
    on a free loopback port; all of them stop at the end of the test."""
    async with AsyncExitStack() as stack:

        async def start(venue: str, **options: Any) -> FakeExchange:
            return await stack.enter_async_context(FakeExchange(venue, **options))

        yield start
