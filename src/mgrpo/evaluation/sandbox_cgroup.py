"""A cgroup per sandboxed program: memory and process bounds for all of its processes together.

rlimits are per process (``RLIMIT_AS``) or per user (``RLIMIT_NPROC``): a program that forks
children holding memory each, or that keeps memory in shared memory (``memfd_create``, tmpfs),
escapes them, and jails running as one user share one process count. A cgroup made for one run
bounds the sum: ``memory`` (every page the run's processes touch, shared memory included) and
``pids`` (every process and thread). The parent makes it, the jail's runner joins it before it
runs anything, and the parent kills what is left in it and removes it afterwards.

Both layouts are handled: cgroup v2 (one hierarchy: ``memory.max``, ``memory.swap.max``,
``pids.max``, ``cgroup.kill``), where this process's cgroup has the two controllers enabled for
its children; and cgroup v1 (``memory`` and ``pids`` hierarchies: ``memory.limit_in_bytes``,
``memory.memsw.limit_in_bytes``, ``pids.max``). Where neither can be written (no delegation, an
unprivileged user), :func:`make_run_cgroup` says why and the sandbox records that the bounds are
per process only.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Layout:
    """Where this process may make child cgroups: v2 (``unified``) or v1 (``memory``, ``pids``)."""

    version: int
    memory: Path
    pids: Path


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fstype, super options) of every mount in a mountinfo text."""
    found = []
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3:
            found.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return found


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup path per controller ('' for the v2 hierarchy)."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _inside(mount_point: str, root: str, own: str) -> Path | None:
    """The directory of cgroup ``own`` in a hierarchy mounted at ``mount_point`` from ``root``."""
    if root != "/" and not (own == root or own.startswith(root.rstrip("/") + "/")):
        return None
    relative = own[len(root) :] if root != "/" else own
    return Path(mount_point) / relative.lstrip("/")


def find_layout(mountinfo: str, proc_cgroup: str) -> tuple[Layout | None, str]:
    """The usable layout from ``/proc/self/mountinfo`` and ``/proc/self/cgroup``, or why none."""
    mounts, own = _mounts(mountinfo), _own_paths(proc_cgroup)
    reasons = []
    for root, point, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        base = _inside(point, root, own[""])
        if base is None:
            continue
        try:
            enabled = set((base / "cgroup.subtree_control").read_text().split())
            if not {"memory", "pids"} <= enabled:
                (base / "cgroup.subtree_control").write_text("+memory +pids")
            return Layout(2, base, base), f"cgroup v2 at {base}"
        except OSError as err:
            reasons.append(f"cgroup v2 at {base}: memory and pids not delegated ({err.strerror})")
    v1 = {}
    for controller in ("memory", "pids"):
        for root, point, fstype, options in mounts:
            if fstype == "cgroup" and controller in options and controller in own:
                base = _inside(point, root, own[controller])
                if base is not None and os.access(base, os.W_OK):
                    v1[controller] = base
                elif base is not None:
                    reasons.append(f"cgroup v1 {controller} at {base}: not writable")
    if len(v1) == 2:
        return Layout(1, v1["memory"], v1["pids"]), "cgroup v1"
    return None, "; ".join(reasons) or "no cgroup v2 or v1 memory and pids hierarchy mounted"


@functools.cache
def layout() -> tuple[Layout | None, str]:
    """This machine's layout, read once per process."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError as err:
        return None, f"cannot read /proc: {err}"
    return find_layout(mountinfo, proc_cgroup)


class RunCgroup:
    """The cgroup(s) of one run; :meth:`close` kills what is left and removes them."""

    def __init__(self, found: Layout, memory_bytes: int, pids: int) -> None:
        self.version = found.version
        name = f"mgrpo-jail-{secrets.token_hex(6)}"
        self.memory_dir = found.memory / name
        self.pids_dir = found.pids / name
        self.dirs = [self.memory_dir] if self.memory_dir == self.pids_dir else [
            self.memory_dir, self.pids_dir]  # fmt: skip
        for path in self.dirs:
            path.mkdir()
        try:
            if self.version == 2:
                (self.memory_dir / "memory.max").write_text(str(memory_bytes))
                self._optional(self.memory_dir / "memory.swap.max", "0")
            else:
                (self.memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
                self._optional(self.memory_dir / "memory.memsw.limit_in_bytes", str(memory_bytes))
            (self.pids_dir / "pids.max").write_text(str(pids))
        except OSError:
            self.close()
            raise
        self.memory_bytes, self.pids = memory_bytes, pids

    @staticmethod
    def _optional(path: Path, value: str) -> None:
        with contextlib.suppress(OSError):  # no swap accounting on this kernel: nothing to bound
            path.write_text(value)

    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs]

    def describe(self) -> dict[str, object]:
        return {"version": self.version, "memory_bytes": self.memory_bytes, "pids": self.pids}

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run at the memory bound."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.memory_dir / name).read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def _members(self) -> set[int]:
        members: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                members.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return members

    def close(self, deadline_s: float = 5.0) -> bool:
        """Kill every process left in the run's cgroups and remove them; False if one stayed."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.memory_dir / "cgroup.kill").write_text("1")
        end = time.monotonic() + deadline_s
        removed = False
        while time.monotonic() < end:
            for pid in self._members():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for path in self.dirs:
                with contextlib.suppress(FileNotFoundError, OSError):
                    path.rmdir()
            removed = not any(path.exists() for path in self.dirs)
            if removed:
                break
            time.sleep(0.01)
        return removed


def make_run_cgroup(memory_bytes: int, pids: int) -> tuple[RunCgroup | None, str]:
    """A fresh cgroup bounding one run, or None and the reason the machine does not allow it."""
    found, why = layout()
    if found is None:
        return None, why
    try:
        return RunCgroup(found, memory_bytes, pids), why
    except OSError as err:
        return None, f"{why}: cannot make a child cgroup ({err.strerror})"
