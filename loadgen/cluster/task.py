"""The archetype task server, and the helper processes some archetypes share.

Run as ``python -m scalefinder.loadgen.cluster.task ROLE --port PORT ...``:

* ``serve``      one task of an archetype: ``/work`` (the workload), ``/health``, ``/metrics``
* ``broker``     the job queue the ``queue`` archetype's tasks share
* ``downstream`` the service with a fixed total capacity the ``shared`` archetype's tasks call

Every process binds 127.0.0.1 only and exits when its parent goes away, so a cluster killed hard
leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Iterable, Iterator

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scalefinder.loadgen.cluster import archetypes
from scalefinder.loadgen.cluster.process import watch_parent
from scalefinder.loadgen.cluster.work import MIB, PAGE, burn_cpu, touched_block

SHUTDOWN_S = 2.0  # a stopping task gets this long to finish requests in flight


class Gauges:
    """The task's counters and gauges, served in Prometheus text format by prometheus_client."""

    def __init__(self) -> None:
        self.requests_total = 0
        self.values: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.values[name] = (help_text, read)

    def families(self) -> list[Metric]:
        """Every counter and gauge, read now."""
        # prometheus_client serves a counter family "requests" as the series "requests_total"
        found: list[Metric] = [CounterMetricFamily("requests_total", "Requests served since start.",
                                                   value=self.requests_total)]
        for name, (help_text, read) in self.values.items():
            found.append(GaugeMetricFamily(name, help_text, value=read()))
        return found


class Scrape(Collector):
    """Metric families already read (some need an await first), collected as one scrape."""

    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def metrics_response(families: Iterable[Metric]) -> web.Response:
    """``/metrics``: the families in the text format, from a registry of their own."""
    registry = CollectorRegistry(auto_describe=False)  # never the process-wide default one
    registry.register(Scrape(families))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ok(body: str = "ok\n", status: int = 200) -> web.Response:
    return web.Response(text=body, status=status)


def cpu_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    cpu_ms = params["cpu_ms"]

    async def handle(request: web.Request) -> web.Response:
        burn_cpu(cpu_ms)  # on the event loop: one core's worth of work, like a single-loop server
        return _ok()

    return handle


def memory_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    size = int(params["mib_per_request"] * MIB)
    hold_s, cpu_ms = params["hold_ms"] / 1000.0, params["cpu_ms"]
    # A heap cap below the cgroup's limit makes the task fail at an exact count of requests in
    # flight. The kernel's own limit is fuzzier: it charges shared pages, page cache and kernel
    # memory that the idle figure in the ground truth cannot see.
    cap = archetypes.heap_cap_mib(params, context["memory_mib"])
    heap_mib = float("inf") if cap is None else cap
    held = {"mib": 0.0}
    gauges.gauge("request_memory_mib", "Memory held by in-flight requests (MiB).", lambda: held["mib"])

    async def handle(request: web.Request) -> web.Response:
        if held["mib"] + params["mib_per_request"] > heap_mib + 1e-9:
            print(f"out of memory: {held['mib'] + params['mib_per_request']:g} MiB of requests would pass "
                  f"the {heap_mib:g} MiB heap cap", file=sys.stderr, flush=True)
            os._exit(archetypes.HEAP_EXHAUSTED_EXIT)  # at once, like a runtime giving up on its heap
        block = touched_block(size)
        held["mib"] += params["mib_per_request"]
        try:
            burn_cpu(cpu_ms)
            await asyncio.sleep(hold_s)
        finally:
            block.close()
            held["mib"] -= params["mib_per_request"]
        return _ok()

    return handle


def retaining_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    cpu_ms = params["cpu_ms"]
    size = int(params["retained_kib_per_request"] * 1024)
    retained: list[bytearray] = []
    gauges.gauge("retained_mib", "Memory kept after requests (MiB).",
                 lambda: len(retained) * size / MIB)

    async def handle(request: web.Request) -> web.Response:
        burn_cpu(cpu_ms)
        if size:
            block = bytearray(size)
            block[::PAGE // 2] = b"\x01" * len(range(0, size, PAGE // 2))
            retained.append(block)
        return _ok()

    return handle


def workers_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    workers, backlog = int(params["workers"]), int(params["backlog"])
    work_s, cpu_ms = params["work_ms"] / 1000.0, params["cpu_ms"]
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="worker")
    state = {"busy": 0, "waiting": 0}
    lock = threading.Lock()
    gauges.gauge("workers_busy", "Worker threads serving a request.", lambda: state["busy"])
    gauges.gauge("backlog_waiting", "Requests waiting for a worker.", lambda: state["waiting"])

    def work() -> None:
        with lock:
            state["waiting"] -= 1
            state["busy"] += 1
        try:
            started = time.monotonic()
            burn_cpu(cpu_ms)
            remaining = work_s - (time.monotonic() - started)
            if remaining > 0:
                time.sleep(remaining)  # the blocking call a worker makes (database, file, API)
        finally:
            with lock:
                state["busy"] -= 1

    async def handle(request: web.Request) -> web.Response:
        with lock:
            queued = state["waiting"] + state["busy"] - workers
            if queued >= backlog:
                return _ok("backlog full\n", status=503)
            state["waiting"] += 1
        await asyncio.get_running_loop().run_in_executor(pool, work)
        return _ok()

    context["cleanup"].append(lambda: pool.shutdown(wait=False, cancel_futures=True))
    return handle


