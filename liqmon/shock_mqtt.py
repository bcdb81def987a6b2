"""The what-if shock over MQTT 5 request/response: the instance side (:class:`ShockResponder`)
and the asking side (:class:`ShockAsker`, used by ``liqmon shock`` and the dashboard).

The responder is one adapter with one job, kept apart from the service so that it moves as it
is: it subscribes to ``{prefix}/shock/request``, computes each answer with the plain function
:func:`liqmon.shock.answer` from the engine it is given, and publishes the answer on the
request's Response Topic with its Correlation Data. Requests wait in a bounded queue; beyond it
they are refused as ``busy`` (a shock of 100,000 entities takes a fraction of a second, and
nobody should be able to make an instance do nothing else). A request without a Response Topic
(an MQTT 3.1.1 client), or a retained one, is not answered, only counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import structlog

from alerts.link import LinkDown, MqttLink
from alerts.mqtt_settings import MqttSettings
from alerts.topics import shock_request_topic, shock_response_topic
from feeds.mqtt_input import Received
from liqmon.shock import Collection, answer, refusal, request_payload
from monitor.engine import Engine

log = structlog.get_logger("liqmon.shock")

QUEUED_REQUESTS = 8
ANSWER_EXPIRY_S = 60
"""Answers expire on the broker after a minute: nobody waits for one longer."""


class ShockResponder:
    """Answers shock requests for the book of ``engine()`` (a getter: the service replaces its
    engine when it restores state). Run :meth:`run` in the owner's task group."""

    def __init__(
        self,
        settings: MqttSettings,
        engine: Callable[[], Engine],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._clock = clock
        self._queue: asyncio.Queue[Received] = asyncio.Queue(maxsize=QUEUED_REQUESTS)
        self.link = MqttLink(
            settings,
            [shock_request_topic(settings.prefix)],
            self._received,
            identifier=f"liqmon-{settings.instance}-shock",
        )
        self.answered = 0
        self.refused = 0
        self.unanswerable = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.link.run(), name="shock-link")
            tasks.create_task(self._answer_loop(), name="shock-answers")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _received(self, message: Received) -> None:
        if message.retained:  # a question left on the broker is not asked again by connecting
            self.unanswerable += 1
            log.warning("shock_request_retained_ignored", topic=message.topic)
            return
        if not message.response_topic:
            self.unanswerable += 1
            log.warning("shock_request_without_response_topic", topic=message.topic)
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.refused += 1
            body = refusal(
                instance=self.settings.instance,
                now_ms=self._now_ms(),
                reason="busy",
                detail=f"{QUEUED_REQUESTS} requests are already waiting",
            )
            await self._reply(message, body)

    async def _answer_loop(self) -> None:
        while True:
            message = await self._queue.get()
            body = answer(
                self._engine(),
                message.payload,
                instance=self.settings.instance,
                now_ms=self._now_ms(),
                timer=time.perf_counter,
            )
            if "error" in body:
                self.refused += 1
            else:
                self.answered += 1
                log.info(
                    "shock_answered",
                    moves=body["moves"],
                    liquidations=body["totals"]["liquidations"],
                    warnings=body["totals"]["warnings"],
                    elapsed_ms=body["elapsed_ms"],
                )
            await self._reply(message, body)

    async def _reply(self, message: Received, body: dict[str, Any]) -> None:
        assert message.response_topic is not None  # noqa: S101  # checked on arrival
        try:
            await self.link.publish(
                message.response_topic,
                orjson.dumps(body),
                correlation_data=message.correlation_data,
                expiry_s=ANSWER_EXPIRY_S,
            )
        except LinkDown as exc:  # the requester times out; nothing to retry for
            log.warning("shock_answer_not_sent", error=str(exc))


class ShockAsker:
    """Sends shock requests and gathers the answers of every instance, over one link of its
    own, or over a link it shares (the dashboard's): then the owner routes the messages of
    :attr:`response_topic` to :meth:`take`.

    The instances expected to answer are those whose retained status says ``online``
    (:meth:`observe_status`); a request completes when all of them answered, or at its
    timeout with whatever came."""

    def __init__(self, prefix: str, client: str) -> None:
        self.prefix = prefix
        self.response_topic = shock_response_topic(prefix, client)
        self.online: set[str] = set()
        self._pending: dict[bytes, tuple[Collection, asyncio.Event]] = {}

    def filters(self) -> list[str]:
        return [f"{self.prefix}/status/+", self.response_topic]

    def observe_status(self, message: Received) -> None:
        body = message.body
        name = body.get("instance") if body is not None else None
        if not isinstance(name, str):
            name = message.topic.removeprefix(f"{self.prefix}/status/")
        if body is not None and body.get("status") == "online":
            self.online.add(name)
        else:
            self.online.discard(name)

    def take(self, message: Received) -> None:
        """Route a message of the link: a status, or an answer to a pending request."""
        if message.topic.startswith(f"{self.prefix}/status/"):
            self.observe_status(message)
            return
        if message.topic != self.response_topic or message.correlation_data is None:
            return
        pending = self._pending.get(message.correlation_data)
        if pending is not None and pending[0].add(message.body):
            pending[1].set()

    async def ask(
        self, link: MqttLink, moves: Mapping[str, str], *, timeout_s: float
    ) -> dict[str, Any]:
        """Ask every instance; return the combined answer (:func:`liqmon.shock.combine`)."""
        correlation = secrets.token_bytes(12)
        collection = Collection(self.online)
        done = asyncio.Event()
        self._pending[correlation] = (collection, done)
        started = time.perf_counter()
        try:
            await link.publish(
                shock_request_topic(self.prefix),
                request_payload(moves),
                response_topic=self.response_topic,
                correlation_data=correlation,
                expiry_s=max(1, round(timeout_s)),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=timeout_s)
        finally:
            del self._pending[correlation]
        combined = collection.combined()
        combined["asked"] = sorted(collection.expected)
        combined["waited_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return combined


async def ask_instances(
    settings: MqttSettings, moves: Mapping[str, str], *, timeout_s: float
) -> dict[str, Any] | None:
    """``liqmon shock``: one request to every instance on the broker, their answers summed;
    ``None`` when the broker could not be reached within ``timeout_s``. Waits for the retained
    statuses first (the link's sync barrier) to know who is online."""
    client = f"liqmon-shock-{secrets.token_hex(4)}"
    asker = ShockAsker(settings.prefix, client)
    link = MqttLink(settings, asker.filters(), asker.take, identifier=client)
    async with asyncio.TaskGroup() as tasks:
        running = tasks.create_task(link.run(), name="shock-client-link")
        try:
            await link.wait_synced(timeout_s)
        except TimeoutError:
            return None
        else:
            return await asker.ask(link, moves, timeout_s=timeout_s)
        finally:
            running.cancel()
