"""The sans-I/O runtime, driven with a fake clock and no network: journal policy, restarts that
repeat nothing, de-duplication, feed staleness that does not depend on when it is checked,
rejects as events, snapshot policy, and the restart decisions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from feeds.health import FeedHealth, FeedRecovered, FeedStalled
from feeds.normalized import parse_line
from feeds.ticks import MarkTick
from liqmon.runtime import Runtime
from liqmon.runtime.restart import RunIdentity, decide_start, sink_resume
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.events import AlertEvent, StateEvent
from monitor.notices import InputRejected
from monitor.records import Record

MS = 1_000_000
CONTRACT = {
    "type": "contract",
    "symbol": "BTCUSDT",
    "kind": "linear",
    "margin_asset": "USDT",
    "contract_size": "1",
    "brackets": [{"floor": "0", "cap": "1e12", "mmr": "0.01", "cum": "0"}],
}


def rec(**fields: Any) -> Record:
    return parse_line(json.dumps(fields).encode())


def position(ts: int, account: str, qty: str, entry: str, wallet: str) -> Record:
    return rec(
        type="position",
        ts=ts,
        account=account,
        symbol="BTCUSDT",
        side="both",
        mode="isolated",
        qty=qty,
        entry=entry,
        leverage="20",
        isolated_wallet=wallet,
    )


def runtime(**options: Any) -> Runtime:
    engine = Engine(EngineConfig(policy="hold"))
    return Runtime(engine, journal=True, **options)


def tick(
    ts: int, mark: str, symbol: str = "BTCUSDT"
) -> tuple[list[str], list[float], list[str], list[int]]:
    return [symbol], [float(mark)], [mark], [ts]


def apply_all(rt: Runtime, records: list[Record]) -> tuple[list[bytes], list[Any]]:
    journal: list[bytes] = []
    events: list[Any] = []
    for record in records:
        out = rt.record(record, source="test", now_ms=0)
        journal += out.journal
        events += out.events
    return journal, events


def setup_records() -> list[Record]:
    # a long of 1 BTC at 100, wallet 10: MM 1 at mark 100; warned near MB = MM / level
    return [rec(**CONTRACT), position(1, "a", "1", "100", "10")]


def test_a_tick_that_changes_nothing_is_not_journaled_but_its_mark_precedes_the_next_record() -> (
    None
):
    """Ticks that move no alert state write nothing; the next record is journaled after the
    last mark of each symbol that ticked, so the journal values it at the same marks."""
    rt = runtime()
    apply_all(rt, setup_records())
    first = rt.ticks(*tick(10, "100"), source="feed")  # the first mark: no alert at ratio 0.1
    assert first.journal == []
    assert [e for e in first.events if isinstance(e, AlertEvent)] == []
    quiet = rt.ticks(*tick(11, "99.5"), source="feed")
    assert quiet.journal == []
    out = rt.record(position(12, "b", "2", "99", "20"), source="test", now_ms=0)
    kinds = [json.loads(line)["type"] for line in out.journal]
    assert kinds == ["tick", "position"]
    assert json.loads(out.journal[0])["mark"] == "99.5"


def test_a_batch_that_moves_an_alert_state_is_journaled_and_the_journal_restores_everything() -> (
    None
):
    """A tick batch that caused a warning is journaled whole; re-applying the journal to a
    fresh engine gives the same alert events (same ids) and the runtime's last alert."""
    rt = runtime()
    journal, events = apply_all(rt, setup_records())
    # warned at 91.2 (ratio 0.76), recovered at 99, warned again at 91 (ratio 0.91)
    for ts, mark in ((10, "100"), (11, "95"), (12, "91.2"), (13, "99"), (14, "91")):
        out = rt.ticks(*tick(ts, mark), source="feed")
        journal += out.journal
        events += out.events
    alerts = [e for e in events if isinstance(e, AlertEvent)]
    assert [e.kind for e in alerts] == ["margin_warning", "margin_recovered", "margin_warning"]
    restored = runtime()
    replayed = restored.restore([parse_line(line) for line in journal], {})
    assert [e.id for e in replayed if isinstance(e, AlertEvent)] == [e.id for e in alerts]
    assert restored.last_alert == rt.last_alert


