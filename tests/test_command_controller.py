"""The command capacity controller: real commands, a real local cluster, a real interrupted run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from scalefinder.loadgen.capacity.command import CommandCapacityController, build, fill, validate_config
from scalefinder.loadgen.profile import load_profile
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError

WHERE = "capacity.command"
PYTHON = shlex.quote(sys.executable)

# A stand-in for kubectl against a file: `state.py FILE get|set N|ready`. `ready` succeeds only
# the second time it is asked after a `set`, like a rollout that takes time.
STATE_SCRIPT = '''
import sys
path, action = sys.argv[1], sys.argv[2]
def read():
    try:
        count, asked = open(path).read().split()
        return int(count), int(asked)
    except FileNotFoundError:
        return 3, 0
count, asked = read()
if action == "get":
    print("replicas:"); print(count)
elif action == "set":
    if int(sys.argv[3]) > 8:
        sys.exit("error: quota exceeded for replicas=" + sys.argv[3])
    open(path, "w").write(f"{sys.argv[3]} 0")
elif action == "ready":
    open(path, "w").write(f"{count} {asked + 1}")
    sys.exit(0 if asked + 1 >= 2 else "rollout in progress")
'''

# The client of the local cluster's control endpoint: `cluster_ctl.py LOG URL get|set N`.
CONTROL_SCRIPT = '''
import sys, urllib.request
log, url, action = sys.argv[1], sys.argv[2], sys.argv[3]
if action == "get":
    print(urllib.request.urlopen(url + "/count", timeout=60).read().decode().strip())
else:
    request = urllib.request.Request(url + "/count/" + sys.argv[4], method="PUT")
    urllib.request.urlopen(request, timeout=60).read()
    with open(log, "a") as out:
        out.write("set " + sys.argv[4] + "\\n")
'''


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return f"{PYTHON} {shlex.quote(str(path))}"


def state_config(tmp_path: Path, **extra) -> dict:
    run = script(tmp_path, "state.py", STATE_SCRIPT)
    state = shlex.quote(str(tmp_path / "state.txt"))
    return validate_config({"scale": f"{run} {state} set {{count}}", "current": f"{run} {state} get",
                            "ready": f"{run} {state} ready", "poll_s": 0.1, "timeout_s": 20, **extra}, WHERE)


# -- templates and configuration --------------------------------------------------------------


def test_values_go_inside_words_and_never_add_words():
    assert fill("kubectl scale deploy/web --replicas={count}", count=4) == [
        "kubectl", "scale", "deploy/web", "--replicas=4"]
    assert fill("tool {count} 'a b'", count="3; rm -rf /") == ["tool", "3; rm -rf /", "a b"]
    jsonpath = "kubectl get deploy/web -o jsonpath={.status.readyReplicas}"
    assert fill(jsonpath, count=1)[-1] == "jsonpath={.status.readyReplicas}"


@pytest.mark.parametrize("table, key, text", [
    ({"current": "x"}, "scale", "required"),
    ({"scale": "kubectl scale", "current": "x"}, "scale", "{count}"),
    ({"scale": "x {count}", "current": "echo 'open"}, "current", "cannot be split"),
    ({"scale": "x {count}", "current": "x", "timeout_s": 0}, "timeout_s", "seconds"),
    ({"scale": "x {count}", "current": "x", "wait": 1}, "wait", "unknown key"),
])
def test_profile_mistakes_name_the_key(table, key, text):
    with pytest.raises(ProfileError) as caught:
        validate_config(table, WHERE)
    assert f"[{WHERE}.{key}]" in str(caught.value) and text in str(caught.value)


def test_the_example_profiles_validate():
    root = Path(__file__).resolve().parents[1]
    kubernetes = load_profile(root / "profiles" / "kubernetes.example.toml")
    assert kubernetes.capacity.controller == "command" and "prometheus" in kubernetes.sources
    local = load_profile(root / "profiles" / "prometheus-local.toml")
    assert local.target.is_local and local.sources["prometheus"]["exporter_port"]


# -- real commands ----------------------------------------------------------------------------


@pytest.mark.processes
def test_scales_through_the_commands_and_polls_readiness(tmp_path):
    controller = build(state_config(tmp_path), SimpleNamespace(cluster=None))
    assert controller.snapshot() == {"kind": "command", "tasks": 3}
    controller.scale_to(5)
    assert controller.current() == 5
    assert (tmp_path / "state.txt").read_text() == "5 2"  # readiness was polled until it passed
    controller.restore({"kind": "command", "tasks": 3})
    assert controller.current() == 3


@pytest.mark.processes
def test_a_failing_command_shows_its_stderr(tmp_path):
    controller = build(state_config(tmp_path), SimpleNamespace(cluster=None))
    with pytest.raises(InfrastructureError) as caught:
        controller.scale_to(9)
    assert "the scale command failed with exit code 1" in str(caught.value)
    assert "error: quota exceeded for replicas=9" in str(caught.value)
    assert "set 9" in str(caught.value)  # the command line as it was run


@pytest.mark.processes
def test_readiness_that_never_comes_times_out(tmp_path):
    config = state_config(tmp_path, ready=f"{PYTHON} -c \"import sys; sys.exit('pods pending')\"", timeout_s=1)
    with pytest.raises(InfrastructureError, match="did not reach 4 ready tasks within 1 s.*pods pending"):
        build(config, SimpleNamespace(cluster=None)).scale_to(4)


@pytest.mark.processes
def test_unusable_output_and_missing_programs_are_clear(tmp_path):
    config = state_config(tmp_path, current=f"{PYTHON} -c \"print('three')\"")
    with pytest.raises(InfrastructureError, match="printed 'three', not a whole number"):
        CommandCapacityController(config).current()
    config = state_config(tmp_path, current="no-such-program-here get")
    with pytest.raises(InfrastructureError, match="'no-such-program-here' was not found"):
        CommandCapacityController(config).current()
    with pytest.raises(InputError, match="only a local target"):
        CommandCapacityController(state_config(tmp_path, current="x {control_url}")).current()


PROFILE = """
name = "command-interrupt"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 256
[target.params]
cpu_ms = 10
[workload]
requests = [{{ name = "work", path = "/work" }}]
max_in_flight = 100
timeout_s = 5
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 10
step_rps = 10
hold_s = 4
min_hold_s = 4
warmup_s = 1
max_rps = 60
max_duration_s = 120
refine = false
beyond = false
[capacity]
controller = "command"
tasks = 1
[capacity.command]
scale = {scale!r}
current = {current!r}
poll_s = 0.2
timeout_s = 60
[sources.local]
interval_s = 1
"""


@pytest.mark.load
def test_sigint_to_a_run_restores_the_count_through_the_command(tmp_path):
    ctl = script(tmp_path, "cluster_ctl.py", CONTROL_SCRIPT)
    log_path = tmp_path / "scale.log"
    log = shlex.quote(str(log_path))
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE.format(scale=f"{ctl} {log} {{control_url}} set {{count}}",
                                      current=f"{ctl} {log} {{control_url}} get"))
    out = tmp_path / "run"
    run = subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out", str(out),
                            "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 90
        while not (log_path.exists() and "set 2" in log_path.read_text()):
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the run never scaled to 2 tasks"
            time.sleep(0.2)
        time.sleep(1.0)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, output
    assert log_path.read_text() == "set 2\nset 1\n"  # scaled for the replay, then restored
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    kinds = [event["kind"] for event in events]
    assert kinds.index("interrupt") < kinds.index("restore")
    assert next(e for e in events if e["kind"] == "restore")["tasks"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["capacity"]["original"] == {"kind": "command", "tasks": 1}
