"""A small HTTP target (no tests here) for the engine and experiment tests: ``python tests/test_engine_target.py PORT``.

/work behaves as set by /control?mode=...: ``fast`` answers at once, ``slow`` lets 4 requests
at a time hold 50 ms each (80 req/s at most), ``fail`` answers 500. /a and /b count their hits,
read back from /counts; /health and /metrics make it usable as a task of the local cluster.
The mode can also be given as the second command-line argument.
"""

import asyncio
import sys
from collections import Counter

from aiohttp import web

hits: Counter = Counter()


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def work(request: web.Request) -> web.Response:
    mode = request.app["state"]["mode"]
    if mode == "slow":
        async with request.app["slots"]:
            await asyncio.sleep(0.05)
    elif mode == "fail":
        return web.Response(status=500, text="failing on purpose")
    return web.Response(text=mode)


async def control(request: web.Request) -> web.Response:
    request.app["state"]["mode"] = request.query["mode"]
    return web.Response(text=request.query["mode"])


async def counted(request: web.Request) -> web.Response:
    hits[request.path] += 1
    return web.Response(text="counted")


async def counts(request: web.Request) -> web.Response:
    return web.json_response(dict(hits))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text="")


async def make_app(mode: str) -> web.Application:
    app = web.Application()
    app["slots"] = asyncio.Semaphore(4)
    app["state"] = {"mode": mode}
    app.router.add_get("/work", work)
    app.router.add_get("/control", control)
    app.router.add_get("/a", counted)
    app.router.add_get("/b", counted)
    app.router.add_get("/counts", counts)
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", metrics)
    return app


if __name__ == "__main__":
    initial_mode = sys.argv[2] if len(sys.argv) > 2 else "fast"
    web.run_app(make_app(initial_mode), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
