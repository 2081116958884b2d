"""The local load balancer: an asyncio reverse proxy in front of the tasks, run as its own process.

It reports per target what an Application Load Balancer reports (request count, requests in
flight, target response time, 5xx answers, bytes in and out) on an admin port, where the cluster
also registers, drains and removes targets. Requests in flight are integrated over time, so a
reader gets the *average* concurrency between two reads rather than a noisy instant value.

Run as ``python -m scalefinder.loadgen.cluster.balancer --port P --admin-port A --policy least_outstanding``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
import time

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from scalefinder.loadgen.cluster.process import watch_parent
from scalefinder.loadgen.cluster.spec import POLICIES

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
# A target's answer bytes include headers; ~this much per request is a fair estimate of them.
HEADER_BYTES = 150


class Target:
    """One task as the balancer sees it, with ALB-style counters."""

    def __init__(self, target_id: str, url: str):
        self.target_id = target_id
        self.url = url.rstrip("/")
        self.state = "active"  # active | draining
        self.requests_total = 0
        self.responses_total = 0
        self.response_ms_total = 0.0
        self.http_5xx_total = 0
        self.connection_errors_total = 0
        self.bytes_in_total = 0  # toward the target
        self.bytes_out_total = 0  # from the target
        self.in_flight = 0
        self._area_s = 0.0  # integral of in_flight over time
        self._changed = time.monotonic()

    def _integrate(self) -> None:
        now = time.monotonic()
        self._area_s += self.in_flight * (now - self._changed)
        self._changed = now

    def begin(self, request_bytes: int) -> None:
        self._integrate()
        self.in_flight += 1
        self.requests_total += 1
        self.bytes_in_total += request_bytes

    def end(self, status: int | None, elapsed_ms: float, response_bytes: int) -> None:
        self._integrate()
        self.in_flight -= 1
        if status is None:
            self.connection_errors_total += 1
            return
        self.responses_total += 1
        self.response_ms_total += elapsed_ms
        self.bytes_out_total += response_bytes
        if status >= 500:
            self.http_5xx_total += 1

    def report(self) -> dict:
        self._integrate()
        return {
            "url": self.url, "state": self.state, "requests_total": self.requests_total,
            "responses_total": self.responses_total, "response_ms_total": round(self.response_ms_total, 3),
            "http_5xx_total": self.http_5xx_total, "connection_errors_total": self.connection_errors_total,
            "bytes_in_total": self.bytes_in_total, "bytes_out_total": self.bytes_out_total,
            "in_flight": self.in_flight, "in_flight_area_s": round(self._area_s, 6),
        }


class Balancer:
    def __init__(self, policy: str, timeout_s: float):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.timeout_s = timeout_s
        self.targets: dict[str, Target] = {}
        self._turn = itertools.count()
        self.no_target_total = 0
        self.session: ClientSession | None = None

    def choose(self) -> Target | None:
        active = [target for target in self.targets.values() if target.state == "active"]
        if not active:
            return None
        start = next(self._turn) % len(active)
        rotated = active[start:] + active[:start]  # ties go round the targets, not to the first
        if self.policy == "round_robin":
            return rotated[0]
        return min(rotated, key=lambda target: target.in_flight)

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = self.choose()
        if target is None:
            self.no_target_total += 1
            return web.Response(status=503, text="no healthy target\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers["X-Forwarded-For"] = request.remote or ""
        started = time.perf_counter()
        target.begin(len(body) + HEADER_BYTES + len(request.raw_path))
        status: int | None = None
        payload = b""
        try:
            assert self.session is not None
            async with self.session.request(request.method, target.url + request.raw_path, headers=headers,
                                            data=body or None, allow_redirects=False) as reply:
                payload = await reply.read()
                status = reply.status
                reply_headers = {k: v for k, v in reply.headers.items() if k.lower() not in HOP_HEADERS}
        except (ClientError, asyncio.TimeoutError, ConnectionError):
            target.end(None, 0.0, 0)
            return web.Response(status=502, text=f"target {target.target_id} failed\n")
        target.end(status, (time.perf_counter() - started) * 1000.0, len(payload) + HEADER_BYTES)
        return web.Response(status=status, body=payload, headers=reply_headers)

    # -- admin ----------------------------------------------------------------------------
    async def list_targets(self, request: web.Request) -> web.Response:
        report = {
            "time_unix_s": time.time(), "policy": self.policy, "no_target_total": self.no_target_total,
            "targets": {target_id: target.report() for target_id, target in self.targets.items()},
        }
        return web.json_response(report)

    async def put_target(self, request: web.Request) -> web.Response:
        target_id = request.match_info["target_id"]
        url = (await request.json())["url"]
        existing = self.targets.get(target_id)
        if existing is not None and existing.url == url.rstrip("/"):
            existing.state = "active"
        else:
            self.targets[target_id] = Target(target_id, url)
        return web.json_response({"ok": True})

    async def drain_target(self, request: web.Request) -> web.Response:
        target = self.targets.get(request.match_info["target_id"])
        if target is None:
            return web.json_response({"error": "no such target"}, status=404)
        target.state = "draining"
        return web.json_response(target.report())

    async def delete_target(self, request: web.Request) -> web.Response:
        target = self.targets.pop(request.match_info["target_id"], None)
        return web.json_response({"removed": target is not None})


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(port: int, admin_port: int, policy: str, timeout_s: float) -> None:
    balancer = Balancer(policy, timeout_s)
    balancer.session = ClientSession(
        connector=TCPConnector(limit=0, keepalive_timeout=30),
        timeout=ClientTimeout(total=timeout_s),
        auto_decompress=False,
    )
    # aiohttp sends an idempotent request again when its connection drops before the answer
    # (meant for a kept-alive connection the server closed meanwhile; ours close idle ones long
    # before a task server would). An ALB does not: a target that dies mid-request costs that
    # request a 502. Retried, a request on a pre-forked worker killed by the OOM killer would
    # land on a sibling worker and push it over the limit in turn, a cascade hidden as latency.
    if hasattr(balancer.session, "_retry_connection"):
        balancer.session._retry_connection = False
    front = web.Application(client_max_size=64 * 1024 * 1024)
    front.router.add_route("*", "/{tail:.*}", balancer.proxy)
    admin = web.Application()
    admin.router.add_get("/health", _health)
    admin.router.add_get("/targets", balancer.list_targets)
    admin.router.add_put("/targets/{target_id}", balancer.put_target)
    admin.router.add_post("/targets/{target_id}/drain", balancer.drain_target)
    admin.router.add_delete("/targets/{target_id}", balancer.delete_target)
    runners = [web.AppRunner(front, access_log=None, handle_signals=False),
               web.AppRunner(admin, access_log=None, handle_signals=False)]
    for runner, bind_port in zip(runners, (port, admin_port)):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", bind_port, backlog=2048, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(watch_parent(os.getppid()))
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        for runner in runners:
            await runner.cleanup()
        await balancer.session.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scalefinder.loadgen.cluster.balancer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--admin-port", type=int, required=True)
    parser.add_argument("--policy", choices=POLICIES, default="least_outstanding")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.port, args.admin_port, args.policy, args.timeout_s))
    except OSError as exc:
        print(json.dumps({"error": f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}"}),
              file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
