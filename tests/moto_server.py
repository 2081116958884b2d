"""A moto server on 127.0.0.1 and an ECS service world seeded into it, for the AWS tests.

The server runs in a thread of the test process; boto3 reaches it through ``AWS_ENDPOINT_URL``
with dummy credentials, so the code under test builds its clients exactly as it would for AWS.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import boto3
from botocore.config import Config
import pytest

REGION = "eu-west-1"
CLUSTER = "staging"
SERVICE = "web"


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path):
    """A clean moto account, with the environment pointing every boto3 client at it."""
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    return moto_endpoint


@dataclass(frozen=True)
class World:
    cluster: str
    service: str
    target_group_arn: str
    target_group_dimension: str
    load_balancer_dimension: str
    queue_name: str


def client(service: str):
    # moto cannot read the gzip bodies botocore sends for large put_metric_data requests
    return boto3.client(service, region_name=REGION, config=Config(disable_request_compression=True))


def seed_world(*, insights: str = "enabled", desired: int = 2, scalable: bool = True,
               min_capacity: int = 1, max_capacity: int = 3, healthy_targets: int | None = None) -> World:
    """An ECS service behind an ALB target group, with a scalable target and a tracking policy."""
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for i, zone in enumerate("ab")
    ]
    elb = client("elbv2")
    lb_arn = elb.create_load_balancer(Name="web-alb", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tg_arn = elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=8080, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    ecs = client("ecs")
    ecs.create_cluster(clusterName=CLUSTER, settings=[{"name": "containerInsights", "value": insights}])
    ecs.register_task_definition(family="web", cpu="256", memory="512", networkMode="awsvpc",
                                 requiresCompatibilities=["FARGATE"],
                                 containerDefinitions=[{"name": "app", "image": "app:1", "essential": True}])
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition="web", desiredCount=desired,
                       launchType="FARGATE",
                       loadBalancers=[{"targetGroupArn": tg_arn, "containerName": "app", "containerPort": 8080}])
    register_targets(tg_arn, desired if healthy_targets is None else healthy_targets)
    if scalable:
        autoscaling = client("application-autoscaling")
        autoscaling.register_scalable_target(
            ServiceNamespace="ecs", ResourceId=f"service/{CLUSTER}/{SERVICE}",
            ScalableDimension="ecs:service:DesiredCount", MinCapacity=min_capacity, MaxCapacity=max_capacity)
        autoscaling.put_scaling_policy(
            PolicyName="cpu50", ServiceNamespace="ecs", ResourceId=f"service/{CLUSTER}/{SERVICE}",
            ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 50.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
    client("sqs").create_queue(QueueName="jobs")
    return World(CLUSTER, SERVICE, tg_arn, tg_arn.split(":")[-1], lb_arn.split(":")[-1].removeprefix("loadbalancer/"), "jobs")


def register_targets(target_group_arn: str, count: int) -> None:
    """Make exactly ``count`` healthy IP targets, as ECS would for that many running tasks."""
    elb = client("elbv2")
    present = [t["Target"] for t in elb.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
               if t["TargetHealth"]["State"] == "healthy"]
    if len(present) > count:
        elb.deregister_targets(TargetGroupArn=target_group_arn, Targets=present[count:])
    wanted = [{"Id": f"10.0.0.{10 + i}", "Port": 8080} for i in range(count)]
    elb.register_targets(TargetGroupArn=target_group_arn, Targets=wanted) if count else None


def service_state() -> dict:
    """What a test compares before and after: the desired count and the scalable target."""
    ecs = client("ecs").describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    targets = client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[f"service/{CLUSTER}/{SERVICE}"])["ScalableTargets"]
    scalable = None
    if targets:
        t = targets[0]
        scalable = {"min": t["MinCapacity"], "max": t["MaxCapacity"], "suspended": t.get("SuspendedState")}
    return {"desired": ecs["desiredCount"], "scalable": scalable}
