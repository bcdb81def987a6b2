"""Test support: ``liqmon`` command lines run without paying for Python's start-up each time.

A fresh ``python -m liqmon.cli`` spends about 0.55 s (1 s on a busy machine) importing numpy,
pydantic, asyncio and liqmon itself before it reads its first argument; the tests that run the
CLI dozens of times pay that dozens of times. :func:`run` is :func:`subprocess.run` for a
``liqmon`` command line (``[sys.executable, "-m", "liqmon.cli", ...]`` or the ``liqmon``
console script): the command runs in a *process of its own*, forked from one interpreter (the
zygote, started once per test session) that has already imported ``liqmon.cli``. The child
gets the caller's standard streams (its real pipes or files, passed over a Unix socket), its
working directory and environment, ``sys.argv`` as the command would have it, runs
``liqmon.cli.main()`` and exits as the interpreter would (``SystemExit`` codes, a traceback and
status 1 for an uncaught exception, non-daemon threads joined, ``atexit`` run); its exit status
or signal is the return code. So what the tests see (exit status, stdout, stderr, files
written, signals) is what a fresh process gives; only the imports are shared.

What a fork cannot reproduce goes to a real :func:`subprocess.run`: any other command, an
environment that changes how the interpreter starts (``PYTHON*``, ``LC_*``, ``LANG``), and every
command when ``LIQMON_TEST_FRESH_CLI`` is set (to check the two agree). Start-up itself (imports,
the console script) stays covered by the tests that start ``liqmon`` as a real process
(``tests/process_support.py``, ``tests/test_service.py``, the container tests).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.conftest import ROOT

CLI_MODULE = [sys.executable, "-m", "liqmon.cli"]
CONSOLE_SCRIPT = str(Path(sys.executable).with_name("liqmon"))
_STARTUP_ENV = ("PYTHON", "LC_", "LANG")
_MESSAGE = 1 << 20

_ZYGOTE = r"""
import atexit, io, json, os, signal, socket, sys, threading, traceback

sys.path[0] = sys.argv[1]  # as `python -m liqmon.cli` run from the project's root
import liqmon.cli  # what every command would import first

ENCODING = sys.stdout.encoding
sock = socket.socket(fileno=int(sys.argv[2]))


def streams():
    def reader(fd):
        return io.TextIOWrapper(io.BufferedReader(io.FileIO(fd, "r", closefd=False)),
                                encoding=ENCODING)

    def writer(fd, **options):
        return io.TextIOWrapper(io.BufferedWriter(io.FileIO(fd, "w", closefd=False)),
                                encoding=ENCODING, **options)

    sys.stdin = sys.__stdin__ = reader(0)
    sys.stdout = sys.__stdout__ = writer(1)
    sys.stderr = sys.__stderr__ = writer(2, errors="backslashreplace", line_buffering=True)


