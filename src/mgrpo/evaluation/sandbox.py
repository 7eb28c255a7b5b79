"""Run one generated program against its test cases in a sandbox; a hostile one is a failed test.

Each program gets its own jail (``sandbox_jail.py``; see its docstring for the isolation it sets
up): an empty temporary working directory, a minimal environment (nothing of this process's
environment, so no tokens or keys), a cgroup of its own bounding the memory and processes of all
its processes together (where the machine allows), as root a uid of its own, rlimits on CPU
time, address space, file size, processes and open files, no network and a read-only file system
where the machine allows new namespaces, and a wall clock that kills the whole process group.

The verdict is decided here, never in the program's process: the jail sends back plain data per
test case (captured output, return value, an assert's operand values) and
:mod:`mgrpo.evaluation.sandbox_checks` compares it with the expected outputs, which the program's
process never receives. The first failing case ends the run. Each reply line is capped, so a
program that floods its output cannot exhaust this process's memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mgrpo.evaluation.sandbox_cgroup import RunCgroup, make_run_cgroup
from mgrpo.evaluation.sandbox_checks import (
    AssertCheck,
    Garbled,
    LeafError,
    decode,
    same_output,
    same_return_value,
)

JAIL = Path(__file__).with_name("sandbox_jail.py")
REPLY_CAP = 1 << 20  # bytes of one reply line beyond twice the expected output's size
# As root, each run gets a uid of its own from this range (no passwd entry needed): rlimits on
# processes and signals are then never shared between concurrent jails.
JAIL_UIDS = range(2_000_000_000, 2_100_000_000)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Per-program limits. ``case_timeout_s`` bounds each test case, ``total_timeout_s`` the run."""

    case_timeout_s: float = 6.0
    total_timeout_s: float = 60.0
    memory_mb: int = 2048
    file_size_mb: int = 16
    processes: int = 32
    open_files: int = 256
    isolate: bool = True  # try namespaces (network, mounts, PIDs); off = rlimits and killpg only

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Limits:
        return cls(**{k: v for k, v in spec.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Result:
    status: str  # passed | wrong_answer | runtime_error | timeout | memory_limit | grader_error
    passed: int  # test cases passed before the first failure
    cases: int
    detail: str | None
    isolation: dict[str, Any] | None
    seconds: float


def jail_owner_tag(pid: int | None = None) -> str:
    """The argument that names the process that started a jail (this one by default)."""
    return f"owner={os.getpid() if pid is None else pid}"


def _minimal_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _requests(tests: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The jail's requests (inputs only) and, per test case, what the parent checks it against."""
    mode, cases = tests["mode"], tests["cases"]
    requests: list[dict[str, Any]] = [{"op": "load"}]
    checks: list[Any] = []
    for index, case in enumerate(cases):
        if mode == "stdin":
            want = case["output"]
            requests.append(
                {"op": "stdin", "input": case["input"], "cap": REPLY_CAP + 2 * len(want)}
            )
            checks.append(want)
        elif mode == "functional":
            try:
                args = [json.loads(line) for line in case["input"].split("\n") if line.strip()]
                want = json.loads(case["output"])
            except ValueError as err:
                raise ValueError(f"functional test case {index}: not JSON ({err})") from None
            cap = REPLY_CAP + 2 * len(case["output"])
            requests.append({"op": "call", "args": args, "cap": cap})
            checks.append(want)
        elif mode == "assert":
            check = AssertCheck(case, tests.get("setup") or "")
            requests.append({"op": "eval", "expressions": check.leaves, "cap": REPLY_CAP})
            checks.append(check)
        else:
            raise ValueError(f"unknown test mode {mode!r}")
    return requests, checks


def _case_outcome(mode: str, check: Any, reply: Mapping[str, Any]) -> tuple[str, str | None]:
    """(status, detail) of one test case from the runner's reply; decided here, not there."""
    if "error" in reply:
        if reply.get("memory"):
            return "memory_limit", "MemoryError"
        return "runtime_error", str(reply["error"])[-400:]
    try:
        if mode == "stdin":
            output = reply.get("stdout")
            if not isinstance(output, str):
                raise Garbled("no captured output")
            return (
                ("passed", None) if same_output(output, check) else ("wrong_answer", "wrong output")
            )
        if mode == "functional":
            if "value" not in reply:
                raise Garbled("no return value")
            ok = same_return_value(decode(reply["value"]), check)
            return ("passed", None) if ok else ("wrong_answer", "wrong return value")
        values = reply.get("values")
        if not isinstance(values, list):
            raise Garbled("no operand values")
        return ("passed", None) if check.holds(values) else ("wrong_answer", "assertion failed")
    except LeafError as err:
        if str(err).startswith("MemoryError"):
            return "memory_limit", "MemoryError"
        return "runtime_error", str(err)
    except Garbled as err:
        return "runtime_error", f"the program's reply is not plain data: {err}"
    except RecursionError:
        return "runtime_error", "the program's reply is nested too deeply"
    except Exception as err:
        return "wrong_answer", f"{type(err).__name__}: {err}"[:400]


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(message: str) -> None:
    """Log a weaker-than-requested sandbox once per process, loudly."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning("SANDBOX WEAKER THAN CONFIGURED: %s", message)


def bounds(isolation: Mapping[str, Any]) -> dict[str, str]:
    """What each bound of a run actually was, in words (for the isolation record)."""
    namespaces = bool(isolation.get("namespaces"))
    cgroup = isolation.get("cgroup")
    in_cgroup = bool(cgroup) and not isolation.get("cgroup_error")
    own_uid = bool(isolation.get("own_uid"))
    return {
        "memory": "cgroup: all of the program's processes together, shared memory included"
        if in_cgroup
        else "per process only (RLIMIT_AS): forked children and shared memory add up",
        "processes": "cgroup pids.max for the program alone"
        if in_cgroup
        else (
            "RLIMIT_NPROC of a uid of its own"
            if own_uid
            else "RLIMIT_NPROC of the evaluating user: shared with its other processes and jails"
        ),
        "signals": "cannot reach the evaluator"
        if namespaces or own_uid
        else (
            "may signal only itself (seccomp), but runs as the evaluating user: that user's "
            "files and the memory of its processes (/proc/<pid>/mem) stay reachable"
            if isolation.get("signal_filter")
            else "runs as the evaluating user: can signal and trace its other processes"
        ),
        "network": "none (own network namespace)" if namespaces else "NOT isolated",
        "file system": "read-only except a tmpfs working directory"
        if isolation.get("read_only_fs")
        else "writable wherever the program's user may write",
        "leftover processes": "killed with the PID namespace"
        if namespaces
        else (
            "killed through the cgroup and the subreaper"
            if in_cgroup
            else "killed by the subreaper"
        )
        if isolation.get("subreaper")
        else "a daemon that detaches may survive",
    }


def _weaknesses(isolation: Mapping[str, Any], isolate: bool) -> list[str]:
    said = bounds(isolation)
    weak = []
    if not isolation.get("namespaces"):
        why = isolation.get("error", "unshare refused") if isolate else "sandbox.isolate is false"
        weak.append(f"no namespaces ({why}): network {said['network']}, "
                    f"file system {said['file system']}")  # fmt: skip
    if not isolation.get("cgroup") or isolation.get("cgroup_error"):
        why = isolation.get("cgroup_error") or isolation.get("cgroup_why", "")
        weak.append(f"no cgroup ({why}): memory {said['memory']}; processes {said['processes']}")
    if said["signals"] != "cannot reach the evaluator":
        weak.append(f"signals: the program {said['signals']}")
    if "may survive" in said["leftover processes"]:
        weak.append(f"leftover processes: {said['leftover processes']}")
    return weak


def run_program(program: str, tests: Mapping[str, Any], limits: Limits) -> Result:
    """Run ``program`` on ``tests`` (a code problem's ``tests`` object) under ``limits``."""
    started = time.monotonic()
    mode, cases = tests["mode"], len(tests["cases"])
    try:
        requests, checks = _requests(tests)
    except (ValueError, KeyError, TypeError) as err:
        return Result("grader_error", 0, cases, f"bad test case: {err}", None, 0.0)
    wall_s = min(limits.total_timeout_s, limits.case_timeout_s * (cases + 1))
    nonce = secrets.token_hex(16)
    uid = JAIL_UIDS.start + secrets.randbelow(len(JAIL_UIDS)) if os.getuid() == 0 else None
    cgroup, cgroup_why = make_run_cgroup(limits.memory_mb * 2**20, limits.processes + 1)
    payload = {
        "nonce": nonce,
        "mode": mode,
        "program": program,
        "setup": tests.get("setup"),
        "entry_point": tests.get("entry_point"),
        "requests": requests,
        "isolate": limits.isolate,
        "uid": uid,
        "cgroup": cgroup.procs_files() if cgroup else [],
        "limits": {
            **asdict(limits),
            "cpu_s": max(1, int(wall_s + 0.999)),
            "wall_s": wall_s + 1.0,  # the jail's own clock (interpreter start-up included)
        },
    }
    workdir = tempfile.mkdtemp(prefix="mgrpo-sandbox-")
    try:
        if uid is not None:  # the runner's uid must own its working directory
            os.chown(workdir, uid, uid)
        process = subprocess.Popen(
            # The owner's pid in the jail's command line: `ps` (and a leftover check) can tell
            # whose jail a process is when several evaluators share a machine.
            [sys.executable, "-I", "-B", str(JAIL), jail_owner_tag()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
            env=_minimal_env(workdir),
            start_new_session=True,
            close_fds=True,
        )
        run = _Run(nonce, mode, checks, cgroup)
        _communicate(process, json.dumps(payload).encode(), wall_s + 3.0, run)
        run.oom_killed = cgroup is not None and cgroup.oom_killed()
    finally:
        if cgroup is not None and not cgroup.close():
            warn_once(f"a process of a sandboxed program survived SIGKILL in {cgroup.dirs}")
        shutil.rmtree(workdir, ignore_errors=True)
    isolation = run.isolation
    if isolation is not None:
        isolation["cgroup"] = cgroup.describe() if cgroup else None
        if cgroup is None:
            isolation["cgroup_why"] = cgroup_why
        isolation["bounds"] = bounds(isolation)
        for weakness in _weaknesses(isolation, limits.isolate):
            warn_once(weakness)
    status, detail = run.verdict(process.returncode)
    return Result(
        status, run.passed, cases, detail, isolation, round(time.monotonic() - started, 3)
    )


class _Run:
    """The parent's side of one run: reads the jail's lines, checks each case as it arrives."""

    def __init__(self, nonce: str, mode: str, checks: list[Any], cgroup: RunCgroup | None) -> None:
        self.nonce, self.mode, self.checks, self.cgroup = nonce, mode, checks, cgroup
        self.isolation: dict[str, Any] | None = None
        self.passed = 0
        self.status: str | None = None
        self.detail: str | None = None
        self.done = False
        self.timed_out = False
        self.oom_killed = False  # read before the run's cgroup is removed

    def line(self, text: str) -> bool:
        """Take one line of the jail's output; True when the run's outcome is decided."""
        head, _, body = text.partition(" ")
        if head != self.nonce:
            return False
        try:
            report = json.loads(body)
        except ValueError:
            return False
        if "isolation" in report and self.isolation is None:
            self.isolation = report["isolation"]
        elif "failure" in report:
            self._failure(report)
            return True
        elif "reply" in report:
            index = int(report["index"])
            reply = report["reply"] if isinstance(report["reply"], dict) else {"error": "garbled"}
            if index == 0:  # loading the program
                if "error" in reply:
                    self.status, self.detail = _case_outcome(self.mode, None, reply)
                    return True
                return False
            status, detail = _case_outcome(self.mode, self.checks[index - 1], reply)
            if status != "passed":
                self.status, self.detail = status, detail
                return True
            self.passed += 1
            if self.passed == len(self.checks):
                self.status = "passed"  # then wait for "done": the jail has reaped the runner
        elif report.get("done"):
            self.done = True
            return True
        return False

    def _failure(self, report: Mapping[str, Any]) -> None:
        kind, detail = report.get("failure"), report.get("detail")
        if self.cgroup is not None and self.cgroup.oom_killed():
            self.status, self.detail = "memory_limit", "killed at the memory bound (cgroup)"
        elif kind == "timeout":
            self.status, self.detail = "timeout", "test case over its time limit"
        elif kind == "too_long":
            self.status, self.detail = "wrong_answer", f"output over {detail} bytes"
        elif kind == "died" and isinstance(detail, dict) and detail.get("signal") in (
            signal.SIGKILL, signal.SIGXCPU):  # fmt: skip
            self.status, self.detail = "timeout", f"killed (signal {detail['signal']})"
        else:
            self.status, self.detail = "runtime_error", f"the program's process ended: {detail}"

    def verdict(self, returncode: int | None) -> tuple[str, str | None]:
        if self.oom_killed and self.status != "passed":  # a failure after a kill at the bound
            return "memory_limit", "a process was killed at the memory bound (cgroup)"
        if self.status is not None:
            return self.status, self.detail
        if self.timed_out:
            return "timeout", "killed at the time limit"
        return "runtime_error", f"no verdict (jail exit {returncode})"


def _communicate(process: subprocess.Popen, payload: bytes, deadline_s: float, run: _Run) -> None:
    """Feed the payload, read lines until the outcome is decided or the deadline; kill the group."""
    assert process.stdin and process.stdout
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(payload)
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    end = time.monotonic() + deadline_s
    line_cap = REPLY_CAP + 2 * max((len(repr(c)) for c in run.checks), default=0) + 4096
    buffer = bytearray()
    decided = False
    with selectors.DefaultSelector() as selector:
        os.set_blocking(process.stdout.fileno(), False)
        selector.register(process.stdout, selectors.EVENT_READ)
        while not decided:
            left = end - time.monotonic()
            if left <= 0:
                run.timed_out = True
                break
            if not selector.select(timeout=left):
                continue
            chunk = os.read(process.stdout.fileno(), 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while not decided and b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer = bytearray(rest)
                decided = run.line(line.decode(errors="replace"))
            if len(buffer) > line_cap:
                break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the session
    process.wait()
    process.stdout.close()
