"""Will the policy hold? A minute-by-minute simulation of an ECS service under a scaling policy.

The service is modelled from one analyzed run (``model``): how the scaling metric and the p95
latency move with the load per task, the capacity per task, and how long new tasks took to
start. A demand curve (``demand``) drives it; a policy with Application Auto Scaling's
semantics (``policies``) decides the task count from one-minute datapoints; ``simulator`` steps
the clock and sums breach minutes and task-hours. ``docs/simulate.md`` cites the documented
behaviour each part follows and where the real service is uncertain.
"""
