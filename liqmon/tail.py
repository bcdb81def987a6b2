"""``liqmon tail``: print alerts, feed events (and optionally state) from a broker as they
arrive. A message it cannot render (not what liqmon publishes) is shown as such, never fatal."""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TextIO

from alerts.console import colour_for, render_payload, render_state
from alerts.mqtt_settings import MqttSettings
from alerts.topics import event_filter, state_filter
from feeds.mqtt_input import Received, subscribe

SEEN_IDS = 10_000


class Printer:
    """Renders received messages; drops alert duplicates (at-least-once delivery) by id."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self._stream = stream
        self._colour = stream.isatty() if colour is None else colour
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.alerts = 0
        self.duplicates = 0
        self.unreadable = 0
        self._expected: int | None = None
        self.all_arrived = asyncio.Event()

    def expect(self, alerts: int) -> None:
        """Set :attr:`all_arrived` once ``alerts`` distinct alerts were printed."""
        self._expected = alerts
        self._check()

    def _check(self) -> None:
        if self._expected is not None and self.alerts >= self._expected:
            self.all_arrived.set()

    def __call__(self, message: Received) -> None:
        body = message.body
        if "/status/" in message.topic:
            if body is not None:
                self._write(
                    f"[status] {body.get('instance')}: {body.get('status')} "
                    f"(liqmon {body.get('version')})"
                )
            return
        if "/state/" in message.topic:
            if body is None:
                self._write(f"[state cleared] {message.topic}")
            else:
                self._write(self._rendered(message.topic, body, render_state))
            return
        if body is None:
            return
        event_id = str(body.get("id"))
        if event_id in self._seen:
            self.duplicates += 1
            return
        self._seen[event_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        self.alerts += 1
        text = self._rendered(message.topic, body, render_payload)
        kind = str(body.get("event"))
        self._write(colour_for(kind, text) if self._colour else text)
        self._check()

    def _rendered(
        self, topic: str, body: dict[str, Any], render: Callable[[dict[str, Any]], str]
    ) -> str:
        try:
            return render(body)
        except (KeyError, TypeError, ValueError, AttributeError):  # another publisher's message
            self.unreadable += 1
            return f"[unreadable] {topic}: {str(body)[:200]}"

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


async def tail(
    settings: MqttSettings,
    *,
    account: str | None = None,
    kind: str | None = None,
    state: bool = False,
    stream: TextIO = sys.stdout,
) -> None:
    """Run until cancelled (Ctrl-C)."""
    prefix = settings.prefix
    filters = [event_filter(prefix, account=account, kind=kind), f"{prefix}/status/+"]
    if state:
        filters.append(state_filter(prefix, account=account))
    stream.write(f"liqmon tail: {settings.display_url()} {' '.join(filters)}\n")
    stream.flush()
    await subscribe(settings, filters, Printer(stream))
