"""The subjects of a liqmon cluster, and the partition an account belongs to (pure).

The trading system publishes account input to ``{prefix}.in.{kind}.{account}``: ``kind`` is
``records`` (normalized account records) or ``binance`` (Binance user-data events), as on the
MQTT input topics ``records`` and ``binance/{account}``. The servers' subject mapping stores it
under ``{prefix}.part.{p}.in.{kind}.{account}``, ``p`` being ``partition(N, account)``: the
FNV-1a 32-bit hash of the account token modulo ``N`` (:func:`partition_of` computes the same).
Every instance relays the venue frames it receives to ``{prefix}.part.{p}.venue`` of every
partition, with a message id made from the frame's bytes, so that JetStream keeps one copy of
each frame per partition however many instances relay it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple
from urllib.parse import quote, unquote

INPUT_KINDS = ("records", "binance")


def account_token(account: str) -> str:
    """The subject token of an account: percent-encoded where NATS would read a separator
    or a wildcard (a plain account id is its own token)."""
    # quote() never encodes ".", NATS's separator
    return quote(account, safe="-_~!$&'()+,;=:@").replace(".", "%2E")


def input_subject(prefix: str, kind: str, account: str) -> str:
    """Where the trading system publishes ``kind`` input of ``account``."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
    return f"{prefix}.in.{kind}.{account_token(account)}"


def fnv1a_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def partition_of(account: str, partitions: int) -> int:
    """The partition of ``account``: what the server's ``partition(N, account)`` mapping gives."""
    return fnv1a_32(account_token(account).encode()) % partitions


def partition_subjects(prefix: str, partition: int) -> str:
    """Everything partition ``partition`` applies, in the log's order."""
    return f"{prefix}.part.{partition}.>"


def venue_subject(prefix: str, partition: int) -> str:
    return f"{prefix}.part.{partition}.venue"


def relay_message_id(partition: int, frame: bytes) -> str:
    """The same frame relayed by any instance has the same id (JetStream keeps one copy)."""
    return f"venue.{partition}.{hashlib.blake2b(frame, digest_size=16).hexdigest()}"


class LogSubject(NamedTuple):
    """What a message of a partition's log is: a venue frame, or input of one account."""

    kind: str  # "venue", "records" or "binance"
    account: str | None  # decoded; None for a venue frame


def parse_log_subject(prefix: str, partition: int, subject: str) -> LogSubject | None:
    """The parts of a log subject, or ``None`` if it is none of liqmon's."""
    head = f"{prefix}.part.{partition}."
    if not subject.startswith(head):
        return None
    tail = subject[len(head) :]
    if tail == "venue":
        return LogSubject("venue", None)
    parts = tail.split(".")
    if len(parts) == 3 and parts[0] == "in" and parts[1] in INPUT_KINDS and parts[2]:
        return LogSubject(parts[1], unquote(parts[2]))
    return None


def server_mapping(prefix: str, partitions: int) -> tuple[str, str]:
    """The ``mappings`` entry every server of the cluster needs (docs/deployment.md)."""
    return (
        f"{prefix}.in.*.*",
        f"{prefix}.part.{{{{partition({partitions},2)}}}}.in.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
    )
