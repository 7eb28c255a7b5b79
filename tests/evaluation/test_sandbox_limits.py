"""Bounds that hold for the whole program, jails that share nothing, and the fallback's promises.

The memory and process tests need the cgroup (``needs_cgroup``); the fallback tests force
``isolate=False`` (no namespaces), as on clusters that refuse ``unshare``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sandbox_support import asserts, attack, limits, run
from support import fails_after

from mgrpo.evaluation import sandbox
from mgrpo.evaluation.sandbox import run_program

# Children that each keep 300 MB of touched memory (512 MB allowed for the program): returns how
# many got there (a child killed on the way closes its pipe without a word).
FORKED_MEMORY = """
import os, time
def children_holding(count, megabytes, make):
    pipes = []
    for _ in range(count):
        read, write = os.pipe()
        if os.fork() == 0:
            os.close(read)
            block = make(megabytes)
            os.write(write, b"1")
            time.sleep(30)
            os._exit(0)
        os.close(write)
        pipes.append(read)
    return sum(len(os.read(read, 1)) for read in pipes)
def heap(megabytes):
    return b"x" * (megabytes << 20)
def shared(megabytes):
    fd = os.memfd_create("hold")
    os.write(fd, b"x" * (megabytes << 20))
    return fd
"""


@pytest.mark.parametrize("make", ["heap", "shared"])
def test_memory_is_bounded_for_all_processes_together(
    unharmed: Path, needs_cgroup: None, make: str
) -> None:
    tests = asserts(f"assert children_holding(4, 300, {make}) == 4")
    result = run(FORKED_MEMORY, tests, case_timeout_s=8.0, total_timeout_s=10.0)
    assert result.status == "memory_limit", result  # never 1.2 GB under 512 MB
    assert result.isolation["bounds"]["memory"].startswith("cgroup")


def test_processes_are_bounded_per_program(unharmed: Path, needs_cgroup: None) -> None:
    body = (
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError:\n"
        "    pass\n"
        "return started\n"
    )
    result = run("def attack():\n" + "".join(f"    {x}\n" for x in body.splitlines()),
                 asserts("assert attack() >= 200"))  # fmt: skip
    assert result.status == "wrong_answer"  # 12 processes allowed, threads count


HOLD_PROCESSES = (
    "import os, time\n"
    "def hold():\n"
    "    for _ in range(200):\n"
    "        try:\n"
    "            if os.fork() == 0:\n"
    "                time.sleep(30)\n"
    "                os._exit(0)\n"
    "        except OSError:\n"
    "            break\n"
    "    time.sleep(3)\n"
    "    return True\n"
)
THREADS = (
    "import threading, time\n"
    "def threads():\n"
    "    time.sleep(0.5)  # the neighbour has forked to its limit by now\n"
    "    workers = [threading.Thread(target=time.sleep, args=(0.1,)) for _ in range(6)]\n"
    "    for w in workers:\n"
    "        w.start()\n"
    "    for w in workers:\n"
    "        w.join()\n"
    "    return 6\n"
)


@pytest.mark.parametrize("isolate", [True, False])
def test_a_neighbour_that_forks_to_its_limit_does_not_starve_another_jail(
    unharmed: Path, isolate: bool
) -> None:
    if os.getuid() != 0 and not isolate:
        pytest.skip("as an ordinary user without namespaces all jails share one process count")
    greedy_limits = limits(isolate=isolate, total_timeout_s=5.0, case_timeout_s=4.0)
    with fails_after(60), ThreadPoolExecutor(2) as pool:  # run_program is thread-safe
        honest = pool.submit(
            run_program, THREADS, asserts("assert threads() == 6"), limits(isolate=isolate)
        )
        time.sleep(0.1)  # the honest one has started; the greedy one forks while it waits
        greedy = pool.submit(run_program, HOLD_PROCESSES, asserts("assert hold()"), greedy_limits)
        assert honest.result().status == "passed", honest.result()
        greedy.result()


# ----------------------------------------------------------------------------- the fallback
def test_without_namespaces_the_program_cannot_kill_the_evaluation(unharmed: Path) -> None:
    body = (
        "import os, signal\n"
        "killed = []\n"
        "for pid in [os.getppid()] + [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    if pid in (os.getpid(), 1):\n"
        "        continue\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        killed.append(pid)\n"
        "    except OSError:\n"
        "        pass\n"
        "return killed != []"
    )
    result = attack(body, isolate=False)
    assert result.status == "wrong_answer", result  # it could kill nothing; we are still here
    assert result.isolation["own_uid"] or result.isolation["signal_filter"]


SIGNAL_PROBE = """
import ctypes, os, signal, time
def probe():
    seen = []
    os.kill(os.getpid(), 0)  # itself: allowed
    signal.signal(signal.SIGUSR1, lambda *args: seen.append("handled"))
    signal.raise_signal(signal.SIGUSR1)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    refused = []
    for target in (child, os.getppid()):
        try:
            os.kill(target, signal.SIGKILL)
            refused.append(False)
        except PermissionError:
            refused.append(True)
    libc = ctypes.CDLL(None, use_errno=True)
    refused.append(libc.ptrace(16, child, 0, 0) == -1)  # PTRACE_ATTACH
    return seen + refused
"""


def test_without_namespaces_the_program_signals_only_itself(unharmed: Path) -> None:
    # The seccomp filter: a signal to any other pid (even its own child, even as the same
    # user) and ptrace are refused. As root the uid of its own refuses the parent too; the
    # child would be the program's to kill without the filter.
    result = run(SIGNAL_PROBE, asserts("assert probe() == ['handled', True, True, True]"),
                 isolate=False)  # fmt: skip
    assert result.status == "passed", result
    assert result.isolation["signal_filter"] is True


@pytest.mark.parametrize(
    ("isolate", "cgroup"), [(True, True), (False, True), (False, False)]
)  # without namespaces and without a cgroup, the supervisor's subreaper alone reaps it
def test_a_double_forked_daemon_does_not_outlive_grading(
    unharmed: Path, monkeypatch: pytest.MonkeyPatch, isolate: bool, cgroup: bool
) -> None:
    if not cgroup:
        monkeypatch.setattr(sandbox, "make_run_cgroup", lambda *args: (None, "switched off"))
    place = Path(tempfile.mkdtemp(prefix="mgrpo-daemon-test-"))
    place.chmod(0o777)
    marker = place / "alive"
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(1.5)\n"
        f"        open({str(marker)!r}, 'w').write('still here')\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "def f():\n"
        "    return 1\n"
    )
    try:
        assert run(program, asserts("assert f() == 1"), isolate=isolate).status == "passed"
        time.sleep(2.5)
        assert not marker.exists()
    finally:
        marker.unlink(missing_ok=True)
        place.rmdir()


def test_without_namespaces_modules_not_yet_loaded_import(unharmed: Path) -> None:
    # As root the program runs under a uid of its own, which cannot enter /root (where the
    # interpreter may live): the import path stays reachable through descriptors.
    program = "import fractions, statistics, decimal, heapq\ndef f():\n    return 1\n"
    result = run(program, asserts("assert f() == 1"), isolate=False)
    assert result.status == "passed", result


def test_a_weaker_sandbox_is_logged_once_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        for _ in range(3):
            result = run("x = 1", asserts("assert x == 1"), isolate=False)
    assert result.isolation["namespaces"] is False
    assert result.isolation["bounds"]["network"] == "NOT isolated"
    said = [r.getMessage() for r in caplog.records if "no namespaces" in r.getMessage()]
    assert len(said) == 1 and "SANDBOX WEAKER THAN CONFIGURED" in said[0]
