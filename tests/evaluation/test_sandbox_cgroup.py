"""Where a run's cgroup goes (v2 or v1), what it bounds, and how it is emptied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mgrpo.evaluation.sandbox_cgroup import Layout, RunCgroup, find_layout, make_run_cgroup


def test_v2_is_used_where_memory_and_pids_are_delegated(tmp_path: Path) -> None:
    own = tmp_path / "user.slice" / "job"
    own.mkdir(parents=True)
    (own / "cgroup.subtree_control").write_text("cpu memory pids\n")
    mountinfo = f"30 1 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    found, why = find_layout(mountinfo, "0::/user.slice/job\n")
    assert found == Layout(2, own, own), why


def test_v2_without_delegation_says_why(tmp_path: Path) -> None:
    own = tmp_path / "job"
    (own / "cgroup.subtree_control").mkdir(parents=True)  # cannot be read or written, even by root
    mountinfo = f"30 1 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    found, why = find_layout(mountinfo, "0::/job\n")
    assert found is None and "not delegated" in why


def test_v1_uses_the_memory_and_pids_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "memory" / "jobs" / "42").mkdir(parents=True)
    (tmp_path / "pids").mkdir()
    mountinfo = (
        f"35 31 0:32 / {tmp_path}/memory rw,relatime - cgroup cgroup rw,memory\n"
        f"39 31 0:36 / {tmp_path}/pids rw,relatime - cgroup cgroup rw,pids\n"
        f"41 31 0:38 / {tmp_path}/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    found, _ = find_layout(mountinfo, "8:pids:/\n4:memory:/jobs/42\n0::/\n")
    assert found == Layout(1, tmp_path / "memory" / "jobs" / "42", tmp_path / "pids")


def test_no_cgroup_mounted_names_the_reason() -> None:
    found, why = find_layout("22 1 0:5 / / rw - ext4 /dev/sda rw\n", "0::/\n")
    assert found is None and "no cgroup" in why


def test_a_v2_run_cgroup_writes_its_bounds_and_reads_oom_kills(tmp_path: Path) -> None:
    group = RunCgroup(Layout(2, tmp_path, tmp_path), memory_bytes=2**29, pids=13)
    [made] = group.dirs
    assert (made / "memory.max").read_text() == str(2**29)
    assert (made / "pids.max").read_text() == "13"
    assert group.procs_files() == [str(made / "cgroup.procs")]
    (made / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not group.oom_killed()
    (made / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    assert group.oom_killed()


def test_a_real_run_cgroup_is_removed_after_its_processes_are_killed() -> None:
    group, why = make_run_cgroup(2**28, 8)
    if group is None:
        pytest.skip(f"no cgroup here: {why}")
    pid = os.fork()
    if pid == 0:  # joins the run's cgroup, then waits to be killed
        for procs in group.procs_files():
            Path(procs).write_text("0")
        os.execv("/bin/sleep", ["sleep", "60"])
    try:
        for _ in range(200):
            if str(pid) in Path(group.procs_files()[0]).read_text().split():
                break
            os.sched_yield()
        assert group.close()
        assert not any(path.exists() for path in group.dirs)
    finally:
        os.waitpid(pid, 0)