def test_a_redelivered_margin_record_is_applied_once_even_across_a_snapshot() -> None:
    """The same margin record (account, symbol, side, amount, ts) twice changes the wallet
    once; the keys kept in the snapshot's meta still recognise it after a restart."""
    rt = runtime(deduplicate=True)
    apply_all(rt, setup_records())
    margin = rec(type="margin", ts=5, account="a", symbol="BTCUSDT", side="both", delta="3")
    first = rt.record(margin, source="mqtt", now_ms=0)
    again = rt.record(margin, source="mqtt", now_ms=0)
    assert first.journal
    assert not again.journal
    assert rt.stats.duplicates == 1
    restarted = runtime(deduplicate=True)
    restarted.restore([], rt.snapshot_meta())
    assert not restarted.record(margin, source="mqtt", now_ms=0).journal
    assert restarted.stats.duplicates == 1


def frame(symbol: str, ts: int) -> tuple[MarkTick, ...]:
    return (MarkTick("okx", symbol, 100.0, "100", ts, None),)


def stale_runtime() -> Runtime:
    health = FeedHealth("okx", expected_interval_s=0.1, multiple=4)  # stale after 400 ms
    return Runtime(Engine(), health=health)


def feed_events(rt: Runtime, steps: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    got = []
    for kind, arg in steps:
        if kind == "frame":
            symbol, received_ms = arg
            out = rt.frame(frame(symbol, received_ms), received_ms * MS, source="feed:okx")
        else:
            out = rt.clock(arg * MS)
        got += [e.to_payload() for e in out.events if isinstance(e, FeedStalled | FeedRecovered)]
    return got


def test_staleness_is_stamped_when_the_limit_passed_however_late_it_is_checked() -> None:
    """A symbol silent for the limit is reported with ts = its last mark + the limit, whether
    the clock looks 1 ms or 5 s after that, or a later frame of another symbol finds it first;
    the recovery is stamped with the mark that ended the silence."""
    outcomes = []
    for check in (
        [("clock", 1_401)],
        [("clock", 6_000)],
        [("frame", ("ETH", 1_450))],
    ):
        rt = stale_runtime()
        steps = [("frame", ("BTC", 1_000)), ("frame", ("ETH", 1_300)), *check]
        steps += [("clock", 1_800), ("frame", ("BTC", 2_000))]
        outcomes.append(feed_events(rt, steps))
    first = outcomes[0]
    assert all(o[:1] == first[:1] for o in outcomes)
    stale = first[0]
    assert (stale["event"], stale["symbol"], stale["ts"], stale["stale_ms"]) == (
        "feed_stale",
        "BTC",
        1_400,
        400,
    )
    recovered = [e for e in first if e["event"] == "feed_recovered"]
    assert [(e["symbol"], e["ts"]) for e in recovered] == [("BTC", 2_000)]


def test_symbols_go_stale_in_the_order_their_limits_passed() -> None:
    """Two symbols found stale by one late look come in the order of their deadlines, not
    by name."""
    rt = stale_runtime()
    got = feed_events(rt, [("frame", ("ZZZ", 1_000)), ("frame", ("AAA", 1_100)), ("clock", 9_000)])
    assert [(e["symbol"], e["ts"]) for e in got] == [("ZZZ", 1_400), ("AAA", 1_500)]


def test_a_frame_received_before_a_deadline_is_applied_before_that_deadline_is_judged() -> None:
    """The clock passes through the same queue as the frames, so a frame received before a
    look at the clock is applied first: a symbol whose mark arrived in time is never stale."""
    rt = stale_runtime()
    got = feed_events(rt, [("frame", ("BTC", 1_000)), ("frame", ("BTC", 1_399)), ("clock", 1_600)])
    assert got == []


def test_a_refused_input_is_an_event_with_its_reason_and_the_account_channel_moves_no_price() -> (
    None
):
    """With rejects published, a bad message is an InputRejected event (reason, topic, the
    payload quoted); a tick on the records topic is refused and the mark is not moved."""
    rt = Runtime(Engine(), publish_rejects=True)
    rt.record(rec(**CONTRACT), source="test", now_ms=0)
    bad = rt.message("records", b"{not json", now_ms=7)
    (notice,) = bad.events
    assert isinstance(notice, InputRejected)
    assert (notice.reason, notice.topic, notice.ts, notice.payload) == (
        "invalid_json",
        "records",
        7,
        "{not json",
    )
    line = json.dumps({"type": "tick", "ts": 5, "symbol": "BTCUSDT", "mark": "1"}).encode()
    (refused,) = rt.message("records", line, now_ms=8).events
    assert isinstance(refused, InputRejected)
    assert refused.reason == "tick_on_account_topic"
    assert rt.engine.book.symbols.v_mark_ts[0] < 0  # never marked
    (unknown,) = rt.message("elsewhere", b"{}", now_ms=9).events
    assert isinstance(unknown, InputRejected)
    assert unknown.reason == "unknown_topic"
    assert rt.stats.rejected_by_source[("mqtt", "invalid_json")] == 1


def test_a_snapshot_is_due_after_the_interval_once_the_journal_is_worth_it() -> None:
    """Not before the interval, not while the journal since the last snapshot is short of a
    quarter of the open positions (at least one line), then yes; taking it starts over."""
    rt = runtime(snapshot_interval_s=60)
    assert not rt.clock(0).snapshot_due  # the interval starts at the first look
    assert not rt.clock(61_000 * MS).snapshot_due  # nothing journaled
    apply_all(rt, setup_records())
    assert not rt.clock(30_000 * MS).snapshot_due  # journaled, but within the interval
    assert rt.clock(61_000 * MS).snapshot_due
    rt.snapshot_taken(61_000 * MS)
    assert not rt.clock(62_000 * MS).snapshot_due
    assert rt.stats.snapshots == 1


IDENTITY = RunIdentity(out=("/x/a.jsonl", ""), accounts=("/x/seed.jsonl", "d1"))


@pytest.mark.parametrize(
    ("stored", "has_state", "choice", "action", "words"),
    [
        (None, False, "auto", "fresh", "no state"),
        (IDENTITY, True, "auto", "restore", "restoring"),
        (RunIdentity(out=("/x/b.jsonl", "")), True, "auto", "refuse", "--out b.jsonl, now a.jsonl"),
        (
            RunIdentity(out=("/x/a.jsonl", ""), accounts=("/x/seed.jsonl", "d0")),
            True,
            "auto",
            "refuse",
            "--accounts seed.jsonl with other content",
        ),
        (RunIdentity(out=("/x/b.jsonl", "")), True, "resume", "restore", "--resume"),
        (RunIdentity(out=("/x/b.jsonl", "")), True, "fresh", "fresh", "discarded"),
        (None, True, "auto", "refuse", "does not record"),
    ],
)
def test_a_start_from_state_left_by_other_inputs_is_explicit(
    stored: RunIdentity | None, has_state: bool, choice: Any, action: str, words: str
) -> None:
    """Same inputs restore; other inputs refuse with one line naming the directory, what
    changed and both choices, unless --resume or --fresh says what to do."""
    decision = decide_start("/s", stored, IDENTITY, has_state=has_state, choice=choice)
    assert decision.action == action
    assert words in decision.line
    assert "\n" not in decision.line
    if action == "refuse":
        for needed in ("/s", "--resume", "--fresh"):
            assert needed in decision.line


def test_a_sink_resumes_after_the_last_alert_its_own_file_holds() -> None:
    """Its last alert among the re-emitted ones: only those after it; the snapshot's last:
    all of them; nothing written and nothing emitted before the journal: all; anything else
    is inconsistent (another file, a truncated one)."""
    rt = runtime()
    journal, _ = apply_all(rt, setup_records())
    for ts, mark in ((10, "100"), (11, "91.2"), (12, "99"), (13, "91")):
        journal += rt.ticks(*tick(ts, mark), source="feed").journal
    replayed = runtime().restore([parse_line(line) for line in journal], {})
    alerts = [e for e in replayed if isinstance(e, AlertEvent)]
    assert len(alerts) >= 2
    middle = alerts[0]
    assert sink_resume("f", middle.id, None, replayed).skip_through == middle.seq
    assert sink_resume("f", None, None, replayed).skip_through == -1
    snapshot_last = (alerts[0].seq - 1, "before")
    assert sink_resume("f", "before", snapshot_last, replayed).consistent
    assert sink_resume("f", "before", snapshot_last, replayed).skip_through == alerts[0].seq - 1
    foreign = sink_resume("f", "elsewhere", snapshot_last, replayed)
    assert not foreign.consistent
    assert "never emitted" in foreign.detail
    empty = sink_resume("f", None, snapshot_last, replayed)
    assert not empty.consistent
    assert all(isinstance(e, AlertEvent | StateEvent) for e in replayed)
