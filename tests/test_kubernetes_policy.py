"""Kubernetes renderings: the HPA and the KEDA ScaledObject, checked against the schemas a cluster
would check them against, and ``scalefinder policy RUN_DIR --format FORMAT``."""

import json
import math
from importlib import resources

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from scalefinder.analysis import kubernetes, policy
from scalefinder.analysis.command import analyze
from scalefinder.analysis.deployment import AwsNames, Deployment, PrometheusFacts, Resources
from scalefinder.analysis.recommend import step_thresholds
from scalefinder.cli import cli
from scalefinder.core import catalog, quantity
from scalefinder.core.errors import ProfileError
from scalefinder.core.models import KubernetesSettings
from tests.synthetic import write_synthetic_run

KUBERNETES = {"namespace": "shop", "workload": "deployment/web", "cpu_request": "100m", "memory_request": "128Mi",
              "min_replicas": 3, "max_replicas": 30}


def _run(tmp_path, kind, kubernetes=None, sources=None, capacity=None, **kwargs):
    path = write_synthetic_run(tmp_path / kind, kind, **kwargs)
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if kubernetes is not None:
        manifest["profile"]["kubernetes"] = kubernetes
    if sources is not None:
        manifest["sources"].update(sources)
    if capacity is not None:
        manifest["profile"]["capacity"] = capacity
    manifest_path.write_text(json.dumps(manifest))
    findings = analyze(path)
    assert findings["verdict"] == "recommended", findings["headline"]
    return path, findings


