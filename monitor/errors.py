"""The exception tree of liqmon: every error its packages raise on purpose is defined here.

::

    LiqmonError                  root: catch this to catch everything liqmon raises on purpose
    ├── ConfigError              a setting is invalid (levels, hysteresis, policy, a URL, ...)
    │   ├── BracketFileError     a tier-table file (--brackets) is not one in a known shape
    │   └── StartRefused         the state directory does not match this run's inputs
    ├── TierTableError           a maintenance tier table cannot be used (gaps, overlaps, ...)
    ├── RecordRefused            an input was not applied; ``reason`` is a stable code
    │   ├── MalformedRecord      the input itself is invalid (bad JSON, missing field, NaN, ...)
    │   │   └── NumberError      a value where a decimal belongs that is not one (a ValueError)
    │   ├── RecordRejected       valid input that cannot apply (margin for a closed position)
    │   ├── TickDropped          a valid tick that is ignored by rule (stale, unknown symbol)
    │   └── MessageIgnored       a valid input message with nothing to apply (an order update)
    ├── BadRequest               a what-if shock request cannot be answered; ``reason``, ``detail``
    ├── UnreadableFile           a file cannot be opened or read (missing, corrupt, truncated gzip)
    │   └── UnknownFormat        a readable file in none of the capture formats
    ├── SnapshotError            the state's snapshot cannot be restored
    ├── RecordingFailed          a recording file cannot be created or written
    ├── FeedFailed               a live feed cannot go on (refused by the venue, a bad URL, ...)
    └── BrokerError              the MQTT broker cannot be reached, refused, or was lost
        ├── LinkDown             the MQTT link has no connection at the moment
        └── LocalBrokerFailed    the private Mosquitto (demo, tests) could not be started

Library errors are translated where they enter liqmon, into one of these: decoding errors of
orjson, msgspec and the ``json`` module become :class:`MalformedRecord` (the parsers in
``feeds/``), ``aiomqtt.MqttError`` and paho's socket errors :class:`BrokerError` (the MQTT
clients, which retry them), websockets' and ``OSError`` failures of a venue :class:`FeedFailed`
when they are not worth retrying (``feeds.live``), and ``OSError`` on a file
:class:`UnreadableFile`, :class:`RecordingFailed`, :class:`SnapshotError` or
:class:`ConfigError` (TLS files). ``liqmon`` prints any of them as one line and exits non-zero.

``reason`` codes are part of the public surface: summaries, logs and metrics count by them.
"""

from __future__ import annotations


class LiqmonError(Exception):
    """Root of every error liqmon raises on purpose."""


class ConfigError(LiqmonError):
    """A configuration value is invalid; the message names the setting."""


class BracketFileError(ConfigError):
    """A tier-table file is not a tier table in any recognised shape (or cannot be read)."""


class StartRefused(ConfigError):
    """``liqmon run`` will not continue from state left by other inputs (or whose sinks do not
    hold what it emitted) without ``--resume`` or ``--fresh``; the message says which."""


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


class NumberError(MalformedRecord, ValueError):
    """Where a decimal belongs, a value liqmon does not accept; ``reason`` says why
    (``invalid_field``, ``non_finite_number``, ``number_out_of_range``, ``non_ascii_digits``).
    Also a ``ValueError``, which the record models' validators turn into a field error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.args = (detail,)  # as a ValueError: the message alone


class RecordRejected(RecordRefused):
    """A well-formed record that cannot be applied to the current state."""


class TickDropped(RecordRefused):
    """A well-formed tick that the rules say to ignore (stale, or for a symbol with no contract)."""


class MessageIgnored(RecordRefused):
    """A well-formed input message that carries nothing liqmon applies: a Binance user-data
    event other than an account's balances, positions or asset mode (an order update, a
    leverage change)."""


class BadRequest(LiqmonError):
    """A what-if shock request that cannot be answered; ``reason`` is a stable code."""

    reason: str
    detail: str

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class UnreadableFile(LiqmonError):
    """The file cannot be opened or read (missing, unreadable, a corrupt or truncated gzip)."""


class UnknownFormat(UnreadableFile):
    """The file is readable but holds none of the capture formats (nor normalized records)."""


class SnapshotError(LiqmonError):
    """A snapshot cannot be restored (unreadable, unknown version, inconsistent content)."""


class RecordingFailed(LiqmonError):
    """A recording file could not be created or written."""


class FeedFailed(LiqmonError):
    """The feed cannot continue: the venue refused it in a way retrying will not fix."""


class BrokerError(LiqmonError):
    """The MQTT broker cannot be reached, refused a connection or a subscription, or the
    connection was lost (``aiomqtt.MqttError`` and paho's socket errors, translated where they
    enter liqmon)."""


class LinkDown(BrokerError):
    """The link has no connection to the broker at the moment (it is reconnecting)."""


class LocalBrokerFailed(BrokerError):
    """The private Mosquitto could not be started (not installed, or it did not listen)."""
