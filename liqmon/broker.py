"""A private Mosquitto broker on a free loopback port (for ``liqmon demo`` and the tests).

It listens on 127.0.0.1 only, allows anonymous clients (it is reachable from this machine
alone), keeps no message-count limit on queued messages (a subscriber's persistent session must
not drop anything while it is away) and, when given a directory, persists retained messages and
sessions there so that a restarted broker still has them.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from monitor.errors import LocalBrokerFailed

CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str | None:
    """The path of a ``mosquitto`` executable, or ``None``."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """``with LocalBroker() as broker: ... broker.url ...``; :meth:`stop` / :meth:`start` let a
    test take it away and bring it back on the same port."""

    def __init__(self, *, port: int | None = None, persistent: bool = True) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise LocalBrokerFailed("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="liqmon-broker-"))
        self._persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        lines = [
            # started as root, mosquitto would switch to the 'mosquitto' user, which cannot
            # write our private directory: no log, and no persistence across a restart
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",  # no 40 ms Nagle / delayed-ACK stalls on small packets
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self._persistent:
            lines += [
                "persistence true",
                f"persistence_location {self._dir}/",
                "autosave_interval 1",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> None:
        self._write_config()
        self._process = subprocess.Popen(  # noqa: S603  # our own config, a fixed binary
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal stops liqmon, which stops it
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalBrokerFailed(f"mosquitto exited at start: {self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.02)
        self.stop()
        raise LocalBrokerFailed(
            f"mosquitto did not listen on port {self.port} within {timeout_s} s"
        )

    def stop(self) -> None:
        """Stop the broker (it saves its persistence first)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
