"""The cluster's pure parts: the partition of an account (checked against a real server's
mapping), the rules of partition leases, and one partition's log applied by a shard core
(redeliveries, late frames, records under another account's subject, snapshots, and alert ids
that do not depend on which other accounts a shard holds)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from feeds.normalized import parse_line
from liqmon.cluster.lease import LeaseTerms, Ownership
from liqmon.cluster.shard_core import ShardCore, restored, seeded
from liqmon.cluster.subjects import LogSubject, input_subject, parse_log_subject, partition_of
from liqmon.persistence import save_snapshot
from liqmon.settings import load_settings
from monitor.config import EngineConfig
from monitor.events import (
    LiquidationTriggered,
    MarginRecovered,
    MarginWarningRaised,
    to_payload,
)
from monitor.notices import InputRejected
from monitor.records import Record
from monitor.snapshot import EngineSnapshot
from tests.cluster_support import Step, binance_frame, workload
from tests.nats_support import NatsCluster

PARTITIONS = 3
VENUE = "binance-usdm"
VENUE_SUBJECT = LogSubject("venue", None)
AWKWARD = ["a.b", "x*y", "Zed", "_ops", "ünï", "with space"]


# -- the partition of an account ----------------------------------------------------------


async def _add_stream(js: Any) -> None:
    """Create the test stream, asking again while the cluster forms its JetStream quorum."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    config = StreamConfig(name="T", subjects=["liqmon.part.>"], num_replicas=PARTITIONS)
    while True:
        try:
            await js.add_stream(config)
            return
        except Exception:  # no JetStream quorum yet: ask again
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _stored_subjects(urls: list[str], accounts: list[str]) -> dict[str, str | Exception]:
    """Each account's record published to its input subject, and the subject the stream
    stored it under (or what the publish raised)."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream(timeout=1.0)  # short: the stream is asked again until it exists
        await _add_stream(js)
        stored: dict[str, str | Exception] = {}
        for account in accounts:
            subject = input_subject("liqmon", "records", account)
            try:
                ack = await js.publish(subject, json.dumps({"account": account}).encode())
                message = await js.get_msg("T", ack.seq)
            except Exception as exc:  # reported per account by the test
                stored[account] = exc
                continue
            assert message.subject is not None
            stored[account] = message.subject
        return stored
    finally:
        await nc.close()


@pytest.mark.integration
async def test_partition_of_agrees_with_the_servers_partition_mapping(tmp_path: Path) -> None:
    """A record published to an account's input subject is stored by a real three-node cluster
    under ``liqmon.part.{p}...`` with ``p == partition_of(account, 3)``, and parsing the stored
    subject gives back the account: for plain ids and for ids with a dot, a wildcard, capitals,
    a leading underscore, non-ASCII letters and a space."""
    accounts = [*AWKWARD, *(f"acct-{i}" for i in range(94))]
    cluster = NatsCluster(tmp_path, PARTITIONS).start()
    try:
        stored = await _stored_subjects(cluster.urls, accounts)
    finally:
        cluster.stop()
    wrong: dict[str, object] = {}
    for account, subject in stored.items():
        if isinstance(subject, Exception):
            wrong[account] = f"not stored: {subject!r}"
            continue
        expected = partition_of(account, PARTITIONS)
        parsed = parse_log_subject("liqmon", expected, subject)
        if parsed != LogSubject("records", account):
            wrong[account] = (subject, expected, parsed)
    assert len({partition_of(a, PARTITIONS) for a in accounts}) == PARTITIONS
    assert wrong == {}, f"stored elsewhere, or not at all: {wrong}"


# -- leases ---------------------------------------------------------------------------------


def test_a_fresh_instance_tries_every_partition_from_its_own_offset() -> None:
    """A fresh instance tries all partitions once, in order from its own first one (a
    rotation), and instances named s1, s2, s3 start at three different partitions."""
    terms = LeaseTerms(period_s=2.0)
    firsts = []
    for name in ("s1", "s2", "s3"):
        tried = Ownership(name, PARTITIONS, terms).to_acquire(0.0)
        assert sorted(tried) == list(range(PARTITIONS))
        assert tried == [(tried[0] + i) % PARTITIONS for i in range(PARTITIONS)]
        firsts.append(tried[0])
    assert sorted(firsts) == list(range(PARTITIONS))


def test_an_instance_at_its_maximum_tries_no_partition_and_refuses_one_more() -> None:
    """Once it holds ``max_owned`` partitions an instance tries none, however long it waits;
    a lease won meanwhile beyond the maximum is to be given back. Below the maximum it tries
    only the partitions it does not hold."""
    terms = LeaseTerms(period_s=2.0, max_owned=2)
    owner = Ownership("s1", 4, terms)
    first, second, third, fourth = owner.to_acquire(0.0)
    assert owner.acquired(first, 1, 0.0)
    assert owner.to_acquire(terms.poll_every_s) == [second, third, fourth]
    assert owner.acquired(second, 1, terms.poll_every_s)
    for now in (terms.poll_every_s * 2, 10.0, 1_000.0):
        assert owner.to_acquire(now) == []
    assert not owner.acquired(third, 1, 1_000.0)
    assert set(owner.held) == {first, second}


def test_renewals_are_due_every_third_of_a_period_and_a_lapsed_lease_is_overdue() -> None:
    """A lease is due for renewal (with the revision last written) a third of a period after
    it was written, not before; a renewal moves both the time and the revision; a lease not
    renewed for a whole period is overdue, and not a moment before."""
    terms = LeaseTerms(period_s=3.0)
    owner = Ownership("s1", PARTITIONS, terms)
    assert owner.acquired(2, 7, 10.0)
    assert owner.to_renew(10.0 + 0.999) == []
    assert owner.to_renew(11.0) == [(2, 7)]
    owner.renewed(2, 8, 11.0)
    assert owner.to_renew(11.5) == []
    assert owner.to_renew(12.0) == [(2, 8)]
    assert owner.overdue(13.999) == []
    assert owner.overdue(14.0) == [2]


def test_a_released_partition_is_tried_again_at_the_next_poll_not_before() -> None:
    """A partition given back (an overdue lease, a refused renewal) is tried again at the next
    poll, a quarter of a period after the previous one, not earlier."""
    terms = LeaseTerms(period_s=2.0)
    owner = Ownership("s1", PARTITIONS, terms)
    first = owner.to_acquire(0.0)[0]
    assert owner.acquired(first, 1, 0.1)
    assert owner.overdue(2.1) == [first]
    owner.released(first)
    assert owner.held == {}
    assert first in owner.to_acquire(2.1)  # the last poll was long ago
    assert owner.to_acquire(2.1 + terms.poll_every_s * 0.99) == []
    again = owner.to_acquire(2.1 + terms.poll_every_s)
    assert sorted(again) == list(range(PARTITIONS))


# -- one partition's log ------------------------------------------------------------------


ALERTS = (MarginWarningRaised, MarginRecovered, LiquidationTriggered)


def _config() -> EngineConfig:
    return load_settings().engine.config(state_sweep=False)


def _seeds(seed: int = 7) -> list[Record]:
    return [parse_line(line) for line in workload(seed).seeds.splitlines() if line.strip()]


def _core(partition: int = 0) -> ShardCore:
    return seeded(_config(), partition, VENUE, "mark", _seeds())


def _subject(step: Step) -> LogSubject:
    return VENUE_SUBJECT if step.account is None else LogSubject("records", step.account)


def _book(core: ShardCore) -> EngineSnapshot:
    """The engine's state, without the cluster's log position (which every message moves)."""
    snapshot = core.capture().without_bands()
    snapshot.meta.pop("cluster")
    return snapshot


def _apply(core: ShardCore, log: list[Step], first_seq: int = 1) -> list[dict[str, Any]]:
    """Apply ``log`` as stream sequences ``first_seq``...; the alerts' wire forms."""
    alerts = []
    for seq, step in enumerate(log, first_seq):
        out = core.apply(seq, _subject(step), step.line.encode(), now_ms=seq)
        if out is not None:
            alerts += [to_payload(e) for e in out.events if isinstance(e, ALERTS)]
    return alerts


