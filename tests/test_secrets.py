"""Secrets are sent, never written down: redaction of what is recorded, references to the
environment expanded only in memory, and a real run with a secret planted in every place a
profile can hold one, whose run directory and outputs are then searched for each of them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from click.testing import CliRunner

from scalefinder.loadgen.experiment import _health_request
from scalefinder.loadgen.profile import load_profile, with_secrets
from scalefinder.cli import cli
from scalefinder.core.errors import ProfileError
from scalefinder.core.redact import (MARKER, check_references, expand_references, redact_body, redact_headers,
                                redact_profile, redact_url, redact_urls_in)

ROOT = Path(__file__).resolve().parents[1]

# -- redaction --------------------------------------------------------------------------------


def test_a_url_keeps_scheme_host_port_path_and_query_keys():
    assert redact_url("https://alice:pw@staging.example.com:8443/api/v1?token=abc&page=2&flag#access_token=x") == (
        f"https://{MARKER}@staging.example.com:8443/api/v1?token={MARKER}&page={MARKER}&{MARKER}"
        f"#access_token={MARKER}")
    assert redact_url("http://token-as-user@host/") == f"http://{MARKER}@host/"  # the whole user info goes
    assert redact_url("/items?token=abc&empty=") == f"/items?token={MARKER}&empty="
    assert redact_url("http://127.0.0.1:8080/work") == "http://127.0.0.1:8080/work"
    assert redact_url("http://[::1") == MARKER  # what cannot be taken apart is not shown at all


def test_redacting_twice_changes_nothing():
    once = redact_url("http://u:p@h/x?a=1#b")
    assert redact_url(once) == once


def test_headers_keep_their_names_and_bodies_their_keys():
    assert redact_headers({"Authorization": "Bearer abc", "X-Empty": ""}) == {"Authorization": MARKER, "X-Empty": ""}
    assert json.loads(redact_body('{"user": "bob", "password": "pw", "tags": [1, null], "n": {"pin": 1234}}')) == {
        "user": MARKER, "password": MARKER, "tags": [MARKER, None], "n": {"pin": MARKER}}
    assert redact_body("user=bob&password=pw&note=") == f"user={MARKER}&password={MARKER}&note="
    assert redact_body("a secret in plain text") == MARKER
    assert redact_body("[" * 5000) == MARKER and redact_body(None) is None and redact_body("") == ""


def test_urls_inside_any_text_are_redacted():
    assert redact_urls_in({"scale": ["curl", "http://u:p@h/scale?key=k"], "n": 3}) == {
        "scale": ["curl", f"http://{MARKER}@h/scale?key={MARKER}"], "n": 3}


def test_a_damaged_record_nested_too_deeply_is_not_shown():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert redact_urls_in({"url": deep}) == MARKER


def test_a_profile_as_recorded_keeps_names_not_values():
    data = {"target": {"url": "http://u:p@h?x=1", "health_path": "/health?key=k"},
            "workload": {"requests": [{"name": "/a?t=1", "path": "/a?t=1", "headers": {"X-Api-Key": "${KEY}"},
                                       "body": '{"password": "pw"}'}]},
            "sources": {"prometheus": {"url": "http://u:p@prom:9090"}},
            "capacity": {"controller": "command", "config": {"scale": "curl http://h/scale?replicas={count}"}}}
    recorded = redact_profile(data)
    assert recorded["capacity"] == data["capacity"]  # `scalefinder restore` runs these again, as written
    assert recorded["target"] == {"url": f"http://{MARKER}@h?x={MARKER}", "health_path": f"/health?key={MARKER}"}
    assert recorded["workload"]["requests"][0] == {"name": f"/a?t={MARKER}", "path": f"/a?t={MARKER}",
                                                  "headers": {"X-Api-Key": MARKER},
                                                  "body": json.dumps({"password": MARKER})}
    assert recorded["sources"]["prometheus"]["url"] == f"http://{MARKER}@prom:9090"


# -- references to the environment ------------------------------------------------------------


def test_references_expand_from_the_environment_and_dollar_dollar_is_literal():
    environ = {"TOKEN": "abc", "ODD": "${NOT_A_REFERENCE}"}
    assert expand_references("Bearer ${TOKEN}", "k", environ) == "Bearer abc"
    assert expand_references("$${TOKEN} ${ODD}", "k", environ) == "${TOKEN} ${NOT_A_REFERENCE}"


def test_a_missing_variable_names_the_key_and_the_variable():
    with pytest.raises(ProfileError, match=r"\[workload.requests\[0\].body\] refers to the environment variable "
                                           r"MISSING, which is not set"):
        expand_references("${MISSING}", "workload.requests[0].body", {})


@pytest.mark.parametrize("text", ["${API TOKEN}", "${1X}", "${", "Bearer ${TOKEN"])
def test_a_malformed_reference_is_refused(text):
    with pytest.raises(ProfileError, match=r"expected environment references of the form \$\{NAME\}"):
        check_references(text, "k")


PROFILE = """
name = "secrets"
[target]
kind = "url"
url = "http://{user}:{url_password}@127.0.0.1:{port}"
environment = "staging"
allowed_hosts = ["127.0.0.1"]
[workload]
requests = [
  {{ name = "items", path = "/items?token={query_token}&page=1", headers = {{ "X-Api-Key" = "${{SF_TEST_API_KEY}}" }} }},
  {{ name = "login", method = "POST", path = "/login", body = '{{"user": "bob", "password": "{body_password}"}}', headers = {{ Authorization = "Bearer {bearer}", "Content-Type" = "application/json" }} }},
]
max_in_flight = 20
timeout_s = 2
[slo]
percentile = 95
latency_ms = 500
[ramp]
start_rps = 2
step_rps = 2
max_rps = 4
hold_s = 2
min_hold_s = 2
warmup_s = 0.5
max_duration_s = 120
confirm_breach = false
[capacity]
controller = "command"
tasks = 1
[capacity.command]
scale = "{python} {ctl} {state} set {{count}}"
current = "{python} {ctl} {state} get"
poll_s = 0.2
[sources.prometheus]
url = "http://127.0.0.1:{prometheus_port}"
step_s = 0.5
rate_window = "500ms"
settle_s = 0
bearer_token_env = "SF_TEST_PROMETHEUS_TOKEN"
"""

# Each distinct, so a hit names what leaked.
SECRETS = {
    "user": "urluser-1f0c",
    "url_password": "urlpass-5e1d",
    "query_token": "querytoken-7a2b",
    "body_password": "bodypass-8d4f",
    "bearer": "headerbearer-4d1a",
}
ENVIRONMENT = {"SF_TEST_API_KEY": "envapikey-9b6a", "SF_TEST_PROMETHEUS_TOKEN": "promtoken-2e7c"}


def write_profile(tmp_path: Path, port: int = 9, prometheus_port: int = 9) -> Path:
    ctl = tmp_path / "ctl.py"
    ctl.write_text("import sys, pathlib\nstate = pathlib.Path(sys.argv[1])\n"
                   "if sys.argv[2] == 'set':\n    state.write_text(sys.argv[3])\n"
                   "else:\n    print(state.read_text() if state.exists() else '1')\n")
    path = tmp_path / "secrets.toml"
    path.write_text(PROFILE.format(port=port, prometheus_port=prometheus_port, python=sys.executable, ctl=ctl,
                                   state=tmp_path / "count", **SECRETS))
    return path


def test_the_loaded_profile_keeps_references_and_only_with_secrets_expands_them(tmp_path):
    profile = load_profile(write_profile(tmp_path))
    assert profile.workload.requests[0].headers == {"X-Api-Key": "${SF_TEST_API_KEY}"}
    sending = with_secrets(profile, ENVIRONMENT)
    assert sending.workload.requests[0].headers == {"X-Api-Key": ENVIRONMENT["SF_TEST_API_KEY"]}
    recorded = profile.to_dict()
    assert recorded["workload"]["requests"][0]["headers"] == {"X-Api-Key": MARKER}  # values go whole
    recorded = json.dumps(recorded)
    for secret in list(SECRETS.values()) + list(ENVIRONMENT.values()):
        assert secret not in recorded, secret


def test_a_reference_may_not_name_the_host_nor_move_it(tmp_path):
    path = write_profile(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("@127.0.0.1:9", "@${HOST}:9"))
    with pytest.raises(ProfileError, match=r"\[target.url\] may refer to the environment in its user info"):
        load_profile(path)
    path.write_text(text.replace(f"{SECRETS['user']}:{SECRETS['url_password']}", "${CREDENTIALS}"))
    with pytest.raises(ProfileError, match=r"\[target.url\] the values of its environment references change its host"):
        with_secrets(load_profile(path), {"CREDENTIALS": "u:p@elsewhere.example.com:80/#"})


def test_run_with_a_variable_missing_is_one_error_line_before_anything_starts(tmp_path):
    environment = {name: None for name in ENVIRONMENT}  # unset, whatever the test process has
    result = CliRunner().invoke(cli, ["run", str(write_profile(tmp_path)), "--yes", "--out", str(tmp_path / "r")],
                                env=environment)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and lines[0].endswith(
        "[workload.requests[0].headers.X-Api-Key] refers to the environment variable SF_TEST_API_KEY, which is not set")
    assert not (tmp_path / "r").exists()


def test_the_health_check_sends_the_url_user_info_as_basic_auth_not_as_part_of_the_host():
    request = _health_request("http://ci:p%40ss@127.0.0.1:8080/health")
    assert request.full_url == "http://127.0.0.1:8080/health"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(b"ci:p@ss").decode()
    assert _health_request("http://127.0.0.1:8080/health").get_header("Authorization") is None


# -- a real run, searched for every secret ----------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """The target: answers at once and keeps what each request carried."""

    seen: list[dict] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        type(self).seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self._send(200, b"ok", "text/plain")

    do_GET = do_POST = _answer

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class FakePrometheus(Recorder):
    """Just enough of the Prometheus HTTP API: every query has one service-level series of 10."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {key: values[0] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
        if self.path.endswith("/query_range"):
            start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
            count = int((end - start) / step) + 1
            data = {"resultType": "matrix",
                    "result": [{"metric": {}, "values": [[start + i * step, "10"] for i in range(count)]}]}
        else:
            data = {"resultType": "vector", "result": []}
        self._send(200, json.dumps({"status": "success", "data": data}).encode(), "application/json")

    do_GET = do_POST = _answer


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def scalefinder(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefinder.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.load
def test_no_secret_reaches_the_run_directory_or_any_output(tmp_path):
    Recorder.seen = []
    target, prometheus = serve(Recorder), serve(FakePrometheus)
    try:
        profile = write_profile(tmp_path, target.server_address[1], prometheus.server_address[1])
        reports = tmp_path / "reports"
        run_dir = reports / "run"
        env = {**os.environ, **ENVIRONMENT}
        outputs = {"plan": scalefinder("plan", str(profile), env=env),
                   "run": scalefinder("-vv", "run", str(profile), "--yes", "--no-progress", "--out", str(run_dir),
                                      env=env)}
        assert outputs["run"].returncode == 0, outputs["run"].stderr[-3000:]
        outputs["analyze"] = scalefinder("-v", "analyze", str(run_dir), env=env)
        outputs["report"] = scalefinder("-v", "report", str(run_dir), env=env)
        outputs["gate"] = scalefinder("-v", "gate", str(run_dir), "--slo-rate-rps", "2", env=env)
        outputs["runs"] = scalefinder("-v", "runs", str(reports), env=env)
    finally:
        target.shutdown()
        prometheus.shutdown()

    for name in ("plan", "analyze", "report", "runs"):
        assert outputs[name].returncode == 0, (name, outputs[name].stderr[-3000:])
    assert f"http://{MARKER}@127.0.0.1:{target.server_address[1]}" in outputs["plan"].stdout
    written = {"findings.json", "report.html", "summary.md", "summary.json", "junit.xml", "manifest.json",
               "events.jsonl"}
    assert written <= {path.name for path in run_dir.iterdir()}
    assert (reports / "index.html").is_file()

    # what was sent carried every secret, the referenced one expanded in memory ...
    basic = "Basic " + base64.b64encode(f"{SECRETS['user']}:{SECRETS['url_password']}".encode()).decode()
    items = [r for r in Recorder.seen if r["path"].startswith("/items")]
    logins = [r for r in Recorder.seen if r["path"] == "/login"]
    assert items and logins
    assert items[0]["path"] == f"/items?token={SECRETS['query_token']}&page=1"
    assert items[0]["headers"]["X-Api-Key"] == ENVIRONMENT["SF_TEST_API_KEY"]
    assert items[0]["headers"]["Authorization"] == basic  # Locust sends a URL's user info as Basic auth
    assert SECRETS["body_password"] in logins[0]["body"]

    # ... and nothing written or printed holds any of them
    planted = {**SECRETS, **ENVIRONMENT, "basic": basic.split()[1]}
    texts = {f"{name} {stream}": getattr(done, stream) for name, done in outputs.items()
             for stream in ("stdout", "stderr")}
    texts.update({str(path): path.read_bytes().decode("utf-8", "replace")
                  for path in tmp_path.rglob("*") if path.is_file() and path != profile})
    leaks = [(what, where) for where, text in texts.items() for what, secret in planted.items() if secret in text]
    assert not leaks, leaks
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["profile"]["workload"]["requests"][0]["headers"] == {"X-Api-Key": MARKER}
    assert manifest["target"]["url"] == f"http://{MARKER}@127.0.0.1:{target.server_address[1]}"


def test_a_source_that_describes_itself_again_after_fetching_is_redacted_too():
    """A retrospective source rewrites its manifest entry once its metrics are fetched; that
    rewrite goes through the same redaction as the manifest's first write."""
    from scalefinder.loadgen.manifest import source_descriptions

    class Source:
        def describe(self):
            return {"kind": "prometheus", "url": "http://user:s3cret-token@127.0.0.1:9090/"}

    described = source_descriptions({"prometheus": Source()})
    assert "s3cret-token" not in json.dumps(described)
    assert described["prometheus"]["url"] == f"http://{MARKER}@127.0.0.1:9090/"
