"""``liqmon demo``: the bundled crash scenario, with alerts arriving live in the terminal.

With a ``mosquitto`` binary on the machine, the alerts make the whole trip: the engine publishes
them to a private broker on a free loopback port, a subscriber receives them and prints them.
Without one, they are printed in-process (and the demo says so in one line).

``liqmon demo --dashboard`` also serves the ops page (:mod:`liqmon.dashboard`) on that broker,
prints its URL, answers the page's what-if requests from the demo's engine, and keeps serving
after the replay until Ctrl-C (it needs mosquitto: the page reads the broker).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
from importlib import resources
from pathlib import Path

from alerts.console import ConsoleSink
from alerts.encoding import engine_notional
from alerts.mqtt_settings import MqttSettings, settings_from_url
from alerts.outbox import Outbox
from alerts.publisher import MqttSink
from alerts.topics import event_filter
from feeds.mqtt_input import subscribe
from liqmon import __version__
from liqmon.broker import LocalBroker, mosquitto_binary
from liqmon.dashboard.server import Dashboard, DashboardOptions
from liqmon.replay import replay_file
from liqmon.shock_mqtt import ShockResponder
from liqmon.summary import ReplayStats, render
from liqmon.tail import Printer
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import ConfigError

SCENARIO = "crash.jsonl"
DELIVERY_TIMEOUT_S = 10.0


async def _through_broker(
    path: str, speed: float, dashboard: DashboardDemo | None = None
) -> ReplayStats:
    with LocalBroker(persistent=False) as broker, tempfile.TemporaryDirectory() as tmp:
        print(
            f"mosquitto started on {broker.url}: alerts go liqmon → broker → subscriber → "
            "this terminal\n",
            file=sys.stderr,
        )
        settings = settings_from_url(broker.url, instance="demo", state_interval_ms=250)
        engine = Engine(EngineConfig.from_values(state_move="0.05"))
        sink = MqttSink(
            settings,
            Outbox(Path(tmp) / "outbox"),
            version=__version__,
            notional_of=engine_notional(lambda: engine),
        )
        printer = Printer(sys.stdout)
        subscribed = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            listener = tasks.create_task(
                subscribe(settings, [event_filter(settings.prefix)], printer, ready=subscribed),
                name="demo-subscriber",
            )
            tasks.create_task(sink.run(), name="mqtt-sink")
            if dashboard is not None:
                await dashboard.start(tasks, settings, engine)
            await asyncio.wait_for(subscribed.wait(), timeout=DELIVERY_TIMEOUT_S)
            stats = await replay_file(
                path, engine, sink, speed=speed, label=f"liqmon demo: {SCENARIO}"
            )
            await sink.flush()
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
            if dashboard is not None:
                await dashboard.serve_until_stopped(stats)
            await sink.close()
        return stats


class DashboardDemo:
    """The demo's page: the dashboard and a what-if responder on the demo's broker and engine,
    in the demo's task group, until Ctrl-C (or SIGTERM) after the replay."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, tasks: asyncio.TaskGroup, settings: MqttSettings, engine: Engine) -> None:
        board = Dashboard(DashboardOptions(mqtt=settings, port=self.port))
        listening = asyncio.Event()

        def ready(url: str) -> None:
            self.url = url
            listening.set()

        self._tasks.append(tasks.create_task(board.run(ready=ready), name="dashboard"))
        self._tasks.append(
            tasks.create_task(ShockResponder(settings, lambda: engine).run(), name="shock")
        )
        await asyncio.wait_for(listening.wait(), timeout=DELIVERY_TIMEOUT_S)
        print(f"liqmon demo: the dashboard is at {self.url}\n", file=sys.stderr, flush=True)

    async def serve_until_stopped(self, stats: ReplayStats) -> None:
        """After the replay (Ctrl-C during it interrupts the demo as without the page)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        print(render(stats), file=sys.stderr)
        print(
            f"\nliqmon demo: replay done; the dashboard stays up at {self.url} "
            "(the what-if panel asks the demo's engine). Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        await self._stop.wait()
        for task in self._tasks:
            task.cancel()


async def _in_process(path: str, speed: float) -> ReplayStats:
    return await replay_file(
        path, Engine(), ConsoleSink(sys.stdout), speed=speed, label=f"liqmon demo: {SCENARIO}"
    )


def run_demo(speed: float, *, dashboard_port: int | None = None) -> ReplayStats:
    """Replay the scenario; with ``dashboard_port``, serve the dashboard too (the summary is
    then printed when the replay ends, and this returns at Ctrl-C)."""
    print(
        "liqmon demo: replaying real XRPUSDT marks of 15–16 Nov 2021 against six sample accounts\n"
        f"(isolated and cross, linear and inverse), at {speed:g}x real time.",
        file=sys.stderr,
    )
    scenario = resources.files("liqmon.examples").joinpath(SCENARIO)
    with resources.as_file(scenario) as path:
        if dashboard_port is not None:
            if mosquitto_binary() is None:
                raise ConfigError(
                    "demo --dashboard needs mosquitto (apt-get install mosquitto): the page "
                    "reads the broker"
                )
            return asyncio.run(_through_broker(str(path), speed, DashboardDemo(dashboard_port)))
        if mosquitto_binary() is None:
            print(
                "mosquitto not found: alerts are delivered in-process "
                "(install mosquitto for the full MQTT trip)\n",
                file=sys.stderr,
            )
            return asyncio.run(_in_process(str(path), speed))
        return asyncio.run(_through_broker(str(path), speed))
