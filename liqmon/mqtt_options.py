"""Command-line options for MQTT, shared by ``replay``, ``tail`` and (later) ``run``."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from alerts.mqtt_settings import MqttSettings, settings_from_url
from alerts.outbox import Outbox
from alerts.topics import DEFAULT_PREFIX


def add_mqtt_options(parser: argparse.ArgumentParser, *, publishing: bool) -> None:
    group = parser.add_argument_group("MQTT")
    group.add_argument(
        "--mqtt",
        metavar="URL",
        required=not publishing,
        help="broker: mqtt://[user[:password]@]host[:port] or mqtts://... "
        "(the password never appears in logs)",
    )
    group.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5")
    group.add_argument("--mqtt-ca", metavar="FILE", help="CA bundle for mqtts://")
    group.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for mqtts://")
    group.add_argument("--mqtt-key", metavar="FILE", help="client key for mqtts://")
    group.add_argument(
        "--mqtt-prefix", default=DEFAULT_PREFIX, help="topic prefix (default: %(default)s)"
    )
    if not publishing:
        return
    group.add_argument(
        "--instance",
        default=socket.gethostname() or "liqmon",
        help="this instance's name in the status topic (default: the host name)",
    )
    group.add_argument(
        "--outbox",
        metavar="DIR",
        default=None,
        help="durable outbox directory (default: $XDG_STATE_HOME/liqmon/outbox/INSTANCE)",
    )
    group.add_argument(
        "--state-move",
        default="0.05",
        help="publish an entity's state when its margin ratio moved by this fraction "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--state-interval-ms",
        type=int,
        default=1000,
        help="publish an entity's state at most this often (default: %(default)s)",
    )
    group.add_argument(
        "--event-expiry-s",
        type=int,
        default=86_400,
        help="MQTT v5 message expiry of alert events (default: one day)",
    )
    group.add_argument(
        "--drain-timeout-s",
        type=float,
        default=30.0,
        help="at the end, how long to wait for the broker to take what is queued "
        "(the rest stays in the outbox; default: %(default)s)",
    )


def mqtt_settings(args: argparse.Namespace) -> MqttSettings:
    options: dict[str, object] = {
        "protocol": args.mqtt_protocol,
        "prefix": args.mqtt_prefix,
        "ca_file": args.mqtt_ca,
        "cert_file": args.mqtt_cert,
        "key_file": args.mqtt_key,
    }
    if hasattr(args, "instance"):
        options.update(
            instance=args.instance,
            state_interval_ms=args.state_interval_ms,
            event_expiry_s=args.event_expiry_s,
        )
    return settings_from_url(args.mqtt, **options)


def default_outbox_dir(instance: str) -> Path:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "liqmon" / "outbox" / instance


def open_outbox(args: argparse.Namespace) -> Outbox:
    directory = Path(args.outbox) if args.outbox else default_outbox_dir(args.instance)
    return Outbox(directory)
