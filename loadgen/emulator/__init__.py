"""Emulated cloud services around the local cluster, so the AWS code path runs offline with known
ground truth. ``EcsEmulator`` (``scalefinder cluster --emulate ecs``) is an ECS service with
Container Insights, an Application Load Balancer, Application Auto Scaling and SQS."""

from scalefinder.loadgen.emulator.ecs import EcsEmulator

__all__ = ["EcsEmulator"]
