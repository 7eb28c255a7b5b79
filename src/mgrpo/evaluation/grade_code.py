"""Code: the response's last Python code block, run against the problem's tests in the sandbox.

A sample passes (pass@1) when every test case passes. The program is the last fenced block
tagged ``python``/``py``/``python3``, or the last untagged block when none is tagged (a trailing
"```text" or "```output" block is never taken for the program); an unclosed block (a response
cut off at the token limit) does not count. Programs run concurrently, each in its own sandbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mgrpo.data import ProblemSet
from mgrpo.evaluation.grading import Verdict
from mgrpo.evaluation.sandbox import Limits, Result, run_program

_PYTHON_TAGS = {"python", "py", "python3"}


def _fenced_blocks(response: str) -> list[tuple[str, str]]:
    """(tag, body) of every closed ``` block, scanning lines once (no regex backtracking)."""
    blocks: list[tuple[str, str]] = []
    body: list[str] | None = None
    tag = ""
    for line in response.splitlines(keepends=True):
        fence = line.strip().startswith("```")
        if body is None and fence:
            info = line.strip()[3:].strip()
            tag, body = (info.split()[0].lower() if info else ""), []
        elif body is not None and fence:
            blocks.append((tag, "".join(body)))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def extract_program(response: str) -> str | None:
    """The program in ``response``'s last Python code block, or None."""
    blocks = _fenced_blocks(response)
    tagged = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag]
    program = (tagged or untagged or [None])[-1]
    return program if program and program.strip() else None


_STATUS_REASONS = {
    "passed": "correct",
    "wrong_answer": "wrong_answer",
    "runtime_error": "runtime_error",
    "timeout": "timeout",
    "memory_limit": "memory_limit",
    "grader_error": "grader_error",
}


class CodeGrader:
    def __init__(self, limits: Limits | None = None, workers: int = 2) -> None:
        self.limits = limits or Limits()
        self.workers = workers
        self.isolation: Counter[str] = Counter()

    def describe(self) -> dict[str, Any]:
        return {
            "name": "last Python code block, all tests in the sandbox",
            "limits": {k: v for k, v in vars(self.limits).items()},
            "workers": self.workers,
            "isolation": dict(self.isolation),
        }

    def grade(
        self, problems: ProblemSet, responses: Sequence[Sequence[str]]
    ) -> list[list[Verdict]]:
        if problems.tests is None:
            raise ValueError("code grading needs problems with tests")
        programs = [[extract_program(r) for r in samples] for samples in responses]
        jobs = [
            (i, j, program, problems.tests[i])
            for i, samples in enumerate(programs)
            for j, program in enumerate(samples)
            if program is not None
        ]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            results = list(pool.map(lambda job: run_program(job[2], job[3], self.limits), jobs))
        verdicts: list[list[Verdict]] = [
            [Verdict(None, False, "no_answer") for _ in samples] for samples in programs
        ]
        for (i, j, program, _), result in zip(jobs, results, strict=True):
            verdicts[i][j] = self._verdict(program, result)
        return verdicts

    def _verdict(self, program: str, result: Result) -> Verdict:
        if result.isolation is not None:
            self.isolation[_isolation_label(result.isolation)] += 1
        reason = _STATUS_REASONS.get(result.status, "runtime_error")
        detail = None if reason == "correct" else f"{result.passed}/{result.cases} tests passed"
        if result.detail and reason != "correct":
            detail = f"{detail}: {result.detail}"
        return Verdict(program, reason == "correct", reason, detail)


def _isolation_label(isolation: dict[str, Any]) -> str:
    """One line per distinct set of bounds a run had (counted in the summary's ``isolation``)."""
    bounds = isolation.get("bounds") or {}
    parts = [f"{what}: {how}" for what, how in bounds.items()]
    own = isolation.get("own_uid")
    parts.append("uid: one of its own per run" if own else f"uid: {isolation.get('user')}")
    return "; ".join(parts)
