"""Metric sources: where utilization samples come from during a run.

Each kind lives in its own module, imported only when a profile uses it (so a profile without
CloudWatch never imports boto3). A source module provides:

* ``validate_config(table: dict, where: str) -> dict`` - check the profile's ``[sources.KIND]``
  table, raising ``ProfileError`` with the key at fault, and return it with defaults filled in;
* ``build(config: dict, context: RunContext) -> MetricSource``.
"""

SOURCE_KINDS: dict[str, str] = {
    "local": "scalefinder.loadgen.sources.local",
    "cloudwatch": "scalefinder.loadgen.sources.cloudwatch",
    "prometheus": "scalefinder.loadgen.sources.prometheus",
}
