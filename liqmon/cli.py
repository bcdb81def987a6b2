"""The ``liqmon`` command line.

Exit status: 0 on success, 1 when the input file cannot be read, 2 on a usage or configuration
error (with one message naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from alerts.console import ConsoleSink
from alerts.encoding import engine_notional
from alerts.jsonl import JsonLinesSink
from alerts.publisher import MqttSink
from alerts.sink import EventSink, FanOutSink
from alerts.topics import ALERT_KINDS
from feeds.brackets import load_brackets
from feeds.captures import FORMATS, UnknownFormat, detect_format
from feeds.collateral import load_haircuts
from feeds.files import UnreadableFile
from feeds.frames import VENUES
from feeds.live import FeedSpec
from feeds.normalized import record_json
from liqmon import __version__, logs
from liqmon.capture_replay import replay_capture
from liqmon.convert import book_payloads, hyperliquid_records
from liqmon.dashboard.access import Access
from liqmon.dashboard.server import DashboardOptions, run_dashboard
from liqmon.demo import run_demo
from liqmon.mqtt_options import add_mqtt_options, mqtt_settings, open_outbox
from liqmon.record import render_recording, run_recording
from liqmon.replay import progress_for, replay_file
from liqmon.service import run_service
from liqmon.settings import ServiceSettings, load_settings, masked
from liqmon.shock import render_answer, render_combined
from liqmon.shock_mqtt import ShockResponder, ask_instances
from liqmon.summary import ReplayStats, render
from liqmon.tail import tail
from monitor.config import EngineConfig
from monitor.engine import Engine
from monitor.errors import ConfigError, LiqmonError, RecordRefused
from monitor.records import ContractRecord
from monitor.shock import parse_move, shock

EXIT_OK = 0
EXIT_UNREADABLE = 1
EXIT_USAGE = 2

DEMO_SPEED = 7200.0
"""The demo's scenario spans 27 hours of real XRP marks; at 7200x that is about 14 seconds."""
DASHBOARD_DEMO_SPEED = 2400.0
"""With the dashboard, about 40 seconds: time to open the page and watch it happen."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _move(text: str) -> tuple[str, str]:
    """``SYMBOL=MOVE`` checked now (a bad one is a usage error), kept as the user wrote it."""
    try:
        symbol, _ = parse_move(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return symbol, text.partition("=")[2].strip()


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--funding",
        action="store_true",
        help="settle the funding rates that ticks carry, every funding time "
        "(docs/collateral.md); off: wallets move only by records",
    )
    parser.add_argument(
        "--levels",
        default="0.7,0.8,0.9",
        help="margin-ratio alert levels, increasing, each in (0, 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--hysteresis",
        default="0.05",
        help="how far below a level the ratio must fall to re-arm it (default: %(default)s)",
    )
    parser.add_argument(
        "--policy",
        choices=("close", "hold"),
        default="close",
        help="after a liquidation: close the positions, or hold them until a record changes "
        "the entity (default: %(default)s)",
    )
    parser.add_argument(
        "--brackets",
        action="append",
        default=[],
        metavar="FILE",
        help="tier tables (Binance leverageBracket or ccxt fetch_leverage_tiers JSON) to define "
        "contracts before the replay; repeatable",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liqmon", description="Streaming liquidation monitor for crypto derivatives."
    )
    parser.add_argument("--version", action="version", version=f"liqmon {__version__}")
    parser.add_argument(
        "--log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    replay = commands.add_parser(
        "replay",
        help="apply a recorded file of normalized records and write the events",
        description="Apply FILE (normalized JSON Lines, plain or gzip) and write the events.",
    )
    replay.add_argument("file", metavar="FILE")
    replay.add_argument(
        "--out",
        default="-",
        metavar="EVENTS.jsonl",
        help="where events go: a JSON Lines file, or '-' for stdout (readable text on a "
        "terminal, JSON Lines otherwise; default: %(default)s)",
    )
    replay.add_argument(
        "--speed",
        type=_positive_float,
        default=None,
        help="pace the replay by record time: 1 is real time, 60 a minute per second "
        "(default: as fast as possible)",
    )
    replay.add_argument(
        "--summary-json",
        metavar="PATH",
        default=None,
        help="also write the end-of-run summary as JSON to PATH",
    )
    replay.add_argument(
        "--book-json",
        metavar="PATH",
        default=None,
        help="also write the final book to PATH: every open entity as its retained state "
        "payload (margin balance, maintenance margin, ratio, level; each position's mark, "
        "liquidation and bankruptcy price), as a JSON array",
    )
    _engine_options(replay)
    whatif = replay.add_argument_group("what-if shock of the final book")
    whatif.add_argument(
        "--shock",
        action="append",
        default=[],
        type=_move,
        metavar="SYMBOL=MOVE",
        help="after the replay, what a move of SYMBOL's last mark (-8%%, +5%%, -0.08) would "
        "cause as the next tick, all --shock symbols at once; repeatable",
    )
    whatif.add_argument(
        "--shock-json",
        metavar="PATH",
        default=None,
        help="also write the shock's answer as JSON to PATH",
    )
    capture = replay.add_argument_group("exchange-native captures")
    capture.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="the file's format (default: recognised from its first lines)",
    )
    capture.add_argument(
        "--venue", choices=VENUES, help="the venue of a raw capture (default: recognised per frame)"
    )
    capture.add_argument(
        "--price-source",
        choices=("mark", "trade", "mid"),
        default="mark",
        help="Binance captures without mark prices: use trades or the book mid",
    )
    capture.add_argument(
        "--accounts",
        metavar="FILE",
        help="normalized records (contracts, balances, positions) merged by time",
    )
    capture.add_argument(
        "--time",
        choices=("exchange", "local"),
        default="exchange",
        help="order and pace ticks by exchange or by local receive time",
    )
    capture.add_argument(
        "--stale-after",
        type=_positive_float,
        default=5.0,
        metavar="N",
        help="with receive times: a symbol is stale after N expected intervals without a mark "
        "(as liqmon run's feed.stale_after; default 5)",
    )
    capture.add_argument(
        "--expected-interval-ms",
        type=_positive_float,
        metavar="MS",
        help="the longest normal gap between two marks (default: the venue's)",
    )
    capture.add_argument(
        "--haircuts",
        metavar="FILE",
        help="collateral value ratios for Binance's asset index (TOML, see docs/collateral.md; "
        "default: Binance's published table)",
    )
    capture.add_argument(
        "--account",
        metavar="NAME",
        help="the account of the Binance user-data events (ACCOUNT_UPDATE, "
        "ACCOUNT_CONFIG_UPDATE) in the capture",
    )
    add_mqtt_options(replay, publishing=True)

    ask = commands.add_parser(
        "shock",
        help="ask every running instance what a move of the marks would cause (what-if)",
        description="Send one what-if request over MQTT 5 to every liqmon instance on the "
        "broker; each answers for its own book with the events the moves would cause as the "
        "next ticks (nothing changes). Prints each instance's answer and their sum.",
    )
    ask.add_argument(
        "--move",
        action="append",
        required=True,
        type=_move,
        metavar="SYMBOL=MOVE",
        help="a move of SYMBOL's last mark: -8%%, +5%%, -0.08; repeatable (all at once)",
    )
    ask.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="wait at most S seconds for the answers (default: %(default)s; it returns as "
        "soon as every online instance answered)",
    )
    ask.add_argument("--json", action="store_true", help="print the summed answer as JSON")
    add_mqtt_options(ask, publishing=False)

    dash = commands.add_parser(
        "dashboard",
        help="the ops page: every instance's book, alerts, ladders, health and what-if",
        description="Subscribe to the topic tree of every liqmon instance on the broker and "
        "serve one page that shows it live (WebSocket). Binds loopback by default; any other "
        "address needs --token or --basic-auth (or LIQMON_DASHBOARD_TOKEN).",
    )
    dash.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    dash.add_argument(
        "--port", type=int, default=8050, help="HTTP port, 0 for any free (default: %(default)s)"
    )
    auth = dash.add_mutually_exclusive_group()
    auth.add_argument(
        "--token",
        default=os.environ.get("LIQMON_DASHBOARD_TOKEN") or None,
        help="require this token (Authorization: Bearer, or open the page as /?token=T; "
        "default: $LIQMON_DASHBOARD_TOKEN)",
    )
    auth.add_argument("--basic-auth", metavar="USER:PASS", help="require HTTP basic auth")
    dash.add_argument(
        "--alerts",
        type=int,
        default=1000,
        help="alerts kept since start, shown to a late browser (default: %(default)s)",
    )
    dash.add_argument(
        "--ladder-step",
        type=_positive_float,
        default=1.0,
        metavar="PCT",
        help="width of a liquidation-ladder bucket, %% of the mark (default: %(default)s)",
    )
    dash.add_argument(
        "--ladder-buckets",
        type=int,
        default=10,
        help="buckets on each side of the mark (default: %(default)s)",
    )
    dash.add_argument(
        "--shock-timeout",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="how long a what-if waits for the instances' answers (default: %(default)s)",
    )
    add_mqtt_options(dash, publishing=False)

    tail = commands.add_parser(
        "tail",
        help="print alerts (and state) from a broker as they arrive",
        description="Subscribe to liqmon's alerts on a broker and print them readably.",
    )
    tail.add_argument("--account", help="only this account")
    tail.add_argument("--kind", choices=ALERT_KINDS, help="only this kind of alert")
    tail.add_argument("--state", action="store_true", help="also print entity state updates")
    add_mqtt_options(tail, publishing=False)

    run = commands.add_parser(
        "run",
        help="the service: live feed and account records in, alerts out (MQTT, JSON Lines)",
        description="Run the service. Settings come from --config (TOML), LIQMON_* variables "
        "and these flags, in increasing precedence; see docs/cli.md.",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help="a TOML settings file")
    run.add_argument(
        "--feed",
        dest="feed_venue",
        metavar="VENUE",
        help="binance-usdm, binance-coinm, bybit, okx or hyperliquid",
    )
    run.add_argument("--symbols", help="A,B,C or all")
    run.add_argument("--feed-url", help="override the venue's websocket endpoint")
    run.add_argument(
        "--watch",
        metavar="ADDRESS[,ADDRESS...]",
        help="hyperliquid: poll these accounts' states from the info API (see docs/hyperliquid.md)",
    )
    run.add_argument(
        "--watch-interval", type=_positive_float, metavar="S", help="hyperliquid: poll every S s"
    )
    run.add_argument("--info-url", help="hyperliquid: override the info endpoint")
    run.add_argument(
        "--dexes", help="hyperliquid: the perp dexes to watch, e.g. ,xyz (main and xyz)"
    )
    run.add_argument(
        "--price-source",
        choices=("mark", "trade", "mid"),
        help="hyperliquid or Binance: ticks from marks (default), trades or mids",
    )
    run.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="also write the venue's raw frames to capture files in DIR (replayable)",
    )
    run.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="take ticks and records from a recorded file instead of a venue",
    )
    run.add_argument("--speed", type=_positive_float, help="pace --replay by record time")
    run.add_argument(
        "--exit-at-end", action="store_true", help="with --replay: stop when the file is applied"
    )
    run.add_argument(
        "--accounts", type=Path, metavar="FILE", help="normalized records that seed a fresh start"
    )
    run.add_argument(
        "--out",
        type=Path,
        metavar="EVENTS.jsonl",
        help="append alert events to this JSON Lines file",
    )
    run.add_argument("--mqtt", metavar="URL", help="broker, mqtt://user@host:port")
    run.add_argument(
        "--state-dir",
        type=Path,
        help="snapshot, journal and outbox directory (default ./liqmon-state)",
    )
    start = run.add_mutually_exclusive_group()
    start.add_argument(
        "--resume",
        action="store_true",
        help="continue from the state directory even if other inputs left it",
    )
    start.add_argument(
        "--fresh", action="store_true", help="discard the state directory's state and start over"
    )
    run.add_argument(
        "--funding",
        action="store_true",
        help="settle the funding rates that ticks carry (see docs/collateral.md)",
    )
    run.add_argument("--http-port", type=int, help="metrics and health port (0: any free)")

    convert = commands.add_parser(
        "convert",
        help="print an exchange's saved account state as normalized records",
        description="Read a saved exchange response and print normalized records (JSON Lines) "
        "that liqmon replay takes.",
    )
    venues = convert.add_subparsers(dest="convert_venue", required=True, metavar="VENUE")
    hyperliquid = venues.add_parser(
        "hyperliquid",
        help="a clearinghouseState response: contracts, ticks at its marks, the snapshot",
        description="Contracts (from --meta, else from the state's maxLeverage), one tick per "
        "position at the mark the state implies (positionValue / |szi|) and the account "
        "snapshot, stamped with the state's time.",
    )
    hyperliquid.add_argument("--state", required=True, metavar="FILE", help="the state (JSON)")
    hyperliquid.add_argument(
        "--meta", metavar="FILE", help="the dex's meta (or metaAndAssetCtxs) with marginTables"
    )
    hyperliquid.add_argument(
        "--account", help="the account name (default: the state's user, else hyperliquid)"
    )
    hyperliquid.add_argument("--dex", help="the perp dex (default: from the positions' coins)")
    hyperliquid.add_argument(
        "--ts", type=int, help="stamp the records with this time (ms) instead of the state's"
    )

    rec = commands.add_parser(
        "record",
        help="record a venue's raw frames to gzip capture files that liqmon replay reads",
        description="Connect to a venue and write every frame with its receive time "
        "(<receive ns> <frame> lines, gzip, rotated by size and age). Stops after --duration, "
        "--max-frames, or on SIGTERM / Ctrl-C, finishing the current file.",
    )
    rec.add_argument(
        "--feed",
        dest="feed_venue",
        required=True,
        choices=("binance-usdm", "binance-coinm", "bybit", "okx", "hyperliquid"),
    )
    rec.add_argument("--symbols", required=True, help="A,B,C or all (Binance)")
    rec.add_argument("--feed-url", help="override the venue's websocket endpoint")
    rec.add_argument("--dir", type=Path, required=True, help="where the capture files go")
    rec.add_argument("--prefix", help="file name prefix (default: the venue)")
    rec.add_argument(
        "--rotate-mb",
        type=_positive_float,
        default=1024.0,
        help="start a new file before this much frame text (MiB, uncompressed; default 1024)",
    )
    rec.add_argument(
        "--rotate-minutes",
        type=_positive_float,
        default=60.0,
        help="start a new file after this long (default 60)",
    )
    rec.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    rec.add_argument("--max-frames", type=int, help="stop after this many frames")

    health = commands.add_parser(
        "health", help="probe a running service's /healthz (or /readyz): exit 0 when it answers"
    )
    health.add_argument("--host", default="127.0.0.1")
    health.add_argument("--port", type=int, default=9108)
    health.add_argument("--ready", action="store_true", help="probe /readyz instead")

    config = commands.add_parser("config", help="show the effective configuration of 'liqmon run'")
    config.add_argument("--config", type=Path, metavar="FILE", help="a TOML settings file")
    config.add_argument(
        "--print",
        action="store_true",
        required=True,
        help="print the effective settings as JSON, secrets masked",
    )

    demo = commands.add_parser(
        "demo",
        help="replay the bundled crash scenario with live alerts in the terminal",
        description="Replay a bundled scenario (real XRP marks of November 2021, sample "
        "accounts) paced so that alerts appear live.",
    )
    demo.add_argument(
        "--speed",
        type=_positive_float,
        default=None,
        help=f"pace multiplier (default: {DEMO_SPEED:g}, or {DASHBOARD_DEMO_SPEED:g} with "
        "--dashboard, to watch it in the page)",
    )
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="also serve the ops dashboard on the demo's broker and print its URL; it keeps "
        "serving after the replay until Ctrl-C",
    )
    demo.add_argument(
        "--port", type=int, default=8050, help="the dashboard's port (default: %(default)s)"
    )
    return parser


def _engine(args: argparse.Namespace, stats: ReplayStats | None = None) -> Engine:
    config = EngineConfig.from_values(
        args.levels,
        args.hysteresis,
        args.policy,
        state_move=args.state_move if args.mqtt else None,
        funding=args.funding,
    )
    engine = Engine(config)
    for path in args.brackets:
        load = load_brackets(path)
        for error in load.errors:
            print(f"liqmon: {path}: skipped an unusable tier table: {error}", file=sys.stderr)
        for contract in load.contracts:
            try:
                engine.apply(ContractRecord(contract))
            except RecordRefused as exc:  # pragma: no cover - no positions exist yet
                print(f"liqmon: {path}: {exc}", file=sys.stderr)
        if stats is not None:
            stats.warnings.extend(load.warnings)
    return engine


def _sink_for(out: str, stack: ExitStack) -> EventSink:
    if out == "-":
        if sys.stdout.isatty():
            return ConsoleSink(sys.stdout)
        return JsonLinesSink(sys.stdout)
    stream: TextIO = stack.enter_context(open(out, "w", encoding="utf-8"))  # noqa: SIM115
    return JsonLinesSink(stream)


def _finish(stats: ReplayStats, summary_json: TextIO | None = None) -> int:
    print(render(stats), file=sys.stderr)
    if summary_json is not None:
        summary_json.write(json.dumps(stats.as_dict(), indent=2) + "\n")
    return EXIT_UNREADABLE if stats.failure else EXIT_OK


def _shock_final_book(
    engine: Engine, moves: list[tuple[str, str]], shock_json: TextIO | None
) -> None:
    """``replay --shock``: the what-if of the book the replay ended with, after the summary."""
    result = shock(engine, dict(parse_move(f"{symbol}={move}") for symbol, move in moves))
    body = result.as_dict()
    print(render_answer({**body, "as_of_ts": engine.clock}), file=sys.stderr)
    if shock_json is not None:
        shock_json.write(json.dumps(body, indent=2) + "\n")


def cmd_replay(args: argparse.Namespace) -> int:
    stats = ReplayStats(source=args.file)
    engine = _engine(args, stats)
    with ExitStack() as stack:
        try:
            sink = _sink_for(args.out, stack)
            summary_json = (
                stack.enter_context(open(args.summary_json, "w", encoding="utf-8"))
                if args.summary_json
                else None
            )
            book_json = (
                stack.enter_context(open(args.book_json, "w", encoding="utf-8"))
                if args.book_json
                else None
            )
            shock_json = (
                stack.enter_context(open(args.shock_json, "w", encoding="utf-8"))
                if args.shock_json
                else None
            )
        except OSError as exc:
            print(f"liqmon: cannot write {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        mqtt = None
        if args.mqtt:
            mqtt = MqttSink(
                mqtt_settings(args),
                open_outbox(args),
                version=__version__,
                drain_timeout_s=args.drain_timeout_s,
                notional_of=engine_notional(lambda: engine),
            )
            sink = FanOutSink(sink, mqtt)
        if shock_json is not None and not args.shock:
            raise ConfigError("--shock-json needs at least one --shock SYMBOL=MOVE")
        result = asyncio.run(_replay(args, engine, sink, mqtt))
        result.warnings[:0] = stats.warnings
        if engine.config.funding:
            for asset in sorted({*engine.funding_paid, *engine.funding_received}):
                result.funding[asset] = {
                    "paid": str(engine.funding_paid.get(asset, 0)),
                    "received": str(engine.funding_received.get(asset, 0)),
                }
        if book_json is not None:
            book_json.write(json.dumps(book_payloads(engine), indent=2) + "\n")
        status = _finish(result, summary_json)
        if args.shock:
            _shock_final_book(engine, args.shock, shock_json)
        return status


async def _replay(
    args: argparse.Namespace, engine: Engine, sink: EventSink, mqtt: MqttSink | None
) -> ReplayStats:
    """The replay, with the MQTT sink's connection task beside it when there is one."""
    fmt = args.format
    if fmt == "auto":
        try:
            fmt = detect_format(args.file)
        except UnknownFormat:
            raise
        except UnreadableFile:
            fmt = "normalized"  # reading it fails again, reported in the summary as a failure
    if fmt == "normalized" and args.accounts:
        raise ConfigError(
            "--accounts merges account records into an exchange-native capture; "
            f"{args.file} already is normalized records"
        )
    haircuts = load_haircuts(args.haircuts) if args.haircuts else None
    async with asyncio.TaskGroup() as tasks:
        responder: asyncio.Task[None] | None = None
        if mqtt is not None:
            tasks.create_task(mqtt.run(), name="mqtt-sink")
            if mqtt.settings.protocol == "5":  # while it replays, it answers what-if requests
                responder = tasks.create_task(
                    ShockResponder(mqtt.settings, lambda: engine).run(), name="shock-responder"
                )
        try:
            if fmt == "normalized":
                stats = await replay_file(
                    args.file, engine, sink, speed=args.speed, progress=progress_for()
                )
            else:
                stats = await replay_capture(
                    args.file,
                    fmt,
                    engine,
                    sink,
                    venue=args.venue,
                    price_source=args.price_source,
                    accounts=args.accounts,
                    time_mode=args.time,
                    speed=args.speed,
                    progress=progress_for(),
                    haircuts=haircuts,
                    account=args.account,
                    stale_after=args.stale_after,
                    expected_interval_s=None
                    if args.expected_interval_ms is None
                    else args.expected_interval_ms / 1000.0,
                )
        finally:
            await sink.close()
            if responder is not None:
                responder.cancel()
    if mqtt is not None:
        m = mqtt.stats()
        stats.notes.append(
            f"mqtt        {m['published']:,} alerts and {m['states_published']:,} states to "
            f"{m['broker']}, {m['reconnects']} reconnects, outbox depth {m['outbox_depth']:,} "
            f"(spilled {m['outbox_spilled']:,})"
        )
        if m["outbox_depth"]:
            stats.warnings.append(
                f"{m['outbox_depth']:,} messages could not be delivered in time; they stay in "
                f"the outbox {mqtt.outbox.directory} and are sent on the next start"
            )
    return stats


