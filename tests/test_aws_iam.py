"""`scalefinder iam-policy`: the least-privilege policy a profile needs, and the ECS example profile."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from scalefinder.loadgen.profile import load_profile
from scalefinder.cli import cli

EXAMPLE = Path(__file__).resolve().parent.parent / "profiles" / "ecs-staging.example.toml"
CHANGES = {"ecs:UpdateService", "application-autoscaling:RegisterScalableTarget"}


def _policy(path: Path) -> dict:
    result = CliRunner().invoke(cli, ["iam-policy", str(path)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _actions(policy: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in statement["Action"]:
            found.setdefault(action, set()).add(statement["Resource"])
    return found


def test_example_profile_loads_and_needs_reads_and_capacity_changes():
    profile = load_profile(EXAMPLE)
    assert profile.capacity.controller == "ecs" and "cloudwatch" in profile.sources
    policy = _policy(EXAMPLE)
    assert policy["Version"] == "2012-10-17"
    assert len({s["Sid"] for s in policy["Statement"]}) == len(policy["Statement"])
    actions = _actions(policy)
    assert set(actions) == {
        "cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "ecs:DescribeServices", "ecs:DescribeClusters",
        "ecs:DescribeTaskDefinition", "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetHealth", "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DescribeScalingPolicies", *CHANGES,
        # the service's own tasks and their addresses, to count only its targets in a shared group
        "ecs:ListTasks", "ecs:DescribeTasks", "ecs:DescribeContainerInstances",
    }
    assert actions["ecs:UpdateService"] == {"arn:aws:ecs:eu-west-1:*:service/staging/web"}
    assert actions["ecs:DescribeClusters"] == {"arn:aws:ecs:eu-west-1:*:cluster/staging"}


def test_without_the_ecs_controller_the_policy_is_read_only(tmp_path):
    text = EXAMPLE.read_text()
    start = text.index("[capacity]")
    end = text.index("[sources.cloudwatch]")
    read_only = text[:start] + '[capacity]\ncontroller = "local"\ntasks = 2\n\n' + text[end:]
    profile = tmp_path / "read-only.toml"
    profile.write_text(read_only.replace('task_metrics = "auto"', "task_metrics = false"))
    actions = _actions(_policy(profile))
    assert not CHANGES & set(actions)
    assert "cloudwatch:ListMetrics" not in actions and "cloudwatch:GetMetricData" in actions
    assert all(action.split(":")[1].startswith(("Describe", "Get")) for action in actions)


def test_a_profile_without_aws_is_an_input_error(tmp_path):
    demo = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"
    result = CliRunner().invoke(cli, ["iam-policy", str(demo)])
    assert result.exit_code == 2
    assert "needs no IAM permissions" in result.output
