"""A backlog in front of the engine is not a silent venue: feed staleness is judged by what the
feed had delivered when the input being applied arrived, and by the wall clock only once the
engine has caught up. (Without this, a burst of work — a first mark valuing 100,000 accounts —
declared every symbol stale, and the state events of that made the engine fall further behind.)
"""

from __future__ import annotations

import time
from pathlib import Path

from liqmon.service import Input, Service
from liqmon.settings import load_settings

SYMBOL = "BTC-USDT-SWAP"


def _service(tmp_path: Path) -> Service:
    settings = load_settings(
        None,
        feed={
            "venue": "okx",
            "symbols": SYMBOL,
            "url": "ws://127.0.0.1:9/unused",
            "expected_interval_ms": 100,
            "stale_after": 3,
        },
        state={"dir": tmp_path / "state"},
        http={"enabled": False},
    )
    return Service(settings)


def _tick(receive_ns: int) -> Input:
    return Input(
        source="feed:okx", symbol=SYMBOL, mark=100.0, text="100", ts=1, receive_ns=receive_ns
    )


async def test_a_queued_backlog_does_not_make_the_feed_stale(tmp_path: Path) -> None:
    service = _service(tmp_path)
    long_ago = time.time_ns() - 10_000_000_000  # applied now, received 10 s ago
    await service._put(_tick(long_ago))
    await service._apply(service.queue.get_nowait())
    await service._put(_tick(long_ago + 50_000_000))  # the feed kept delivering
    await service._check_feed()
    assert list(service.feed_events) == []


async def test_once_caught_up_the_wall_clock_says_the_feed_is_stale(tmp_path: Path) -> None:
    service = _service(tmp_path)
    await service._put(_tick(time.time_ns() - 10_000_000_000))
    await service._apply(service.queue.get_nowait())
    await service._check_feed()  # nothing queued: the venue has said nothing for 10 s
    assert [event.kind for event in service.feed_events] == ["feed_stale"]


async def test_queued_account_records_do_not_hide_a_silent_feed(tmp_path: Path) -> None:
    service = _service(tmp_path)
    await service._put(_tick(time.time_ns() - 10_000_000_000))
    await service._apply(service.queue.get_nowait())
    await service._put(Input(source="mqtt"))  # an account message waits; no tick does
    await service._check_feed()
    assert [event.kind for event in service.feed_events] == ["feed_stale"]
