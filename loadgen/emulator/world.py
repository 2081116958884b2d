"""The AWS side of the ECS emulator: a moto server on 127.0.0.1 and an ECS service seeded into it.

The service looks like a small real one: a VPC with two subnets, an Application Load Balancer
with a listener forwarding to an IP target group, an ECS cluster (Container Insights on) running
a Fargate service in that target group, an Application Auto Scaling target with a CPU tracking
policy, and an SQS queue. boto3 reaches the server through ``AWS_ENDPOINT_URL`` with dummy
credentials, so the code under test builds its clients exactly as it would for AWS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

REGION = "eu-west-1"
CLUSTER = "staging"
SERVICE = "web"
QUEUE = "jobs"
#: Credentials moto accepts; they name no real account (moto's default account id is 123456789012).
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class World:
    cluster: str
    service: str
    target_group_arn: str
    target_group_dimension: str
    load_balancer_dimension: str
    queue_name: str


def start_server(port: int = 0) -> tuple[Any, str]:
    """A moto server in a thread of this process, bound to 127.0.0.1: (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound = server.get_host_and_port()
    if host != "127.0.0.1":  # never serve a fake AWS beyond this machine
        server.stop()
        raise RuntimeError(f"moto bound to {host}, not 127.0.0.1")
    return server, f"http://127.0.0.1:{bound}"


def reset(endpoint_url: str) -> None:
    """Empty moto's state (every service, every region) for a new world."""
    import urllib.request

    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def client(service: str, region: str = REGION, endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config

    # The emulator's own clients talk to its loopback server only, with moto's dummy credentials;
    # without an endpoint the client is configured by the environment (the tests set it).
    credentials = {} if endpoint_url is None else {
        "aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
    # moto cannot read the gzip bodies botocore sends for large put_metric_data requests
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url,
                        config=Config(disable_request_compression=True), **credentials)


def seed_world(*, insights: str = "enabled", desired: int = 2, scalable: bool = True,
               min_capacity: int = 1, max_capacity: int = 3, healthy_targets: int | None = None,
               cpu_units: int = 256, memory_mib: int = 512, region: str = REGION,
               endpoint_url: str | None = None) -> World:
    """An ECS service behind an ALB target group, with a scalable target and a tracking policy."""
    def aws(name: str):
        return client(name, region, endpoint_url)

    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{zone}")["Subnet"]["SubnetId"]
        for i, zone in enumerate("ab")
    ]
    elb = aws("elbv2")
    lb_arn = elb.create_load_balancer(Name="web-alb", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tg_arn = elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=8080, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    ecs = aws("ecs")
    ecs.create_cluster(clusterName=CLUSTER, settings=[{"name": "containerInsights", "value": insights}])
    ecs.register_task_definition(family="web", cpu=str(cpu_units), memory=str(memory_mib), networkMode="awsvpc",
                                 requiresCompatibilities=["FARGATE"],
                                 containerDefinitions=[{"name": "app", "image": "app:1", "essential": True}])
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition="web", desiredCount=desired,
                       launchType="FARGATE",
                       loadBalancers=[{"targetGroupArn": tg_arn, "containerName": "app", "containerPort": 8080}])
    register_targets(tg_arn, desired if healthy_targets is None else healthy_targets, region, endpoint_url)
    if scalable:
        autoscaling = aws("application-autoscaling")
        autoscaling.register_scalable_target(
            ServiceNamespace="ecs", ResourceId=f"service/{CLUSTER}/{SERVICE}",
            ScalableDimension="ecs:service:DesiredCount", MinCapacity=min_capacity, MaxCapacity=max_capacity)
        autoscaling.put_scaling_policy(
            PolicyName="cpu50", ServiceNamespace="ecs", ResourceId=f"service/{CLUSTER}/{SERVICE}",
            ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 50.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}})
    aws("sqs").create_queue(QueueName=QUEUE)
    return World(CLUSTER, SERVICE, tg_arn, tg_arn.split(":")[-1],
                 lb_arn.split(":")[-1].removeprefix("loadbalancer/"), QUEUE)


def register_targets(target_group_arn: str, count: int, region: str = REGION,
                     endpoint_url: str | None = None) -> None:
    """Make exactly ``count`` healthy IP targets, as ECS would for that many running tasks."""
    elb = client("elbv2", region, endpoint_url)
    present = [t["Target"] for t in elb.describe_target_health(TargetGroupArn=target_group_arn)["TargetHealthDescriptions"]
               if t["TargetHealth"]["State"] == "healthy"]
    if len(present) > count:
        elb.deregister_targets(TargetGroupArn=target_group_arn, Targets=present[count:])
    wanted = [{"Id": f"10.0.0.{10 + i}", "Port": 8080} for i in range(count)]
    if count:
        elb.register_targets(TargetGroupArn=target_group_arn, Targets=wanted)


def desired_count(region: str = REGION, endpoint_url: str | None = None) -> int:
    described = client("ecs", region, endpoint_url).describe_services(cluster=CLUSTER, services=[SERVICE])
    return int(described["services"][0]["desiredCount"])


def service_state(region: str = REGION, endpoint_url: str | None = None) -> dict:
    """What a check compares before and after a run: the desired count and the scalable target."""
    ecs = client("ecs", region, endpoint_url).describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    targets = client("application-autoscaling", region, endpoint_url).describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[f"service/{CLUSTER}/{SERVICE}"])["ScalableTargets"]
    scalable = None
    if targets:
        t = targets[0]
        scalable = {"min": t["MinCapacity"], "max": t["MaxCapacity"], "suspended": t.get("SuspendedState")}
    return {"desired": ecs["desiredCount"], "scalable": scalable}
