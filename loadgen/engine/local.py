"""One generator in the engine process itself: the default, single-machine mode."""

from __future__ import annotations

import os
from typing import Any, Callable

from scalefinder.loadgen.engine.generator import Generator


class LocalDriver:
    def __init__(self, config: dict[str, Any], emit: Callable[[dict[str, Any]], None]):
        self.generator = Generator(config, emit)

    def pids(self) -> list[int]:
        return [os.getpid()]

    def handle(self, command: dict[str, Any]) -> None:
        kind = command["cmd"]
        if kind == "rate":
            self.generator.set_rate(command["step_id"], command["rate_rps"])
        elif kind == "pause":
            self.generator.pause()
        elif kind == "stop":
            self.generator.stop()
        else:
            raise ValueError(f"unknown engine command {kind!r}")

    def close(self) -> None:
        self.generator.close()