def waiting_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    pool = asyncio.Semaphore(int(params["pool_size"]))
    latency_s, cpu_ms = params["latency_ms"] / 1000.0, params["cpu_ms"]
    state = {"in_use": 0}
    gauges.gauge("pool_in_use", "Downstream connections in use.", lambda: state["in_use"])

    async def handle(request: web.Request) -> web.Response:
        burn_cpu(cpu_ms)
        async with pool:
            state["in_use"] += 1
            try:
                await asyncio.sleep(latency_s)
            finally:
                state["in_use"] -= 1
        return _ok()

    return handle


def jvm_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    heap_mib = params["heap_fraction"] * context["memory_mib"]
    heap = touched_block(int(heap_mib * MIB))
    context["keep"].append(heap)
    gauges.gauge("heap_committed_mib", "Heap reserved at start (MiB).", lambda: heap_mib)
    cpu_ms = params["cpu_ms"]

    async def handle(request: web.Request) -> web.Response:
        burn_cpu(cpu_ms)
        return _ok()

    return handle


def queue_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    broker = context["helper_url"]
    jobs_at_once, job_s, cpu_ms = int(params["jobs_at_once"]), params["job_ms"] / 1000.0, params["cpu_ms"]
    state = {"in_progress": 0, "done": 0, "backlog": 0.0}
    gauges.gauge("jobs_in_progress", "Jobs this task is processing.", lambda: state["in_progress"])

    async def consume(session: ClientSession) -> None:
        while True:
            try:
                async with session.post(f"{broker}/dequeue") as reply:
                    if reply.status != 200:
                        continue
                    await reply.read()
            except Exception:  # the broker restarting or busy: try again shortly
                await asyncio.sleep(0.2)
                continue
            state["in_progress"] += 1
            try:
                burn_cpu(cpu_ms)
                await asyncio.sleep(job_s)
            finally:
                state["in_progress"] -= 1
                state["done"] += 1

    async def start(app: web.Application) -> None:
        session = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=10))
        app["session"] = session
        app["consumers"] = [asyncio.create_task(consume(session)) for _ in range(jobs_at_once)]
        yield
        for consumer in app["consumers"]:
            consumer.cancel()
        await asyncio.gather(*app["consumers"], return_exceptions=True)
        await session.close()

    context["startup"].append(start)

    async def metrics_extra(app: web.Application) -> list[Metric]:
        # The queue is the service's, not the task's: every task reports the same depth, which
        # the label says, so the metric source keeps one service-level value.
        try:
            async with app["session"].get(f"{broker}/depth") as reply:
                state["backlog"] = float(await reply.text())
        except Exception:
            return []
        backlog = GaugeMetricFamily("queue_backlog", "Jobs waiting in the shared queue.", labels=["scope"])
        backlog.add_metric(["service"], state["backlog"])
        return [backlog, CounterMetricFamily("jobs_done_total", "Jobs this task finished.", value=state["done"])]

    context["metrics_extra"] = metrics_extra

    async def handle(request: web.Request) -> web.Response:
        async with request.app["session"].post(f"{broker}/enqueue") as reply:
            if reply.status != 200:
                return _ok("queue full or unavailable\n", status=503)
        return _ok("queued\n", status=202)

    return handle


def shared_handler(params: dict, gauges: Gauges, context: dict) -> Handler:
    downstream, cpu_ms = context["helper_url"], params["cpu_ms"]

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=60))
        yield
        await app["session"].close()

    context["startup"].append(start)

    async def handle(request: web.Request) -> web.Response:
        burn_cpu(cpu_ms)
        async with request.app["session"].get(f"{downstream}/call") as reply:
            await reply.read()
            if reply.status != 200:
                return _ok("downstream failed\n", status=502)
        return _ok()

    return handle


HANDLERS = {
    "cpu": cpu_handler,
    "memory": memory_handler,
    "retaining": retaining_handler,
    "workers": workers_handler,
    "waiting": waiting_handler,
    "jvm": jvm_handler,
    "queue": queue_handler,
    "shared": shared_handler,
}