def _policy(path, fmt, *extra):
    result = CliRunner().invoke(cli, ["policy", str(path), "--format", fmt, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def _validate_hpa(document):
    for version in kubernetes.kubernetes_versions():
        kubernetes_validate.validate(document, version, strict=True)


def _keda_schema():
    text = resources.files("scalefinder.analysis").joinpath("schemas/keda-scaledobject-v1alpha1.json").read_text()
    return json.loads(text)


def test_hpa_converts_the_share_of_the_limit_to_a_share_of_the_requests(tmp_path):
    # cpu_units 128 is a 125m limit; the pod requests 100m, so 62% of the limit is 78% of the request
    path, findings = _run(tmp_path, "cpu", kubernetes=KUBERNETES, cpu_units=128)
    target = findings["recommendation"]["target"]
    text = _policy(path, "hpa")
    document = yaml.safe_load(text)
    _validate_hpa(document)
    assert document["metadata"] == {"name": "web", "namespace": "shop"}
    assert document["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert (document["spec"]["minReplicas"], document["spec"]["maxReplicas"]) == (3, 30)
    [metric] = document["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == math.floor(target * 125 / 100)
    assert "100m request" in text and "125m limit" in text and "[kubernetes] table" in text
    conversion = findings["recommendation"]["policies"]["kubernetes"]["conversion"]
    assert conversion["request"] == "100m" and conversion["limit"] == "125m"
    assert conversion["measured_share_of_limit_pct"] == target


def test_hpa_without_a_request_says_it_took_the_limit(tmp_path):
    path, findings = _run(tmp_path, "cpu")
    text = _policy(path, "hpa")
    document = yaml.safe_load(text)
    _validate_hpa(document)
    target = findings["recommendation"]["target"]
    assert document["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == math.floor(target)
    assert "no CPU request known" in text
    assert document["metadata"]["name"] == kubernetes.WORKLOAD_PLACEHOLDER


def test_behavior_follows_the_step_scaling_advice():
    step = step_thresholds(70.0, 100.0, 1)
    behavior = kubernetes.hpa_behavior(step)
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {"type": "Percent", "value": max(step["adjustments"]), "periodSeconds": 60} in behavior["scaleUp"]["policies"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == policy.SCALE_IN_COOLDOWN_S
    assert behavior["scaleDown"]["policies"][0]["value"] == abs(step["scale_in_adjustment"])


def test_keda_on_a_queue_run_targets_the_backlog_per_task(tmp_path):
    path, findings = _run(tmp_path, "queue", kubernetes=KUBERNETES)
    target = findings["recommendation"]["target"]
    assert findings["recommendation"]["metric"] == catalog.QUEUE_BACKLOG_PER_TASK
    document = yaml.safe_load(_policy(path, "keda"))
    jsonschema.validate(document, _keda_schema())
    [trigger] = document["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert float(trigger["metadata"]["threshold"]) == target  # KEDA divides the total by the replicas
    assert document["spec"]["scaleTargetRef"]["name"] == "web"
    hpa = yaml.safe_load(_policy(path, "hpa"))
    _validate_hpa(hpa)
    assert hpa["spec"]["metrics"][0]["type"] == "External"
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "queue_backlog"  # the whole queue, per pod
    assert quantity.parse(hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"]) == pytest.approx(target)


@pytest.mark.parametrize("trigger,key", [("aws-sqs-queue", "queueLength"), ("rabbitmq", "value"),
                                         ("kafka", "lagThreshold"), ("redis", "listLength")])
def test_each_broker_trigger_carries_the_target(tmp_path, trigger, key):
    settings = {**KUBERNETES, "keda_trigger": trigger, "trigger_metadata": {"queueName": "jobs"}
                if trigger == "rabbitmq" else {}}
    path, findings = _run(tmp_path, "queue", kubernetes=settings)
    target = findings["recommendation"]["target"]
    text = _policy(path, "keda")
    document = yaml.safe_load(text)
    jsonschema.validate(document, _keda_schema())
    [rendered] = document["spec"]["triggers"]
    assert rendered["type"] == trigger
    value = rendered["metadata"][key]
    assert isinstance(value, str)  # KEDA reads every metadata value as a string
    if trigger == "rabbitmq":
        assert float(value) == target and rendered["metadata"]["queueName"] == "jobs"
    else:  # these triggers parse a whole number: rounded down, and said so
        assert int(value) == max(1, math.floor(target))
        if int(value) != target:
            assert "rounded down" in text
    if trigger == "aws-sqs-queue":
        assert rendered["metadata"]["scaleOnInFlight"] == "false"  # the run measured visible messages only
    assert rendered["authenticationRef"]["name"] == kubernetes.TRIGGER_AUTH_PLACEHOLDER


def test_sqs_queue_and_ecs_names_come_from_the_profile(tmp_path):
    capacity = {"controller": "ecs", "tasks": 2, "config": {"cluster": "staging", "service": "jobs-worker",
                                                            "region": "eu-west-1"}}
    path, _ = _run(tmp_path, "queue", capacity=capacity)
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["profile"]["sources"] = {"cloudwatch": {"cluster": "staging", "service": "jobs-worker",
                                                     "queue_name": "jobs", "region": "eu-west-1"}}
    manifest_path.write_text(json.dumps(manifest))
    analyze(path)
    request = json.loads(_policy(path, "aas-json"))
    assert request["ResourceId"] == "service/staging/jobs-worker"
    dimensions = [m["MetricStat"]["Metric"]["Dimensions"] for m in
                  request["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
                  if "MetricStat" in m]
    assert [{"Name": "QueueName", "Value": "jobs"}] in dimensions
    keda = yaml.safe_load(_policy(path, "keda"))
    [trigger] = keda["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"  # the run read an SQS queue
    assert trigger["metadata"]["queueURL"] == "jobs" and trigger["metadata"]["awsRegion"] == "eu-west-1"
    step = json.loads(_policy(path, "aas-json", "--kind", "step"))
    assert {a["AlarmName"] for a in step["PutMetricAlarm"]} == {"jobs-worker-queue_backlog_per_task-high",
                                                               "jobs-worker-queue_backlog_per_task-low"}


def test_a_per_pod_metric_gets_a_pods_metric_and_the_adapter_rule(tmp_path):
    query = 'sum by (pod) (app_in_flight{namespace="shop", pod=~"web-.*"})'
    prometheus = {"prometheus": {"url": "http://prometheus.monitoring:9090", "task_label": "pod",
                                 "queries": {catalog.CONCURRENCY_PER_TASK: query}}}
    path, findings = _run(tmp_path, "workers", kubernetes=KUBERNETES, sources=prometheus)
    target = findings["recommendation"]["target"]
    assert findings["recommendation"]["metric"] == catalog.CONCURRENCY_PER_TASK
    hpa = yaml.safe_load(_policy(path, "hpa"))
    _validate_hpa(hpa)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "requests_in_flight"
    assert quantity.parse(metric["pods"]["target"]["averageValue"]) == pytest.approx(target)
    rule = yaml.safe_load(_policy(path, "prometheus-adapter"))["rules"][0]
    assert rule["seriesQuery"].startswith("app_in_flight{") and rule["name"]["as"] == "requests_in_flight"
    keda = yaml.safe_load(_policy(path, "keda"))
    [trigger] = keda["spec"]["triggers"]
    assert trigger["metadata"] == {"serverAddress": "http://prometheus.monitoring:9090",
                                   "query": f"sum({query})", "threshold": f"{target:g}"}


def test_a_broken_manifest_is_refused_not_shipped():
    step = step_thresholds(70.0, 100.0, 1)
    deployment = Deployment(AwsNames(), KubernetesSettings(), Resources(), None, 2)
    rendering = kubernetes.render(catalog.CPU_UTILIZATION, 70.0, step, deployment)
    hpa = yaml.safe_load(rendering.hpa)
    hpa["spec"]["targetCPUUtilizationPercentage"] = 70  # autoscaling/v1's field, not v2's
    with pytest.raises(kubernetes.ManifestShapeError, match="targetCPUUtilizationPercentage"):
        kubernetes.validate_hpa(hpa)
    keda = yaml.safe_load(rendering.keda)
    keda["spec"]["triggers"][0]["metadata"]["value"] = 70  # KEDA's metadata values are strings
    with pytest.raises(kubernetes.ManifestShapeError):
        kubernetes.validate_scaled_object(keda)
    keda = yaml.safe_load(rendering.keda)
    keda["spec"]["minReplicas"] = 2  # the HPA's spelling, which the API server would drop
    with pytest.raises(kubernetes.ManifestShapeError, match="minReplicas"):
        kubernetes.validate_scaled_object(keda)
    keda = yaml.safe_load(rendering.keda)
    keda["spec"]["triggers"] = [{"type": "aws-sqs-queue", "metadata": {"queueURL": "q", "awsRegion": "x",
                                                                       "queueLength": "2.5"}}]
    with pytest.raises(kubernetes.ManifestShapeError, match="whole number"):
        kubernetes.validate_scaled_object(keda)


def test_memory_conversion_uses_the_memory_request():
    step = step_thresholds(60.0, 100.0, 1)
    resources_ = Resources(0.5, 512 * quantity.MIB, "the limit", None, 256 * quantity.MIB, "the profile")
    deployment = Deployment(AwsNames(), KubernetesSettings(), resources_, None, 2)
    rendering = kubernetes.render(catalog.MEMORY_UTILIZATION, 60.0, step, deployment)
    hpa = yaml.safe_load(rendering.hpa)
    assert hpa["spec"]["metrics"][0]["resource"] == {"name": "memory", "target": {
        "type": "Utilization", "averageUtilization": 120}}
    assert "256Mi request" in rendering.hpa and "512Mi limit" in rendering.hpa


def test_policy_on_an_inconclusive_run_says_why(tmp_path):
    path = write_synthetic_run(tmp_path / "run", "cpu", steps=[0.2, 0.4])
    findings = analyze(path)
    assert findings["verdict"] == "inconclusive"
    result = CliRunner().invoke(cli, ["policy", str(path), "--format", "hpa"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "no recommended policy" in result.output
    missing = CliRunner().invoke(cli, ["policy", str(tmp_path / "nowhere"), "--format", "hpa"])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1


@pytest.mark.parametrize("table,key", [
    ({"workload": "pod/web"}, "workload"),
    ({"cpu_request": "a lot"}, "cpu_request"),
    ({"min_replicas": 5, "max_replicas": 2}, "max_replicas"),
    ({"keda_trigger": "nats"}, "keda_trigger"),
    ({"trigger_metadata": {"host": "amqp://user:secret@rabbit"}}, "trigger_metadata.host"),
    ({"namespace": "Shop"}, "namespace"),
    ({"replicas": 2}, "replicas"),
])
def test_the_kubernetes_table_is_checked_when_the_profile_loads(tmp_path, table, key):
    from scalefinder.loadgen.profile import load_profile

    text = (resources.files("scalefinder.profiles") / "demo.toml").read_text()
    text = text.split("[kubernetes]")[0]
    lines = ["[kubernetes]"]
    for name, value in table.items():
        if isinstance(value, dict):
            lines.append(f"{name} = {{ " + ", ".join(f'{k} = "{v}"' for k, v in value.items()) + " }")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    path = tmp_path / "profile.toml"
    path.write_text(text + "\n".join(lines) + "\n")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert f"[kubernetes.{key}]" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_quantities_read_and_write_as_kubernetes_does():
    assert quantity.parse("250m") == 0.25 and quantity.parse("2") == 2.0 and quantity.parse(0.5) == 0.5
    assert quantity.parse("512Mi") == 512 * 2 ** 20 and quantity.parse("1G") == 1e9
    assert (quantity.cpu(0.25), quantity.cpu(2.0), quantity.memory(3 * 2 ** 30), quantity.plain(14.5)) == \
        ("250m", "2", "3Gi", "14500m")
    for bad in ("", "-1", "1e3", "12 Mi", True, float("nan")):
        with pytest.raises(quantity.QuantityError):
            quantity.parse(bad)


def test_prometheus_facts_name_the_series(tmp_path):
    facts = PrometheusFacts("http://p:9090", {catalog.REQUESTS_PER_TASK: "sum by (pod) (rate(http_server_requests_total{a=\"b\"}[1m]))"})
    deployment = Deployment(AwsNames(), KubernetesSettings(), Resources(), facts, 2)
    rendering = kubernetes.render(catalog.REQUESTS_PER_TASK, 12.0, step_thresholds(12.0, 20.0, 2), deployment)
    rule = yaml.safe_load(rendering.prometheus_adapter)["rules"][0]
    assert rule["seriesQuery"].startswith("http_server_requests_total{")
    assert "rate(<<.Series>>" in rule["metricsQuery"] and rule["name"]["as"] == "requests_per_second"


def test_requests_read_through_prometheus_are_used_and_named():
    from scalefinder.analysis import deployment
    from scalefinder.core.models import RunManifest

    manifest = RunManifest.from_dict({
        "kind": "scalefinder-run", "schema_version": 1, "run_id": "r", "status": "complete",
        "profile": {"name": "web", "kubernetes": {"namespace": "shop", "workload": "deployment/web"},
                    "sources": {"prometheus": {"url": "http://prometheus:9090"}}},
        "target": {"kind": "url"}, "capacity": {"initial_tasks": 2},
        "sources": {"prometheus": {"url": "http://prometheus:9090", "task_label": "pod", "queries": {},
                                   "resources": {"cpu_request_cores": 0.25, "memory_request_bytes": None,
                                                 "cpu_limit_cores": 1.0, "memory_limit_bytes": 2 ** 30,
                                                 "source": "kube-state-metrics via Prometheus"}}}})
    facts = deployment.from_manifest(manifest)
    assert facts.resources.request_source == "kube-state-metrics via Prometheus"
    rendering = kubernetes.render(catalog.CPU_UTILIZATION, 30.0, step_thresholds(30.0, 50.0, 1), facts)
    hpa = yaml.safe_load(rendering.hpa)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 120  # 30% of 1 core = 120% of 250m
    assert "250m request (request from kube-state-metrics via Prometheus" in rendering.hpa
    assert facts.prometheus is not None and facts.prometheus.url == "http://prometheus:9090"
    # the profile's own request wins over what kube-state-metrics said
    profile = dict(manifest.data["profile"], kubernetes={"cpu_request": "500m"})
    overridden = deployment.from_manifest(RunManifest.from_dict(dict(manifest.data, profile=profile)))
    assert overridden.resources.cpu_request_cores == 0.5
    assert overridden.resources.request_source == "the profile's [kubernetes] table"


def test_an_ecs_run_converts_against_its_task_definition():
    from scalefinder.analysis import deployment
    from scalefinder.core.models import RunManifest

    manifest = RunManifest.from_dict({
        "kind": "scalefinder-run", "schema_version": 1, "run_id": "r", "status": "complete",
        "profile": {"name": "web", "kubernetes": {"cpu_request": "250m"}}, "target": {"kind": "url"},
        "sources": {"cloudwatch": {"kind": "cloudwatch", "task_cpu_units": 512, "task_memory_mib": 1024}}})
    resources = deployment.from_manifest(manifest).resources
    assert (resources.cpu_limit_cores, resources.memory_limit_bytes) == (0.5, 1024 * quantity.MIB)
    assert resources.limit_source == "the ECS task definition's reservation"
