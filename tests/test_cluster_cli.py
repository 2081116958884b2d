"""`scalefinder cluster`: clear errors for bad input, and nothing left behind when it is stopped."""

import ctypes
import glob
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner

from scalefinder.loadgen.cluster.cgroups import Cgroups
from scalefinder.cli import cli


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--archetype", "workers", "--param", "workers=-2"], "workers must be at least 1"),
        (["--command", "python3 -m http.server"], "must contain {port}"),
        (["--archetype", "bogus"], "unknown archetype 'bogus'"),
        (["--archetype", "cpu", "--param", "cpu_ms"], "--param takes NAME=VALUE"),
        (["--archetype", "cpu", "--tasks", "0"], "tasks must be between 1"),
        (["--archetype", "cpu", "--port", "PORT"], "is already in use"),
        (["--archetype", "memory", "--param", "reserve_mib=250"], "cannot hold one request"),
        (["--archetype", "cpu", "--minute-s", "2"], "need --emulate ecs"),
        (["--archetype", "cpu", "--emulate", "ecs", "--minute-s", "7"], "the emulated minute must be one of"),
        (["--archetype", "cpu", "--emulate", "ecs", "--endpoint-port", "PORT"], "is already in use"),
    ],
)
def test_bad_parameters_give_one_line_and_exit_2(args, message, busy_port):
    args = [str(busy_port) if arg == "PORT" else arg for arg in args]
    result = CliRunner().invoke(cli, ["cluster", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert message in lines[0]


def start_cluster_command(*args):
    process = subprocess.Popen(
        [sys.executable, "-m", "scalefinder.cli", "cluster", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith("workload:"):
                break
        assert any(line.startswith("load balancer: http://127.0.0.1:") for line in output), output
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3, output  # the balancer and the tasks
    except BaseException:
        process.terminate()  # a failed start must not leave a cluster running after the test
        process.communicate(timeout=30)
        raise
    return process, children, output


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.processes
def test_the_emulated_ecs_service_answers_as_aws_and_stops_clean():
    from scalefinder.loadgen.emulator.world import client

    port, endpoint_port = free_ports(2)
    process, children, output = start_cluster_command("--archetype", "cpu", "--tasks", "2", "--emulate", "ecs",
                                                      "--minute-s", "1", "--port", str(port),
                                                      "--endpoint-port", str(endpoint_port))
    try:
        exports = dict(line.strip().removeprefix("export ").split("=", 1) for line in output
                       if line.strip().startswith("export "))
        assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{endpoint_port}"
        assert any(f"load balancer: http://127.0.0.1:{port}/" in line for line in output)
        deadline = time.monotonic() + 30
        while "ready" not in process.stdout.readline() and time.monotonic() < deadline:
            pass
        ecs = client("ecs", endpoint_url=exports["AWS_ENDPOINT_URL"])
        service = ecs.describe_services(cluster="staging", services=["web"])["services"][0]
        assert service["desiredCount"] == 2
        cloudwatch = client("cloudwatch", endpoint_url=exports["AWS_ENDPOINT_URL"])
        names = {m["MetricName"] for m in cloudwatch.list_metrics(Namespace="ECS/ContainerInsights")["Metrics"]}
        assert {"RunningTaskCount", "CpuUtilized", "CpuReserved", "MemoryUtilized", "TaskCpuUtilization"} <= names
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert gone(children, 5)
    assert cgroups_of(process.pid) == []


def cgroups_of(pid):
    return glob.glob(f"/sys/fs/cgroup/*/scalefinder/{pid}-*") + glob.glob(f"/sys/fs/cgroup/scalefinder/{pid}-*")


def gone(processes, within_s):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.processes
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_command_leaves_no_processes_and_no_cgroups(signum):
    process, children, output = start_cluster_command("--archetype", "queue", "--tasks", "2")
    mode = next(line for line in output if line.startswith("tasks:"))
    if "unenforced" not in mode:
        assert cgroups_of(process.pid)
    process.send_signal(signum)
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert gone(children, 5), [p.pid for p in children if p.is_running()]
    assert cgroups_of(process.pid) == []


@pytest.mark.processes
def test_a_signal_the_kernel_hands_to_a_helper_thread_still_stops_the_command():
    # The kernel may deliver a process-wide SIGINT to any thread; aim it at a helper thread on purpose.
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("this C library has no tgkill")
    process, children, _ = start_cluster_command("--archetype", "cpu", "--tasks", "2")
    helpers = [int(tid) for tid in os.listdir(f"/proc/{process.pid}/task") if int(tid) != process.pid]
    assert helpers
    assert libc.tgkill(process.pid, helpers[0], signal.SIGINT) == 0
    rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert gone(children, 5)


@pytest.mark.processes
def test_killed_cluster_takes_its_tasks_along_and_its_cgroups_are_swept_later():
    process, children, output = start_cluster_command("--archetype", "cpu", "--tasks", "2")
    process.kill()  # no chance to clean up
    process.wait(timeout=10)
    assert gone(children, 5), [p.pid for p in children if p.is_running()]
    stale = cgroups_of(process.pid)
    if not stale:
        pytest.skip("cgroups are not enforced here")
    fresh = Cgroups.create(f"{os.getpid()}-sweeptest")
    try:
        assert cgroups_of(process.pid) == []
    finally:
        fresh.remove()