def cmd_shock(args: argparse.Namespace) -> int:
    settings = mqtt_settings(args)
    if settings.protocol != "5":
        raise ConfigError("shock: request/response needs MQTT 5 (--mqtt-protocol 5)")
    combined = asyncio.run(ask_instances(settings, dict(args.move), timeout_s=args.timeout))
    if combined is None:
        print(
            f"liqmon: shock: no connection to {settings.display_url()} within {args.timeout:g} s",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    if args.json:
        print(json.dumps(combined, indent=2))
    else:
        print(render_combined(combined))
    if not combined["instances"]:
        print(f"liqmon: shock: no instance answered within {args.timeout:g} s", file=sys.stderr)
        return EXIT_UNREADABLE
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    settings = mqtt_settings(args)
    if settings.protocol != "5":
        raise ConfigError("dashboard: the what-if panel needs MQTT 5 (--mqtt-protocol 5)")
    if args.alerts < 1 or args.ladder_buckets < 1:
        raise ConfigError("dashboard: --alerts and --ladder-buckets must be positive")
    if not 0 <= args.port <= 65535:
        raise ConfigError("dashboard: --port must be between 0 and 65535")
    options = DashboardOptions(
        mqtt=settings,
        host=args.host,
        port=args.port,
        token=args.token,
        basic=Access.parse_basic(args.basic_auth) if args.basic_auth else None,
        alerts_kept=args.alerts,
        ladder_step_pct=args.ladder_step,
        ladder_buckets=args.ladder_buckets,
        shock_timeout_s=args.shock_timeout,
    )
    Access(options.host, token=options.token, basic=options.basic)  # refuse a bad bind now
    return run_dashboard(options)


def cmd_tail(args: argparse.Namespace) -> int:
    asyncio.run(tail(mqtt_settings(args), account=args.account, kind=args.kind, state=args.state))
    return EXIT_OK


def _service_settings(args: argparse.Namespace) -> ServiceSettings:
    feed: dict[str, object] = {}
    for flag, key in (
        ("feed_venue", "venue"),
        ("symbols", "symbols"),
        ("feed_url", "url"),
        ("record", "record_dir"),
        ("replay", "replay"),
        ("speed", "replay_speed"),
        ("watch", "watch"),
        ("watch_interval", "watch_interval_s"),
        ("info_url", "info_url"),
        ("dexes", "dexes"),
        ("price_source", "price_source"),
    ):
        if getattr(args, flag, None) is not None:
            feed[key] = getattr(args, flag)
    if getattr(args, "exit_at_end", False):
        feed["exit_at_end"] = True
    overrides: dict[str, object] = {}
    if feed:
        overrides["feed"] = feed
    if getattr(args, "mqtt", None):
        overrides["mqtt"] = {"url": args.mqtt}
    state: dict[str, object] = {}
    if getattr(args, "state_dir", None):
        state["dir"] = args.state_dir
    if getattr(args, "resume", False):
        state["start"] = "resume"
    if getattr(args, "fresh", False):
        state["start"] = "fresh"
    if state:
        overrides["state"] = state
    if getattr(args, "funding", False):
        overrides["engine"] = {"funding": True}
    if getattr(args, "http_port", None) is not None:
        overrides["http"] = {"port": args.http_port}
    for key in ("accounts", "out"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return load_settings(args.config, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _service_settings(args)
    logs.configure(
        level=settings.log.level,
        json={"auto": None, "json": True, "console": False}[settings.log.format],
    )
    return run_service(settings)


def cmd_record(args: argparse.Namespace) -> int:
    options: dict[str, object] = {"venue": args.feed_venue, "symbols": args.symbols}
    if args.feed_url:
        options["url"] = args.feed_url
    try:
        spec = FeedSpec.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"record: {first['msg'].removeprefix('Value error, ')}") from None
    if args.max_frames is not None and args.max_frames <= 0:
        raise ConfigError("record: --max-frames must be positive")
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"record: cannot create {args.dir}: {exc.strerror or exc}") from None
    result = asyncio.run(
        run_recording(
            spec,
            args.dir,
            rotate_bytes=int(args.rotate_mb * (1 << 20)),
            rotate_seconds=args.rotate_minutes * 60.0,
            duration_s=args.duration,
            max_frames=args.max_frames,
            prefix=args.prefix,
        )
    )
    print(render_recording(result, args.dir), file=sys.stderr)
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        state = _read_json(args.state)
        meta = _read_json(args.meta) if args.meta else None
    except OSError as exc:
        print(f"liqmon: cannot read {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except ValueError as exc:
        print(f"liqmon: not JSON: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        converted = hyperliquid_records(state, meta, account=args.account, dex=args.dex, ts=args.ts)
    except RecordRefused as exc:
        print(f"liqmon: {args.state}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    for warning in converted.warnings:
        print(f"liqmon: {warning}", file=sys.stderr)
    out = sys.stdout
    for record in converted.records:
        out.write(record_json(record).decode() + "\n")
    out.flush()
    return EXIT_OK


def _read_json(path: str) -> object:
    with open(path, "rb") as stream:
        return json.loads(stream.read())


def cmd_health(args: argparse.Namespace) -> int:
    path = "/readyz" if args.ready else "/healthz"
    try:
        with socket.create_connection((args.host, args.port), timeout=3) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode())
            status = conn.recv(64).split(b" ", 2)[1:2]
    except OSError as exc:
        print(f"liqmon: {args.host}:{args.port}{path}: {exc}", file=sys.stderr)
        return 1
    return EXIT_OK if status == [b"200"] else 1


def cmd_config(args: argparse.Namespace) -> int:
    settings = _service_settings(args)
    print(json.dumps(masked(settings), indent=2))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    if args.dashboard:
        speed = args.speed or DASHBOARD_DEMO_SPEED
        stats = run_demo(speed, dashboard_port=args.port)  # prints its summary, serves
        return EXIT_UNREADABLE if stats.failure else EXIT_OK
    return _finish(run_demo(args.speed or DEMO_SPEED))


GC_THRESHOLDS = (10_000, 50, 50)
"""The engine holds a large, long-lived object graph (an entity and its positions per account)
and makes little cyclic garbage; the default thresholds (700, 10, 10) make the collector walk
that graph over and over while accounts load (a quarter of the time at 50,000 accounts)."""


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(level=args.log_level)
    try:
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "tail":
            return cmd_tail(args)
        if args.command == "shock":
            return cmd_shock(args)
        if args.command == "dashboard":
            return cmd_dashboard(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "config":
            return cmd_config(args)
        if args.command == "health":
            return cmd_health(args)
        if args.command == "record":
            return cmd_record(args)
        if args.command == "convert":
            return cmd_convert(args)
        return cmd_demo(args)
    except LiqmonError as exc:
        return _fail(exc)
    except BaseExceptionGroup as group:  # from a task group (liqmon run, the dashboard, ...)
        ours, rest = group.split(LiqmonError)
        if ours is None or rest is not None:
            raise  # a bug, or an interruption: the traceback (or Python's exit) says it
        return _fail(_first_leaf(ours))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (liqmon ... | head): not an error
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return EXIT_OK


def failure(exc: LiqmonError) -> tuple[str, int]:
    """What ``liqmon`` says about an error of the tree (:mod:`monitor.errors`), on one line,
    and its exit status: 2 for a bad setting or option, 1 for anything else."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    status = EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_UNREADABLE
    return f"liqmon: {text or type(exc).__name__}", status


def _fail(exc: LiqmonError) -> int:
    line, status = failure(exc)
    print(line, file=sys.stderr)
    return status


def _first_leaf(group: BaseExceptionGroup[LiqmonError]) -> LiqmonError:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


if __name__ == "__main__":
    sys.exit(main())
