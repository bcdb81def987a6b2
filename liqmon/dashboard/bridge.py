"""The dashboard's MQTT side: one link to the broker that feeds the book, and asks the
instances what-if questions on the page's behalf (their answers come back on the same link).

It subscribes to the status, state and event topics of every instance under the prefix, and
to its own shock response topic. The link reconnects by itself (backoff with jitter); each
connection re-syncs the book from the broker's retained messages (see
:meth:`liqmon.dashboard.book.Book.begin_sync`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from alerts.link import MqttLink
from alerts.mqtt_settings import MqttSettings
from feeds.mqtt_input import Received
from liqmon.dashboard.book import Book
from liqmon.shock_mqtt import ShockAsker

log = structlog.get_logger("liqmon.dashboard")


class Bridge:
    def __init__(self, settings: MqttSettings, book: Book, changed: Callable[[], None]) -> None:
        prefix = settings.prefix
        self.client = f"liqmon-dashboard-{secrets.token_hex(4)}"
        self.book = book
        self._changed = changed
        self._status_prefix = f"{prefix}/status/"
        self.asker = ShockAsker(prefix, self.client)
        self.link = MqttLink(
            settings,
            [
                f"{prefix}/status/+",
                f"{prefix}/state/#",
                f"{prefix}/events/#",
                self.asker.response_topic,
            ],
            self._message,
            identifier=self.client,
            on_connect=self._connected,
            on_synced=self._synced,
            on_disconnect=self._disconnected,
        )
        book.set_broker(url=settings.display_url(), prefix=prefix)

    async def run(self) -> None:
        await self.link.run()

    async def shock(self, moves: Mapping[str, str], *, timeout_s: float) -> dict[str, Any]:
        """Ask every online instance; their answers summed (:func:`liqmon.shock.combine`)."""
        return await self.asker.ask(self.link, moves, timeout_s=timeout_s)

    def _message(self, message: Received) -> None:
        if message.topic == self.asker.response_topic:
            self.asker.take(message)
            return
        if message.topic.startswith(self._status_prefix):
            self.asker.observe_status(message)
        if self.book.receive(message.topic, message.body):
            self._changed()

    def _connected(self) -> None:
        self.asker.online.clear()  # the retained statuses come again
        self.book.begin_sync()
        self.book.set_broker(connected=True, synced=False)
        self._changed()

    def _synced(self) -> None:
        self.book.end_sync()
        self.book.set_broker(synced=True)
        log.info("dashboard_synced", entities=self.book.entity_count)
        self._changed()

    def _disconnected(self) -> None:
        self.book.set_broker(connected=False, synced=False)
        self._changed()
