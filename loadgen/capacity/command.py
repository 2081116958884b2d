"""A capacity controller that runs the team's own commands: ``kubectl scale``, a deploy script...

The profile gives up to five command templates and a few timeouts:

* ``scale`` sets the count, e.g. ``kubectl scale deployment/web --replicas={count}``;
* ``current`` prints the count of replicas running and taking traffic (its last output line);
* ``ready`` (optional) exits 0 once the service is healthy; it is polled after every change;
* ``prepare`` (optional) runs once before the run first changes the count: it holds still
  whatever else scales the service (pins a HorizontalPodAutoscaler, pauses Argo CD self-heal);
* ``restore`` (optional) undoes ``prepare``. It runs after the original count is back, so the
  autoscaler is released only once the service is as it was found, and it runs even when putting
  the count back failed: an autoscaler left held would keep the service from scaling long after
  the run. It may run more than once (a run that restored itself, then
  ``scalefinder restore --force``), so it must be idempotent, as a merge patch that sets values is.

Commands run without a shell: a template is split with ``shlex`` first and the values are put
into the words afterwards, so a value can never add a word or run something else. Only named
fields are filled in: ``{count}`` (in ``scale``), ``{original_count}`` (in ``prepare`` and
``restore``: the count the snapshot recorded before the run changed anything) and
``{control_url}``; any other braces (a kubectl JSONPath, a JSON patch, a go-template's
``{{...}}``) stay as written.

The snapshot records the ``restore`` template next to the original count, so that
``scalefinder restore RUN_DIR`` replays it after a run was killed hard; a snapshot without one
(a run recorded before these templates existed) falls back to the profile's.

For the embedded local cluster, which has no orchestrator of its own, the controller serves a
small control endpoint on 127.0.0.1 and passes its URL as ``{control_url}`` (and in the
``SCALEFINDER_CONTROL_URL`` environment variable): ``GET /count`` prints the count of tasks in
rotation, ``PUT /count/N`` scales to N and answers when that many are healthy.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scalefinder.loadgen.capacity.base import CapacityController
from scalefinder.loadgen.kind_config import seconds, whole_number, with_defaults
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError, ScalefinderError
from scalefinder.core.waiting import wait_until

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULTS: dict[str, Any] = {"ready": None, "prepare": None, "restore": None, "timeout_s": 300.0, "poll_s": 2.0,
                            "command_timeout_s": 60.0, "max_tasks": 100}
OPTIONAL_TEMPLATES = ("ready", "prepare", "restore")
# A field named in a template that does not fill it would reach the command as literal braces.
# (Only the new templates and field are checked, so older profiles load as they did.)
NOT_FILLED = {"prepare": "{count}", "restore": "{count}", "scale": "{original_count}",
              "current": "{original_count}", "ready": "{original_count}"}
STDERR_SHOWN_CHARS = 600
_COUNT = re.compile(r"^\s*(\d+)\s*$")


# -- configuration --------------------------------------------------------------------------


def validate_config(table: dict, where: str) -> dict:
    """Check ``[capacity.command]`` and fill in defaults."""
    config = with_defaults(table, where, DEFAULTS, required=("scale", "current"))
    for key in ("scale", "current", *OPTIONAL_TEMPLATES):
        if key in OPTIONAL_TEMPLATES and config[key] is None:
            continue
        _check_template(config.get(key), f"{where}.{key}", optional=key in OPTIONAL_TEMPLATES)
        if NOT_FILLED[key] in config[key]:
            filled_in = "scale" if NOT_FILLED[key] == "{count}" else "prepare and restore"
            raise ProfileError(f"{NOT_FILLED[key]} is filled in only in {filled_in}; here it would reach the "
                               f"command as written", key=f"{where}.{key}")
    if "{count}" not in config["scale"]:
        raise ProfileError("must contain {count} where the task count goes", key=f"{where}.scale")
    for key, low, high in (("timeout_s", 1, 7200), ("poll_s", 0.1, 300), ("command_timeout_s", 1, 3600)):
        config[key] = seconds(config[key], low, high, f"{where}.{key}")
    whole_number(config["max_tasks"], 1, f"{where}.max_tasks")
    return config


def _check_template(template: Any, key: str, optional: bool = False) -> None:
    missing = "expected a command line, or leave the key out" if optional else "required: a command line"
    if not isinstance(template, str) or not template.strip():
        raise ProfileError(missing, key=key)
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ProfileError(f"cannot be split into words ({exc}): {template!r}", key=key) from None
    if not words:
        raise ProfileError(missing, key=key)


def build(config: dict, context: Any) -> "CommandCapacityController":
    endpoint = None
    if getattr(context, "cluster", None) is not None:
        endpoint = ControlEndpoint(context.cluster, config["command_timeout_s"])
        endpoint.start()
    return CommandCapacityController(config, endpoint)


def fill(template: str, **values: Any) -> list[str]:
    """The argv of a template: split first, then each ``{name}`` replaced inside the words."""
    words = shlex.split(template)
    for name, value in values.items():
        words = [word.replace("{" + name + "}", str(value)) for word in words]
    return words


# -- the controller --------------------------------------------------------------------------


class CommandCapacityController(CapacityController):
    kind = "command"

    def __init__(self, config: dict, endpoint: "ControlEndpoint | None" = None):
        self.config = config
        self.endpoint = endpoint
        self.commands_run = 0
        self._original_count: int | None = None  # the count snapshot() found, for {original_count}

    @property
    def control_url(self) -> str:
        return self.endpoint.url if self.endpoint is not None else ""

    def current(self) -> int:
        output = self._run("current", self.config["current"])
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines:
            # Not read as 0: a snapshot of 0 would make the restore scale the service to zero.
            raise InfrastructureError(
                f"the current-count command printed nothing, where the count of ready replicas was expected: "
                f"{shlex.join(self._argv(self.config['current']))}. Make it print 0 when no replica is ready: "
                f"kubectl's -o jsonpath={{.status.readyReplicas}} prints nothing then (the field is absent), "
                f"while -o 'go-template={{{{or .status.readyReplicas 0}}}}' prints 0")
        match = _COUNT.match(lines[-1])
        if match is None:
            raise InfrastructureError(f"the current-count command printed {lines[-1][:100]!r}, not a whole number: "
                                      f"{shlex.join(self._argv(self.config['current']))}")
        return int(match.group(1))

    def snapshot(self) -> dict[str, Any]:
        self._original_count = self.current()
        snapshot: dict[str, Any] = {"kind": self.kind, "tasks": self._original_count}
        if self.config.get("restore") is not None:
            # Recorded with the count, so that `scalefinder restore` replays what this run would have.
            snapshot["restore_command"] = self.config.get("restore")
        return snapshot

    def prepare(self) -> None:
        """Run the ``prepare`` template, if any: before the run first changes the count."""
        template = self.config.get("prepare")
        if template is None:
            return
        if self._original_count is None and "{original_count}" in template:
            self._original_count = self.current()  # prepare() without a snapshot() first
        argv = self._argv(template, original_count=self._original_count)
        self._run_argv("prepare", argv)
        log.info("ran the prepare command: %s", shlex.join(argv))

    def scale_to(self, count: int, timeout_s: float | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= self.config["max_tasks"]:
            raise InputError(f"task count must be a whole number from 0 to capacity.command.max_tasks "
                             f"({self.config['max_tasks']}), got {count!r}")
        timeout_s = self.config["timeout_s"] if timeout_s is None else timeout_s
        started = time.monotonic()  # the scale command's own time counts against the timeout
        self._run("scale", self.config["scale"], count=count)
        last = {"check": ""}

        def ready() -> bool:
            running = self.current()
            last["check"] = self._ready() if running == count else f"{running} running"
            return running == count and not last["check"]

        wait_until(ready, timeout_s=timeout_s, interval_s=self.config["poll_s"], what=f"{count} ready tasks",
                   started_at=started, on_timeout=lambda: InfrastructureError(
                       f"the service did not reach {count} ready tasks within {timeout_s:g} s "
                       f"(last check: {last['check']})"))
        log.info("scaled to %d tasks", count)

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put the original count back, then run the ``restore`` template: the count first, while
        whatever ``prepare`` held is still held, and the template whatever became of the count."""
        tasks = snapshot.get("tasks")
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 0:
            raise InputError(f"the command controller's snapshot has no valid task count: {snapshot!r}")
        try:
            self._put_count_back(tasks)
        except BaseException as exc:
            failed = self._run_restore_template(snapshot, tasks, after_failure=True)
            if failed is not None and isinstance(exc, ScalefinderError):
                raise InfrastructureError(f"{exc}; then the restore command failed too, so what prepare "
                                          f"changed may still be in place: {failed}") from exc
            raise
        self._run_restore_template(snapshot, tasks)

    def _put_count_back(self, tasks: int) -> None:
        if self._needs_endpoint() and self.endpoint is None:
            log.info("nothing to restore: the local cluster the commands controlled went with its run")
            return
        if self.current() != tasks:
            self.scale_to(tasks)

    def _run_restore_template(self, snapshot: dict[str, Any], tasks: int, after_failure: bool = False) -> str | None:
        """Run the restore template, if any. After a failure to put the count back, its own
        failure is logged and returned rather than raised, so that the first error is not lost."""
        try:
            template = self._restore_template(snapshot)
            if template is None:
                return None
            if "{control_url}" in template and self.endpoint is None:
                log.info("the restore command was not run: the local cluster it addressed went with its run")
                return None
            argv = fill(template, control_url=self.control_url, original_count=tasks)
            self._run_argv("restore", argv)
        except ScalefinderError as exc:
            if not after_failure:
                raise
            log.error("%s", exc)
            return str(exc)
        log.info("ran the restore command: %s", shlex.join(argv))
        return None

    def _restore_template(self, snapshot: dict[str, Any]) -> str | None:
        """The snapshot's ``restore_command`` when it records one, else the profile's ``restore``
        (a manifest written before the snapshot carried the template has neither)."""
        if "restore_command" not in snapshot:
            return self.config.get("restore")
        template = snapshot["restore_command"]
        if template is None:
            return None
        try:
            _check_template(template, "restore_command")
        except ProfileError:
            raise InputError(f"the command controller's snapshot has an unusable restore_command: "
                             f"{template!r}") from None
        return template

    # -- running commands -------------------------------------------------------------------
    def _ready(self) -> str:
        """'' when there is no readiness command or it succeeds; otherwise why it is not ready."""
        if self.config["ready"] is None:
            return ""
        argv = self._argv(self.config["ready"])
        result = self._execute(argv)
        if result.returncode == 0:
            return ""
        return f"readiness command exited {result.returncode}: {_tail(result.stderr or result.stdout)}"

    def _run(self, role: str, template: str, **values: Any) -> str:
        return self._run_argv(role, self._argv(template, **values))

    def _run_argv(self, role: str, argv: list[str]) -> str:
        result = self._execute(argv)
        if result.returncode != 0:
            raise InfrastructureError(f"the {role} command failed with exit code {result.returncode}: "
                                      f"{shlex.join(argv)}: {_tail(result.stderr) or '(no error output)'}")
        return result.stdout

    def _argv(self, template: str, **values: Any) -> list[str]:
        if self._needs_endpoint() and self.endpoint is None:
            raise InputError("the commands use {control_url}, which only a local target (target.kind = "
                             "\"local\") provides")
        return fill(template, control_url=self.control_url, **values)

    def _execute(self, argv: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if self.endpoint is not None:
            env["SCALEFINDER_CONTROL_URL"] = self.control_url
        self.commands_run += 1
        log.debug("running %s", shlex.join(argv))
        timeout_s = self.config["command_timeout_s"]
        try:
            # A session of its own, so Ctrl-C in the terminal reaches the run but not the command.
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except FileNotFoundError:
            raise InfrastructureError(f"the program {argv[0]!r} was not found: {shlex.join(argv)}") from None
        except PermissionError:
            raise InfrastructureError(f"the program {argv[0]!r} is not executable: {shlex.join(argv)}") from None
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise InfrastructureError(f"{shlex.join(argv)} did not finish within {timeout_s:g} s") from None
        except BaseException:
            # Interrupted: let a scale command finish rather than leave the service half-changed;
            # the run restores the count next, with these same commands.
            try:
                process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(process)
            raise
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    def _needs_endpoint(self) -> bool:
        templates = (self.config.get(key) or "" for key in ("scale", "current", *OPTIONAL_TEMPLATES))
        return any("{control_url}" in template for template in templates)


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.communicate()


def _tail(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= STDERR_SHOWN_CHARS else "..." + text[-STDERR_SHOWN_CHARS:]


# -- the local cluster's control endpoint ------------------------------------------------------


class ControlEndpoint:
    """``GET /count`` and ``PUT /count/N`` for a running ``LocalCluster``, on 127.0.0.1."""

    def __init__(self, cluster: Any, scale_timeout_s: float):
        self.cluster = cluster
        self.scale_timeout_s = scale_timeout_s
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()  # one scale at a time, as an orchestrator would

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}" if self._server is not None else ""

    def start(self) -> None:
        try:
            self._server = ThreadingHTTPServer((HOST, 0), _control_handler(self))
        except OSError as exc:
            raise InfrastructureError(f"the local control endpoint cannot listen on {HOST} ({exc})") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="control-endpoint", daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def count(self) -> int:
        return len(self.cluster.running_tasks())

    def scale(self, count: int) -> None:
        with self._lock:
            self.cluster.scale_to(count, timeout_s=self.scale_timeout_s)


def _control_handler(endpoint: ControlEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            if self.path == "/count":
                self._reply(200, f"{endpoint.count()}\n")
            else:
                self._reply(404, "not found: GET /count or PUT /count/N\n")

        def do_PUT(self) -> None:  # noqa: N802
            match = re.fullmatch(r"/count/(\d+)", self.path)
            if match is None:
                self._reply(404, "not found: PUT /count/N\n")
                return
            try:
                endpoint.scale(int(match.group(1)))
            except (InputError, InfrastructureError) as exc:
                self._reply(409 if isinstance(exc, InputError) else 503, f"{exc}\n")
                return
            self._reply(200, f"{endpoint.count()}\n")

        def _reply(self, status: int, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("control endpoint: " + format, *args)

    return Handler
