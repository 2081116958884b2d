"""The command controller's ``prepare`` and ``restore`` templates: holding an autoscaler still.

The fast tests stand in for ``_execute`` (no process is started) and check the configuration, the
order of the commands and the error messages. The slow ones run real runs on the local cluster,
scaled by a fake ``kubectl`` that logs every call, and show that the restore template runs after
success, failure, SIGINT, SIGTERM and, through ``scalefinder restore``, after SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from scalefinder.core.rundir import RunWriter
from scalefinder.loadgen.capacity.command import CommandCapacityController, fill, validate_config
from scalefinder.loadgen.restore import restore_run

WHERE = "capacity.command"

# The templates of profiles/kubernetes.example.toml, with its HPA lines filled in. The restore
# patch also records {original_count} inside JSON, to show both survive the filling.
SCALE = "kubectl --namespace shop scale deployment/web --replicas={count}"
CURRENT = "kubectl --namespace shop get deployment/web -o 'go-template={{or .status.readyReplicas 0}}'"
READY = "kubectl --namespace shop rollout status deployment/web --timeout=10s"
HOLD = '{"spec":{"behavior":{"scaleUp":{"selectPolicy":"Disabled"},"scaleDown":{"selectPolicy":"Disabled"}}}}'
PREPARE = f"kubectl --namespace shop patch hpa web --type merge -p '{HOLD}'"
RESTORE = ("kubectl --namespace shop patch hpa web --type merge -p "
           """'{"metadata":{"annotations":{"scalefinder/original-replicas":"{original_count}"}},"""
           """"spec":{"behavior":null}}'""")


def released(count: int) -> str:
    """The restore patch's JSON once {original_count} is filled in."""
    return ('{"metadata":{"annotations":{"scalefinder/original-replicas":"%d"}},"spec":{"behavior":null}}' % count)


def config(**extra) -> dict:
    return validate_config({"scale": SCALE, "current": CURRENT, "ready": READY, "prepare": PREPARE,
                            "restore": RESTORE, "poll_s": 0.1, "timeout_s": 5, **extra}, WHERE)


# -- the fast tier: _execute stood in for ----------------------------------------------------------


