"""The JSON Lines sink: one alert payload (``docs/alerts.md``) per line."""

from __future__ import annotations

import json
from typing import TextIO

from monitor.events import AlertEvent, EngineEvent, StateEvent, to_payload

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode(event: AlertEvent) -> str:
    """The event's payload as one compact JSON line (without the newline). The standard
    library's encoder, made once: its float text (``2.8e-05``) is the one every event file
    written so far holds, which orjson's (``0.000028``) is not."""
    return _ENCODER.encode(to_payload(event))


class JsonLinesSink:
    """Writes each event as one JSON line to a text stream (a file, or stdout)."""

    def __init__(
        self, stream: TextIO, *, owns_stream: bool = False, flush_each: bool = False
    ) -> None:
        """``flush_each``: hand every event to the OS at once (the service needs each written
        event to survive a crash of liqmon before it counts it as written)."""
        self._stream = stream
        self._owns_stream = owns_stream
        self._flush_each = flush_each
        self.written = 0

    async def publish(self, event: EngineEvent) -> None:
        if isinstance(event, StateEvent):
            return  # the JSON Lines sink carries the alert events only
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
