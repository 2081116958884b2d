"""Distributed load: a Locust master in the engine process, Locust workers beside it or elsewhere.

Locust's MasterRunner and WorkerRunner carry the messages (``register_message`` /
``send_message``); they spawn no users here. The master hands each worker the workload and,
per step, the rate: worker i of N offers arrivals i, i+N, i+2N ... of the common schedule, so
together they offer the step's rate with evenly interleaved arrivals. Workers send their
finished arrivals and per-second counters back; the master merges them into the same messages
a single generator would emit, so the orchestrator cannot tell the modes apart.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import gevent
import psutil
from locust.env import Environment
from locust.exception import RPCError

from scalefinder.core.waiting import wait_until
from scalefinder.loadgen.engine.generator import Generator

logger = logging.getLogger(__name__)

WORKER_WAIT_S = 60.0
WORKER_POLL_S = 0.05
# Rate changes are sent slightly ahead so every worker starts the step on the same schedule.
START_LEAD_S = 0.05
# A second's merged tick goes out as soon as every worker has reported that second, or this long
# after it if one has not: a worker slowed down by a busy host is waited for, a lost one is not.
TICK_GRACE_S = 1.0
TICK_POLL_S = 0.05

Emit = Callable[[dict[str, Any]], None]


class Coordinator:
    """The master: starts local workers, waits for remote ones, fans commands out, merges reports."""

    def __init__(self, config: dict[str, Any], emit: Emit):
        self.emit = emit
        self.expected = int(config.get("workers") or 0) + int(config.get("expect_workers") or 0)
        self.environment = Environment(user_classes=[], host=config["host"])
        self.runner = _master_runner(self.environment, config["master_bind_host"], config["master_port"])
        self._ready: set[str] = set()
        self._stopped: set[str] = set()
        self._drained: dict[int, set[str]] = defaultdict(set)
        self._ticks: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._worker_pids: dict[str, int] = {}
        for kind, handler in [("sf_ready", self._on_ready), ("sf_done", self._on_done), ("sf_tick", self._on_tick),
                              ("sf_drained", self._on_drained), ("sf_stopped", self._on_stopped)]:
            self.runner.register_message(kind, handler)
        self._processes = [_start_local_worker(self.runner.server.port)
                           for _ in range(int(config.get("workers") or 0))]
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        try:
            self._wait(lambda: self.runner.worker_count >= self.expected,
                       f"{self.expected} workers to connect")
            self._setup_workers(config)
        except BaseException:
            self.close()
            raise
        self._ticker = gevent.spawn(self._tick_loop)

    def pids(self) -> list[int]:
        return [os.getpid(), *self._worker_pids.values()]

    def handle(self, command: dict[str, Any]) -> None:
        kind = command["cmd"]
        if kind == "rate":
            self._broadcast("sf_rate", {"step_id": command["step_id"], "rate_rps": command["rate_rps"],
                                        "start_unix_s": time.time() + START_LEAD_S})
        elif kind == "pause":
            self._broadcast("sf_pause", {})
        elif kind == "stop":
            self._stopped.clear()
            self._broadcast("sf_stop", {})
            self._wait(lambda: len(self._stopped) >= len(self._ids), "workers to stop", timeout_s=2.0)
            self.emit({"type": "stopped"})
        else:
            raise ValueError(f"unknown engine command {kind!r}")

    def close(self) -> None:
        try:
            self.runner.quit()
        finally:
            for process in self._processes:
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)

    # -- setup ----------------------------------------------------------------------------
    def _setup_workers(self, config: dict[str, Any]) -> None:
        self._ids = [client.id for client in self.runner.clients.all][: self.expected]
        shared = dict(config)
        if config.get("locustfile_path"):
            # Like Locust itself, ship the locustfile so a remote worker needs only scalefinder.
            shared["locustfile_source"] = Path(config["locustfile_path"]).read_text(encoding="utf-8")
        # the cap on requests in flight is the run's, so each worker holds its share of it
        shared["max_in_flight"] = max(1, math.ceil(config["max_in_flight"] / len(self._ids)))
        for index, client_id in enumerate(self._ids):
            self.runner.send_message("sf_setup", {**shared, "index": index, "count": len(self._ids)},
                                     client_id=client_id)
        self._wait(lambda: len(self._ready) >= len(self._ids), "workers to load the workload")

    def _broadcast(self, kind: str, data: dict[str, Any]) -> None:
        for client_id in self._ids:
            self.runner.send_message(kind, data, client_id=client_id)

    def _wait(self, condition: Callable[[], bool], what: str, timeout_s: float = WORKER_WAIT_S) -> None:
        # gevent's sleep: the messages that make the condition true arrive on this same hub. A
        # plain OSError at the deadline, because the engine reports errors as "<type>: <message>".
        wait_until(condition, timeout_s=timeout_s, interval_s=WORKER_POLL_S, what=what, sleep=gevent.sleep,
                   on_timeout=lambda: OSError(f"timed out after {timeout_s:g} s waiting for {what}"))

    # -- reports from workers ----------------------------------------------------------------
    def _on_ready(self, environment: Any, msg: Any) -> None:
        if "error" in msg.data:
            logger.error("worker %s could not load the workload: %s", msg.node_id, msg.data["error"])
            return
        self._ready.add(msg.node_id)
        self._worker_pids[msg.node_id] = msg.data["pid"]

    def _on_done(self, environment: Any, msg: Any) -> None:
        self.emit({"type": "done", "rows": msg.data["rows"]})

    def _on_tick(self, environment: Any, msg: Any) -> None:
        self._ticks[msg.data["time_unix_s"]].append(msg.data)

    def _on_drained(self, environment: Any, msg: Any) -> None:
        step_id = msg.data["step_id"]
        self._drained[step_id].add(msg.node_id)
        if len(self._drained[step_id]) >= len(self._ids):
            del self._drained[step_id]
            self.emit({"type": "drained", "step_id": step_id})

    def _on_stopped(self, environment: Any, msg: Any) -> None:
        self._stopped.add(msg.node_id)

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(TICK_POLL_S)
            now = time.time()
            for second in sorted(self._ticks):  # in order: a later second waits for an earlier one
                if len(self._ticks[second]) < len(self._ids) and now < second + TICK_GRACE_S:
                    break
                self.emit(self._merge(second, self._ticks.pop(second)))

    def _merge(self, second: int, ticks: list[dict[str, Any]]) -> dict[str, Any]:
        counters: dict[str, Counter] = defaultdict(Counter)
        for tick in ticks:
            for step, values in tick["counters"].items():
                counters[step].update(values)
        return {
            "type": "tick",
            "time_unix_s": second,
            "counters": {step: dict(c) for step, c in counters.items()},
            "in_flight": sum(t["in_flight"] for t in ticks),
            "oldest_in_flight_s": max(t["oldest_in_flight_s"] for t in ticks),
            "cpu_pct": max([self._process.cpu_percent(None)] + [t["cpu_pct"] for t in ticks]),
        }


def _master_runner(environment: Environment, host: str, port: int) -> Any:
    """Locust's master runner listening on ``host``:``port``, or on any free port for ANY_FREE_PORT."""
    try:
        runner = environment.create_master_runner(host, port)
    except (SystemExit, RPCError) as exc:  # some Locust versions exit when the port is taken, others raise
        if isinstance(exc, SystemExit) or getattr(exc.__context__, "errno", None) == errno.EADDRINUSE:
            raise OSError(f"the Locust master port {port} on {host} is already in use (by another run?); "
                          "choose another --master-port") from None
        raise OSError(f"the Locust master cannot listen on {host}:{port} ({exc})") from None
    # Locust binds its port again if it ever resets its server: keep the one the workers were given.
    runner.master_bind_port = runner.server.port
    return runner


