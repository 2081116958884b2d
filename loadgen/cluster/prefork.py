"""The ``prefork`` archetype's server: a master process and forked synchronous workers.

Run as ``python -m scalefinder.loadgen.cluster.prefork serve --port PORT --archetype prefork --param ...``
(the same arguments as ``scalefinder.loadgen.cluster.task``; ``ClusterSpec.task_argv`` picks the module).

Like Gunicorn's sync workers, uWSGI or php-fpm: the master opens the listening socket, forks
``workers`` processes that accept from it one connection at a time, and forks a new worker
whenever one dies. Each ``/work`` request maps ``mib_per_request`` MiB, writes every page, holds
it ``hold_ms`` and unmaps it. Past capacity the task's cgroup runs out of memory and the kernel's
OOM killer kills the largest process in it: a worker holding a request. That request fails,
the master starts a replacement, and the task itself never stops.

The master imports as little as it can (no aiohttp): every page it holds when it forks is a
page each worker starts with, so a lean master keeps the idle task small.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import mmap
import os
import signal
import socket
import sys
import time

from scalefinder.loadgen.cluster import archetypes
from scalefinder.loadgen.cluster.work import MIB, burn_cpu, touched_block

PR_SET_PDEATHSIG = 1
LISTEN_BACKLOG = 1024
# Raised for workers only: the kernel already prefers a worker holding a request (it is the
# largest process), and this keeps the master, which owns the socket and the respawning, out of
# the choice even when a worker is idle.
WORKER_OOM_SCORE_ADJ = 500
CONNECTION_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 64 * 1024

# Per worker slot in memory shared by every process of the task (doubles): MiB held by the
# request in progress, requests served. The master's respawn count follows the slots.
SLOT_FIELDS = 2
HELD, SERVED = 0, 1


class Shared:
    """Counters every worker writes to its own slot and any worker reads to answer /metrics."""

    def __init__(self, workers: int):
        self.workers = workers
        self._block = mmap.mmap(-1, 8 * (SLOT_FIELDS * workers + 1))  # anonymous and MAP_SHARED
        self.values = memoryview(self._block).cast("d")

    def set(self, slot: int, field: int, value: float) -> None:
        self.values[slot * SLOT_FIELDS + field] = value

    def add(self, slot: int, field: int, value: float) -> None:
        self.values[slot * SLOT_FIELDS + field] += value

    def total(self, field: int) -> float:
        return sum(self.values[slot * SLOT_FIELDS + field] for slot in range(self.workers))

    @property
    def respawns(self) -> float:
        return self.values[SLOT_FIELDS * self.workers]

    def count_respawn(self) -> None:
        self.values[SLOT_FIELDS * self.workers] += 1


def metrics_text(shared: Shared) -> str:
    """``/metrics`` in Prometheus text format, written out rather than made by prometheus_client.

    Importing prometheus_client in this lean master would take it from about 14 to 24 MiB of
    resident memory (measured; the package pulls in http.server, wsgiref and threading), and
    every forked worker starts from those pages; three literal families cost nothing. tests/test_prefork.py reads this text with
    prometheus_client's parser, so it stays valid.
    """
    return (
        "# HELP requests_total Requests served since start.\n"
        "# TYPE requests_total counter\n"
        f"requests_total {shared.total(SERVED):.0f}\n"
        "# HELP request_memory_mib Memory held by in-flight requests (MiB).\n"
        "# TYPE request_memory_mib gauge\n"
        f"request_memory_mib {shared.total(HELD):g}\n"
        "# HELP worker_restarts_total Workers the master started again after they died.\n"
        "# TYPE worker_restarts_total counter\n"
        f"worker_restarts_total {shared.respawns:.0f}\n"
    )


def _response(status: str, body: bytes) -> bytes:
    # A sync worker serves one connection at a time, so it closes each one, as Gunicorn's do:
    # a kept-alive idle connection would hold the worker.
    head = (f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def _read_request(conn: socket.socket) -> tuple[str, str] | None:
    """(method, path) of the request on ``conn`` with its body read, or None if it is not one."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > MAX_HEAD_BYTES:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) < 2:
        return None
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    remaining = length - len(body)
    while remaining > 0:
        chunk = conn.recv(min(remaining, 65536))
        if not chunk:
            return None
        remaining -= len(chunk)
    return parts[0], parts[1].split("?", 1)[0]


