"""CPU and memory reservations enforced with Linux control groups (v2, or v1 as root).

Each cluster gets ``<mount>/scalefinder/<pid>-<id>/`` with one child group per task: the CPU
quota is ``cpu_units / 1024`` cores per scheduling period and the memory limit is the
reservation, so a task that goes over it is killed by the kernel as ECS would stop it. Groups
left by a cluster that was killed hard are removed the next time a cluster starts, or by
``scalefinder restore`` of the run that started it.

When no hierarchy is writable the cluster runs "unenforced" and says so; the supervisor then
emulates the memory limit by watching each task's process tree.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from scalefinder.core.waiting import WaitTimedOut, wait_until

log = logging.getLogger(__name__)

ROOT_NAME = "scalefinder"
PERIOD_US = 100_000
V1_MAX_SHARES = 262_144
V2_MAX_WEIGHT = 10_000
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")
MODE_V1, MODE_V2, MODE_UNENFORCED = "cgroup-v1", "cgroup-v2", "unenforced"
REMOVE_POLL_S = 0.05  # between attempts to remove a cgroup whose processes are still dying
DISABLE_VARIABLE = "SCALEFINDER_CGROUPS"  # "off": never touch cgroups, run unenforced
UNENFORCED_NOTE = (
    "CPU and memory reservations are NOT enforced: CPU is measured from the process tree and the "
    "memory limit is emulated by killing a task whose process tree exceeds it"
)


@dataclass(frozen=True)
class TaskCgroup:
    """One task's control group (one directory per v1 controller, or one v2 directory)."""

    mode: str
    dirs: dict[str, Path]  # controller -> directory; v2 uses the key "unified"

    @property
    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in dict.fromkeys(self.dirs.values())]

    def cpu_seconds(self) -> float:
        if self.mode == MODE_V2:
            for line in (self.dirs["unified"] / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
            raise OSError("cpu.stat has no usage_usec")
        return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9

    def oom_kills(self) -> int:
        """Kernel OOM kills inside this group since it was created (0 when it cannot be read)."""
        name = "memory.events" if self.mode == MODE_V2 else "memory.oom_control"
        directory = self.dirs["unified" if self.mode == MODE_V2 else "memory"]
        try:
            return parse_oom_kills((directory / name).read_text()) or 0
        except OSError:
            return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            try:
                found.update(int(pid) for pid in procs.read_text().split())
            except OSError:
                pass
        return sorted(found)

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Kill what is left inside and remove the directories; False if one would not go."""
        started = time.monotonic()  # one budget for all the directories, not one each
        removed = True
        for directory in dict.fromkeys(self.dirs.values()):
            def gone(directory: Path = directory) -> bool:
                if not directory.exists():
                    return True
                self.kill_all()  # rmdir fails while a process is inside, and a fork may have slipped in
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    return True
                except OSError:
                    return False
                return True

            try:
                wait_until(gone, timeout_s=timeout_s, interval_s=REMOVE_POLL_S, what=f"cgroup {directory} to go",
                           started_at=started)
            except WaitTimedOut:
                log.warning("could not remove cgroup %s", directory)
                removed = False
        return removed


class Cgroups:
    """The cluster's cgroup tree: detects the mode, creates task groups, removes everything."""

    def __init__(self, cluster_name: str, mode: str, detail: str, bases: dict[str, Path]):
        self.cluster_name = cluster_name
        self.mode = mode
        self.detail = detail
        self._bases = bases  # controller -> <mount>/scalefinder/<cluster_name>

    @property
    def enforced(self) -> bool:
        return self.mode != MODE_UNENFORCED

    @classmethod
    def create(cls, cluster_name: str) -> "Cgroups":
        if os.environ.get(DISABLE_VARIABLE, "").lower() in ("off", "0", "no"):
            detail = f"cgroups disabled by {DISABLE_VARIABLE}=off. {UNENFORCED_NOTE}"
            return cls(cluster_name, MODE_UNENFORCED, detail, {})
        mounts = _mounts()
        failures: list[str] = []
        v2 = mounts.get("unified")
        if v2 is not None:
            controllers = _read(v2 / "cgroup.controllers").split()
            if {"cpu", "memory"} <= set(controllers):
                try:
                    return cls._create_v2(cluster_name, v2)
                except OSError as exc:
                    failures.append(f"cgroup v2 at {v2} is not writable ({exc.strerror or exc})")
            else:
                failures.append(f"cgroup v2 at {v2} lacks the cpu and memory controllers")
        if all(name in mounts for name in V1_CONTROLLERS):
            try:
                return cls._create_v1(cluster_name, {name: mounts[name] for name in V1_CONTROLLERS})
            except OSError as exc:
                failures.append(f"cgroup v1 is not writable ({exc.strerror or exc})")
        elif not failures:
            failures.append("no cgroup hierarchy with the cpu and memory controllers is mounted")
        detail = "; ".join(failures) + ". " + UNENFORCED_NOTE
        return cls(cluster_name, MODE_UNENFORCED, detail, {})

    @classmethod
    def _create_v1(cls, cluster_name: str, mounts: dict[str, Path]) -> "Cgroups":
        bases: dict[str, Path] = {}
        try:
            for controller, mount in mounts.items():
                root = mount / ROOT_NAME
                root.mkdir(exist_ok=True)
                _sweep_stale(root)
                base = root / cluster_name
                base.mkdir()
                bases[controller] = base
                if controller == "cpu":
                    _favour(root, base, "cpu.shares", V1_MAX_SHARES)
        except OSError:
            for base in bases.values():
                _remove_tree(base)
            raise
        detail = "cgroup v1: " + ", ".join(f"{c} at {b}" for c, b in bases.items())
        return cls(cluster_name, MODE_V1, detail, bases)

    @classmethod
    def _create_v2(cls, cluster_name: str, mount: Path) -> "Cgroups":
        root = mount / ROOT_NAME
        _write(mount / "cgroup.subtree_control", "+cpu +memory")
        root.mkdir(exist_ok=True)
        _write(root / "cgroup.subtree_control", "+cpu +memory")
        _sweep_stale(root)
        base = root / cluster_name
        base.mkdir()
        try:
            _write(base / "cgroup.subtree_control", "+cpu +memory")
            _favour(root, base, "cpu.weight", V2_MAX_WEIGHT)
        except OSError:
            _remove_tree(base)
            raise
        return cls(cluster_name, MODE_V2, f"cgroup v2 at {base}", {"unified": base})

    def task_group(self, task_name: str, cpu_units: int, memory_mib: int) -> TaskCgroup | None:
        """A fresh group for one task incarnation with its limits set (None when unenforced)."""
        if not self.enforced:
            return None
        dirs = {controller: base / task_name for controller, base in self._bases.items()}
        group = TaskCgroup(self.mode, dirs)
        if any(path.exists() for path in dirs.values()):
            group.remove()
        quota_us = max(1000, round(cpu_units / 1024 * PERIOD_US))
        memory_bytes = memory_mib * 1024 * 1024
        for path in dict.fromkeys(dirs.values()):
            path.mkdir()
        if self.mode == MODE_V2:
            directory = dirs["unified"]
            _write(directory / "cpu.weight", str(max(1, min(V2_MAX_WEIGHT, cpu_units))))
            _write(directory / "cpu.max", f"{quota_us} {PERIOD_US}")
            _write(directory / "memory.max", str(memory_bytes))
            if (directory / "memory.swap.max").exists():
                _write(directory / "memory.swap.max", "0")
        else:
            _write(dirs["cpu"] / "cpu.shares", str(max(2, cpu_units)))
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(quota_us))
            _write(dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
            swap_limit = dirs["memory"] / "memory.memsw.limit_in_bytes"
            if swap_limit.exists():
                try:
                    _write(swap_limit, str(memory_bytes))  # no escape into swap either
                except OSError:
                    pass
        return group

    def shared_group(self, name: str) -> TaskCgroup | None:
        """A group without limits for the balancer and helpers, favoured by the scheduler like the
        tasks, so they stand for infrastructure outside the machine rather than compete with it."""
        if not self.enforced:
            return None
        dirs = {controller: base / name for controller, base in self._bases.items()}
        for path in dict.fromkeys(dirs.values()):
            path.mkdir(exist_ok=True)
        return TaskCgroup(self.mode, dirs)

    def remove(self) -> bool:
        """Remove the cluster's groups (and ``scalefinder/`` itself once no cluster uses it)."""
        ok = True
        for base in self._bases.values():
            ok = _remove_tree(base) and ok
            try:
                base.parent.rmdir()
            except OSError:
                pass  # another cluster still has groups there
        return ok


def remove_groups_left_by(owner_pid: int) -> tuple[list[Path], list[Path]]:
    """Remove the groups of the clusters process ``owner_pid`` ran (``<pid>-<id>/``), once that
    process is gone: a run killed hard. Returns the groups removed and those left in place.

    Groups are left in place while the process lives, since they are still in use, and under a
    hierarchy this process may not write to. Without cgroups there is nothing to find.
    """
    removed: list[Path] = []
    left: list[Path] = []
    owner_alive = _alive(owner_pid)
    for root in dict.fromkeys(mount / ROOT_NAME for mount in _mounts().values()):
        groups = sorted(path for path in root.glob(f"{owner_pid}-*") if path.is_dir())
        if owner_alive or not os.access(root, os.W_OK):
            left += groups
            continue
        for group in groups:  # ``scalefinder/`` itself stays: a cluster starting now may be using it
            (removed if _remove_tree(group) else left).append(group)
    return removed, left


def parse_oom_kills(text: str) -> int | None:
    """The ``oom_kill N`` line of v1 ``memory.oom_control`` or v2 ``memory.events``, or None.

    Both files are ``key value`` lines; v2's also has ``oom`` (the limit was hit, whether or not
    a process died) and ``oom_group_kill``, which are other counts.
    """
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "oom_kill":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def _favour(root: Path, base: Path, weight_file: str, weight: int) -> None:
    """Give the cluster's groups the highest scheduler weight, as ECS turns CPU units into shares.

    A reservation is a guaranteed minimum: without this, every task together would compete as
    one entity against each busy process outside, and get far less than their reservations on
    a loaded machine. The per-task quotas still cap what the tasks can take.
    """
    for directory in (root, base):
        _write(directory / weight_file, str(weight))


def _mounts() -> dict[str, Path]:
    """controller name -> mount point; "unified" for the v2 hierarchy."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        mount_point, fstype, options = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup2":
            found.setdefault("unified", mount_point)
        elif fstype == "cgroup":
            for controller in V1_CONTROLLERS:
                if controller in options:
                    found.setdefault(controller, mount_point)
    return found


def _sweep_stale(root: Path) -> None:
    """Remove groups of clusters whose process is gone (a previous run killed with SIGKILL)."""
    for child in root.iterdir():
        if not child.is_dir():
            continue
        owner = child.name.split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            log.info("removing cgroup %s left by a cluster that is gone", child)
            _remove_tree(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(directory: Path) -> bool:
    if not directory.exists():
        return True
    ok = True
    for child in [path for path in directory.iterdir() if path.is_dir()]:
        ok = _remove_tree(child) and ok
    return TaskCgroup(MODE_V1, {"any": directory}).remove() and ok


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)
