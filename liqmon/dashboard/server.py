"""``liqmon dashboard``'s shell: the page over HTTP, the book over a WebSocket, one task group.

::

    Dashboard.run
    ├── websockets server: GET /, /app.js, /style.css, /favicon.svg, /healthz; /ws upgrades
    │     └── per browser: its sender (snapshot, then deltas) and its listener (what-if)
    └── TaskGroup
          ├── dashboard-mqtt   the bridge's link: broker → book
          └── dashboard-push   coalesced deltas → every browser's bounded queue

A browser that connects gets the whole book at once (:meth:`Book.snapshot`), then deltas at most
every ``push_interval_s`` (ladders every ``ladder_interval_s``). Each browser has a bounded
queue: one that cannot keep up loses its queued deltas and gets a fresh snapshot instead, so a
slow tab never holds the others back or grows memory. What-if requests from the page go to the
instances over MQTT (:class:`~liqmon.dashboard.bridge.Bridge`), and the summed answer back to
that browser.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from alerts.mqtt_settings import MqttSettings
from liqmon.dashboard.access import Access
from liqmon.dashboard.book import Book
from liqmon.dashboard.bridge import Bridge
from liqmon.dashboard.ladder import DEFAULT_BUCKETS, DEFAULT_STEP_PCT
from liqmon.dashboard.throttle import Throttle
from liqmon.shock import BadRequest, parse_moves

log = structlog.get_logger("liqmon.dashboard")

VIEWER_QUEUE = 64
"""Deltas waiting for one browser; beyond that it gets a snapshot instead."""
MAX_INCOMING = 64 * 1024
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_RESYNC = b""


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    mqtt: MqttSettings
    host: str = "127.0.0.1"
    port: int = 8050
    token: str | None = None
    basic: tuple[str, str] | None = None
    alerts_kept: int = 1000
    push_interval_s: float = 0.25
    ladder_interval_s: float = 1.0
    shock_timeout_s: float = 5.0
    ladder_step_pct: float = DEFAULT_STEP_PCT
    ladder_buckets: int = DEFAULT_BUCKETS


def _static_files() -> dict[str, bytes]:
    folder = resources.files("liqmon.dashboard").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name, _ in STATIC.values()}


class Viewer:
    """One browser: its connection and its bounded queue of deltas."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=VIEWER_QUEUE)
        self.resyncs = 0

    def offer(self, delta: bytes) -> None:
        try:
            self.queue.put_nowait(delta)
        except asyncio.QueueFull:  # it cannot keep up: drop its deltas, send it a snapshot
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(_RESYNC)
            self.resyncs += 1


