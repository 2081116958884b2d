"""Command-line options shared by the commands that may talk to AWS (no boto3 import here)."""

from __future__ import annotations

from typing import Any, Callable

import click

from scalefinder.loadgen.kind_config import with_defaults
from scalefinder.core.errors import ProfileError


def aws_options(command: Callable) -> Callable:
    """Add ``--region`` and ``--profile`` (AWS CLI conventions) as ``aws_region``/``aws_profile``."""
    command = click.option("--profile", "aws_profile", default=None, metavar="NAME",
                           help="AWS named profile, as in the AWS CLI (default: AWS_PROFILE).")(command)
    return click.option("--region", "aws_region", default=None, metavar="REGION",
                        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the AWS profile's).")(command)


def service_table(table: dict, where: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Check the keys every ECS-facing profile table shares and fill in ``defaults``.

    ``[sources.cloudwatch]`` and ``[capacity.ecs]`` both name the ECS cluster and service; each
    then checks its own keys on the returned copy.
    """
    config = with_defaults(table, where, defaults, required=("cluster", "service"))
    for key in ("cluster", "service"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise ProfileError("required: the ECS name as a string", key=f"{where}.{key}")
    return config