class FakeKubectl:
    """In place of ``CommandCapacityController._execute``: a Deployment's count, and every argv."""

    def __init__(self, count: int, fail: Callable[[list[str]], str | None] = lambda argv: None,
                 prints: str | None = None):
        self.count = count
        self.fail = fail  # the error output of a call that fails, or None
        self.prints = prints  # what `get` prints instead of the count
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(argv)
        error = self.fail(argv)
        if error is not None:
            return subprocess.CompletedProcess(argv, 1, "", error)
        verb = _verb(argv)
        if verb == "scale":
            self.count = int(argv[-1].removeprefix("--replicas="))
        if verb == "get":
            return subprocess.CompletedProcess(argv, 0, f"{self.count}" if self.prints is None else self.prints, "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    def log(self) -> list[str]:
        """One word a call: get, scale=N, rollout, hold (the prepare patch) or release=N (restore)."""
        words = []
        for argv in self.calls:
            verb = _verb(argv)
            if verb == "scale":
                words.append(argv[-1].replace("--replicas", "scale"))
            elif verb == "patch":
                words.append("hold" if argv[-1] == HOLD else "release=" + json.loads(argv[-1])["metadata"][
                    "annotations"]["scalefinder/original-replicas"])
            else:
                words.append(verb)
        return words


def _verb(argv: list[str]) -> str:
    return next((word for word in argv if word in ("scale", "get", "patch", "rollout")), argv[0])


def controller_with(fake: FakeKubectl, monkeypatch, **extra) -> CommandCapacityController:
    controller = CommandCapacityController(config(**extra))
    monkeypatch.setattr(controller, "_execute", fake)
    return controller


def fail_on(verb: str, json_text: str | None = None) -> Callable[[list[str]], str | None]:
    def fail(argv: list[str]) -> str | None:
        if _verb(argv) == verb and (json_text is None or argv[-1] == json_text):
            return f"error: {verb} refused by the API server"
        return None
    return fail


def test_the_templates_are_optional_and_default_to_none():
    table = {"scale": SCALE, "current": CURRENT}
    resolved = validate_config(dict(table), WHERE)
    assert resolved["prepare"] is None and resolved["restore"] is None
    assert config()["prepare"] == PREPARE and config()["restore"] == RESTORE  # JSON braces pass


@pytest.mark.parametrize("extra, key, text", [
    ({"prepare": ""}, "prepare", "expected a command line, or leave the key out"),
    ({"restore": 3}, "restore", "expected a command line, or leave the key out"),
    ({"restore": "kubectl patch -p '{\"a\": 1}"}, "restore", "cannot be split"),
    ({"restore": "kubectl scale --replicas={count}"}, "restore", "{count} is filled in only in scale"),
    ({"prepare": "pin --min={count}"}, "prepare", "{count} is filled in only in scale"),
    ({"scale": "kubectl scale --replicas={count} --from={original_count}"}, "scale",
     "{original_count} is filled in only in prepare and restore"),
    ({"current": "kubectl get {original_count}"}, "current", "{original_count} is filled in only"),
    ({"ready": "check {original_count}"}, "ready", "{original_count} is filled in only"),
])
def test_mistakes_in_the_new_templates_name_the_key(extra, key, text):
    with pytest.raises(ProfileError) as caught:
        validate_config({"scale": SCALE, "current": CURRENT, **extra}, WHERE)
    assert f"[{WHERE}.{key}]" in str(caught.value) and text in str(caught.value)


def test_only_the_named_fields_are_filled_and_json_and_go_templates_stay():
    assert fill(RESTORE, original_count=3, control_url="")[-1] == released(3)
    assert fill(PREPARE, original_count=3, control_url="")[-1] == HOLD
    assert fill(CURRENT, control_url="http://x")[-1] == "go-template={{or .status.readyReplicas 0}}"
    json.loads(fill(RESTORE, original_count=3)[-1])  # still JSON once filled


def test_the_snapshot_records_the_restore_template_only_when_there_is_one(monkeypatch):
    assert controller_with(FakeKubectl(2), monkeypatch).snapshot() == {
        "kind": "command", "tasks": 2, "restore_command": RESTORE}
    plain = controller_with(FakeKubectl(2), monkeypatch, prepare=None, restore=None)
    assert plain.snapshot() == {"kind": "command", "tasks": 2}  # as before these templates


def test_prepare_runs_the_template_with_the_original_count(monkeypatch):
    fake = FakeKubectl(2)
    controller = controller_with(fake, monkeypatch, prepare=f"hold-autoscaler --at={{original_count}} -p '{HOLD}'")
    controller.snapshot()
    fake.count = 7  # what the snapshot found is what {original_count} means, not the count now
    controller.prepare()
    assert fake.calls[-1] == ["hold-autoscaler", "--at=2", "-p", HOLD] and len(fake.calls) == 2
    # Without a snapshot first, prepare asks for the count itself; without the field, it does not.
    fake = FakeKubectl(4)
    controller_with(fake, monkeypatch, prepare="hold --at={original_count}").prepare()
    assert fake.calls[-1] == ["hold", "--at=4"] and len(fake.calls) == 2
    fake = FakeKubectl(4)
    controller_with(fake, monkeypatch).prepare()
    assert fake.log() == ["hold"]
    fake = FakeKubectl(4)
    controller_with(fake, monkeypatch, prepare=None).prepare()
    assert fake.calls == []


def test_a_failing_prepare_is_an_infrastructure_error_with_the_command(monkeypatch):
    controller = controller_with(FakeKubectl(2, fail=fail_on("patch", HOLD)), monkeypatch)
    controller.snapshot()
    with pytest.raises(InfrastructureError) as caught:
        controller.prepare()
    assert "the prepare command failed with exit code 1" in str(caught.value)
    assert "patch hpa web" in str(caught.value) and "refused by the API server" in str(caught.value)


def test_restore_puts_the_count_back_first_then_runs_the_template(monkeypatch):
    fake = FakeKubectl(1)
    controller = controller_with(fake, monkeypatch)
    snapshot = controller.snapshot()
    controller.prepare()
    controller.scale_to(2)
    controller.restore(snapshot)
    assert fake.log() == ["get", "hold", "scale=2", "get", "rollout", "get", "scale=1", "get", "rollout",
                          "release=1"]
    # Twice (a run that restored itself, then `scalefinder restore --force`): the count is right
    # already, and the template runs again, which is why it must be idempotent.
    del fake.calls[:]
    controller.restore(snapshot)
    assert fake.log() == ["get", "release=1"]


def test_the_restore_template_runs_even_when_the_count_cannot_be_put_back(monkeypatch):
    fake = FakeKubectl(2, fail=fail_on("scale"))
    controller = controller_with(fake, monkeypatch)
    with pytest.raises(InfrastructureError, match="the scale command failed") as caught:
        controller.restore({"kind": "command", "tasks": 1, "restore_command": RESTORE})
    assert "restore command" not in str(caught.value)
    assert fake.log() == ["get", "scale=1", "release=1"]

    # Both failing: the error says so, the first failure first.
    fake = FakeKubectl(2, fail=lambda argv: "error: forbidden" if _verb(argv) in ("scale", "patch") else None)
    with pytest.raises(InfrastructureError) as caught:
        controller_with(fake, monkeypatch).restore({"kind": "command", "tasks": 1, "restore_command": RESTORE})
    message = str(caught.value)
    assert message.index("the scale command failed") < message.index("the restore command failed")
    assert "what prepare changed may still be in place" in message

    # Interrupted while putting the count back (Ctrl-C in `scalefinder restore`): the template
    # still runs, and the interrupt goes on.
    fake = FakeKubectl(2)
    controller = controller_with(fake, monkeypatch)

    def interrupted(count: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(controller, "scale_to", interrupted)
    with pytest.raises(KeyboardInterrupt):
        controller.restore({"kind": "command", "tasks": 1, "restore_command": RESTORE})
    assert fake.log() == ["get", "release=1"]


def test_restore_prefers_the_recorded_template_and_copes_with_older_snapshots(monkeypatch):
    recorded = "kubectl --namespace shop patch hpa web --type merge -p '{\"spec\":{\"minReplicas\":{original_count}}}'"
    fake = FakeKubectl(3)
    controller_with(fake, monkeypatch).restore({"kind": "command", "tasks": 3, "restore_command": recorded})
    assert fake.calls[-1][-1] == '{"spec":{"minReplicas":3}}'
    # A snapshot from before these templates: the profile's restore template, if it has one.
    fake = FakeKubectl(3)
    controller_with(fake, monkeypatch).restore({"kind": "command", "tasks": 2})
    assert fake.log() == ["get", "scale=2", "get", "rollout", "release=2"]
    fake = FakeKubectl(3)
    controller_with(fake, monkeypatch, prepare=None, restore=None).restore({"kind": "command", "tasks": 2})
    assert fake.log() == ["get", "scale=2", "get", "rollout"]
    # A damaged recorded template: the count is put back all the same, then the error.
    fake = FakeKubectl(3)
    with pytest.raises(InputError, match="unusable restore_command"):
        controller_with(fake, monkeypatch).restore({"kind": "command", "tasks": 2, "restore_command": "'open"})
    assert fake.log() == ["get", "scale=2", "get", "rollout"]


def test_a_current_command_that_prints_nothing_says_why_and_how_to_fix_it(monkeypatch):
    controller = controller_with(FakeKubectl(0, prints="\n"), monkeypatch,
                                 current="kubectl --namespace shop get deployment/web -o "
                                         "jsonpath={.status.readyReplicas}")
    with pytest.raises(InfrastructureError) as caught:
        controller.snapshot()
    message = str(caught.value)
    assert "printed nothing" in message and "jsonpath={.status.readyReplicas}" in message
    assert "-o 'go-template={{or .status.readyReplicas 0}}' prints 0" in message
    with pytest.raises(InfrastructureError, match="printed 'three', not a whole number"):
        controller_with(FakeKubectl(0, prints="three"), monkeypatch).current()


def command_run_dir(path: Path, capacity_config: dict, original: dict) -> Path:
    """A run directory as a run on a url target killed with SIGKILL leaves it: still "running"."""
    RunWriter.create(path, {
        "profile": {"capacity": {"controller": "command", "tasks": 2, "config": capacity_config}},
        "target": {"kind": "url", "url": "https://web.staging.example.com"},
        "capacity": {"controller": "command", "original": original, "initial_tasks": 2},
    }).close()
    return path


def test_scalefinder_restore_replays_the_recorded_template_and_restores_older_manifests(tmp_path, monkeypatch):
    fake = FakeKubectl(4)
    monkeypatch.setattr(CommandCapacityController, "_execute", lambda self, argv: fake(argv))
    new = command_run_dir(tmp_path / "new", config(), {"kind": "command", "tasks": 2, "restore_command": RESTORE})
    restored = restore_run(str(new))
    assert restored["original"]["restore_command"] == RESTORE
    assert fake.log() == ["get", "scale=2", "get", "rollout", "release=2"]
    # A manifest written before prepare and restore existed: neither key anywhere.
    old_config = {"scale": SCALE, "current": CURRENT, "ready": READY, "timeout_s": 5.0, "poll_s": 0.1,
                  "command_timeout_s": 60.0, "max_tasks": 100}
    old = command_run_dir(tmp_path / "old", old_config, {"kind": "command", "tasks": 3})
    del fake.calls[:]
    restore_run(str(old))
    assert fake.log() == ["get", "scale=3", "get", "rollout"]


# -- real runs on the local cluster, scaled by a fake kubectl --------------------------------------

# Logs one JSON line per call (after it is done), forwards `scale --replicas=N` and `get` to the
# local cluster's control endpoint when the run gives its URL, and otherwise keeps the count in a
# state file, as a Kubernetes cluster would keep it after the run was killed. `patch` is only
# logged. FAKE_KUBECTL_UNREADY_AT=N makes `rollout status` fail while N replicas run, and
# FAKE_KUBECTL_FAIL_PATCH=TEXT fails a patch whose argv contains TEXT.
FAKE_KUBECTL = '''#!{python}
import json, os, sys, time, urllib.request
LOG, STATE = {log!r}, {state!r}
args = sys.argv[1:]
url = os.environ.get("SCALEFINDER_CONTROL_URL")
verb = next((word for word in args if word in ("scale", "get", "patch", "rollout")), None)
entry = {{"argv": args, "verb": verb, "start": time.time(), "control_url": bool(url)}}
code = 0

def count():
    if url:
        found = int(urllib.request.urlopen(url + "/count", timeout=60).read())
        open(STATE, "w").write(str(found))
        return found
    return int(open(STATE).read())

try:
    if verb == "scale":
        wanted = int(next(word for word in args if word.startswith("--replicas=")).split("=", 1)[1])
        if url:
            urllib.request.urlopen(urllib.request.Request(url + "/count/" + str(wanted), method="PUT"),
                                   timeout=60).read()
        open(STATE, "w").write(str(wanted))
        entry["replicas"] = wanted
    elif verb == "get":
        entry["printed"] = count()
        print(entry["printed"], end="")  # as kubectl's go-template output: no newline
    elif verb == "rollout":
        if str(count()) == os.environ.get("FAKE_KUBECTL_UNREADY_AT"):
            print("error: deployment \\"web\\" exceeded its progress deadline", file=sys.stderr)
            code = 1
    elif verb == "patch":
        failing = os.environ.get("FAKE_KUBECTL_FAIL_PATCH")
        if failing and failing in " ".join(args):
            print("error: horizontalpodautoscalers.autoscaling \\"web\\" is forbidden", file=sys.stderr)
            code = 1
except Exception as exc:
    print(f"fake kubectl: {{exc!r}}", file=sys.stderr)
    entry["error"], code = repr(exc), 1
entry["end"], entry["exit"] = time.time(), code
with open(LOG, "a") as out:
    out.write(json.dumps(entry) + "\\n")
sys.exit(code)
'''

PROFILE = """
name = "hpa-held"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 128
[target.params]
cpu_ms = 1
[workload]
requests = [{{ path = "/work" }}]
max_in_flight = 20
[slo]
percentile = 95
latency_ms = 500
[ramp]
start_rps = 4
step_rps = 2
max_rps = 4
hold_s = 2
min_hold_s = 2
warmup_s = 0.5
refine = false
beyond = false
replay_steps = 4
scale_timeout_s = {scale_timeout_s}
max_duration_s = 120
[capacity]
controller = "command"
tasks = 1
[capacity.command]
scale = {scale}
current = {current}
ready = {ready}
prepare = {prepare}
restore = {restore}
poll_s = 0.2
timeout_s = 30
command_timeout_s = 30
[sources.local]
interval_s = 0.5
"""

RUN_TIMEOUT_S = 90


class FakeCluster:
    """A tmp_path with the fake kubectl first on PATH, its log, and the profile of a short run."""

    def __init__(self, tmp_path: Path, scale_timeout_s: float = 30, **fake_env: str):
        self.tmp_path = tmp_path
        self.log_path = tmp_path / "kubectl.jsonl"
        self.state_path = tmp_path / "replicas.txt"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, log=str(self.log_path),
                                               state=str(self.state_path)))
        kubectl.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1", **fake_env}
        self.env.pop("SCALEFINDER_CONTROL_URL", None)
        self.profile = tmp_path / "profile.toml"
        # JSON strings are valid TOML basic strings, whatever quotes the templates hold.
        self.profile.write_text(PROFILE.format(
            scale_timeout_s=scale_timeout_s, scale=json.dumps(SCALE), current=json.dumps(CURRENT),
            ready=json.dumps(READY), prepare=json.dumps(PREPARE), restore=json.dumps(RESTORE)))
        self.out = tmp_path / "run"

    def start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "run", str(self.profile), "--out",
                                 str(self.out), "--no-progress"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self.env)

    def run(self) -> tuple[int, str]:
        process = self.start()
        try:
            output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            stop(process)
        return process.returncode, output

    def calls(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def words(self, during_run: bool | None = None) -> list[str]:
        """One word a call, as ``FakeKubectl.log`` has them; only the run's calls (with the control
        URL) or only the later ones (without) when asked."""
        words = []
        for call in self.calls():
            if during_run is not None and call["control_url"] != during_run:
                continue
            if call["verb"] == "scale":
                words.append(f"scale={call['replicas']}")
            elif call["verb"] == "patch":
                patch = call["argv"][-1]
                words.append("hold" if patch == HOLD else "release=" + json.loads(patch)["metadata"][
                    "annotations"]["scalefinder/original-replicas"])
            else:
                words.append(call["verb"])
        return words

    def wait_for_the_scale_to_2(self, process: subprocess.Popen, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while "scale=2" not in self.words():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before it scaled: {process.communicate()[0]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the run did not scale to 2 within {timeout_s} s: {self.words()}")
            time.sleep(0.1)

    def events(self) -> list[dict]:
        return [json.loads(line) for line in (self.out / "events.jsonl").read_text().splitlines() if line.strip()]

    def manifest(self) -> dict:
        return json.loads((self.out / "manifest.json").read_text())


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def assert_held_then_released(words: list[str]) -> None:
    """The prepare patch before any scale, and the restore patch last, after the count went back."""
    assert words.count("hold") == 1 and words.count("release=1") == 1, words
    assert words.index("hold") < words.index("scale=2"), words
    last_scale = max(index for index, word in enumerate(words) if word.startswith("scale="))
    assert words[last_scale:] == ["scale=1", "get", "rollout", "release=1"], words


@pytest.mark.load
def test_a_run_holds_the_autoscaler_before_the_first_scale_and_releases_it_at_the_end(tmp_path):
    cluster = FakeCluster(tmp_path)
    code, output = cluster.run()
    assert code == 0, output
    words = cluster.words()
    assert words[:2] == ["get", "hold"], words  # the snapshot, then prepare, before anything changes
    assert_held_then_released(words[:-1])  # the run reads the count once more after the restore
    assert words[-1] == "get" and cluster.calls()[-1]["printed"] == 1
    manifest = cluster.manifest()
    assert manifest["status"] == "complete"
    assert manifest["capacity"]["original"] == {"kind": "command", "tasks": 1, "restore_command": RESTORE}
    assert next(e for e in cluster.events() if e["kind"] == "restore")["tasks"] == 1


@pytest.mark.processes  # a local cluster, but no load: the run ends before the load generator starts
def test_a_failing_prepare_ends_the_run_before_any_load_and_still_releases(tmp_path):
    cluster = FakeCluster(tmp_path, FAKE_KUBECTL_FAIL_PATCH="Disabled")
    code, output = cluster.run()
    assert code == 3, output
    assert "the prepare command failed with exit code 1" in output and "is forbidden" in output
    assert cluster.words() == ["get", "hold", "get", "release=1", "get"]  # nothing scaled: the count was right
    assert cluster.manifest()["status"] == "failed"
    assert not [e for e in cluster.events() if e["kind"] == "step_start"]


@pytest.mark.load
def test_a_failed_run_puts_the_count_back_then_releases(tmp_path):
    # The second replica never becomes ready: the scale to 2n fails after the count changed.
    cluster = FakeCluster(tmp_path, scale_timeout_s=2, FAKE_KUBECTL_UNREADY_AT="2")
    code, output = cluster.run()
    assert code == 3, output
    assert "did not reach 2 ready tasks within 2 s" in output and "progress deadline" in output
    words = cluster.words()
    assert_held_then_released(words[:-1])
    assert words[-1] == "get" and cluster.calls()[-1]["printed"] == 1
    assert cluster.manifest()["status"] == "failed"


@pytest.mark.load
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_puts_the_count_back_then_releases(tmp_path, signal_number):
    cluster = FakeCluster(tmp_path)
    process = cluster.start()
    try:
        cluster.wait_for_the_scale_to_2(process)
        process.send_signal(signal_number)
        output, _ = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 130, output
    words = cluster.words()
    assert_held_then_released(words[:-1])
    assert words[-1] == "get" and cluster.calls()[-1]["printed"] == 1
    assert cluster.manifest()["status"] == "interrupted"
    kinds = [event["kind"] for event in cluster.events()]
    assert kinds.index("interrupt") < kinds.index("restore")


@pytest.mark.load
def test_scalefinder_restore_after_sigkill_puts_the_count_back_and_releases(tmp_path):
    cluster = FakeCluster(tmp_path)
    process = cluster.start()
    try:
        cluster.wait_for_the_scale_to_2(process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    manifest = cluster.manifest()
    assert manifest["status"] == "running"
    assert manifest["capacity"]["original"] == {"kind": "command", "tasks": 1, "restore_command": RESTORE}
    assert "release=1" not in cluster.words()

    restore = subprocess.run([sys.executable, "-m", "scalefinder.cli", "restore", str(cluster.out)],
                             capture_output=True, text=True, env=cluster.env, timeout=60)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "Restored the command capacity" in restore.stdout and "tasks=1" in restore.stdout
    # The restore's own calls (the run's endpoint is gone; the fake cluster kept the count of 2).
    assert cluster.words(during_run=False) == ["get", "scale=1", "get", "rollout", "release=1"]
    assert cluster.state_path.read_text() == "1"
