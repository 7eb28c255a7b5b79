"""What every grader returns per sample, and the graders by problem kind."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mgrpo.data import ProblemSet

# Why a sample is right or wrong. `correct` is the only verdict that scores.
REASONS = (
    "correct",
    "wrong_answer",  # an answer (or a program that ran) that does not match
    "no_answer",  # no \boxed{}, no committed letter, no code block
    "timeout",  # the grader (math-verify) or the program ran out of time
    "runtime_error",  # the program raised, exited early, or could not be compiled
    "memory_limit",  # the program ran out of its address space
    "grader_error",  # the grader itself failed on this answer
)


@dataclass(frozen=True)
class Verdict:
    answer: str | None  # the extracted answer: expression, letter or program
    correct: bool
    reason: str
    detail: str | None = None
    vote: str | None = None  # the answer's class for maj@k (math: equivalent answers merged)

    @property
    def vote_key(self) -> str | None:
        return self.vote if self.vote is not None else self.answer

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown verdict reason {self.reason!r}")
        if self.correct != (self.reason == "correct"):
            raise ValueError(f"verdict {self.reason!r} with correct={self.correct}")


class Grader(Protocol):
    """Grades ``responses[i]`` (the samples of problem ``i``) against ``problems``."""

    def grade(
        self, problems: ProblemSet, responses: Sequence[Sequence[str]]
    ) -> list[list[Verdict]]: ...

    def describe(self) -> dict[str, Any]: ...


def make_grader(kind: str, spec: Mapping[str, Any]) -> Grader:
    """The grader of a problem kind, configured from the evaluation spec."""
    if kind == "math":
        from mgrpo.evaluation.grade_math import MathGrader

        grader = spec.get("grader", {})
        return MathGrader(
            equivalence=spec.get("answer_equivalence", "math_verify"),
            workers=grader.get("workers", 2),
            timeout_s=grader.get("timeout_s", 5.0),
            memory_mb=grader.get("memory_mb", 4096),
        )
    if kind == "multiple_choice":
        from mgrpo.evaluation.grade_choice import ChoiceGrader

        return ChoiceGrader()
    if kind == "code":
        from mgrpo.evaluation.grade_code import CodeGrader
        from mgrpo.evaluation.sandbox import Limits

        sandbox = dict(spec.get("sandbox", {}))
        return CodeGrader(Limits.from_spec(sandbox), workers=sandbox.get("workers", 2))
    raise ValueError(f"unknown problem kind {kind!r}")
