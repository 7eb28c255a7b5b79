"""Math answers: the response's last ``\\boxed{}`` against the ground truth, in bounded time.

Answers are extracted and normalised with :mod:`mgrpo.algorithm.answers` (the same rules the
training reward uses). Equal strings are correct and two different finite decimals are wrong
without further work; every other pair goes to math-verify in a :class:`BoundedPool`, where a
pathological answer (``9^{9^{9^{9}}}``) is killed at the deadline and recorded as ``timeout``.
Each distinct pair is verified once. maj@k votes over answer classes as the trainer's vote does
(:func:`~mgrpo.algorithm.answers.merge_equivalent`), with the pairs of a problem's distinct
answers verified in the same pool (an answer pair that times out counts as different).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mgrpo.algorithm.answers import (
    extract_answer,
    math_verify_equal,
    merge_equivalent,
    same_word,
)
from mgrpo.data import ProblemSet
from mgrpo.evaluation.grading import Verdict
from mgrpo.evaluation.pool import BoundedPool

_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def verify_in_worker(truth: str, answer: str) -> bool:
    """math-verify equivalence with its own (signal-based) timeouts off: the pool bounds it."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify_equal(truth, answer, timeout_s=0)


class MathGrader:
    def __init__(
        self, equivalence: str = "math_verify", workers: int = 2, timeout_s: float = 5.0,
        memory_mb: int | None = 4096,
    ) -> None:  # fmt: skip
        if equivalence not in ("math_verify", "exact"):
            raise ValueError(f"unknown answer_equivalence {equivalence!r}")
        self.equivalence, self.workers = equivalence, workers
        self.timeout_s, self.memory_mb = timeout_s, memory_mb
        self.verified = self.timeouts = 0

    def describe(self) -> dict[str, Any]:
        return {
            "name": "last \\boxed{} answer" + (", math-verify" if self.verify else ", exact"),
            "timeout_s": self.timeout_s,
            "workers": self.workers,
            "verified": self.verified,
            "timeouts": self.timeouts,
        }

    @property
    def verify(self) -> bool:
        return self.equivalence == "math_verify"

    def grade(
        self, problems: ProblemSet, responses: Sequence[Sequence[str]]
    ) -> list[list[Verdict]]:
        answers = [[extract_answer(r) for r in samples] for samples in responses]
        truths = problems.answers
        for i, truth in enumerate(truths[: len(answers)]):
            if truth is None:
                raise ValueError(f"problem {problems.ids[i]!r} has no answer to grade against")
        graded = {
            (truth, answer)
            for truth, samples in zip(truths, answers, strict=False)
            for answer in samples
            if answer is not None and self._needs_verify(truth, answer)
        }
        voted = set()  # pairs of a problem's distinct answers, for maj@k's answer classes
        for samples in answers:
            distinct = sorted({x for x in samples if x is not None})
            for i, a in enumerate(distinct):
                voted |= {_pair(a, b) for b in distinct[i + 1 :] if self._needs_verify(a, b)}
        pairs = sorted(graded | voted)
        outcomes = {}
        if pairs:
            with BoundedPool(
                verify_in_worker,
                workers=min(self.workers, len(pairs)),
                timeout_s=self.timeout_s,
                memory_mb=self.memory_mb,
                preload=["math_verify", "mgrpo.algorithm.answers"],
            ) as pool:
                outcomes = dict(zip(pairs, pool.map(pairs), strict=True))
            self.verified += len(pairs)

        def same(a: str, b: str) -> bool:
            if a == b or same_word(a, b):
                return True
            outcome = outcomes.get(_pair(a, b))
            return outcome is not None and outcome.status == "ok" and outcome.value

        verdicts = []
        for truth, samples in zip(truths, answers, strict=False):
            classes = merge_equivalent(samples, same if self.verify else None)
            row = []
            for answer, vote in zip(samples, classes, strict=True):
                if answer is None:
                    verdict = Verdict(None, False, "no_answer")
                elif answer == truth or (self.verify and same_word(answer, truth)):
                    verdict = Verdict(answer, True, "correct")
                elif (truth, answer) not in outcomes:
                    verdict = Verdict(answer, False, "wrong_answer")
                else:
                    verdict = self._verdict(answer, outcomes[truth, answer])
                row.append(replace(verdict, vote=vote))
            verdicts.append(row)
        return verdicts

    def _needs_verify(self, truth: str, answer: str) -> bool:
        if not self.verify or answer == truth or same_word(truth, answer) is not None:
            return False  # equal strings, or a word: decided without math-verify
        # normalize_answer writes numbers canonically: two different plain numbers differ.
        return not (_PLAIN_NUMBER.fullmatch(truth) and _PLAIN_NUMBER.fullmatch(answer))

    def _verdict(self, answer: str, outcome: Any) -> Verdict:
        if outcome.status == "timeout":
            self.timeouts += 1
            return Verdict(answer, False, "timeout", f"math-verify {outcome.detail}")
        if outcome.status == "error":
            return Verdict(answer, False, "grader_error", outcome.detail)
        return (
            Verdict(answer, True, "correct")
            if outcome.value
            else Verdict(answer, False, "wrong_answer")
        )
