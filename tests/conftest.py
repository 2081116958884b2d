"""Fixtures shared across test files.

The demo (``scalefinder demo``: run, analyze, report of ``profiles/demo.toml``) is the longest
thing the suite does, so it runs once per session and several files check what it produced: the
run directory (test_run_command.py), the analysis of a real CPU-bound run (test_analysis_real.py)
and the command's own output (test_demo.py). It starts in the background as soon as the tests
are collected, and the tests that start no process run first, while the demo runs: they use one
core, the demo's two small tasks and its generator the other.

The whole suite runs on pytest-xdist (``-n auto``): every test marked ``load`` goes to one
worker, where they run one after another as they would without xdist, while the other workers
take the tests that send no load.
The grouping is done here (``LoadTogether``) rather than with xdist's ``--dist loadgroup``, which
pytest 9.2 no longer honours (xdist renames ``item._nodeid``, which pytest stopped reading):
each worker writes the ids of its load tests to a file the controller's scheduler reads once all
collections are in. Under xdist the demo starts with the load worker's first load test, instead
of at collection (where every worker would start one), and the demo's readers are its last load
tests, so the others run while the demo does (each load test must pass on a busy machine).

``--fast`` is the development tier: only tests that start no process and send no load (the
analysis, the models, the profile, the CLI in-process). Tests that start processes are marked
``processes`` (or ``load`` when they also send load); in the fast tier, starting one anyway
fails the test with a message that says which marker it needs.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# The moto server and a clean account in it (the ``aws`` fixture), for the AWS tests.
pytest_plugins = ["tests.moto_server"]

ROOT = Path(__file__).resolve().parents[1]
SLOW_MARKERS = ("load", "processes", "browser", "prometheus")
DEMO_TIMEOUT_S = 600


def pytest_addoption(parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="the development tier: skip tests marked " + ", ".join(SLOW_MARKERS))


def _is_slow(item) -> bool:
    return any(item.get_closest_marker(name) for name in SLOW_MARKERS)


def _distributed(config) -> bool:
    return hasattr(config, "workerinput")  # this process is a pytest-xdist worker


LOAD_SCOPE = "load"
_LOAD_IDS_DIR: list[str] = []  # the controller's folder for the workers' lists of load tests


@pytest.hookimpl(optionalhook=True)
def pytest_configure(config) -> None:
    # A shell that starts a command in the background without job control (`nohup ... &` in a
    # script) starts it with SIGINT ignored, and every child inherits that: the tests that stop
    # the product with Ctrl-C would then test nothing and fail. Python's own handler is put back
    # so the suite behaves the same however it is started; a child's exec resets it to default.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure_node(node) -> None:
    """Controller side: tell each worker where to write the ids of its load tests."""
    if not _LOAD_IDS_DIR:
        _LOAD_IDS_DIR.append(tempfile.mkdtemp(prefix="scalefinder-load-ids-"))
        node.config.add_cleanup(lambda: shutil.rmtree(_LOAD_IDS_DIR[0], ignore_errors=True))
    node.workerinput["load_ids_dir"] = _LOAD_IDS_DIR[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Controller side: xdist's scope scheduling, with every load test in one scope."""
    from xdist.scheduler import LoadScopeScheduling

    class LoadTogether(LoadScopeScheduling):
        _load_ids: set[str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._load_ids is None:  # first called once every worker has sent its collection
                folder = Path(_LOAD_IDS_DIR[0]) if _LOAD_IDS_DIR else None
                self._load_ids = {line for path in (folder.glob("*.txt") if folder else ())
                                  for line in path.read_text().splitlines()}
            return LOAD_SCOPE if nodeid in self._load_ids else nodeid

    return LoadTogether(config, log)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected theirs
def pytest_collection_modifyitems(config, items) -> None:
    if config.getoption("--fast"):
        dropped = [item for item in items if _is_slow(item)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if not _is_slow(item)]
    if _distributed(config):
        # The load tests are the longest line of work: first in the order, so handed out first;
        # among them, the demo's readers last, so the demo runs while the others do.
        items.sort(key=lambda item: (item.get_closest_marker("load") is None, _reads_the_demo(item)))
        config.stash[_DEMO_WANTED] = any(_reads_the_demo(item) for item in items)
        folder = config.workerinput.get("load_ids_dir")
        if folder:
            ids = [item.nodeid for item in items if item.get_closest_marker("load")]
            (Path(folder) / f"{config.workerinput['workerid']}.txt").write_text("\n".join(ids))
        return
    # The fast tests first (a stable sort keeps the file order within each tier).
    items.sort(key=_is_slow)
    if not config.option.collectonly and any(_reads_the_demo(item) for item in items):
        _BackgroundDemo.start(config)


def _reads_the_demo(item) -> bool:
    return "demo_run" in getattr(item, "fixturenames", ())


_DEMO_WANTED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _the_demo_starts_with_the_first_load_test(request) -> None:
    """Under xdist the load worker starts the demo at its first load test and runs the other load
    tests while the demo runs (its readers come last), rather than wait for it idle: the demo is
    the suite's longest piece of work, and the machine's other core is busy with the rest."""
    config = request.config
    if (_distributed(config) and _BackgroundDemo.process is None and config.stash.get(_DEMO_WANTED, False)
            and request.node.get_closest_marker("load")):
        _BackgroundDemo.start(config)


class _BackgroundDemo:
    """``scalefinder demo`` started once, in the background, for the ``demo_run`` fixture."""

    process: subprocess.Popen | None = None
    folder: Path | None = None

    @classmethod
    def start(cls, config) -> None:
        cls.folder = Path(tempfile.mkdtemp(prefix="scalefinder-demo-"))
        with open(cls.folder / "stdout", "w") as stdout, open(cls.folder / "stderr", "w") as stderr:
            cls.process = subprocess.Popen(
                [sys.executable, "-m", "scalefinder.cli", "demo", "--out", str(cls.folder / "run"), "--no-progress"],
                cwd=ROOT, stdout=stdout, stderr=stderr, text=True)
        config.add_cleanup(cls.stop)

    @classmethod
    def wait(cls) -> DemoRun:
        assert cls.process is not None and cls.folder is not None
        cls.process.wait(timeout=DEMO_TIMEOUT_S)
        return DemoRun(cls.folder / "run", cls.process.returncode, (cls.folder / "stdout").read_text(),
                       (cls.folder / "stderr").read_text())

    @classmethod
    def stop(cls) -> None:
        if cls.process is not None and cls.process.poll() is None:
            cls.process.send_signal(signal.SIGINT)  # the demo restores and cleans up on SIGINT
            try:
                cls.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.process.kill()
        if cls.folder is not None:
            shutil.rmtree(cls.folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_processes_in_the_fast_tier(request, monkeypatch) -> None:
    """In the fast tier a test that starts a process is mislabelled: fail it and say so."""
    if not request.config.getoption("--fast"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts a process: mark it 'processes' (or 'load')")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr("os.fork", refuse)


@dataclass(frozen=True)
class DemoRun:
    path: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def demo_run(request) -> DemoRun:
    if _BackgroundDemo.process is None:  # under xdist: started here, by the first test that needs it
        _BackgroundDemo.start(request.config)
    return _BackgroundDemo.wait()
