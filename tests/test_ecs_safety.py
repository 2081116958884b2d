"""Safety checks and edge cases of the ECS path that a first staging run would meet.

The profile refuses a controller that names another service than the one measured, and ECS
names that look like production; the run's confirmation says which AWS account, region, cluster
and service will change; the controller understands CODE_DEPLOY and EXTERNAL services, counts
only its own targets in a shared target group and picks a load balancer entry by the service's
own order; the IAM policy uses the region's partition and no ``*`` for RegisterScalableTarget.

moto runs no tasks with addresses and reports no real target health, so where it cannot model
something the decision functions get data shaped as the AWS APIs return it.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scalefinder.cli import cli
from scalefinder.core.errors import InfrastructureError, ProfileError
from scalefinder.loadgen import commands
from scalefinder.loadgen.aws import discovery, iam
from scalefinder.loadgen.capacity import ecs
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.profile import PRODUCTION_NAMES, load_profile
from tests.moto_server import CLUSTER, REGION, SERVICE, client, register_targets, seed_world

PROFILE = """
name = "ecs"
[target]
kind = "url"
url = "https://web.staging.example.com"
environment = "staging"
allowed_hosts = ["web.staging.example.com"]
[workload]
requests = [{ path = "/" }]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 1
step_rps = 1
max_rps = 2
hold_s = 200
min_hold_s = 200
[capacity]
controller = "ecs"
tasks = 2
[capacity.ecs]
cluster = "CONTROLLER_CLUSTER"
service = "CONTROLLER_SERVICE"
region = "REGION"
[sources.cloudwatch]
cluster = "SOURCE_CLUSTER"
service = "SOURCE_SERVICE"
"""


def profile_text(cluster: str = "staging", service: str = "web", *, source_cluster: str | None = None,
                 source_service: str | None = None, region: str = "eu-west-1") -> str:
    return (PROFILE.replace("CONTROLLER_CLUSTER", cluster).replace("CONTROLLER_SERVICE", service)
            .replace("SOURCE_CLUSTER", source_cluster or cluster).replace("SOURCE_SERVICE", source_service or service)
            .replace("REGION", region))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    return message


# -- 1. the controller resizes the service that is measured --------------------------------------


@pytest.mark.parametrize("key", ["cluster", "service"])
def test_a_controller_naming_another_service_than_the_source_is_refused(tmp_path, key):
    names = {"cluster": "staging", "service": "web"}
    other = {"cluster": "staging-2", "service": "web-canary"}[key]
    message = refused(tmp_path, profile_text(**names, **{f"source_{key}": other}))
    assert f"[capacity.ecs.{key}]" in message
    assert f"capacity.ecs.{key} = {names[key]!r}" in message
    assert f"sources.cloudwatch.{key} = {other!r}" in message


def test_the_same_service_in_both_tables_loads(tmp_path):
    profile = load_profile(write(tmp_path, profile_text()))
    assert profile.capacity.config["service"] == profile.sources["cloudwatch"]["service"] == "web"


# -- 2. names that look like production ------------------------------------------------------------


@pytest.mark.parametrize("name", ["web-prod", "prd_web", "live.web", "Production", "web-prd01",
                                  "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"])
@pytest.mark.parametrize("key", ["cluster", "service"])
def test_production_like_ecs_names_are_refused_at_their_key(tmp_path, name, key):
    text = profile_text(**{key: name})  # both tables name it, so the controller's key is reported
    message = refused(tmp_path, text)
    assert f"[capacity.ecs.{key}]" in message and "looks like production" in message


@pytest.mark.parametrize("name", ["product-api", "delivery", "prodigy", "livestream", "staging", "web-preprod"])
def test_words_that_only_contain_a_production_name_are_not_refused(name):
    assert ecs.production_word(name, PRODUCTION_NAMES) is None


def test_a_production_name_in_the_source_alone_is_refused(tmp_path):
    text = profile_text().replace('controller = "ecs"', 'controller = "command"').replace(
        '[capacity.ecs]\ncluster = "staging"\nservice = "web"\nregion = "eu-west-1"\n',
        '[capacity.command]\nscale = "true {count}"\ncurrent = "echo 2"\n')
    text = text.replace('[sources.cloudwatch]\ncluster = "staging"', '[sources.cloudwatch]\ncluster = "shop-live"')
    message = refused(tmp_path, text)
    assert "[sources.cloudwatch.cluster]" in message and "'live'" in message


# -- 4. deployment controllers: steadiness ---------------------------------------------------------


def _service(kind: str, desired: int, running: int, **extra) -> dict:
    """describe_services' shape (botocore: Service, deploymentController, taskSets)."""
    return {"serviceName": "web", "status": "ACTIVE", "desiredCount": desired, "runningCount": running,
            "pendingCount": desired - running, "deploymentController": {"type": kind}, "deployments": [], **extra}


