"""Live latency: from a mark leaving the venue to the alert it triggers reaching a subscriber.

    python -m bench.live                      # 100,000 accounts, 1,000 ticks/s, 120 s measured
    python -m bench.live --jump-every 2       # stress: a 4–8 % jump every 0.4 s
    python -m bench.live --accounts 5000 --far-accounts 0 --seconds 20

What runs, all on loopback:

* a real Mosquitto (``liqmon.broker.LocalBroker``);
* a local Binance USDⓈ-M venue: a websockets server that pushes ``!markPrice@arr`` frames
  (the real message shape) for 200 symbols, ``--frames-per-s`` of them (5 by default: 1,000
  ticks/s). Prices follow a random walk of one-second Binance volatility; every
  ``--jump-every`` frames (25: every 5 s) one symbol jumps 4–8 %, which triggers warnings and
  liquidations among the active accounts, so alerts are mixed into ordinary ticks. Each
  frame's event time ``E`` is unique, and the wall-clock time it was handed to the socket is
  kept;
* ``liqmon run --feed binance-usdm --symbols all`` as its own process, seeded with the accounts
  (``bench/generate.py``: ``--accounts`` active ones and ``--far-accounts`` far from any
  threshold, real tiers) and publishing to the broker;
* a plain subscriber on ``liqmon/v1/events/#``: ``mosquitto_sub`` as its own process, which
  stamps each message as it reads it (a subscriber in this process would share its
  interpreter lock with the venue). An alert's ``ts`` is the ``E`` of the
  frame whose mark caused it, so its latency is its arrival time minus that frame's send time:
  websocket, parsing, the engine, the outbox, MQTT and the broker, end to end.

The first frames value every position at its first mark (all holders of every symbol are
evaluated once); alerts of the first ``--warmup-s`` seconds are reported apart from the
steady state. Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from websockets.asyncio.server import ServerConnection, serve

from bench.generate import Workload
from liqmon.broker import LocalBroker, free_port

SYMBOLS = 200


def _workload_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(
        accounts=args.accounts,
        far_accounts=args.far_accounts,
        ticks=0,
        symbols=SYMBOLS,
        inverse_share=0.0,  # the USDⓈ-M stream carries linear contracts only
        record_every=0,
        jump_probability=0.0,
        seed=args.seed,
    )


class Venue:
    """The local Binance: pushes mark frames to every connected client."""

    def __init__(self, prices: dict[str, float], volatility: dict[str, float], args: Any) -> None:
        self.prices = prices
        self.volatility = volatility
        self.args = args
        self.rng = random.Random(args.seed)
        self.sent: dict[int, int] = {}  # E -> wall-clock ns the frame was handed to the socket
        self.clients: set[ServerConnection] = set()
        self.connected = asyncio.Event()
        self.frames = 0
        self.jumps = 0
        self.bursts = 0
        self._last_e = 0

    async def handle(self, ws: ServerConnection) -> None:
        self.clients.add(ws)
        self.connected.set()
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)

    def _frame(self) -> tuple[int, bytes]:
        rng = self.rng
        self.frames += 1
        jump_symbol = None
        if self.args.jump_every and self.frames % self.args.jump_every == 0:
            jump_symbol = rng.choice(sorted(self.prices))
            self.jumps += 1
        burst = 0.0  # every symbol moves together: a burst of state changes across the book
        if self.args.burst_every and self.frames % self.args.burst_every == 0:
            burst = rng.choice((-1, 1)) * self.args.burst_move
            self.bursts += 1
        now_ms = time.time_ns() // 1_000_000
        e = max(now_ms, self._last_e + 1)
        self._last_e = e
        data = []
        for symbol, price in self.prices.items():
            step = rng.gauss(0.0, self.volatility[symbol]) + burst
            if symbol == jump_symbol:
                step += rng.choice((-1, 1)) * rng.uniform(0.04, 0.08)
            price = min(max(price * math.exp(step), 1e-6), 1e7)
            self.prices[symbol] = price
            data.append(
                {
                    "e": "markPriceUpdate",
                    "E": e,
                    "s": symbol,
                    "p": f"{price:.8g}",
                    "P": f"{price:.8g}",
                    "i": f"{price:.8g}",
                    "r": "0.00010000",
                    "T": e - e % 28_800_000 + 28_800_000,
                }
            )
        return e, orjson.dumps({"stream": "!markPrice@arr@1s", "data": data})

    async def push(self, seconds: float) -> None:
        interval = 1.0 / self.args.frames_per_s
        started = time.monotonic()
        due = started
        while time.monotonic() - started < seconds:
            e, frame = self._frame()
            text = frame.decode()
            for ws in list(self.clients):
                self.sent[e] = time.time_ns()
                with contextlib.suppress(Exception):
                    await ws.send(text)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the venue's pace


class Subscriber:
    """A plain subscriber: ``mosquitto_sub`` as its own process, printing each message with
    the time it read it (``%U``: Unix time with nanoseconds, the clock the venue stamps its
    frames with). Its output is collected by a thread; the stamps are the subscriber's, so
    reading them later costs nothing."""

    def __init__(self, port: int) -> None:
        self.arrivals: list[tuple[int, bytes]] = []  # (receive ns, payload)
        binary = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
        self._process = subprocess.Popen(  # a fixed binary on loopback
            [
                binary,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-q",
                "1",
                "-t",
                "liqmon/v1/events/#",
                "-F",
                "%U %p",
            ],
            stdout=subprocess.PIPE,
        )
        self._seen_probe = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while not self._seen_probe.is_set():  # subscribed once a probe comes back
            if time.monotonic() > deadline:
                raise TimeoutError("the subscriber did not subscribe")
            publish = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-probe")
            publish.connect("127.0.0.1", port)
            publish.loop_start()
            publish.publish("liqmon/v1/events/probe", b"probe", qos=1).wait_for_publish(5)
            publish.disconnect()
            publish.loop_stop()
            self._seen_probe.wait(0.5)

    def _read(self) -> None:
        assert self._process.stdout is not None  # a pipe, above
        for line in self._process.stdout:
            stamp, _, payload = line.rstrip(b"\n").partition(b" ")
            if payload == b"probe":
                self._seen_probe.set()
                continue
            seconds, _, fraction = stamp.partition(b".")
            ns = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, b"0")[:9])
            self.arrivals.append((ns, payload))

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        self._reader.join(10)


def _wait_ready(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError("liqmon run exited during start-up")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(  # loopback
                f"http://127.0.0.1:{port}/readyz", timeout=2
            ) as response,
        ):
            if response.status == 200:
                return time.monotonic() - started
        time.sleep(0.2)  # polling a starting process
    raise TimeoutError("liqmon run did not become ready")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _breakdown(http_port: int) -> dict[str, dict[str, float | None]]:
    """``liqmon_alert_path_seconds`` from /metrics: for each step of the alert path its mean and
    its p50/p99 (upper bounds of the histogram's buckets), in ms."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(  # loopback
        f"http://127.0.0.1:{http_port}/metrics", timeout=10
    ) as response:
        text = response.read().decode()
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("liqmon_alert_path_seconds", "liqmon_gc_pause_seconds"):
            continue
        for sample in family.samples:
            step = sample.labels.get("step") or f"gc{sample.labels['generation']}"
            if sample.name.endswith("_bucket"):
                buckets.setdefault(step, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[step] = sample.value
            elif sample.name.endswith("_count"):
                counts[step] = sample.value

    def quantile(step: str, q: float) -> float | None:
        total = counts.get(step, 0.0)
        for bound, cumulative in sorted(buckets.get(step, [])):
            if total and cumulative >= q * total:
                return None if math.isinf(bound) else round(bound * 1000, 3)
        return None

    return {
        step: {
            "count": counts[step],
            "mean_ms": round(sums[step] / counts[step] * 1000, 3) if counts[step] else None,
            "p50_le_ms": quantile(step, 0.5),
            "p99_le_ms": quantile(step, 0.99),
        }
        for step in (
            "venue",
            "parse",
            "wait",
            "engine",
            "journal",
            "sinks",
            "mqtt",
            "gc0",
            "gc1",
            "gc2",
        )
        if step in counts
    }


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(ordered[-1], 3),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload(_workload_args(args))
    with (
        tempfile.TemporaryDirectory() as tmp,
        open(args.log, "wb") as log_file,  # noqa: ASYNC230  # opened once, before the run
    ):
        accounts = Path(tmp) / "accounts.jsonl"
        lines = b"".join(orjson.dumps(record) + b"\n" for record in workload.records())
        await asyncio.to_thread(accounts.write_bytes, lines)
        prices = {m.symbol: m.price for m in workload.markets}
        volatility = {m.symbol: m.volatility for m in workload.markets}
        venue = Venue(prices, volatility, args)
        with LocalBroker() as broker:
            server = await serve(venue.handle, "127.0.0.1", 0, ping_interval=None)
            ws_port = server.sockets[0].getsockname()[1]
            http_port = free_port()
            env = {
                **os.environ,
                "LIQMON_LOG__LEVEL": "info" if args.log != os.devnull else "warning",
                "LIQMON_LOG__FORMAT": "json",
                "LIQMON_STATE__SNAPSHOT_INTERVAL_S": str(args.snapshot_interval_s),
                "LIQMON_MQTT__INSTANCE": "bench",
            }
            process = subprocess.Popen(  # noqa: ASYNC220  # started once, awaited below
                [
                    sys.executable,
                    "-m",
                    "liqmon.cli",
                    "run",
                    "--feed",
                    "binance-usdm",
                    "--symbols",
                    "all",
                    "--feed-url",
                    f"ws://127.0.0.1:{ws_port}/market",
                    "--accounts",
                    str(accounts),
                    "--mqtt",
                    broker.url,
                    "--state-dir",
                    str(Path(tmp) / "state"),
                    "--http-port",
                    str(http_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
            subscriber = Subscriber(broker.port)
            try:
                await asyncio.wait_for(venue.connected.wait(), timeout=600)
                ready_s = await asyncio.to_thread(_wait_ready, http_port, process, 600)
                push_started = time.time_ns()
                await venue.push(args.warmup_s)
                cpu_before = _cpu_seconds(process.pid)
                profiler = None
                if args.profile:  # sampled stacks of liqmon over the measured window
                    profiler = subprocess.Popen(  # noqa: ASYNC220  # awaited below
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "--pid",
                            str(process.pid),
                            "--duration",
                            str(int(args.seconds)),
                            "--format",
                            "raw",
                            "--output",
                            args.profile,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                await venue.push(args.seconds)
                if profiler is not None:
                    await asyncio.to_thread(profiler.wait, 60)
                cpu_busy = (_cpu_seconds(process.pid) - cpu_before) / args.seconds
                await asyncio.sleep(2.0)  # alerts of the last frames are still on their way
                breakdown = await asyncio.to_thread(_breakdown, http_port)
                snapshots = _snapshot_lines(args.log)
            finally:
                subscriber.close()
                stopping = time.monotonic()
                process.terminate()
                try:
                    await asyncio.to_thread(process.wait, 300)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait, 30)
                shutdown_s = time.monotonic() - stopping
                server.close()
    warm_until = push_started + round(args.warmup_s * 1e9)
    steady: list[float] = []
    warmup: list[float] = []
    kinds: dict[str, int] = {}
    per_frame: dict[int, list[float]] = {}  # steady alerts by the frame that caused them
    for received, payload in subscriber.arrivals:
        body = orjson.loads(payload)
        e, kind = int(body["ts"]), str(body["event"])
        sent = venue.sent.get(e)
        if sent is None or kind.startswith("feed_"):
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
        latency = (received - sent) / 1e6
        (warmup if sent < warm_until else steady).append(latency)
        if sent >= warm_until:
            per_frame.setdefault(e, []).append(latency)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "accounts": args.accounts,
        "far_accounts": args.far_accounts,
        "symbols": SYMBOLS,
        "ticks_per_s": SYMBOLS * args.frames_per_s,
        "frames": venue.frames,
        "jumps": venue.jumps,
        "seconds_measured": args.seconds,
        "start_up_to_ready_s": round(ready_s, 1),
        "shutdown_s": round(shutdown_s, 1),
        "exit_code": process.returncode,
        "liqmon_cpu_share_steady": round(cpu_busy, 3),
        "alerts_by_kind": kinds,
        "steady_latency": _percentiles(steady),
        "warmup_latency": _percentiles(warmup),
        "frames_with_alerts": len(per_frame),
        "alerts_per_frame_max": max((len(v) for v in per_frame.values()), default=0),
        "first_alert_of_frame_latency": _percentiles([min(v) for v in per_frame.values()]),
        "alert_path_ms": breakdown,
        "snapshots_written": snapshots,
        "bursts": venue.bursts,
    }


def _snapshot_lines(log: str) -> int | None:
    """How many snapshots liqmon logged (``--log`` with info level), if its log was kept."""
    if log == os.devnull:
        return None
    with open(log, "rb") as stream:
        return sum(b'"state_snapshot"' in line for line in stream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=5_000, help="active accounts")
    parser.add_argument("--far-accounts", type=int, default=95_000)
    parser.add_argument("--frames-per-s", type=float, default=5.0, help="200 marks each")
    parser.add_argument("--jump-every", type=int, default=25, help="frames between jumps")
    parser.add_argument(
        "--burst-every", type=int, default=150, help="frames between book-wide moves (0: none)"
    )
    parser.add_argument(
        "--burst-move", type=float, default=0.005, help="the book-wide move (log return)"
    )
    parser.add_argument(
        "--snapshot-interval-s", type=float, default=60.0, help="liqmon's snapshot interval"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="measured after warm-up")
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", default=os.devnull, help="where liqmon run's log goes")
    parser.add_argument(
        "--profile", help="write py-spy's collapsed stacks of liqmon (measured window) here"
    )
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
