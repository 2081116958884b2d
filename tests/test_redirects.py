"""A redirect never takes load past the allowlist: a target on 127.0.0.1 answers every request
with ``302 Location: http://localhost:OTHER/...``, and the server on the other port must receive
nothing, whichever client sends (the profile's request mix, a locustfile's HttpUser or
FastHttpUser, the health check of recovery). The 3xx is counted as the response."""

from __future__ import annotations

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from scalefinder.loadgen.engine.client import EngineProcess
from scalefinder.loadgen.engine.recorder import LoadRecorder, StepInfo
from scalefinder.loadgen.experiment import Experiment, RunOptions
from scalefinder.loadgen.profile import load_profile

RATE_RPS = 5
HOLD_S = 2.0
SLO = SimpleNamespace(percentile=95, latency_ms=1000.0, error_budget_pct=1.0)


class Server:
    """A threaded HTTP server on 127.0.0.1 counting what it receives; ``answer(handler)`` replies."""

    def __init__(self, answer):
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                server.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                answer(self)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def reply(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None) -> None:
    body = b"moved" if status != 200 else b"landed"
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def servers():
    """(redirecting, elsewhere): every request to the first is sent on to the second."""
    elsewhere = Server(lambda handler: reply(handler, 200))
    redirecting = Server(lambda handler: reply(
        handler, 302, {"Location": f"http://localhost:{elsewhere.port}/landed{handler.path}"}))
    # The fixture must be able to see a redirect that is followed: a client that follows does
    # reach the other server.
    urllib.request.urlopen(redirecting.url + "/check", timeout=5).read()
    assert elsewhere.hits == 1
    elsewhere.hits = redirecting.hits = 0
    try:
        yield redirecting, elsewhere
    finally:
        redirecting.close()
        elsewhere.close()


def offer_briefly(config: dict) -> dict:
    """RATE_RPS for HOLD_S through the real engine process; the step's summary."""
    recorder = LoadRecorder(SLO, late_tolerance_ms=25.0)
    with EngineProcess(config) as engine:
        recorder.begin_step(StepInfo(0, "ramp", 1, RATE_RPS))
        start = time.time()
        engine.set_rate(0, RATE_RPS)
        for message in engine.messages(time.monotonic() + HOLD_S):
            recorder.feed(message)
        end = time.time()
        engine.pause()
        for message in engine.messages(time.monotonic() + 8):
            recorder.feed(message)
            if 0 in recorder.drained:
                break
    return recorder.summarize(0, start, end, 0.0, "held")


def base_config(url: str) -> dict:
    assert url.startswith("http://127.0.0.1:")
    return {"host": url, "max_in_flight": 20, "timeout_s": 3.0, "late_tolerance_ms": 25.0}


@pytest.mark.load
def test_the_request_mix_counts_the_redirect_and_does_not_follow_it(servers):
    redirecting, elsewhere = servers
    config = base_config(redirecting.url)
    config["requests"] = [
        {"name": "get", "method": "GET", "path": "/work", "weight": 1, "body": None, "headers": {}},
        {"name": "post", "method": "POST", "path": "/form", "weight": 1, "body": "a=1", "headers": {}},
    ]
    step = offer_briefly(config)
    assert elsewhere.hits == 0
    assert redirecting.hits >= RATE_RPS * HOLD_S - 2
    assert step.sent == redirecting.hits and step.failures == 0  # a 302 is an answer, not an error


LOCUSTFILE = """
from locust import HttpUser, task
from locust.contrib.fasthttp import FastHttpUser


class Requests(HttpUser):
    @task
    def follow(self):
        self.client.get("/requests", allow_redirects=True)


class Fast(FastHttpUser):
    @task
    def follow(self):
        self.client.get("/fast", allow_redirects=True)
"""


@pytest.mark.load
def test_a_locustfile_asking_to_follow_redirects_does_not_leave_the_target(servers, tmp_path):
    redirecting, elsewhere = servers
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    config = base_config(redirecting.url)
    config.update(locustfile_path=str(locustfile), user_classes=[])
    step = offer_briefly(config)
    assert elsewhere.hits == 0
    assert redirecting.hits >= RATE_RPS * HOLD_S - 2 and step.failures == 0


PROFILE = """
name = "redirecting"
[target]
kind = "url"
url = "{url}"
environment = "staging"
allowed_hosts = ["127.0.0.1"]
health_path = "/health"
[workload]
requests = [{{ path = "/work" }}]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 1
step_rps = 1
max_rps = 2
[capacity]
controller = "command"
tasks = 1
[capacity.command]
scale = "true {{count}}"
current = "echo 1"
[sources.prometheus]
url = "http://127.0.0.1:9"
step_s = 1
rate_window = "2s"
"""


def test_the_health_check_of_recovery_takes_a_redirect_as_not_healthy(servers, tmp_path):
    redirecting, elsewhere = servers
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(url=redirecting.url))
    run = Experiment(load_profile(path), RunOptions(out=tmp_path / "run"), None)
    run._controller = SimpleNamespace(current=lambda: 1)
    assert run._health_problem(1) == f"{redirecting.url}/health answered 302"
    assert redirecting.hits == 1 and elsewhere.hits == 0