def _task_set(status: str, running: int, desired: int) -> dict:
    return {"id": f"ecs-svc/{status.lower()}", "status": status, "computedDesiredCount": desired,
            "runningCount": running, "pendingCount": desired - running, "stabilityStatus": "STEADY_STATE"}


def test_code_deploy_and_external_services_are_steady_without_deployments():
    # before: one deployment was required, and these services list none, so a run never started
    assert ecs._is_steady(_service("EXTERNAL", 4, 4), 4)
    assert not ecs._is_steady(_service("EXTERNAL", 4, 3), 4)
    assert ecs._is_steady(_service("CODE_DEPLOY", 4, 4), 4)
    primary = _task_set("PRIMARY", 4, 4)
    assert ecs._is_steady(_service("CODE_DEPLOY", 4, 4, taskSets=[primary]), 4)
    # a blue/green deployment under way: the replacement task set still holds tasks
    moving = [_task_set("PRIMARY", 2, 4), _task_set("ACTIVE", 2, 4)]
    assert not ecs._is_steady(_service("CODE_DEPLOY", 4, 4, taskSets=moving), 4)
    assert not ecs._is_steady(_service("CODE_DEPLOY", 4, 4, taskSets=[_task_set("ACTIVE", 4, 4)]), 4)
    # the ECS controller keeps the services_stable rule
    one = [{"id": "ecs-svc/1", "status": "PRIMARY", "rolloutState": "COMPLETED"}]
    assert ecs._is_steady(_service("ECS", 4, 4, deployments=one), 4)
    assert not ecs._is_steady(_service("ECS", 4, 4, deployments=one * 2), 4)
    assert not ecs._is_steady({"desiredCount": 4, "runningCount": 4, "deployments": []}, 4)


def _controller(service: str = SERVICE, **options) -> ecs.EcsCapacityController:
    config = ecs.validate_config({"cluster": CLUSTER, "service": service, "poll_s": 0.2, **options}, "capacity.ecs")
    profile = type("P", (), {"capacity": type("C", (), {"tasks": 2})()})()
    return ecs.build(config, RunContext(profile=profile))


@pytest.mark.parametrize("kind", ["EXTERNAL", "CODE_DEPLOY"])
def test_moto_services_of_other_deployment_controllers_reach_their_count(aws, kind):
    seed_world(scalable=False)
    client("ecs").create_service(cluster=CLUSTER, serviceName="other", taskDefinition="web", desiredCount=2,
                                 deploymentController={"type": kind})
    controller = _controller("other")
    assert controller.snapshot()["deployment_controller"] == kind
    controller.scale_to(3, timeout_s=10)  # timed out before: no deployment ever appeared
    assert controller.current() == 3


# -- 4. load balancer choice: the service's order, the profile's container ------------------------


def _lb(name: str, container: str, port: int) -> dict:
    return {"targetGroupArn": f"arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/{name}/0123abcd",
            "containerName": container, "containerPort": port}


def test_the_first_load_balancer_in_the_service_order_is_watched_never_the_alphabetical_first():
    entries = [_lb("zz-web", "app", 8080), _lb("aa-admin", "admin", 9090)]
    choice = discovery.choose_load_balancer(entries)
    assert choice.target_group_arn == entries[0]["targetGroupArn"]
    assert "first of 2" in choice.reason and "aa-admin" in choice.reason  # the run records the others
    by_name = discovery.choose_load_balancer(entries, container_name="admin")
    assert by_name.target_group_arn == entries[1]["targetGroupArn"] and "container_name" in by_name.reason
    by_port = discovery.choose_load_balancer(entries, container_port=9090)
    assert by_port.target_group_arn == entries[1]["targetGroupArn"]
    assert discovery.choose_load_balancer([entries[1]]).reason == "the service's only load balancer entry"
    assert discovery.choose_load_balancer([]) is None
    with pytest.raises(InfrastructureError, match="no load balancer entry for container sidecar"):
        discovery.choose_load_balancer(entries, container_name="sidecar")


