"""Command-line options shared by the commands that may talk to AWS (no boto3 import here)."""

from __future__ import annotations

from typing import Callable

import click


def aws_options(command: Callable) -> Callable:
    """Add ``--region`` and ``--profile`` (AWS CLI conventions) as ``aws_region``/``aws_profile``."""
    command = click.option("--profile", "aws_profile", default=None, metavar="NAME",
                           help="AWS named profile, as in the AWS CLI (default: AWS_PROFILE).")(command)
    return click.option("--region", "aws_region", default=None, metavar="REGION",
                        help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or the AWS profile's).")(command)