class Dashboard:
    """See the module docstring."""

    def __init__(self, options: DashboardOptions) -> None:
        self.options = options
        self.access = Access(options.host, token=options.token, basic=options.basic)
        self.book = Book(
            options.mqtt.prefix,
            alerts_kept=options.alerts_kept,
            ladder_step_pct=options.ladder_step_pct,
            ladder_buckets=options.ladder_buckets,
        )
        self.bridge = Bridge(options.mqtt, self.book, self.changed)
        self.viewers: set[Viewer] = set()
        self._deltas = Throttle(options.push_interval_s)
        self._ladders = Throttle(options.ladder_interval_s)
        self._changed = asyncio.Event()
        self._files = _static_files()
        self.port: int | None = None
        self.pushed = 0

    def changed(self) -> None:
        """The book changed (the bridge calls this): a push falls due."""
        self._deltas.note()
        self._changed.set()

    async def run(self, *, ready: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled; ``ready`` gets the page's URL once listening."""
        options = self.options
        async with serve(
            self._viewer,
            options.host,
            options.port,
            process_request=self._http,
            compression=None,  # deflating a 17 MB snapshot costs more than it saves on loopback
            max_size=MAX_INCOMING,
            server_header=None,
            logger=logging.getLogger("liqmon.dashboard.websockets"),
        ) as server:
            self.port = int(next(iter(server.sockets)).getsockname()[1])
            shown = f"[{options.host}]" if ":" in options.host else options.host
            url = f"http://{shown}:{self.port}/"
            log.info("dashboard_listening", url=url, broker=options.mqtt.display_url())
            if ready is not None:
                ready(url)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.bridge.run(), name="dashboard-mqtt")
                tasks.create_task(self._push(), name="dashboard-push")

    # -- pushing -------------------------------------------------------------------------------

    async def _push(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            self._changed.clear()
            while True:
                now = loop.time()
                if self.book.ladders_pending:
                    self._ladders.note()
                delta_in = self._deltas.delay(now)
                ladders_in = self._ladders.delay(now)
                waits = [d for d in (delta_in, ladders_in) if d is not None]
                if not waits:
                    break
                if min(waits) > 0:
                    await asyncio.sleep(min(waits))
                    continue
                with_ladders = ladders_in is not None and ladders_in <= 0
                delta = self.book.take_delta(ladders=with_ladders)
                self._deltas.pushed(now)
                if with_ladders:
                    self._ladders.pushed(now)
                if delta is not None:
                    self.pushed += 1
                    for viewer in self.viewers:
                        viewer.offer(delta)

    # -- browsers ------------------------------------------------------------------------------

    async def _viewer(self, connection: ServerConnection) -> None:
        viewer = Viewer(connection)
        snapshot = self.book.snapshot()
        self.viewers.add(viewer)  # no await since the snapshot: no delta is missed
        log.info("dashboard_viewer_connected", viewers=len(self.viewers))
        try:
            async with asyncio.TaskGroup() as tasks:
                sender = tasks.create_task(self._send(viewer, snapshot), name="viewer-send")
                await self._listen(viewer)
                sender.cancel()
        except* ConnectionClosed:
            pass
        finally:
            self.viewers.discard(viewer)
            log.info("dashboard_viewer_left", viewers=len(self.viewers), resyncs=viewer.resyncs)

    async def _send(self, viewer: Viewer, snapshot: list[bytes]) -> None:
        for part in snapshot:
            await viewer.connection.send(part, text=True)
        while True:
            message = await viewer.queue.get()
            if message:
                await viewer.connection.send(message, text=True)
                continue
            for part in self.book.snapshot():  # _RESYNC: its deltas were dropped
                await viewer.connection.send(part, text=True)

    async def _listen(self, viewer: Viewer) -> None:
        async for message in viewer.connection:
            try:
                body = orjson.loads(message)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict) and body.get("t") == "shock":
                await self._shock(viewer, body)

    async def _shock(self, viewer: Viewer, body: dict[str, Any]) -> None:
        """A what-if request from the page: checked here, answered by the instances."""
        reply: dict[str, Any] = {"t": "shock_answer", "req": body.get("req")}
        moves = body.get("moves")
        try:
            parse_moves(moves)
        except BadRequest as exc:
            reply["error"] = exc.detail
        else:
            assert isinstance(moves, dict)  # noqa: S101  # parse_moves checked it
            if not self.bridge.link.connected:
                reply["error"] = "the dashboard is not connected to the broker"
            else:
                written = {str(k): str(v) for k, v in moves.items()}
                reply["answer"] = await self.bridge.shock(
                    written, timeout_s=self.options.shock_timeout_s
                )
        await viewer.connection.send(orjson.dumps(reply), text=True)

    # -- HTTP ----------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = {key.lower(): value for key, value in request.headers.raw_items()}
        route = urlsplit(request.path).path
        websocket = route == "/ws"
        verdict = self.access.check(request.path, headers, websocket=websocket)
        if verdict.status != 200:
            response = connection.respond(verdict.status, verdict.reason + "\n")
            if verdict.challenge is not None:
                response.headers["WWW-Authenticate"] = verdict.challenge
            return response
        if websocket:
            return None  # the opening handshake goes on
        if route == "/healthz":
            body = orjson.dumps(
                {
                    "broker": self.book.broker,
                    "entities": self.book.entity_count,
                    "alerts": len(self.book.alerts),
                    "instances": len(self.book.instances),
                    "viewers": len(self.viewers),
                    "malformed": self.book.malformed,
                }
            )
            return _file(body, "application/json", headers.get("host", ""), verdict.set_cookie)
        found = STATIC.get(route)
        if found is None:
            return connection.respond(404, "not found\n")
        name, content_type = found
        return _file(self._files[name], content_type, headers.get("host", ""), verdict.set_cookie)


def _file(body: bytes, content_type: str, host: str, set_cookie: str | None) -> Response:
    """A 200 answer with the page's security headers (its scripts and styles are its own
    files; its only connection is its own WebSocket)."""
    host = "".join(c for c in host if c.isalnum() or c in ".:-[]")
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Frame-Options", "DENY"),
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; "
                f"img-src 'self' data:; connect-src 'self' ws://{host} wss://{host}; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            ("Connection", "close"),
        ]
    )
    if set_cookie is not None:
        headers["Set-Cookie"] = set_cookie
    return Response(200, "OK", headers, body)


def run_dashboard(options: DashboardOptions) -> int:
    """The ``liqmon dashboard`` entry point: serve until SIGTERM or Ctrl-C (exit 0)."""

    async def main() -> None:
        dashboard = Dashboard(options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            note = " (token required: open it as /?token=...)" if options.token else ""
            if options.basic:
                note = " (basic auth)"
            print(
                f"liqmon dashboard: {url}{note}  broker {options.mqtt.display_url()}",
                flush=True,
            )

        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(dashboard.run(ready=ready), name="dashboard")
            await stop.wait()
            serving.cancel()

    asyncio.run(main())
    return 0
