"""The JSON Lines sink: one event payload (``docs/alerts.md``) per line.

Alerts, feed health events and the service's notices are written in stream order; retained
states are not (they are MQTT's). The file is its own exactly-once mark: after a restart the
service resumes after the last alert the file holds (:func:`last_alert_id`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from alerts.sink import OutputEvent
from alerts.topics import ALERT_KINDS
from monitor.events import AlertEvent, StateEvent, to_payload

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
TAIL_BYTES = 1 << 20
"""How far back from its end a file is searched for its last alert."""


def encode(event: OutputEvent) -> str:
    """The event's payload as one compact JSON line (without the newline). The standard
    library's encoder, made once: its float text (``2.8e-05``) is the one every event file
    written so far holds, which orjson's (``0.000028``) is not."""
    if isinstance(event, AlertEvent):
        return _ENCODER.encode(to_payload(event))
    if isinstance(event, StateEvent):
        raise TypeError("a state event has no JSON Lines form (it is a retained MQTT state)")
    return _ENCODER.encode(event.to_payload())


def last_alert_id(path: Path) -> str | None:
    """The ``id`` of the last alert line of a JSON Lines event file (searched from its end;
    feed events and notices are passed over): the file's own exactly-once mark."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            stream.seek(max(0, size - TAIL_BYTES))
            lines = stream.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            body = json.loads(line)
        except ValueError:
            continue  # a torn last line, or the cut first one
        if isinstance(body, dict) and body.get("event") in ALERT_KINDS and "id" in body:
            return str(body["id"])
    return None


class JsonLinesSink:
    """Writes each event as one JSON line to a text stream (a file, or stdout): alerts, feed
    health events and notices, in stream order (retained states are not written)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        owns_stream: bool = False,
        flush_each: bool = False,
        path: Path | None = None,
    ) -> None:
        """``flush_each``: hand every event to the OS at once (the service needs each written
        event to survive a crash of liqmon before it counts it as written). ``path``: the
        file written, if any (its last alert is the sink's mark, :meth:`last_alert_id`)."""
        self._stream = stream
        self._owns_stream = owns_stream
        self._flush_each = flush_each
        self.path = path
        self.written = 0

    def last_alert_id(self) -> str | None:
        return None if self.path is None else last_alert_id(self.path)

    async def publish(self, event: OutputEvent) -> None:
        if isinstance(event, StateEvent):
            return  # retained states are MQTT's
        self._stream.write(encode(event) + "\n")
        if self._flush_each:
            self._stream.flush()
        self.written += 1

    async def flush(self) -> None:
        self._stream.flush()

    async def close(self) -> None:
        self._stream.flush()
        if self._owns_stream:
            self._stream.close()