def _start_local_worker(master_port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scalefinder.loadgen.engine", "--worker", "--master-host", "127.0.0.1",
         "--master-port", str(master_port), "--parent-pid", str(os.getpid())],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )


def run_worker(master_host: str, master_port: int, parent_pid: int | None) -> None:
    """Join a master and offer this worker's share of each step until the master quits."""
    environment = Environment(user_classes=[])
    runner = environment.create_worker_runner(master_host, master_port)
    state: dict[str, Any] = {}

    def send(message: dict[str, Any]) -> None:
        runner.send_message("sf_" + message["type"], message)

    def on_setup(environment: Any, msg: Any) -> None:
        config = dict(msg.data)
        try:
            if config.get("locustfile_source") is not None:
                config["locustfile_path"] = _write_locustfile(config)
            state["generator"] = Generator(config, send)
        except (ValueError, OSError, ImportError, SyntaxError) as exc:
            runner.send_message("sf_ready", {"error": f"{type(exc).__name__}: {exc}"})
            return
        state["index"], state["count"] = config["index"], config["count"]
        runner.send_message("sf_ready", {"pid": os.getpid()})

    def on_rate(environment: Any, msg: Any) -> None:
        state["generator"].set_rate(msg.data["step_id"], msg.data["rate_rps"], msg.data["start_unix_s"],
                                    offset=state["index"], stride=state["count"])

    def on_pause(environment: Any, msg: Any) -> None:
        state["generator"].pause()

    def on_stop(environment: Any, msg: Any) -> None:
        state["generator"].stop()

    for kind, handler in [("sf_setup", on_setup), ("sf_rate", on_rate), ("sf_pause", on_pause), ("sf_stop", on_stop)]:
        runner.register_message(kind, handler)
    if parent_pid:
        gevent.spawn(_exit_with_parent, runner, parent_pid)
    runner.greenlet.join()
    if "generator" in state:
        state["generator"].emit = lambda message: None  # the master is gone; nobody is listening
        state["generator"].close()


def _write_locustfile(config: dict[str, Any]) -> str:
    folder = tempfile.mkdtemp(prefix="scalefinder-worker-")
    path = Path(folder) / Path(config["locustfile_path"] or "locustfile.py").name
    path.write_text(config["locustfile_source"], encoding="utf-8")
    return str(path)


def _exit_with_parent(runner: Any, parent_pid: int) -> None:
    """A worker started by a local master must not outlive it, even if the master is killed."""
    while os.getppid() == parent_pid:
        gevent.sleep(1.0)
    runner.greenlet.kill(block=False)
