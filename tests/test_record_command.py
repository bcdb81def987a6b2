"""``liqmon record`` against a local venue playing real frames, read back by ``liqmon replay``.

The fake venue plays the first frames of the real Bybit capture; ``liqmon record`` (a separate
process, as a user runs it) writes them with receive times, across a dropped connection; the
recording replays through ``liqmon replay`` to exactly the events of replaying the original
capture, because it holds exactly the frames the venue sent.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import sys
from pathlib import Path

from feeds.captures import detect_format, numbered_frames
from tests.conftest import ROOT
from tests.fake_exchange import (
    Start,
    fake_exchange_fixture,  # noqa: F401  # registers the fake_exchange fixture
)

BYBIT = (
    ROOT / "tests" / "data" / "captures" / "bybit_v5_linear_tickers_cryptofeed_2026-08-09.jsonl.gz"
)
FRAMES = 300
LIQMON = [sys.executable, "-m", "liqmon.cli"]

CONTRACTS = [
    json.dumps(
        {
            "type": "contract",
            "symbol": symbol,
            "kind": "linear",
            "margin_asset": "USDT",
            "contract_size": "1",
            "brackets": [{"floor": "0", "cap": "1e12", "mmr": "0.005", "cum": "0"}],
        }
    )
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
]
# Shorts whose ratio is 0.9 at the first marks of the capture (entry = that mark): every small
# rise warns, a bigger one liquidates.
SHORTS = [
    json.dumps(
        {
            "type": "position",
            "ts": 1,
            "account": f"short-{symbol}",
            "symbol": symbol,
            "side": "both",
            "mode": "isolated",
            "qty": f"-{qty}",
            "entry": entry,
            "leverage": "100",
            "isolated_wallet": str(float(entry) * qty * 0.005 / 0.9),
        }
    )
    for symbol, entry, qty in (("BTCUSDT", "65117.44", 1), ("SOLUSDT", "77.271", 100))
]


async def _liqmon(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *LIQMON, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_recording_replays_to_the_events_of_the_original_capture(
    fake_exchange: Start, tmp_path: Path
) -> None:
    """Record the venue's frames (one drop on the way), then replay the recording and the
    original capture with the same accounts: identical alert events, and the recording holds
    exactly the frames that were sent, each with a receive time."""
    original = tmp_path / "original.jsonl.gz"
    with gzip.open(BYBIT, "rb") as stream:
        lines = [line for _, line in zip(range(FRAMES), stream, strict=False)]
    original.write_bytes(gzip.compress(b"".join(lines)))
    script = [
        raw.decode() if isinstance(raw, bytes) else raw
        for _, (_, raw) in numbered_frames(original, "wrapped")
    ]
    fake = await fake_exchange(
        "bybit", interval_s=0.002, script=script, drop_after=frozenset({120})
    )
    recorded = tmp_path / "recorded"
    status, stderr = await _liqmon(
        "record",
        "--feed",
        "bybit",
        "--symbols",
        "BTCUSDT,ETHUSDT,SOLUSDT,DOGEUSDT",
        "--feed-url",
        fake.url,
        "--dir",
        str(recorded),
        "--max-frames",
        str(FRAMES),  # data frames (subscription acks and pongs are not recorded)
        "--duration",
        "30",
    )
    assert status == 0, stderr
    assert "stopped by max_frames" in stderr
    (recording,) = recorded.iterdir()
    assert recording.name.startswith("bybit-")
    assert detect_format(recording) == "prefixed"
    recorded_frames = list(numbered_frames(recording, "prefixed"))
    assert all(received for _, (received, _) in recorded_frames)
    assert [bytes(raw).decode() for _, (_, raw) in recorded_frames] == script
    assert fake.drops == 1

    accounts = tmp_path / "accounts.jsonl"
    accounts.write_text("\n".join([*CONTRACTS, *SHORTS]) + "\n")
    events = {}
    for name, capture in (("original", original), ("recording", recording)):
        out = tmp_path / f"{name}.events.jsonl"
        status, stderr = await _liqmon(
            "replay",
            str(capture),
            "--venue",
            "bybit",
            "--accounts",
            str(accounts),
            "--out",
            str(out),
        )
        assert status == 0, stderr
        events[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert events["recording"] == events["original"]
    assert {e["event"] for e in events["original"]} >= {"margin_warning"}


async def test_sigterm_stops_a_recording_with_a_complete_file(
    fake_exchange: Start, tmp_path: Path
) -> None:
    """SIGTERM ends ``liqmon record`` with status 0 and a finished gzip file."""
    fake = await fake_exchange("okx", interval_s=0.01)
    process = await asyncio.create_subprocess_exec(
        *LIQMON,
        "record",
        "--feed",
        "okx",
        "--symbols",
        "BTC-USDT-SWAP",
        "--feed-url",
        fake.url,
        "--dir",
        str(tmp_path),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    await fake.wait_until(lambda: len(fake.sent) >= 20, within_s=30)
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert "stopped by signal" in stderr.decode()
    (recording,) = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    with gzip.open(recording) as complete:
        assert complete.read().count(b"\n") >= 20
