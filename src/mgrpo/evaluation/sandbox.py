"""Run one generated program against its test cases in a sandbox; a hostile one is a failed test.

Each program gets its own process (``sandbox_jail.py``; see its docstring for the isolation it
sets up): an empty temporary working directory, a minimal environment (nothing of this
process's environment, so no tokens or keys), rlimits on CPU time, address space, file size,
processes and open files, no network and a read-only file system where the machine allows new
namespaces, and a wall clock that kills the whole process group (and with it the PID namespace).
The parent reads at most :data:`OUTPUT_CAP` bytes of the jail's output, so a program that floods
its output cannot exhaust this process's memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

JAIL = Path(__file__).with_name("sandbox_jail.py")
OUTPUT_CAP = 1 << 20
NOBODY = 65534


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
    status: str  # passed | wrong_answer | runtime_error | timeout | memory_limit
    passed: int  # test cases passed before the first failure
    cases: int
    detail: str | None
    isolation: dict[str, Any] | None
    seconds: float


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


def run_program(program: str, tests: Mapping[str, Any], limits: Limits) -> Result:
    """Run ``program`` on ``tests`` (a code problem's ``tests`` object) under ``limits``."""
    started = time.monotonic()
    cases = len(tests["cases"])
    wall_s = min(limits.total_timeout_s, limits.case_timeout_s * (cases + 1))
    nonce = secrets.token_hex(16)
    payload = {
        "nonce": nonce,
        "program": program,
        "tests": dict(tests),
        "isolate": limits.isolate,
        "limits": {
            **asdict(limits),
            "cpu_s": max(1, int(wall_s + 0.999)),
            "wall_s": wall_s + 1.0,  # the jail's own clock (interpreter start-up included)
        },
    }
    workdir = tempfile.mkdtemp(prefix="mgrpo-sandbox-")
    try:
        if os.getuid() == 0:  # the jail drops to nobody, who must own its working directory
            os.chown(workdir, NOBODY, NOBODY)
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(JAIL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=_minimal_env(workdir),
            start_new_session=True,
            close_fds=True,
        )
        out, err, timed_out = _communicate(process, json.dumps(payload).encode(), wall_s + 3.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _result(nonce, out, err, process.returncode, timed_out, cases, started)


def _communicate(
    process: subprocess.Popen, payload: bytes, deadline_s: float
) -> tuple[bytes, bytes, bool]:
    """Feed the payload, read capped output until exit or the deadline; kill the group then."""
    assert process.stdin and process.stdout and process.stderr
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write(payload)
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    end = time.monotonic() + deadline_s
    buffers = {process.stdout: bytearray(), process.stderr: bytearray()}
    timed_out = False
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=left):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                if len(buffer) < OUTPUT_CAP:
                    buffer += chunk[: OUTPUT_CAP - len(buffer)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the session
    process.wait()
    process.stdout.close()
    process.stderr.close()
    return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), timed_out


def _result(
    nonce: str,
    out: bytes,
    err: bytes,
    returncode: int | None,
    timed_out: bool,
    cases: int,
    started: float,
) -> Result:
    seconds = round(time.monotonic() - started, 3)
    reports = []
    for line in out.decode(errors="replace").splitlines():
        head, _, body = line.partition(" ")
        if head == nonce:
            with contextlib.suppress(json.JSONDecodeError):
                reports.append(json.loads(body))
    verdict = next((r for r in reversed(reports) if "status" in r), None)
    if verdict is not None:
        return Result(
            verdict["status"],
            int(verdict["passed"]),
            cases,
            verdict.get("detail"),
            verdict.get("isolation"),
            seconds,
        )
    killed = next((r["exit_signal"] for r in reports if "exit_signal" in r), None)
    if killed is None and returncode is not None and returncode < 0:
        killed = -returncode
    if timed_out or killed in (signal.SIGKILL, signal.SIGXCPU):
        return Result("timeout", 0, cases, "killed at the time limit", None, seconds)
    detail = f"no verdict (exit {returncode}, signal {killed})"
    tail = err.decode(errors="replace").strip()[-300:]
    return Result("runtime_error", 0, cases, f"{detail}: {tail}" if tail else detail, None, seconds)
