"""Run dunlink's processes side by side (sandbox, api, worker, beat) for the demo, tests and benchmarks.

Each process is a real ``dunlink`` subprocess with its own log file; start-up waits for an HTTP answer or
a log line, with a bound, and stopping always ends what was started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from dunlink.webapp.serving import LISTENING


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(popen: subprocess.Popen[Any], *, grace: float, group: bool = False) -> None:
    """End ``popen``: SIGTERM, SIGKILL if it is still running after ``grace`` seconds, then reap it.

    With ``group`` the signals go to its whole process group (it must lead one: ``start_new_session``), so a
    Celery worker's pool children end with it.
    """
    def send(sig: int) -> None:
        if popen.poll() is None:
            if group:
                os.killpg(popen.pid, sig)
            else:
                popen.send_signal(sig)

    send(signal.SIGTERM)
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        popen.wait(timeout=grace)


def dunlink_executable() -> str:
    """The ``dunlink`` script next to this interpreter (the same virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dunlink"
    return str(beside) if beside.exists() else "dunlink"


@dataclass
class Process:
    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_start: int = 0  # where this run's output begins: a restarted process appends to the same file

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """What this run of the process has written so far (not an earlier run's lines in the same file)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_start)
                return log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker's pool children too)."""
        if self.alive():
            os.killpg(self.popen.pid, sig)


@dataclass
class ProcessGroup:
    """Processes started together and always stopped together (context manager)."""

    env: Mapping[str, str]
    log_dir: Path
    cwd: Path | None = None
    processes: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, args: Sequence[str], *, ready: Callable[[Process], bool] | None = None,
              timeout: float = 30.0) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log:
            start = log.tell()
            popen = subprocess.Popen([dunlink_executable(), *args], env=dict(self.env), cwd=self.cwd, stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        process = Process(name, list(args), log_path, popen, start)
        self.processes[name] = process
        if ready is not None:
            self.wait(process, ready, timeout=timeout)
        return process

    def wait(self, process: Process, ready: Callable[[Process], bool], *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n"
                                   f"{process.log_text()[-3000:]}")
            if ready(process):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{process.name} not ready after {timeout:.0f}s:\n{process.log_text()[-3000:]}")

    def start_together(self, commands: Mapping[str, Command], *, timeout: float,
                       on_ready: Callable[[str], None] | None = None) -> None:
        """Start every command at once, then wait until each is ready: they boot side by side.

        ``on_ready`` is told each name as soon as that process is ready, in the order they become ready.
        """
        for name, command in commands.items():
            self.start(name, command.args)
        waiting = dict(commands)
        deadline = time.monotonic() + timeout
        while waiting:
            for name, command in list(waiting.items()):
                process = self.processes[name]
                if not process.alive():
                    raise RuntimeError(f"{name} exited with {process.popen.returncode}:\n"
                                       f"{process.log_text()[-3000:]}")
                if command.ready(process):
                    del waiting[name]
                    if on_ready is not None:
                        on_ready(name)
            if waiting and time.monotonic() > deadline:
                name = next(iter(waiting))
                raise RuntimeError(f"{name} not ready after {timeout:.0f}s:\n"
                                   f"{self.processes[name].log_text()[-3000:]}")
            if waiting:
                time.sleep(0.1)

    def stop(self, name: str, *, grace: float = 10.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            stop_process(process.popen, grace=grace, group=True)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)

    def stop_together(self, *, grace: float = 10.0, on_stopped: Callable[[Process], None] | None = None) -> None:
        """Ask every process to stop at once (SIGTERM, newest first), kill the process groups of those still
        running after ``grace`` seconds; ``on_stopped`` is given each process as it ends, in the order they end.

        SIGTERM goes to each process alone, not its group: a Celery worker then stops its pool children itself
        (a warm shutdown), where children signalled directly can leave its shutdown waiting until it is killed.
        """
        stopping = list(reversed(self.processes))
        for name in stopping:
            process = self.processes[name]
            if process.alive():
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while stopping:
            for name in list(stopping):
                process = self.processes[name]
                if time.monotonic() > deadline:
                    process.kill(signal.SIGKILL)
                if process.popen.poll() is not None:
                    stopping.remove(name)
                    del self.processes[name]  # only now: an interrupted wait leaves the rest to stop_all
                    if on_stopped is not None:
                        on_stopped(process)
            if stopping:
                time.sleep(0.05)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()


def http_ready(url: str) -> Callable[[Process], bool]:
    def check(_: Process) -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def serving(url: str, *, any_status: bool = False) -> Callable[[Process], bool]:
    """Ready once a dunlink server (``api``, ``sandbox``) said it listens and ``url`` answers.

    The line comes only once the process holds its port, so the answer is its own, never that of another
    program that happened to take the same port first. ``any_status`` also takes a 5xx (a health check
    while the database is down); otherwise the answer must be below 500.
    """
    def check(process: Process) -> bool:
        if LISTENING not in process.log_text():
            return False
        try:
            status = httpx.get(url, timeout=1.0).status_code
        except httpx.HTTPError:
            return False
        return any_status or status < 500

    return check


def log_ready(text: str) -> Callable[[Process], bool]:
    def check(process: Process) -> bool:
        return text in process.log_text()

    return check


@dataclass(frozen=True)
class Command:
    """A ``dunlink`` command line and the sign that the process it starts is ready for work."""

    args: list[str]
    ready: Callable[[Process], bool]


def sandbox_command(port: int, *, webhook_base: str) -> Command:
    return Command(["sandbox", "--port", str(port), "--webhook-base", webhook_base],
                   serving(f"http://127.0.0.1:{port}/sandbox/requests"))


def api_command(port: int) -> Command:
    return Command(["api", "--port", str(port)], serving(f"http://127.0.0.1:{port}/healthz"))


def worker_command(node: str, *, concurrency: int) -> Command:
    """A Celery worker named ``node@<host>`` running ``concurrency`` tasks at once."""
    return Command(["worker", "-n", f"{node}@%h", "-c", str(concurrency), "--without-gossip", "--without-mingle"],
                   log_ready("ready."))


def beat_command(schedule: Path) -> Command:
    return Command(["beat", "-s", str(schedule)], log_ready("beat: Starting"))