def task_app(archetype: str, params: dict, memory_mib: int, helper_url: str | None) -> web.Application:
    resolved = archetypes.get(archetype).resolve(params)
    gauges = Gauges()
    context: dict = {"memory_mib": memory_mib, "helper_url": helper_url, "startup": [], "cleanup": [],
                     "keep": [], "metrics_extra": None}
    work = HANDLERS[archetype](resolved, gauges, context)

    async def handle_work(request: web.Request) -> web.StreamResponse:
        try:
            await request.read()
            return await work(request)
        finally:
            gauges.requests_total += 1

    async def handle_metrics(request: web.Request) -> web.Response:
        extra = await context["metrics_extra"](request.app) if context["metrics_extra"] else []
        return metrics_response([*gauges.families(), *extra])

    app = web.Application()
    app["context"] = context
    app.router.add_route("*", "/work", handle_work)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", handle_metrics)
    app.cleanup_ctx.extend(context["startup"])

    async def cleanup(app: web.Application) -> None:
        for action in context["cleanup"]:
            action()

    app.on_cleanup.append(cleanup)
    return app


async def health(request: web.Request) -> web.Response:
    return _ok()


def broker_app(max_backlog: int) -> web.Application:
    """A bounded FIFO job queue over HTTP; ``/dequeue`` waits up to a second for a job.

    Like a broker with a maximum queue length that rejects publishing, a full queue refuses new
    jobs (503), so producers learn that the consumers have fallen behind.
    """
    jobs: collections.deque[int] = collections.deque()
    ready = asyncio.Condition()
    counter = {"enqueued": 0}

    async def enqueue(request: web.Request) -> web.Response:
        # The bound is checked under the lock: checked before it, a burst of producers waiting
        # for the lock would all pass the check and overfill the queue.
        async with ready:
            if len(jobs) >= max_backlog:
                return _ok("queue full\n", status=503)
            counter["enqueued"] += 1
            jobs.append(counter["enqueued"])
            ready.notify()
        return _ok()

    async def dequeue(request: web.Request) -> web.Response:
        async with ready:
            if not jobs:
                try:
                    await asyncio.wait_for(ready.wait_for(lambda: bool(jobs)), timeout=1.0)
                except asyncio.TimeoutError:
                    return _ok("", status=204)
            return _ok(str(jobs.popleft()))

    async def depth(request: web.Request) -> web.Response:
        return _ok(str(len(jobs)))

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response([
            GaugeMetricFamily("queue_backlog", "Jobs waiting in the queue.", value=len(jobs)),
            CounterMetricFamily("jobs_enqueued_total", "Jobs accepted since start.", value=counter["enqueued"]),
        ])

    app = web.Application()
    app.router.add_post("/enqueue", enqueue)
    app.router.add_post("/dequeue", dequeue)
    app.router.add_get("/depth", depth)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


def downstream_app(capacity: int, call_ms: float) -> web.Application:
    """A dependency that serves ``capacity`` calls at once, ``call_ms`` each; the rest wait."""
    slots = asyncio.Semaphore(capacity)
    state = {"busy": 0, "waiting": 0}

    async def call(request: web.Request) -> web.Response:
        state["waiting"] += 1
        async with slots:
            state["waiting"] -= 1
            state["busy"] += 1
            try:
                await asyncio.sleep(call_ms / 1000.0)
            finally:
                state["busy"] -= 1
        return _ok()

    async def metrics(request: web.Request) -> web.Response:
        return metrics_response([
            GaugeMetricFamily("downstream_busy", "Calls being served.", value=state["busy"]),
            GaugeMetricFamily("downstream_waiting", "Calls waiting for a free slot.", value=state["waiting"]),
        ])

    app = web.Application()
    app.router.add_get("/call", call)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    return app


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_S)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024, reuse_address=True)
    await site.start()
    watcher = asyncio.create_task(watch_parent(os.getppid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await runner.cleanup()


def _parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param needs NAME=VALUE, got {pair!r}")
        params[name.strip()] = value.strip()
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scalefinder.loadgen.cluster.task")
    parser.add_argument("role", choices=["serve", "broker", "downstream"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--archetype")
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--helper-url")
    args = parser.parse_args(argv)
    params = _parse_params(args.param)
    if args.role == "serve":
        app = task_app(args.archetype, params, args.memory_mib, args.helper_url)
    elif args.role == "broker":
        app = broker_app(int(archetypes.get("queue").resolve(params)["max_backlog"]))
    else:
        resolved = archetypes.get("shared").resolve(params)
        app = downstream_app(int(resolved["downstream_capacity"]), float(resolved["downstream_ms"]))
    try:
        asyncio.run(_serve(app, args.port))
    except OSError as exc:
        print(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
