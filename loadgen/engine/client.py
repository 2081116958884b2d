"""The orchestrator's handle on the engine process (no locust here: this runs without gevent).

The engine runs in its own session, so a Ctrl-C in the terminal reaches only the orchestrator,
which then stops the load itself. The engine exits when its stdin closes, so it cannot outlive
the orchestrator.
"""

from __future__ import annotations

import errno
import json
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

from scalefinder.core.errors import InfrastructureError, InputError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0


class EngineProcess:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.pids: list[int] = []
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._stderr_tail: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "EngineProcess":
        self._process = subprocess.Popen(
            [sys.executable, "-m", "scalefinder.loadgen.engine"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, name="engine-stdout", daemon=True).start()
        threading.Thread(target=self._read_stderr, name="engine-stderr", daemon=True).start()
        try:
            self._send(self.config)
            self.pids = self.wait_ready(timeout_s)["pids"]
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Quit the engine, and kill it if it does not go within a few seconds."""
        process = self._process
        if process is None:
            return
        self._process = None
        try:
            self._write({"cmd": "quit"}, process)
            process.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> "EngineProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- commands -------------------------------------------------------------------------
    def set_rate(self, step_id: int, rate_rps: float) -> None:
        self._send({"cmd": "rate", "step_id": step_id, "rate_rps": rate_rps})

    def pause(self) -> None:
        self._send({"cmd": "pause"})

    def stop(self) -> None:
        """Cut all load now; the engine confirms with a ``stopped`` message."""
        self._send({"cmd": "stop"})

    # -- messages -------------------------------------------------------------------------
    def messages(self, until_monotonic: float) -> Iterator[dict[str, Any]]:
        """Messages as they arrive, until the given ``time.monotonic()`` deadline."""
        while True:
            left = until_monotonic - time.monotonic()
            if left <= 0:
                return
            try:
                message = self._messages.get(timeout=left)
            except queue.Empty:
                return
            yield self._checked(message)

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        for message in self.messages(time.monotonic() + timeout_s):
            if message["type"] == "ready":
                return message
        raise InfrastructureError(f"the load generator did not start within {timeout_s:g} s" + self._stderr_hint())

    # -- plumbing -------------------------------------------------------------------------
    def _checked(self, message: dict[str, Any] | None) -> dict[str, Any]:
        if message is None:
            raise InfrastructureError("the load generator exited unexpectedly" + self._stderr_hint())
        if message.get("type") == "error":
            raise InfrastructureError(f"the load generator could not start: {message['message']}")
        return message

    def _send(self, message: dict[str, Any]) -> None:
        if self._process is None:
            raise InfrastructureError("the load generator is not running")
        try:
            self._write(message, self._process)
        except (BrokenPipeError, OSError) as exc:
            raise InfrastructureError(f"lost the load generator ({exc})" + self._stderr_hint()) from None

    @staticmethod
    def _write(message: dict[str, Any], process: subprocess.Popen) -> None:
        process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()

    def _read_stdout(self) -> None:
        process = self._process
        for line in process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                self._messages.put(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("engine: %s", line)
        self._messages.put(None)

    def _read_stderr(self) -> None:
        for line in self._process.stderr:
            line = line.rstrip()
            if line:
                self._stderr_tail = (self._stderr_tail + [line])[-20:]
                logger.info("engine: %s", line)

    def _stderr_hint(self) -> str:
        return f" (last engine output: {self._stderr_tail[-1]})" if self._stderr_tail else ""


def check_master_port(host: str, port: int) -> None:
    """Refuse a master port that is already taken (most likely by another run's master) before
    anything starts, with the port named, rather than when the load generator starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            None if host in ("*", "") else host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise InputError(f"--master-bind-host {host} cannot be resolved ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        # ZeroMQ binds the same way, so a port an earlier run left in TIME_WAIT is not taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InfrastructureError(f"the Locust master port {port} on {host} is already in use (by another "
                                          "run?); choose another --master-port") from None
            raise InputError(f"the Locust master cannot listen on {host}:{port} ({exc.strerror}); check "
                             "--master-bind-host and --master-port") from None
