"""``liqmon demo``: the bundled crash scenario, with alerts arriving live in the terminal.

With a ``mosquitto`` binary on the machine, the alerts make the whole trip: the engine publishes
them to a private broker on a free loopback port, a subscriber receives them and prints them.
Without one, they are printed in-process (and the demo says so in one line).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from importlib import resources
from pathlib import Path

from alerts.console import ConsoleSink
from alerts.mqtt import MqttSink, settings_from_url, subscribe
from alerts.outbox import Outbox
from alerts.topics import event_filter
from liqmon import __version__
from liqmon.broker import LocalBroker, mosquitto_binary
from liqmon.replay import replay_file
from liqmon.summary import ReplayStats
from liqmon.tail import Printer
from monitor.config import EngineConfig
from monitor.engine import Engine

SCENARIO = "crash.jsonl"
DELIVERY_TIMEOUT_S = 10.0


async def _through_broker(path: str, speed: float) -> ReplayStats:
    with LocalBroker(persistent=False) as broker, tempfile.TemporaryDirectory() as tmp:
        print(
            f"mosquitto started on {broker.url}: alerts go liqmon → broker → subscriber → "
            "this terminal\n",
            file=sys.stderr,
        )
        settings = settings_from_url(broker.url, instance="demo", state_interval_ms=250)
        sink = MqttSink(settings, Outbox(Path(tmp) / "outbox"), version=__version__)
        printer = Printer(sys.stdout)
        subscribed = asyncio.Event()
        engine = Engine(EngineConfig.from_values(state_move="0.05"))
        async with asyncio.TaskGroup() as tasks:
            listener = tasks.create_task(
                subscribe(settings, [event_filter(settings.prefix)], printer, ready=subscribed)
            )
            tasks.create_task(sink.run())
            await asyncio.wait_for(subscribed.wait(), timeout=DELIVERY_TIMEOUT_S)
            stats = await replay_file(
                path, engine, sink, speed=speed, label=f"liqmon demo: {SCENARIO}"
            )
            await sink.close()
            expected = sum(stats.events.values())
            printer.expect(expected)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(printer.all_arrived.wait(), timeout=DELIVERY_TIMEOUT_S)
            listener.cancel()
        stats.notes.append(
            f"mqtt        {printer.alerts} of {expected} alerts made the trip liqmon → "
            f"mosquitto ({broker.url}) → subscriber"
        )
        if printer.alerts < expected:
            stats.warnings.append(
                f"only {printer.alerts} of {expected} alerts arrived through the broker"
            )
        return stats


async def _in_process(path: str, speed: float) -> ReplayStats:
    return await replay_file(
        path, Engine(), ConsoleSink(sys.stdout), speed=speed, label=f"liqmon demo: {SCENARIO}"
    )


def run_demo(speed: float) -> ReplayStats:
    print(
        "liqmon demo: replaying real XRPUSDT marks of 15–16 Nov 2021 against six sample accounts\n"
        f"(isolated and cross, linear and inverse), at {speed:g}x real time.",
        file=sys.stderr,
    )
    scenario = resources.files("liqmon.examples").joinpath(SCENARIO)
    with resources.as_file(scenario) as path:
        if mosquitto_binary() is None:
            print(
                "mosquitto not found: alerts are delivered in-process "
                "(install mosquitto for the full MQTT trip)\n",
                file=sys.stderr,
            )
            return asyncio.run(_in_process(str(path), speed))
        return asyncio.run(_through_broker(str(path), speed))
