"""What a metric source or capacity controller may use when it is built for a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class RunContext:
    #: the validated profile (``loadgen.profile.Profile``)
    profile: Any
    #: the running ``LocalCluster`` when the target is local, else None
    cluster: Any | None = None
    #: ``on_event(kind, **detail)``: record an event in the run directory
    on_event: Callable[..., None] = lambda kind, **detail: None
    #: options from the command line, e.g. ``aws_region``, ``aws_profile``
    options: dict[str, Any] = field(default_factory=dict)
