"""The exception tree of liqmon.

::

    LiqmonError                      root: catch this to catch everything liqmon raises on purpose
    ├── ConfigError                  a setting is invalid (levels, hysteresis, policy, ...)
    ├── TierTableError               a maintenance tier table cannot be used (gaps, overlaps, ...)
    └── RecordRefused                a record was not applied; ``reason`` is a stable code
        ├── MalformedRecord          the input itself is invalid (bad JSON, missing field, NaN, ...)
        ├── RecordRejected           valid input that cannot apply (margin for a closed position)
        └── TickDropped              a valid tick that is ignored by rule (stale, unknown symbol)

``reason`` codes are part of the public surface: summaries, logs and metrics count by them.
"""

from __future__ import annotations


class LiqmonError(Exception):
    """Root of every error liqmon raises on purpose."""


class ConfigError(LiqmonError):
    """A configuration value is invalid; the message names the setting."""


class TierTableError(LiqmonError):
    """A maintenance tier table is inconsistent in a way that makes tier selection ambiguous."""


class RecordRefused(LiqmonError):
    """A record was not applied. ``reason`` is a short stable code, ``detail`` is for humans."""

    reason: str
    detail: str

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class MalformedRecord(RecordRefused):
    """The record is not valid input: unparsable, a missing or mistyped field, a bad number."""


class RecordRejected(RecordRefused):
    """A well-formed record that cannot be applied to the current state."""


class TickDropped(RecordRefused):
    """A well-formed tick that the rules say to ignore (stale, or for a symbol with no contract)."""


class BrokerError(LiqmonError):
    """The MQTT broker cannot be reached, refused a connection or a subscription, or the
    connection was lost (``aiomqtt.MqttError`` and paho's socket errors, translated where they
    enter liqmon)."""