def serve_connection(conn: socket.socket, slot: int, shared: Shared, params: dict) -> None:
    request = _read_request(conn)
    if request is None:
        return
    _, path = request
    if path == "/work":
        mib = params["mib_per_request"]
        block = touched_block(int(mib * MIB))
        shared.set(slot, HELD, mib)
        try:
            burn_cpu(params["cpu_ms"])
            time.sleep(params["hold_ms"] / 1000.0)
        finally:
            block.close()
            shared.set(slot, HELD, 0.0)
            shared.add(slot, SERVED, 1)
        reply = _response("200 OK", b"ok\n")
    elif path == "/health":
        reply = _response("200 OK", b"ok\n")
    elif path == "/metrics":
        reply = _response("200 OK", metrics_text(shared).encode())
    else:
        reply = _response("404 Not Found", b"not found\n")
    conn.sendall(reply)


def worker_main(slot: int, listener: socket.socket, shared: Shared, params: dict, master: int,
                start_gate: tuple[int, int] | None) -> None:
    """One worker's life: accept, serve, close, for ever. Never returns."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != master:  # the master died before the line above took effect
        os._exit(0)
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(WORKER_OOM_SCORE_ADJ))
    except OSError:
        pass
    if start_gate is not None:
        # The first workers wait until every one is forked: the task answers its health check
        # only then, so the idle tree the cluster measures at that moment is the whole tree.
        gate_read, gate_write = start_gate
        os.close(gate_write)
        os.read(gate_read, 1)  # returns at end of file, once the master has closed its end
        os.close(gate_read)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        try:
            conn.settimeout(CONNECTION_TIMEOUT_S)
            serve_connection(conn, slot, shared, params)
        except OSError:
            pass  # the client went away; the worker goes on
        finally:
            conn.close()


class Master:
    def __init__(self, port: int, params: dict):
        self.params = params
        self.workers = int(params["workers"])
        self.shared = Shared(self.workers)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(LISTEN_BACKLOG)
        self.pid = os.getpid()
        self.by_pid: dict[int, int] = {}  # worker pid -> slot

    def spawn(self, slot: int, start_gate: tuple[int, int] | None = None) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                worker_main(slot, self.listener, self.shared, self.params, self.pid, start_gate)
            finally:
                os._exit(1)
        self.by_pid[pid] = slot

    def run(self) -> None:
        parent = os.getppid()
        # SIGCHLD is waited for, not handled: sigtimedwait wakes the master the moment a worker
        # dies, and the timeout lets it notice that its own parent is gone.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        # Objects that exist now are never collected: the collector would otherwise write to
        # every one of them in each worker, copying pages the workers could have shared.
        gc.collect()
        gc.freeze()
        start_gate = os.pipe()
        for slot in range(self.workers):
            self.spawn(slot, start_gate)
        for end in start_gate:
            os.close(end)
        while True:
            signal.sigtimedwait({signal.SIGCHLD}, 1.0)
            if os.getppid() != parent:
                self.stop_workers()
                os._exit(0)
            self.reap()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.by_pid.pop(pid, None)
            if slot is None:
                continue
            self.shared.set(slot, HELD, 0.0)  # what the dead worker held went with it
            if os.WIFSIGNALED(status):
                name = signal.Signals(os.WTERMSIG(status)).name
                hint = " (perhaps out of memory)" if os.WTERMSIG(status) == signal.SIGKILL else ""
                print(f"worker {slot} (pid {pid}) was killed by {name}{hint}; starting a new one",
                      file=sys.stderr, flush=True)
                self.shared.count_respawn()
                self.spawn(slot)
            else:
                # A worker that exits on its own is broken, not killed; forking it again would
                # only repeat that, so the whole server stops and the cluster records why.
                code = os.WEXITSTATUS(status)
                print(f"worker {slot} (pid {pid}) exited with code {code}; stopping the server",
                      file=sys.stderr, flush=True)
                self.stop_workers()
                os._exit(3)

    def stop_workers(self) -> None:
        for pid in list(self.by_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scalefinder.loadgen.cluster.prefork")
    parser.add_argument("role", choices=["serve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--archetype", default="prefork", choices=["prefork"])
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--memory-mib", type=int, default=512)  # the cgroup enforces it, not the server
    args = parser.parse_args(argv)
    given = {}
    for pair in args.param:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param needs NAME=VALUE, got {pair!r}")
        given[name.strip()] = value.strip()
    params = archetypes.get(args.archetype).resolve(given)
    try:
        master = Master(args.port, params)
    except OSError as exc:
        print(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(3)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    master.run()


if __name__ == "__main__":
    main()