def test_moto_controller_waits_on_the_service_order_target_group_and_records_it(aws):
    world = seed_world(desired=2, healthy_targets=3, scalable=False)
    elb, ec2 = client("elbv2"), client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["10.0.0.0/16"]}])["Vpcs"][0]["VpcId"]
    admin = elb.create_target_group(Name="aa-admin-tg", Protocol="HTTP", Port=9090, VpcId=vpc,
                                    TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    entries = [{"targetGroupArn": world.target_group_arn, "containerName": "app", "containerPort": 8080},
               {"targetGroupArn": admin, "containerName": "admin", "containerPort": 9090}]
    client("ecs").create_service(cluster=CLUSTER, serviceName="multi", taskDefinition="web", desiredCount=2,
                                 launchType="FARGATE", loadBalancers=entries)
    controller = _controller("multi")
    recorded = controller.snapshot()["target_group"]
    assert recorded["target_group_arn"] == world.target_group_arn and recorded["container_name"] == "app"
    assert json.loads(json.dumps(recorded)) == recorded  # it goes into the manifest
    # the empty, alphabetically first admin group would have kept the old rule (the emptiest
    # of all groups) waiting until the timeout
    controller.scale_to(3, timeout_s=10)
    assert _controller("multi", container_name="admin").snapshot()["target_group"]["target_group_arn"] == admin


# -- 4. shared target groups: only this service's targets count ------------------------------------


def _fargate_task(ip: str, group: str = "service:web") -> dict:
    """describe_tasks' shape for an awsvpc (Fargate) task."""
    return {"taskArn": f"arn:aws:ecs:eu-west-1:123456789012:task/staging/{ip.replace('.', '')}", "group": group,
            "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "launchType": "FARGATE",
            "attachments": [{"id": "a1", "type": "ElasticNetworkInterface", "status": "ATTACHED", "details": [
                {"name": "subnetId", "value": "subnet-0abc"}, {"name": "networkInterfaceId", "value": "eni-0abc"},
                {"name": "privateIPv4Address", "value": ip}]}],
            "containers": [{"name": "app", "networkInterfaces": [{"attachmentId": "a1", "privateIpv4Address": ip}],
                            "networkBindings": []}]}


def _health(*targets: tuple[str, int, str]) -> list[dict]:
    """describe_target_health's TargetHealthDescriptions."""
    return [{"Target": {"Id": ident, "Port": port}, "HealthCheckPort": str(port), "TargetHealth": {"State": state}}
            for ident, port, state in targets]


def test_only_this_services_healthy_targets_are_counted_in_a_shared_target_group():
    ours = [_fargate_task("10.0.1.5"), _fargate_task("10.0.1.6")]
    health = _health(("10.0.1.5", 8080, "healthy"), ("10.0.1.6", 8080, "initial"),
                     ("10.0.2.7", 8080, "healthy"), ("10.0.2.8", 8080, "healthy"))  # another service's tasks
    addresses = discovery.task_target_addresses(ours)
    assert addresses == {("10.0.1.5", None), ("10.0.1.6", None)}
    assert discovery.healthy_own_targets(health, addresses) == 1  # before: 3 healthy, "enough" for 3 tasks


def test_bridge_mode_targets_are_instances_and_host_ports_of_the_chosen_container():
    instance_arn = "arn:aws:ecs:eu-west-1:123456789012:container-instance/staging/9f8e"
    task = {"taskArn": "arn:aws:ecs:eu-west-1:123456789012:task/staging/1", "group": "service:web",
            "containerInstanceArn": instance_arn, "launchType": "EC2", "attachments": [],
            "containers": [{"name": "app", "networkBindings": [{"containerPort": 8080, "hostPort": 32768}]},
                           {"name": "sidecar", "networkBindings": [{"containerPort": 9901, "hostPort": 32769}]}]}
    choice = discovery.LoadBalancerChoice("arn:tg", "app", 8080, "the service's only load balancer entry")
    addresses = discovery.task_target_addresses([task], choice, {instance_arn: "i-0abc"})
    assert addresses == {("i-0abc", 32768)}
    health = _health(("i-0abc", 32768, "healthy"), ("i-0abc", 32769, "healthy"), ("i-0abc", 32770, "healthy"))
    assert discovery.healthy_own_targets(health, addresses) == 1


def test_moto_service_tasks_are_this_services_only(aws):
    seed_world(scalable=False)
    ecs_client = client("ecs")
    ecs_client.register_task_definition(family="plain", networkMode="bridge", containerDefinitions=[
        {"name": "app", "image": "app:1", "essential": True, "memory": 128, "cpu": 64}])
    for group in ("service:web", "service:web", "service:other"):
        ecs_client.run_task(cluster=CLUSTER, taskDefinition="plain", launchType="FARGATE", group=group)
    # moto's list_tasks ignores serviceName; AWS's does not, and the group check holds either way
    tasks = discovery.service_tasks(_controller().clients, CLUSTER, SERVICE)
    assert [task["group"] for task in tasks] == ["service:web", "service:web"]


def test_moto_controller_waits_until_its_own_targets_are_healthy_in_a_shared_group(aws, monkeypatch):
    world = seed_world(desired=2, healthy_targets=2, scalable=False)  # 10.0.0.10-11: another service's
    ours = [_fargate_task(f"10.0.1.{5 + i}") for i in range(3)]
    # moto cannot start awsvpc tasks: give the controller the tasks as describe_tasks would
    monkeypatch.setattr(discovery, "service_tasks", lambda clients, cluster, service: ours)
    client("elbv2").register_targets(TargetGroupArn=world.target_group_arn,
                                     Targets=[{"Id": "10.0.1.5", "Port": 8080}])
    controller = _controller()
    controller.snapshot()
    with pytest.raises(InfrastructureError,
                       match=r"did not reach 3 healthy tasks .*healthy targets 1 of this service \(3 healthy in "
                             r"targetgroup/web-tg/"):
        controller.scale_to(3, timeout_s=1)  # the old count (3 healthy in the group) would have passed
    client("elbv2").register_targets(TargetGroupArn=world.target_group_arn,
                                     Targets=[{"Id": "10.0.1.6", "Port": 8080}, {"Id": "10.0.1.7", "Port": 8080}])
    controller.scale_to(3, timeout_s=5)
    register_targets(world.target_group_arn, 0)


# -- 4. IAM: the region's partition, RegisterScalableTarget scoped ---------------------------------


@pytest.mark.parametrize("region, partition", [("cn-north-1", "aws-cn"), ("cn-northwest-1", "aws-cn"),
                                               ("us-gov-west-1", "aws-us-gov"), ("eu-west-1", "aws"),
                                               (None, "aws")])
def test_the_partition_follows_the_region(region, partition):
    assert iam.partition_for(region) == partition


def test_the_policy_in_china_uses_aws_cn_and_scopes_register_scalable_target(tmp_path):
    path = write(tmp_path, profile_text(region="cn-north-1").replace(
        '[sources.cloudwatch]\n', '[sources.cloudwatch]\nregion = "cn-north-1"\n'))
    result = CliRunner().invoke(cli, ["iam-policy", str(path)])
    assert result.exit_code == 0, result.output
    statements = json.loads(result.output)["Statement"]
    resources = [s["Resource"] for s in statements if s["Resource"] != "*"]
    assert resources and all(r.startswith("arn:aws-cn:") for r in resources), resources
    register = [s for s in statements if "application-autoscaling:RegisterScalableTarget" in s["Action"]]
    assert len(register) == 1 and register[0]["Action"] == ["application-autoscaling:RegisterScalableTarget"]
    assert register[0]["Resource"] == "arn:aws-cn:application-autoscaling:cn-north-1:*:scalable-target/*"
    assert register[0]["Condition"] == {"StringEquals": {
        "application-autoscaling:service-namespace": "ecs",
        "application-autoscaling:scalable-dimension": "ecs:service:DesiredCount"}}
    tasks = [s for s in statements if "ecs:DescribeTasks" in s["Action"]]
    assert tasks[0]["Resource"] == "arn:aws-cn:ecs:cn-north-1:*:task/staging/*"


# -- 3. the confirmation before load --------------------------------------------------------------


@pytest.fixture
def at_a_terminal(monkeypatch):
    """`run`'s confirmation as at a terminal: what it shows, and the answer no."""
    shown: list[str] = []
    monkeypatch.setattr(commands.sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(commands.click, "echo", lambda message="", **_: shown.append(str(message)))

    def confirm(question, **_):
        shown.append(question)
        return False

    monkeypatch.setattr(commands.click, "confirm", confirm)
    return shown


def test_the_confirmation_shows_account_region_cluster_service_and_the_suspension(tmp_path, at_a_terminal,
                                                                                     monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "aws_identity", lambda region, profile: calls.append((region, profile))
                        or ("123456789012", region))
    profile = load_profile(write(tmp_path, profile_text()))
    assert commands._confirm_remote(profile, False, None, "staging-admin") is False
    text = "\n".join(at_a_terminal)
    assert "AWS account 123456789012, region eu-west-1: ECS service 'web' in cluster 'staging'" in text
    assert "Application Auto Scaling" in text and "suspended during the run" in text and "restored" in text
    assert at_a_terminal[-1] == "Send up to 2 req/s to https://web.staging.example.com (staging)?"
    assert calls == [("eu-west-1", "staging-admin")]
    assert commands._confirm_remote(profile, True, "us-east-2", None) is True  # --yes: no question, no call
    assert calls == [("eu-west-1", "staging-admin")]


def test_without_ecs_there_is_no_aws_call(tmp_path, at_a_terminal, monkeypatch):
    def no_call(*_):
        raise AssertionError("the identity was asked for a profile without ECS")

    monkeypatch.setattr(commands, "aws_identity", no_call)
    text = profile_text().replace('controller = "ecs"', 'controller = "command"').replace(
        '[capacity.ecs]\ncluster = "staging"\nservice = "web"\nregion = "eu-west-1"\n',
        '[capacity.command]\nscale = "true {count}"\ncurrent = "echo 2"\n')
    profile = load_profile(write(tmp_path, text))
    assert commands._confirm_remote(profile, False) is False
    assert at_a_terminal == ["Send up to 2 req/s to https://web.staging.example.com (staging)?"]


def test_a_failing_identity_call_says_unknown_and_the_question_is_still_asked(tmp_path, at_a_terminal,
                                                                              monkeypatch):
    import scalefinder.loadgen.aws.session as session

    def broken(*_, **__):
        raise RuntimeError("no network")

    monkeypatch.setattr(session.AwsClients, "__init__", broken)
    assert commands.aws_identity("eu-west-1", None) == ("unknown (RuntimeError)", "eu-west-1")
    profile = load_profile(write(tmp_path, profile_text()))
    commands._confirm_remote(profile, False)
    assert "AWS account unknown (RuntimeError), region eu-west-1" in "\n".join(at_a_terminal)
    assert at_a_terminal[-1].startswith("Send up to")


def test_moto_identity_and_no_credentials(aws, monkeypatch):
    assert commands.aws_identity(None, None) == ("123456789012", REGION)  # moto's account, AWS_REGION
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find either
    account, region = commands.aws_identity("eu-central-1", None)
    assert account == "unknown (NoCredentialsError)" and region == "eu-central-1"


def test_ctrl_c_at_the_confirmation_stays_an_interruption(tmp_path, at_a_terminal, monkeypatch):
    monkeypatch.setattr(commands, "aws_identity", lambda region, profile: ("123456789012", region))

    def interrupted(*_, **__):
        raise click.Abort()

    monkeypatch.setattr(commands.click, "confirm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        commands._confirm_remote(load_profile(write(tmp_path, profile_text())), False)


def test_an_ecs_profile_waits_longer_for_a_change_by_default(tmp_path):
    """A Fargate task must start and pass the first health checks: 300 s by default for ECS, the
    profile's own value when it gives one, and 120 s for the other controllers."""
    example = Path(__file__).resolve().parents[1] / "profiles" / "ecs-staging.example.toml"
    text = "\n".join(line for line in example.read_text().splitlines() if not line.startswith("scale_timeout_s"))
    path = tmp_path / "ecs.toml"
    path.write_text(text)
    assert load_profile(path).ramp.scale_timeout_s == 300
    assert load_profile(example).ramp.scale_timeout_s == 600
    demo = Path(__file__).resolve().parents[1] / "profiles" / "demo.toml"
    assert load_profile(demo).ramp.scale_timeout_s == 120
