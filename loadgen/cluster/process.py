"""Starting and stopping the cluster's child processes so none outlives the cluster.

Every child runs in its own process group (so a stop reaches the whole tree a command may fork)
and gets SIGKILL from the kernel when the thread that started it goes away (``PR_SET_PDEATHSIG``).
Because that signal follows the *thread*, all children are started from one long-lived thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from scalefinder.core.errors import InfrastructureError
from scalefinder.core.waiting import wait_until

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
HEALTH_POLL_S = 0.05  # between health checks of a starting process


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, loaded on first use. dlopen(NULL) gives the interpreter's own symbols, libc's
    among them; ctypes.util.find_library would run ldconfig in a subprocess at import time."""
    return ctypes.CDLL(None, use_errno=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class Spawner:
    """Starts child processes from a single thread that lives as long as the cluster."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-spawner")

    def spawn(self, argv: Sequence[str], log_path: Path, cgroup_procs: Sequence[Path] = (),
              env: dict[str, str] | None = None) -> subprocess.Popen:
        return self._thread.submit(self._spawn, list(argv), log_path, list(cgroup_procs), env).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    @staticmethod
    def _spawn(argv: list[str], log_path: Path, cgroup_procs: list[Path],
               env: dict[str, str] | None) -> subprocess.Popen:
        procs_files = [str(path) for path in cgroup_procs]
        libc = _libc()  # loaded here: the child may only make raw calls

        def in_child() -> None:
            # Only async-signal-safe work here: raw syscalls, no Python-level locks.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            pid = str(os.getpid()).encode()
            for procs in procs_files:
                fd = os.open(procs, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)

        with open(log_path, "ab") as output:
            try:
                return subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=in_child, env=env, close_fds=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise InfrastructureError(f"cannot start {argv[0]!r}: {exc}") from None


def stop_process(process: subprocess.Popen, grace_s: float = 5.0,
                 kill_rest: Callable[[], None] | None = None) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s`` (at once if 0), then reap."""
    if process.poll() is None and grace_s > 0:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("process %s ignored SIGTERM for %.0f s; killing it", process.pid, grace_s)
    # Whatever the leader left behind in its group (workers of a forking server) goes too.
    _signal_group(process.pid, signal.SIGKILL)
    if kill_rest is not None:
        kill_rest()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.error("process %s did not exit after SIGKILL", process.pid)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, what: str,
                 log_path: Path | None = None) -> float:
    """Poll ``url`` until it answers 200; return the seconds it took.

    Raises InfrastructureError when the process exits first or the time runs out.
    """
    started = time.monotonic()

    def answers() -> bool:
        code = process.poll()
        if code is not None:
            raise InfrastructureError(f"{what} exited with code {code} before it became healthy{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    wait_until(answers, timeout_s=timeout_s, interval_s=HEALTH_POLL_S, what=f"{what} to answer 200",
               started_at=started, on_timeout=lambda: InfrastructureError(
                   f"{what} did not answer 200 on {url} within {timeout_s:g} s{_tail(log_path)}"))
    return time.monotonic() - started


def _tail(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return f" (last output: {lines[-1].strip()[:300]})" if lines else ""


async def watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    """Exit when the parent is gone (the process was re-parented), a backstop to PDEATHSIG."""
    while True:
        await asyncio.sleep(interval_s)
        if os.getppid() != parent_pid:
            os._exit(0)
