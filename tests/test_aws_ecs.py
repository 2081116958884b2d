"""The ECS capacity controller and `scalefinder restore` against a moto server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from botocore.awsrequest import AWSResponse
from click.testing import CliRunner

from scalefinder.loadgen.aws.session import AwsClients
from scalefinder.loadgen.capacity import ecs
from scalefinder.loadgen.context import RunContext
from scalefinder.cli import cli
from scalefinder.core.errors import InfrastructureError
from scalefinder.core.rundir import RunDirectory
from tests.moto_server import CLUSTER, SERVICE, client, register_targets, seed_world, service_state

ALL_SUSPENDED = {"DynamicScalingInSuspended": True, "DynamicScalingOutSuspended": True,
                 "ScheduledScalingSuspended": True}


def _normalised(state: dict) -> dict:
    """AWS always reports SuspendedState; moto omits it until it is set. Both mean 'not suspended'."""
    scalable = dict(state["scalable"] or {})
    if scalable:
        scalable["suspended"] = scalable.get("suspended") or {k: False for k in ALL_SUSPENDED}
    return {"desired": state["desired"], "scalable": scalable or None}


class TargetFollower:
    """Plays ECS and the load balancer: registers as many healthy targets as tasks are desired."""

    def __init__(self, target_group_arn: str, delay_s: float = 0.6):
        self.arn = target_group_arn
        self.delay_s = delay_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self):
        ecs_client = client("ecs")
        registered = None
        while not self._stop.wait(0.2):
            desired = ecs_client.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["desiredCount"]
            if desired != registered:
                time.sleep(self.delay_s)  # tasks take a while to start and pass health checks
                register_targets(self.arn, desired)
                registered = desired


def _controller(**options) -> ecs.EcsCapacityController:
    config = ecs.validate_config({"cluster": CLUSTER, "service": SERVICE, "poll_s": 0.2, **options}, "capacity.ecs")
    profile = type("P", (), {"capacity": type("C", (), {"tasks": 2})()})()
    return ecs.build(config, RunContext(profile=profile))


def test_full_sequence_leaves_service_and_scalable_target_as_found(aws):
    world = seed_world(desired=2, min_capacity=1, max_capacity=3)
    found = _normalised(service_state())
    controller = _controller()
    snapshot = controller.snapshot()
    assert snapshot["tasks"] == 2 and snapshot["scalable_target"]["max_capacity"] == 3
    assert json.loads(json.dumps(snapshot)) == snapshot  # it goes into the manifest

    with TargetFollower(world.target_group_arn):
        controller.prepare()
        during = service_state()["scalable"]
        assert during["suspended"] == ALL_SUSPENDED and during["max"] >= 4
        started = time.monotonic()
        controller.scale_to(4, timeout_s=30)
        assert time.monotonic() - started >= 0.5  # it waited for the targets, not just the API
        assert controller.current() == 4
        health = client("elbv2").describe_target_health(TargetGroupArn=world.target_group_arn)
        assert sum(t["TargetHealth"]["State"] == "healthy" for t in health["TargetHealthDescriptions"]) == 4
        controller.scale_to(2, timeout_s=30)
        controller.restore(snapshot)
    assert _normalised(service_state()) == found
    controller.restore(snapshot)  # idempotent
    assert _normalised(service_state()) == found


def test_restore_after_an_exception_mid_run(aws):
    world = seed_world(desired=3, min_capacity=2, max_capacity=6)
    client("application-autoscaling").register_scalable_target(
        ServiceNamespace="ecs", ResourceId=f"service/{CLUSTER}/{SERVICE}", ScalableDimension="ecs:service:DesiredCount",
        SuspendedState={"DynamicScalingInSuspended": True, "DynamicScalingOutSuspended": False,
                        "ScheduledScalingSuspended": False})
    found = _normalised(service_state())
    controller = _controller()
    snapshot = controller.snapshot()
    with pytest.raises(RuntimeError, match="mid-run"):
        try:
            with TargetFollower(world.target_group_arn):
                controller.prepare()
                controller.scale_to(7, timeout_s=30)  # beyond the original maximum
                assert service_state()["scalable"]["max"] >= 7
                raise RuntimeError("mid-run")
        finally:
            controller.restore(snapshot)
    assert _normalised(service_state()) == found


def test_unhealthy_targets_time_out_with_one_clear_error_then_restore(aws):
    seed_world(desired=2, healthy_targets=2)
    found = _normalised(service_state())
    controller = _controller()
    snapshot = controller.snapshot()
    controller.prepare()
    with pytest.raises(InfrastructureError, match=r"did not reach 4 healthy tasks within 1 s .*healthy targets 2"):
        controller.scale_to(4, timeout_s=1.0)  # nobody registers the new targets
    controller.restore(snapshot)
    assert _normalised(service_state()) == found


class _Terminated(BaseException):
    """Like the experiment's stop signal: a BaseException, so no library's `except Exception` eats it."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@pytest.mark.processes
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_restore_after_ctrl_c_or_sigterm_while_waiting(aws, stop):
    seed_world(desired=2, healthy_targets=2)
    found = _normalised(service_state())
    controller = _controller()
    snapshot = controller.snapshot()
    controller.prepare()
    # The experiment turns SIGTERM into an exception in the main thread; do the same here.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # The signal comes from another process, as a real one would: once Locust is imported, gevent
    # makes threads greenlets, and a signal raised from a timer greenlet would end that greenlet only.
    signum = signal.SIGINT if stop == "ctrl-c" else signal.SIGTERM
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.8 && kill -{signum.name[3:]} {os.getpid()}"])
    try:
        with pytest.raises((KeyboardInterrupt, _Terminated)):
            try:
                controller.scale_to(4, timeout_s=30)  # no new targets ever come: only the signal ends it
            finally:
                controller.restore(snapshot)
    finally:
        killer.kill()
        killer.wait()
        signal.signal(signal.SIGTERM, previous)
    assert _normalised(service_state()) == found


