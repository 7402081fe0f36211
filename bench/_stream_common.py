"""Helpers of the streaming bench: child processes, free ports, file limits, percentiles, CPU and memory readings."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile(want: int = 16_384) -> int:
    """Raise this process's open-file limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Child:
    """A child process (a server) started by the bench; stopped on exit, even on error."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (its threads included)."""
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def task_cpu_ns(self) -> dict[int, int]:
        """Nanoseconds on a CPU so far, per thread (`/proc/<pid>/task/*/schedstat`): far finer than `cpu_s`, whose
        readings tick in 10 ms steps. Empty where /proc has no schedstat."""
        used: dict[int, int] = {}
        for task in Path(f"/proc/{self.popen.pid}/task").glob("*/schedstat"):
            try:
                used[int(task.parent.name)] = int(task.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return used

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Children:
    """Every child of the run; `stop_all` (also at interpreter exit through the context manager) ends them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    def start(
        self,
        name: str,
        args: list[str],
        *,
        port: int,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
        ready_path: str = "/",
    ) -> Child:
        log = self.log_dir / f"{name}.log"
        child_env = {**os.environ, **(env or {})}
        for key in unset:
            child_env.pop(key, None)
        out = log.open("wb")
        popen = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        child = Child(name=name, popen=popen, port=port, log=log)
        self.items.append(child)
        _wait_ready(child, ready_path)
        return child

    def stop(self, child: Child) -> None:
        child.stop()
        if child in self.items:
            self.items.remove(child)

    def stop_all(self) -> None:
        while self.items:
            self.items.pop().stop()


@contextlib.contextmanager
def children(log_dir: Path) -> Iterator[Children]:
    group = Children(log_dir)
    try:
        yield group
    finally:
        group.stop_all()


def _wait_ready(child: Child, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}")
        try:
            response = httpx.get(child.url + path, timeout=1.0)
            if response.status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{child.name} did not answer {path} within {timeout:.0f} s:\n{child.tail()}")


class CpuWatch:
    """CPU seconds of some processes between `start()` and `stop()` (and their share of one core)."""

    def __init__(self, **processes: psutil.Process) -> None:
        self.processes = processes
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._t0 = 0.0

    @staticmethod
    def _cpu(ps: psutil.Process) -> float:
        times = ps.cpu_times()
        return float(times.user + times.system)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self.before = {name: self._cpu(ps) for name, ps in self.processes.items()}

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t0
        self.used = {name: self._cpu(ps) - self.before[name] for name, ps in self.processes.items()}

    def share(self, name: str) -> float:
        """Share of one core used by `name` over the watch (1.0 = a whole core)."""
        return self.used[name] / self.wall if self.wall > 0 else float("nan")
