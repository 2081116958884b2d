"""The pre-forking archetype: its ground truth, its server, and workers OOM-killed and respawned
while the task keeps running."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster, archetypes, prefork
from tests.cluster_helpers import ConstantLoad


def test_ground_truth_is_the_memory_the_idle_tree_leaves_over_the_memory_per_request():
    sizing = archetypes.Sizing(cpu_units=512, memory_mib=256, tasks=2, idle_mib=30.2)
    truth = archetypes.ground_truth("prefork", {}, sizing)
    assert truth["pattern"] == "memory_bound" and truth["expected_metric"] == "memory_utilization"
    assert truth["bottleneck"] == "memory" and truth["warnings"] == []
    assert truth["params"] == {"workers": 16, "mib_per_request": 18.0, "hold_ms": 1000.0, "cpu_ms": 1.0}
    assert truth["capacity_rps_per_task"] == pytest.approx(12.0)  # floor(225.8 / 18) = 12 held 1 s
    assert truth["capacity_formula"].endswith("floor((256 - 30.2) / 18) / (1000/1000)")
    assert truth["limits"]["concurrency"]["rate_rps"] == pytest.approx(16.0)
    # the benchmark's second setting: 24 MiB requests, 9 fit
    assert archetypes.ground_truth("prefork", {"mib_per_request": 24}, sizing)["capacity_rps_per_task"] == 9.0
    # an exact fit counts; a shorter hold raises the rate
    exact = archetypes.ground_truth("prefork", {"mib_per_request": 20, "hold_ms": 500},
                                    archetypes.Sizing(512, 256, 2, idle_mib=36))
    assert exact["capacity_rps_per_task"] == pytest.approx(11 / 0.5)
    # too few workers: they run out before memory, and the truth says so
    few = archetypes.ground_truth("prefork", {"workers": 8}, sizing)
    assert few["bottleneck"] == "concurrency" and "no longer behaves like the 'prefork' pattern" in few["warnings"][0]


def test_the_task_runs_the_lean_prefork_server_and_parameters_are_checked():
    spec = ClusterSpec(archetype="prefork", command=None, params={"workers": 4}, tasks=1)
    argv = spec.task_argv(8000, None)
    assert argv[1:4] == ["-m", "scalefinder.loadgen.cluster.prefork", "serve"] and "workers=4" in argv
    with pytest.raises(Exception, match="workers must be at least 1"):
        ClusterSpec(archetype="prefork", command=None, params={"workers": 0})
    with pytest.raises(Exception, match="has no parameter reserve_mib"):
        ClusterSpec(archetype="prefork", command=None, params={"reserve_mib": 48})


def test_a_worker_serves_work_health_and_metrics_on_one_connection_each():
    params = archetypes.get("prefork").resolve({"workers": 2, "mib_per_request": 1, "hold_ms": 1})
    shared = prefork.Shared(2)

    def ask(request: bytes) -> bytes:
        server, client = socket.socketpair()
        with server, client:
            client.sendall(request)
            thread = threading.Thread(target=prefork.serve_connection, args=(server, 1, shared, params))
            thread.start()
            thread.join(timeout=5)
            server.close()
            return client.recv(65536)

    assert ask(b"GET /work?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").startswith(b"HTTP/1.1 200 OK")
    posted = ask(b"POST /work HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert posted.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in posted
    assert ask(b"GET /health HTTP/1.1\r\n\r\n").endswith(b"ok\n")
    assert ask(b"GET /nothing HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    metrics = ask(b"GET /metrics HTTP/1.1\r\n\r\n").decode()
    assert "requests_total 2\n" in metrics and "request_memory_mib 0\n" in metrics
    assert "worker_restarts_total 0\n" in metrics
    # the hand-written text is what prometheus_client's parser reads, with the same series names
    body = metrics.partition("\r\n\r\n")[2]
    families = {family.name: (family.type, [(s.name, s.value) for s in family.samples])
                for family in text_string_to_metric_families(body)}
    assert families == {"requests": ("counter", [("requests_total", 2.0)]),
                        "request_memory_mib": ("gauge", [("request_memory_mib", 0.0)]),
                        "worker_restarts": ("counter", [("worker_restarts_total", 0.0)])}


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status


def wait_for(events, kind, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not any(k == kind for k, _ in events) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [detail for k, detail in events if k == kind]


def wait_until_serving(url: str, timeout_s: float = 30.0) -> float:
    """Wait until ``url`` answers 200 four times in a row (a few a second), and return the wait.

    The overload leaves connections queued in the listen backlog after its client has gone; the
    workers still serve them, and the kernel may still kill some, before the task is back to
    serving every request. Recovery is asserted within ``timeout_s``, and its time is printed."""
    started = time.monotonic()
    in_a_row = 0
    while in_a_row < 4:
        assert time.monotonic() - started < timeout_s, f"the task did not serve again within {timeout_s:g} s"
        try:
            ok = get(url) == 200
        except OSError:  # urllib's HTTPError (a 502) included
            ok = False
        in_a_row = in_a_row + 1 if ok else 0
        time.sleep(0.25)
    return time.monotonic() - started


@pytest.mark.load
def test_workers_past_capacity_are_oom_killed_and_respawned_while_the_task_keeps_running():
    events = []
    # 10 workers of 16 MiB requests held 0.5 s in 128 MiB: the idle tree takes about 25 MiB, so
    # six requests fit: 12 req/s. 18 req/s puts about 9 in flight, so workers must die.
    spec = ClusterSpec(archetype="prefork", command=None, tasks=1, cpu_units=512, memory_mib=128,
                       params={"workers": 10, "mib_per_request": 16, "hold_ms": 500})
    with LocalCluster(spec, on_event=lambda kind, **detail: events.append((kind, detail))) as cluster:
        if cluster.cgroup_mode == "unenforced":
            pytest.skip(f"the kernel's OOM killer needs an enforced memory limit: {cluster.cgroup_detail}")
        truth = cluster.ground_truth()
        assert truth["idle_mib"] < 50, truth  # shared pages of the forked workers counted once
        assert truth["capacity_rps_per_task"] == pytest.approx(12.0), truth
        master = cluster.task_views()[0].pid
        with ConstantLoad(cluster.url, 18.0, duration_s=4) as overload:
            time.sleep(4)
        kills = wait_for(events, "oom_kill")
        restarts = wait_for(events, "process_restart")
        assert kills and all(e["task"] == "task-1" and e["count"] >= 1 for e in kills), events
        assert restarts and restarts[0]["task"] == "task-1" and restarts[0]["parent_pid"] == master, events
        assert restarts[0]["pid_gone"] != restarts[0]["pid_new"]
        assert not [kind for kind, _ in events if kind in ("task_crash", "task_restart")], events
        statuses = overload.result.statuses
        assert statuses.get(502, 0) > 0 and statuses.get(200, 0) > 0, (overload.result.sent, statuses)  # in-flight requests failed
        # the same task, same master, serves again once the queued overload has drained
        recovered_s = wait_until_serving(cluster.url + "/work")
        assert cluster.running_tasks() == ["task-1"] and cluster.task_views()[0].pid == master
        before_after = len(events)
        with ConstantLoad(cluster.url, 4.0, duration_s=2) as after:
            time.sleep(2)
        assert set(after.result.statuses) == {200}, (after.result.statuses, events[before_after:])
        # every kill, those while the queued overload drained included, was one event (the counter
        # is raised just before its event is sent, so a kill in progress is given a moment)
        settle = time.monotonic() + 5
        while True:
            all_kills = [detail for kind, detail in list(events) if kind == "oom_kill"]
            counted = cluster.task_counters("task-1")["oom_kills"]
            if counted == sum(e["count"] for e in all_kills) or time.monotonic() > settle:
                break
            time.sleep(0.1)
        assert counted == sum(e["count"] for e in all_kills)
        print(f"prefork: {sum(e['count'] for e in all_kills)} OOM kills, {len(restarts)} restarts, "
              f"statuses {dict(statuses)}, idle {truth['idle_mib']} MiB, serving again after {recovered_s:.1f} s")


@pytest.mark.load
def test_unenforced_a_killed_worker_is_still_a_process_restart(monkeypatch):
    monkeypatch.setenv("SCALEFINDER_CGROUPS", "off")
    events = []
    spec = ClusterSpec(archetype="prefork", command=None, tasks=1, params={"workers": 2, "hold_ms": 100})
    with LocalCluster(spec, on_event=lambda kind, **detail: events.append((kind, detail))) as cluster:
        assert cluster.cgroup_mode == "unenforced"
        view = cluster.task_views()[0]
        workers = [child.pid for child in __import__("psutil").Process(view.pid).children()]
        assert len(workers) == 2
        time.sleep(1.3)  # long enough to count as long-lived workers
        os.kill(workers[0], signal.SIGKILL)
        restarts = wait_for(events, "process_restart")
        assert restarts and restarts[0]["pid_gone"] == workers[0], events
        assert not wait_for(events, "oom_kill", timeout_s=0.5)  # no kernel counter to read
        assert get(cluster.url + "/work") == 200