def test_access_denied_is_one_clear_error(aws):
    seed_world()
    controller = _controller()

    def deny(request, **_):
        response = AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, None)
        response._content = (b'{"__type": "AccessDeniedException", "message": "User: arn:aws:iam::123456789012:'
                             b'user/ci is not authorized to perform: ecs:UpdateService"}')
        return response

    controller.clients.client("ecs").meta.events.register("before-send.ecs.UpdateService", deny)
    with pytest.raises(InfrastructureError) as error:
        controller.scale_to(3, timeout_s=5)
    assert "AWS denied ecs:UpdateService (AccessDeniedException" in str(error.value)
    assert "scalefinder iam-policy" in str(error.value)
    assert "\n" not in str(error.value)


def test_refuses_more_than_max_tasks(aws):
    seed_world()
    with pytest.raises(InfrastructureError, match="max_tasks = 5"):
        _controller(max_tasks=5).scale_to(6, timeout_s=5)
    from scalefinder.core.errors import InputError

    with pytest.raises(InputError, match="replay phase needs 4 tasks"):
        _controller(max_tasks=3)


HARD_KILLED_RUN = textwrap.dedent("""
    import sys, time
    from scalefinder.loadgen.capacity import ecs
    from scalefinder.loadgen.context import RunContext
    from scalefinder.core.rundir import RunWriter

    config = ecs.validate_config({"cluster": "staging", "service": "web", "poll_s": 0.2,
                                  "wait_for_targets": False}, "capacity.ecs")
    controller = ecs.build(config, RunContext(profile=None))
    original = controller.snapshot()
    writer = RunWriter.create(sys.argv[1], {
        "run_id": "killed", "profile": {"capacity": {"controller": "ecs", "tasks": 2, "config": config}},
        "capacity": {"controller": "ecs", "original": original, "initial_tasks": 2}})
    controller.prepare()
    controller.scale_to(5, timeout_s=20)
    writer.event("scale", tasks=5)
    print("scaled", flush=True)
    time.sleep(60)
""")


