"""A real three-node ``nats-server`` JetStream cluster on loopback ports, for the cluster tests.

Each node gets its own client and route port (free ports picked by the OS), its own store
directory, and the subject mapping liqmon's deployment page prescribes: account input published
to ``liqmon.in.{kind}.{account}`` is stored under ``liqmon.part.{partition}.in.{kind}.{account}``,
the partition being the server's ``partition(N, account)`` hash. A node can be killed (SIGKILL)
and started again on the same ports and store.

Without a ``nats-server`` binary the tests that use it are skipped, except with
``LIQMON_REQUIRE_NATS=1`` (CI), where that is an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from liqmon.cluster.subjects import server_mapping

NATS_SERVER = shutil.which("nats-server") or (
    "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
)


def require_nats_server() -> str:
    """The ``nats-server`` binary, or skip (an error when ``LIQMON_REQUIRE_NATS=1``)."""
    if NATS_SERVER is None:
        if os.environ.get("LIQMON_REQUIRE_NATS") == "1":
            pytest.fail("nats-server is required (LIQMON_REQUIRE_NATS=1) but not installed")
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    return NATS_SERVER


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def node_config(
    name: str, client_port: int, route_port: int, routes: list[int], store: Path, partitions: int
) -> str:
    """One node's configuration file (the format of ``nats-server -c``)."""
    route_urls = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
    source, destination = server_mapping("liqmon", partitions)
    return f"""
server_name: {name}
listen: 127.0.0.1:{client_port}
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
cluster {{
  name: liqmon
  listen: 127.0.0.1:{route_port}
  routes: [{route_urls}]
}}
mappings {{
  "{source}": "{destination}"
}}
"""


@dataclass
class NatsNode:
    name: str
    client_port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def start(self, binary: str) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(  # our own binary and config
                [binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def wait_listening(self, within_s: float = 15.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} is not listening on {self.client_port}")


@dataclass
class NatsCluster:
    """Three nodes forming one JetStream cluster (start with :meth:`start`)."""

    directory: Path
    partitions: int = 3
    binary: str = field(default_factory=require_nats_server)
    nodes: list[NatsNode] = field(default_factory=list)

    def start(self) -> NatsCluster:
        ports = _free_ports(6)
        clients, routes = ports[:3], ports[3:]
        for index in range(3):
            name = f"n{index + 1}"
            store = self.directory / name / "store"
            store.mkdir(parents=True, exist_ok=True)
            config = self.directory / name / "nats.conf"
            config.write_text(
                node_config(name, clients[index], routes[index], routes, store, self.partitions)
            )
            node = NatsNode(name, clients[index], config, self.directory / name / "nats.log")
            self.nodes.append(node)
            node.start(self.binary)
        for node in self.nodes:
            node.wait_listening()
        return self

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def restart(self, index: int, down_s: float = 1.0) -> None:
        """Kill node ``index`` with SIGKILL and start it again on the same store after
        ``down_s`` seconds."""
        node = self.nodes[index]
        node.kill()
        time.sleep(down_s)
        node.start(self.binary)
        node.wait_listening()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
