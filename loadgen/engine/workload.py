"""What one arrival does: a request of the profile's mix, or one task of the team's User classes.

Runs inside the engine process, under gevent. A profile's request mix becomes a FastHttpUser
whose single task picks a weighted request; a locustfile's User classes are used as they are,
except that the open model replaces their wait times: each arrival borrows an idle user
instance, runs one of its tasks (weighted as Locust weighs them), and gives it back.

Redirects are never followed, by either Locust client: the Location of a redirect may name a
host that is not in the profile's ``allowed_hosts``. A 3xx answer is the response, measured and
counted as one of its status.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import random
import sys
from pathlib import Path
from typing import Any, Callable

from locust import HttpUser, User, task
from locust.contrib.fasthttp import FastHttpUser
from locust.user.task import TaskSet

logger = logging.getLogger(__name__)


def build_user_classes(config: dict[str, Any]) -> list[type[User]]:
    """The User classes arrivals are drawn from, with the target host and timeouts set."""
    if config.get("requests"):
        classes = [_mix_user_class(config["requests"])]
    else:
        classes = _locustfile_user_classes(config["locustfile_path"], config.get("user_classes") or [])
    for cls in classes:
        cls.host = config["host"]
        if issubclass(cls, FastHttpUser):
            cls.network_timeout = config["timeout_s"]
            cls.connection_timeout = config["timeout_s"]
            cls.max_retries = 0
            cls.max_redirects = 0  # the client then returns the 3xx itself, even with allow_redirects
    return classes


def _mix_user_class(requests: list[dict[str, Any]]) -> type[User]:
    pick = _weighted_picker(requests, [r["weight"] for r in requests])

    class MixUser(FastHttpUser):
        abstract = False

        @task
        def send(self) -> None:
            spec = pick()
            self.client.request(spec["method"], spec["path"], name=spec["name"],
                                data=spec.get("body"), headers=spec.get("headers") or None)

    return MixUser


def _locustfile_user_classes(path: str, wanted: list[str]) -> list[type[User]]:
    module_name = "scalefinder_locustfile_" + Path(path).stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    found = {
        name: obj for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, User) and not obj.__dict__.get("abstract", False)
        and obj.tasks
    }
    if wanted:
        missing = [name for name in wanted if name not in found]
        if missing:
            raise ValueError(f"{path} defines no runnable User class named {', '.join(missing)}")
        return [found[name] for name in wanted]
    if not found:
        raise ValueError(f"{path} defines no runnable User class (a User subclass with tasks)")
    return list(found.values())


class UserPool:
    """Idle user instances per class, created on demand so concurrency follows the arrivals."""

    def __init__(self, environment: Any, classes: list[type[User]]):
        self.environment = environment
        self.classes = classes
        self.pick_class = _weighted_picker(classes, [getattr(cls, "weight", 1) or 1 for cls in classes])
        self._idle: dict[type[User], list[User]] = {cls: [] for cls in classes}

    def acquire(self, cls: type[User]) -> User:
        idle = self._idle[cls]
        if idle:
            return idle.pop()
        user = cls(self.environment)
        refuse_redirects(user)
        user.on_start()
        return user

    def release(self, user: User) -> None:
        self._idle[type(user)].append(user)


def refuse_redirects(user: User) -> None:
    """Make an HttpUser's session return a redirect instead of following it (a FastHttpUser is
    set up by its class, see ``build_user_classes``).

    requests follows a redirect whenever it finds a target for it, whatever ``max_redirects``
    (0 raises instead of answering), so the session is told that no response has one.
    """
    if isinstance(user, HttpUser):
        user.client.get_redirect_target = lambda response: None


def run_one_task(user: User) -> None:
    """Run one task of ``user`` chosen the way Locust weighs them, descending into a TaskSet once.

    Locust lists a task of weight w w times in ``tasks``, so a uniform choice is a weighted one.
    """
    tasks = user.tasks
    chosen = tasks[0] if len(tasks) == 1 else random.choice(tasks)
    if inspect.isclass(chosen) and issubclass(chosen, TaskSet):
        task_set = chosen(user)
        inner = random.choice(task_set.tasks)
        inner(task_set)
    else:
        chosen(user)


def _weighted_picker(items: list[Any], weights: list[float]) -> Callable[[], Any]:
    """A function returning one of ``items`` at random by weight; it runs once per arrival, so a
    single item skips the draw and several are drawn against cumulative weights computed once."""
    if len(items) == 1:
        only = items[0]
        return lambda: only
    cumulative = list(itertools.accumulate(weights))
    return lambda: random.choices(items, cum_weights=cumulative)[0]