@pytest.mark.processes
def test_restore_command_undoes_a_hard_killed_run(aws, tmp_path):
    seed_world(desired=2, min_capacity=1, max_capacity=3)
    found = _normalised(service_state())
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, "-c", HARD_KILLED_RUN, str(run_dir)], stdout=subprocess.PIPE,
                               text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "scaled"
        changed = service_state()
        assert changed["desired"] == 5 and changed["scalable"]["suspended"] == ALL_SUSPENDED
    finally:
        process.kill()
        process.wait(timeout=10)
    assert RunDirectory.open(run_dir).status == "running"  # killed hard: nothing was cleaned up

    result = CliRunner().invoke(cli, ["restore", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "Restored the ecs capacity" in result.output
    assert _normalised(service_state()) == found
    events = RunDirectory.open(run_dir).events()
    assert events[-1]["kind"] == "restore" and events[-1]["controller"] == "ecs"


def test_restore_refuses_a_finished_run_without_force(aws, tmp_path):
    seed_world(desired=2)
    from scalefinder.core.rundir import RunWriter

    config = ecs.validate_config({"cluster": CLUSTER, "service": SERVICE}, "capacity.ecs")
    original = {"cluster": CLUSTER, "service": SERVICE, "region": "eu-west-1", "tasks": 3, "scalable_target": None}
    RunWriter.create(tmp_path / "run", {"profile": {"capacity": {"controller": "ecs", "config": config}},
                                        "capacity": {"controller": "ecs", "original": original}}).finish("complete")
    refused = CliRunner().invoke(cli, ["restore", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "--force" in refused.output
    assert service_state()["desired"] == 2
    forced = CliRunner().invoke(cli, ["restore", "--force", str(tmp_path / "run")])
    assert forced.exit_code == 0, forced.output
    assert service_state()["desired"] == 3


def test_restore_of_a_missing_service_exits_3_with_one_line(aws, tmp_path):
    seed_world()
    from scalefinder.core.rundir import RunWriter

    config = ecs.validate_config({"cluster": CLUSTER, "service": "gone"}, "capacity.ecs")
    original = {"cluster": CLUSTER, "service": "gone", "region": "eu-west-1", "tasks": 1,
                "scalable_target": None}
    RunWriter.create(tmp_path / "run", {"profile": {"capacity": {"controller": "ecs", "config": config}},
                                        "capacity": {"controller": "ecs", "original": original}}).close()
    result = CliRunner().invoke(cli, ["restore", str(tmp_path / "run")])
    assert result.exit_code == 3
    assert result.output.strip().count("\n") == 0 and "Error:" in result.output
    assert "gone" in result.output


def test_region_and_profile_follow_the_aws_cli(aws, monkeypatch, tmp_path):
    from scalefinder.core.errors import InputError

    config = tmp_path / "aws-config"
    config.write_text("[profile staging]\nregion = ap-southeast-2\n")
    assert AwsClients(profile="staging").region == "eu-west-1"  # AWS_REGION wins over the file
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert AwsClients(profile="staging").region == "ap-southeast-2"
    assert AwsClients(region="us-east-2", profile="staging").region == "us-east-2"
    with pytest.raises(InputError, match="AWS profile 'nosuch'"):
        AwsClients(profile="nosuch")
    with pytest.raises(InputError, match="no AWS region"):
        AwsClients()


def test_credentials_never_reach_the_logs_even_at_debug_level(aws, monkeypatch, caplog):
    secrets = {"AWS_ACCESS_KEY_ID": "AKIASFTESTKEYID0001", "AWS_SECRET_ACCESS_KEY": "sfSecretValue/0001+x",
               "AWS_SESSION_TOKEN": "sfSessionToken0001"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    seed_world()
    caplog.set_level(logging.DEBUG)
    controller = _controller()
    controller.snapshot()
    text = caplog.text
    assert "CanonicalRequest" in text and "Sending http request" in text  # the debug logs were there
    for value in secrets.values():
        assert value not in text
