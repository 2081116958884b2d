"""A real Prometheus server for tests: scrapes loopback targets every second, on a free port.

``PrometheusServer(tmp_path, exporter_port=P)`` scrapes the cluster exporter at 127.0.0.1:P and
every task it lists on ``/targets`` (HTTP service discovery). The exporter need not be up yet:
Prometheus retries each scrape, and ``start`` returns only once it does. Skips the test when
the binary is absent.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scalefinder.loadgen.cluster.process import free_port

BINARY = "/usr/bin/prometheus"
READY_TIMEOUT_S = 30.0
EXPORTER_JOB = "scalefinder-exporter"


def require_prometheus() -> str:
    binary = BINARY if Path(BINARY).exists() else shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian package 'prometheus')")
    return binary


def scrape_config(exporter_port: int, interval_s: int = 1) -> dict:
    """Prometheus configuration (YAML is a superset of JSON, so JSON is written)."""
    interval = f"{interval_s}s"
    exporter = f"127.0.0.1:{exporter_port}"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {"job_name": EXPORTER_JOB, "static_configs": [{"targets": [exporter]}]},
            {"job_name": "scalefinder-tasks",
             "http_sd_configs": [{"url": f"http://{exporter}/targets", "refresh_interval": interval}]},
        ],
    }


class PrometheusServer:
    """``users`` maps a user name to a bcrypt hash: the server then demands basic auth."""

    def __init__(self, workdir: Path, exporter_port: int, users: dict[str, tuple[str, str]] | None = None):
        self.binary = require_prometheus()
        self.workdir = Path(workdir) / f"prometheus-{exporter_port}"
        self.exporter_port = exporter_port
        self.users = dict(users or {})  # name -> (password, bcrypt hash of it)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "PrometheusServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(scrape_config(self.exporter_port), indent=2))
        argv = [self.binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}", "--storage.tsdb.retention.time=1h",
                "--log.level=warn"]
        if self.users:
            web = self.workdir / "web.yml"
            web.write_text(json.dumps({"basic_auth_users": {name: hashed for name, (_, hashed) in self.users.items()}}))
            argv.append(f"--web.config.file={web}")
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self._request("/-/ready"), timeout=1) as reply:
                    if reply.status == 200 and self._scraping_exporter():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready within 30 s")

    def _scraping_exporter(self) -> bool:
        """True once the exporter's scrape loop runs, up or not. Prometheus hands discovered
        targets, static ones too, to its scrape manager only every few seconds, so a server that
        answers ready may not scrape anything yet; a run started then loses its first steps."""
        return any(target["scrapePool"] == EXPORTER_JOB for target in self._active_targets())

    def _active_targets(self) -> list[dict]:
        with urllib.request.urlopen(self._request("/api/v1/targets?state=active"), timeout=2) as reply:
            return json.loads(reply.read())["data"]["activeTargets"]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _request(self, path: str) -> urllib.request.Request:
        headers = {}
        if self.users:
            name, (password, _) = next(iter(self.users.items()))
            headers["Authorization"] = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        return urllib.request.Request(self.url + path, headers=headers)

    def targets_up(self) -> int:
        """How many scrape targets are up now."""
        return sum(1 for target in self._active_targets() if target["health"] == "up")

    def wait_for_targets(self, count: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.targets_up() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus has fewer than {count} targets up after {timeout_s:g} s")
            time.sleep(0.25)
