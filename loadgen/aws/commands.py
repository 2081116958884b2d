"""``scalefinder iam-policy PROFILE``."""

from __future__ import annotations

import json

import click

from scalefinder.loadgen.aws.iam import policy_for


@click.command("iam-policy")
@click.argument("profile_path", metavar="PROFILE", type=click.Path(dir_okay=False))
def iam_policy_command(profile_path: str) -> None:
    """Print the least-privilege IAM policy (JSON) that PROFILE needs on AWS.

    Read access for the CloudWatch source; capacity changes only when the ECS controller is used.
    """
    from scalefinder.loadgen.profile import load_profile

    click.echo(json.dumps(policy_for(load_profile(profile_path)), indent=2))