def _partition_log(steps: list[Step], partition: int, partitions: int) -> list[Step]:
    return [
        s for s in steps if s.account is None or partition_of(s.account, partitions) == partition
    ]


def _position_step() -> Step:
    return next(
        s for s in workload(7).steps if s.account and json.loads(s.line)["type"] == "position"
    )


def test_a_message_at_or_below_the_applied_sequence_is_skipped_and_changes_nothing() -> None:
    """A record redelivered with a sequence at or below the last applied one is skipped
    (``None``, counted as redelivered) and changes neither the book nor the log position; the
    same record with the next sequence is applied and changes the book."""
    core = _core()
    step = _position_step()
    frame = binance_frame([{"ts": 1_000, "symbol": "BNBUSDT", "mark": "580"}])
    assert core.apply(10, VENUE_SUBJECT, frame.encode(), now_ms=0) is not None
    book = _book(core)
    for seq in (10, 3):
        assert core.apply(seq, _subject(step), step.line.encode(), now_ms=0) is None
    assert core.redelivered == 2
    assert core.applied_seq == 10
    assert _book(core) == book
    assert core.apply(11, _subject(step), step.line.encode(), now_ms=0) is not None
    assert core.applied_seq == 11
    assert _book(core) != book


def test_a_frame_all_of_whose_ticks_are_older_is_skipped_one_newer_tick_applies_it() -> None:
    """A venue frame each of whose ticks is older than its symbol's last applied tick is
    skipped (``None``, counted as late) and moves no mark; a frame with one newer tick among
    older ones is applied and moves that symbol's last tick."""
    core = _core()
    core.apply(1, _subject(_position_step()), _position_step().line.encode(), now_ms=0)
    newest = [
        {"ts": 2_000, "symbol": "BNBUSDT", "mark": "580"},
        {"ts": 2_000, "symbol": "1000PEPEUSDT", "mark": "0.0094"},
    ]
    assert core.apply(2, VENUE_SUBJECT, binance_frame(newest).encode(), now_ms=0) is not None
    book = _book(core)
    late = [
        {"ts": 1_999, "symbol": "BNBUSDT", "mark": "1"},
        {"ts": 1_000, "symbol": "1000PEPEUSDT", "mark": "0.0001"},
    ]
    assert core.apply(3, VENUE_SUBJECT, binance_frame(late).encode(), now_ms=0) is None
    assert core.late_frames == 1
    assert core.applied_seq == 3  # the skip is the log's: every owner skips it
    assert _book(core) == book
    mixed = [
        {"ts": 1_500, "symbol": "BNBUSDT", "mark": "1"},
        {"ts": 2_001, "symbol": "1000PEPEUSDT", "mark": "0.0095"},
    ]
    assert core.apply(4, VENUE_SUBJECT, binance_frame(mixed).encode(), now_ms=0) is not None
    assert core.late_frames == 1
    assert core.venue_ts == {"BNBUSDT": 2_000, "1000PEPEUSDT": 2_001}
    assert _book(core) != book


