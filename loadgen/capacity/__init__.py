"""Capacity controllers: how the experiment changes the number of running tasks.

Each kind lives in its own module, imported only when a profile uses it. A controller module
provides:

* ``validate_config(table: dict, where: str) -> dict`` - check the profile's
  ``[capacity.KIND]`` table (raising ``ProfileError``) and fill in defaults;
* ``build(config: dict, context: RunContext) -> CapacityController``.
"""

CONTROLLER_KINDS: dict[str, str] = {
    "local": "scalefinder.loadgen.capacity.local",
    "ecs": "scalefinder.loadgen.capacity.ecs",
    "command": "scalefinder.loadgen.capacity.command",
}
