"""Helpers for the sandbox tests: small limits, hostile programs, leftover-process checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support import fails_after

from mgrpo.evaluation.sandbox import JAIL, Limits, Result, jail_owner_tag, run_program

LIMITS = Limits(
    case_timeout_s=1.0,
    total_timeout_s=2.0,
    memory_mb=512,
    file_size_mb=8,
    processes=12,
)
SECRET_NAME = "MGRPO_SANDBOX_TEST_SECRET"


def limits(**changes: Any) -> Limits:
    return Limits(**{**vars(LIMITS), **changes})


def run(program: str, tests: Mapping[str, Any], **changes: Any) -> Result:
    """``run_program`` under the test limits; a sandbox that fails to kill fails the test."""
    with fails_after(60):
        return run_program(program, tests, limits(**changes))


def attack(body: str, isolate: bool = True) -> Result:
    """Run a program defining ``attack()`` against the test ``assert attack()``."""
    program = "def attack():\n" + "".join(f"    {line}\n" for line in body.splitlines())
    return run(program, {"mode": "assert", "cases": ["assert attack()"]}, isolate=isolate)


def asserts(*cases: str, setup: str = "") -> dict[str, Any]:
    return {"mode": "assert", "setup": setup, "cases": list(cases)}


def stdin_cases(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"mode": "stdin", "cases": [{"input": i, "output": o} for i, o in pairs]}


def functional(entry_point: str, *pairs: tuple[str, str]) -> dict[str, Any]:
    cases = [{"input": i, "output": o} for i, o in pairs]
    return {"mode": "functional", "entry_point": entry_point, "cases": cases}


def leftover_jails() -> list[int]:
    """Processes still running a jail this test process started (there must be none after a
    run). Jails of other processes (a parallel test worker's) are not this test's."""
    argv = [str(JAIL).encode(), jail_owner_tag().encode()]
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if all(arg in cmdline.split(b"\0") for arg in argv):
                pids.append(int(entry))
    return pids