def test_a_record_under_another_accounts_subject_is_refused_as_wrong_partition() -> None:
    """A record of account A published as input of account B is refused with the reason
    ``wrong_partition`` (an input_rejected notice) and leaves the book as it was; under its own
    account's subject the same record is applied."""
    core = _core()
    step = _position_step()
    assert step.account != "someone-else"
    book = _book(core)
    out = core.apply(1, LogSubject("records", "someone-else"), step.line.encode(), now_ms=5)
    assert out is not None
    rejected = [e for e in out.events if isinstance(e, InputRejected)]
    assert [e.reason for e in rejected] == ["wrong_partition"]
    assert [e for e in out.events if not isinstance(e, InputRejected)] == []
    assert _book(core) == book
    applied = core.apply(2, _subject(step), step.line.encode(), now_ms=5)
    assert applied is not None
    assert not any(isinstance(e, InputRejected) for e in applied.events)
    assert _book(core) != book


@pytest.mark.parametrize("partition", range(PARTITIONS))
def test_a_restored_snapshot_gives_the_alerts_of_the_core_it_was_taken_from(
    partition: int,
) -> None:
    """A partition's core snapshotted halfway through its log of workload(7) and restored from
    the snapshot's bytes raises, over the second half, the same alerts (payloads and ids) as
    the core that went on, and both end in the same state."""
    log = _partition_log(workload(7).steps, partition, PARTITIONS)
    half = len(log) // 2
    config = _config()
    original = seeded(config, partition, VENUE, "mark", _seeds())
    _apply(original, log[:half])
    data = save_snapshot(original.capture())
    copy = restored(data, config, partition, VENUE, "mark")
    assert (copy.applied_seq, copy.venue_ts) == (half, original.venue_ts)
    went_on = _apply(original, log[half:], half + 1)
    from_snapshot = _apply(copy, log[half:], half + 1)
    assert went_on, "the second half raises alerts"
    assert from_snapshot == went_on
    assert copy.capture().without_bands() == original.capture().without_bands()


def test_alert_ids_do_not_depend_on_which_other_accounts_a_shard_holds() -> None:
    """The alerts of three shards of workload(7) (each with its partition's records and every
    frame), taken together, are exactly those of one core holding every account: same ids,
    same payloads, none missing, none extra."""
    steps = workload(7).steps
    shards: list[dict[str, Any]] = []
    for partition in range(PARTITIONS):
        shards += _apply(_core(partition), _partition_log(steps, partition, PARTITIONS))
    whole = _apply(_core(0), _partition_log(steps, 0, 1))
    assert len(whole) >= 10

    def key(alert: dict[str, Any]) -> tuple[str, str]:
        return alert["id"], json.dumps(alert, sort_keys=True)

    assert sorted(shards, key=key) == sorted(whole, key=key)
    assert len({a["id"] for a in whole}) == len(whole)
