"""The run side: everything that happens while load is applied.

``profile``   parse and validate an experiment profile (TOML)
``plan``      turn a profile into the steps of a staged ramp
``engine``    the Locust engine (the only code that imports locust), run in its own process
``experiment`` the phases: ramp at n tasks, replay at 2n, restore; writes the run directory
``cluster``   the embedded local cluster: archetype tasks, cgroups, load balancer
``sources``   metric sources (local process metrics, CloudWatch, Prometheus)
``capacity``  capacity controllers (local cluster, ECS, a shell command)
"""
