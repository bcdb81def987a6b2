"""Test support: a real ``liqmon`` process whose output lines a test can wait for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tests.conftest import ROOT

LIQMON = [sys.executable, "-m", "liqmon.cli"]


class Liqmon:
    """``liqmon ARGS`` started now; its stdout and stderr lines are collected by threads, so
    :meth:`wait_for_line` waits for a line (with a timeout) instead of sleeping."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.args = [*LIQMON, *args]
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            self.args,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first output line that satisfies ``predicate`` (``TimeoutError`` otherwise, with
        the output so far; also when the process ended without printing it)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                ended = self.process.poll() is not None and not any(
                    r.is_alive() for r in self._readers
                )
                if remaining <= 0 or ended:
                    raise TimeoutError(
                        f"{' '.join(self.args[2:4])}: no such line"
                        f"{' (it exited)' if ended else ''}; output:\n" + self.output()[-3000:]
                    )
                self._changed.wait(min(remaining, 0.5))

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal it (if still running) and wait for its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        return status