def status_of(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def child(request, fds):
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    keep = {0, 1, 2}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    streams()
    sys.argv = request["argv"]
    status, interrupted = 0, False
    try:
        status = status_of(SystemExit(liqmon.cli.main()))
    except SystemExit as exc:
        status = status_of(exc)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted = True
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    try:
        threading._shutdown()  # what the interpreter does at exit, in this order
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                status = status or 120
    finally:
        if interrupted:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(status)


while True:
    message, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
    if not message:
        break
    pid = os.fork()
    if pid == 0:
        child(json.loads(message), fds)
    for fd in fds:
        os.close(fd)
    try:
        sock.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        sock.send(json.dumps({"status": status}).encode())
    except OSError:  # the test process went away
        break
"""


class _Zygote:
    """The interpreter the commands are forked from, and the socket it takes them on."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = dict(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, str(ROOT), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygote: _Zygote | None = None


def _get_zygote() -> _Zygote:
    global _zygote  # one per test session, started on first use
    if _zygote is None or not _zygote.alive():
        _zygote = _Zygote()
        atexit.register(stop_zygote)
    return _zygote


def stop_zygote() -> None:
    """Stop the zygote (at exit; it also stops by itself when this process goes away)."""
    global _zygote
    if _zygote is not None:
        _zygote.close()
        _zygote = None


def _argv0(args: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(sys.argv[0], arguments)`` of a liqmon command line, ``None`` for any other."""
    if list(args[:3]) == CLI_MODULE:
        import liqmon.cli

        return str(Path(liqmon.cli.__file__).resolve()), list(args[3:])
    if args and args[0] == CONSOLE_SCRIPT:
        return CONSOLE_SCRIPT, list(args[1:])
    return None


def _forkable(env: Mapping[str, str], zygote_env: Mapping[str, str]) -> bool:
    keys = {k for k in (*env, *zygote_env) if k.startswith(_STARTUP_ENV)}
    return all(env.get(k) == zygote_env.get(k) for k in keys)


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    input: str | bytes | None = None,  # subprocess.run's name
    capture_output: bool = False,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = False,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` with its usual meaning, for a ``liqmon`` command line forked
    from the zygote (see the module docstring); anything else really is ``subprocess.run``."""
    argv = [os.fspath(a) for a in args]
    options: dict[str, Any] = {
        "input": input,
        "capture_output": capture_output,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": cwd,
        "env": env,
        "timeout": timeout,
        "check": check,
        "text": text,
        "encoding": encoding,
        "errors": errors,
    }
    command = _argv0(argv)
    environ = dict(os.environ if env is None else env)
    zygote = None if os.environ.get("LIQMON_TEST_FRESH_CLI") or command is None else _get_zygote()
    if zygote is None or not _forkable(environ, zygote.env):
        return subprocess.run(argv, **options)  # check is passed on
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = subprocess.PIPE
    arg0, rest = command  # type: ignore[misc]
    request = {"argv": [arg0, *rest], "cwd": os.fspath(cwd or os.getcwd()), "env": environ}
    with zygote.lock:
        return _run_forked(
            zygote, argv, request, input, stdout, stderr, timeout, check, text, encoding, errors
        )


def _run_forked(
    zygote: _Zygote,
    argv: list[str],
    request: dict[str, Any],
    input_: str | bytes | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    timeout: float | None,
    check: bool,
    text: bool,
    encoding: str | None,
    errors: str | None,
) -> subprocess.CompletedProcess[Any]:
    theirs: list[int] = []  # the child's 0, 1, 2
    ours: dict[str, int] = {}  # our ends of its pipes
    opened: list[int] = []  # descriptors to close once the child has them
    decode = text or encoding is not None or errors is not None

    def devnull(flags: int) -> int:
        fd = os.open(os.devnull, flags)
        opened.append(fd)
        return fd

    if input_ is not None:
        read, write = os.pipe()
        theirs.append(read)
        opened.append(read)
        ours["stdin"] = write
    else:
        theirs.append(0)  # ours, as subprocess.run leaves it
    for name, spec, default in (("stdout", stdout, 1), ("stderr", stderr, 2)):
        if spec == subprocess.STDOUT and name == "stderr":
            theirs.append(theirs[1])
        elif spec == subprocess.PIPE:
            read, write = os.pipe()
            theirs.append(write)
            opened.append(write)
            ours[name] = read
        else:
            theirs.append(_fd(spec, default, devnull))
    try:
        socket.send_fds(zygote.sock, [json.dumps(request).encode()], theirs)
        reply = zygote.sock.recv(_MESSAGE)
        if not reply:
            raise RuntimeError("the liqmon zygote exited")
        pid = json.loads(reply)["pid"]
    finally:
        for fd in opened:
            os.close(fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    data = (
        input_.encode(encoding or "utf-8", errors or "strict")
        if isinstance(input_, str)
        else input_
    )
    chunks: dict[str, list[bytes]] = {n: [] for n in ("stdout", "stderr") if n in ours}
    timed_out = _communicate(ours, chunks, data, deadline)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    reply = zygote.sock.recv(_MESSAGE)
    if not reply:
        raise RuntimeError("the liqmon zygote exited")
    returncode = os.waitstatus_to_exitcode(json.loads(reply)["status"])
    if timed_out:
        _communicate(ours, chunks, None, None)
    out: Any
    err: Any
    out, err = (b"".join(chunks[n]) if n in chunks else None for n in ("stdout", "stderr"))
    if decode:
        out, err = (None if b is None else _text(b, encoding, errors) for b in (out, err))
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout or 0, output=out, stderr=err)
    result = subprocess.CompletedProcess(argv, returncode, out, err)
    if check:
        result.check_returncode()
    return result


def _text(data: bytes, encoding: str | None, errors: str | None) -> str:
    # as subprocess.run(text=True) does: universal newlines
    decoded = data.decode(encoding or "utf-8", errors or "strict")
    return decoded.replace("\r\n", "\n").replace("\r", "\n")


def _fd(spec: int | IO[Any] | None, default: int, devnull: Any) -> int:
    if spec is None:
        return default
    if spec == subprocess.DEVNULL:
        return int(devnull(os.O_RDWR))
    if isinstance(spec, int):
        return spec
    return spec.fileno()


def _communicate(
    ours: dict[str, int],
    chunks: dict[str, list[bytes]],
    data: bytes | None,
    deadline: float | None,
) -> bool:
    """Feed ``data`` to the child's stdin and read its pipes to the end, into ``chunks``;
    whether the deadline came first (the pipes still open are left open)."""
    with selectors.DefaultSelector() as selector:
        for name in chunks:
            if name in ours:
                selector.register(ours[name], selectors.EVENT_READ, name)
        if "stdin" in ours:
            if data:
                os.set_blocking(ours["stdin"], False)
                selector.register(ours["stdin"], selectors.EVENT_WRITE, "stdin")
            else:
                os.close(ours.pop("stdin"))
        pending = memoryview(data or b"")
        while selector.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return True
            for key, _ in selector.select(remaining):
                name = key.data
                if name == "stdin":
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]) :]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        selector.unregister(key.fd)
                        os.close(ours.pop("stdin"))
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    chunks[name].append(chunk)
                else:
                    selector.unregister(key.fd)
                    os.close(ours.pop(name))
    return False
