"""The durable outbox: order, acknowledgement, bounded memory, and surviving a crash."""

from __future__ import annotations

from pathlib import Path

from alerts.outbox import ACKED_FILE, Outbox


def _fill(outbox: Outbox, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        outbox.append(f"t/{i}", f'{{"n":{i}}}'.encode(), message_id=f"id-{i}")


def _drain(outbox: Outbox) -> list[str]:
    seen = []
    while (message := outbox.head()) is not None:
        seen.append(message.message_id)
        outbox.ack(message.seq)
    return seen


def test_messages_come_out_in_order_and_leave_only_when_acknowledged(tmp_path: Path) -> None:
    """The head stays the head until acknowledged; acknowledged messages are gone."""
    outbox = Outbox(tmp_path)
    _fill(outbox, 3)
    first = outbox.head()
    assert first is not None
    assert outbox.head() is first  # not consumed by looking
    assert _drain(outbox) == ["id-0", "id-1", "id-2"]
    assert outbox.depth == 0
    assert outbox.head() is None
    outbox.close()


def test_unacknowledged_messages_survive_a_restart(tmp_path: Path) -> None:
    """Without close() (as after kill -9), a new Outbox on the directory still holds every
    message not acknowledged, in order."""
    crashed = Outbox(tmp_path, ack_persist_interval_s=0.0)
    _fill(crashed, 5)
    head = crashed.head()
    assert head is not None
    crashed.ack(head.seq)  # persisted at once (interval 0)
    restored = Outbox(tmp_path)  # opened without crashed.close(): what a kill -9 leaves
    assert restored.depth == 4
    assert _drain(restored) == ["id-1", "id-2", "id-3", "id-4"]
    restored.close()
    crashed._writer.close()  # type: ignore[union-attr]  # the dead process's handle


def test_acknowledgements_not_yet_persisted_mean_resending_not_losing(tmp_path: Path) -> None:
    """An acknowledgement still waiting to be persisted is lost in a crash: the message is
    delivered again (at least once), never skipped."""
    crashed = Outbox(tmp_path, ack_persist_interval_s=3600.0)
    _fill(crashed, 2)
    head = crashed.head()
    assert head is not None
    crashed.ack(head.seq)
    restored = Outbox(tmp_path)
    assert _drain(restored) == ["id-0", "id-1"]
    restored.close()
    crashed._writer.close()  # type: ignore[union-attr]


def test_memory_is_bounded_and_spilled_messages_come_back_in_order(tmp_path: Path) -> None:
    """Beyond the memory window, messages live on disk only (counted as spilled) and are read
    back in order as the window drains."""
    outbox = Outbox(tmp_path, memory_limit=10, segment_bytes=2_000)
    _fill(outbox, 95)
    stats = outbox.stats()
    assert stats.in_memory == 10
    assert stats.spilled == 85
    assert stats.depth == 95
    assert _drain(outbox) == [f"id-{i}" for i in range(95)]
    outbox.close()


def test_appends_while_draining_keep_their_place(tmp_path: Path) -> None:
    """Messages appended while spilled ones are still being read back come after them."""
    outbox = Outbox(tmp_path, memory_limit=4)
    _fill(outbox, 10)
    seen = []
    for _ in range(3):
        message = outbox.head()
        assert message is not None
        seen.append(message.message_id)
        outbox.ack(message.seq)
    _fill(outbox, 5, start=10)
    seen += _drain(outbox)
    assert seen == [f"id-{i}" for i in range(15)]
    outbox.close()


def test_a_partial_last_line_from_a_crash_is_dropped(tmp_path: Path) -> None:
    """A write cut short by a crash leaves half a line: it is removed on open, the rest
    kept."""
    outbox = Outbox(tmp_path)
    _fill(outbox, 2)
    outbox.close()
    (segment,) = tmp_path.glob("segment-*.jsonl")
    with open(segment, "ab") as stream:
        stream.write(b'{"seq": 3, "topic": "t/2", "payl')
    restored = Outbox(tmp_path)
    assert _drain(restored) == ["id-0", "id-1"]
    restored.close()


def test_fully_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    """Disk use follows the backlog: segments whose messages were all acknowledged go."""
    outbox = Outbox(tmp_path, segment_bytes=500, ack_persist_interval_s=0.0)
    _fill(outbox, 60)
    assert len(list(tmp_path.glob("segment-*.jsonl"))) > 3
    _drain(outbox)
    outbox.persist()
    assert len(list(tmp_path.glob("segment-*.jsonl"))) == 1  # the one being written
    assert (tmp_path / ACKED_FILE).read_text().strip() == "60"
    outbox.close()


def test_sequence_numbers_continue_after_a_restart(tmp_path: Path) -> None:
    """New messages after a restart are numbered after the old ones and queue behind them."""
    outbox = Outbox(tmp_path)
    _fill(outbox, 3)
    outbox.close()
    restored = Outbox(tmp_path)
    _fill(restored, 2, start=3)
    assert _drain(restored) == [f"id-{i}" for i in range(5)]
    restored.close()


def test_stats_report_the_age_of_the_oldest_unsent_message(tmp_path: Path) -> None:
    """Back-pressure is visible: depth and the age of the head, from the injected clock."""
    now = [1000.0]
    outbox = Outbox(tmp_path, clock=lambda: now[0])
    _fill(outbox, 2)
    now[0] = 1012.5
    stats = outbox.stats()
    assert stats.depth == 2
    assert stats.oldest_unsent_age_s == 12.5
    outbox.close()
