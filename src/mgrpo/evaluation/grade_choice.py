"""Multiple choice: the letter a response commits to, or no answer.

Rules, in order; the first that finds a letter decides (and within a rule, the last match):

1. the last ``\\boxed{}``: ``\\boxed{C}``, ``\\boxed{(C)}``, ``\\boxed{\\text{C}}``,
   ``\\boxed{C. 42 m/s}``, or a box holding exactly one option's text;
2. a stated answer: "the answer is (C)", "Answer: C", "the correct option is C",
   "option C is correct", "final answer: **C**";
3. the last non-empty line: a bare letter ("C", "(C)", "C)", "**C**"), a line that opens with
   an option label ("(C) 42 m/s", "C) 42 m/s"), or a line that ends on a letter
   ("A and C are wrong, so B").

Only letters of the problem's options count (A-D for four options), only capital letters, and a
letter must stand alone ("Also", "vitamin E" with four options do not count). A response that
discusses options without committing to one has no answer, which is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mgrpo.algorithm.answers import last_boxed
from mgrpo.data import LETTERS, ProblemSet
from mgrpo.evaluation.grading import Verdict

_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox|bf)\s*\{([^{}]*)\}")
# Every repetition is bounded: responses are untrusted text, and nested unbounded quantifiers
# backtrack for minutes on long runs of spaces.
_STATED = (
    r"(?i:\b(?:(?:final|correct|best)\s{1,3})?answer|\b(?:correct|best|right)\s{1,3}"
    r"(?:option|choice|letter))"
    r"[\s*:=]{0,6}(?i:(?:is|(?:would|should|must|will)\s{1,3}be)\b)?"
    r"[\s*:=]{0,6}(?i:(?:option|choice|letter)\s{0,3})?[\s*$(\[]{0,4}({L})(?![A-Za-z0-9])"
)
_DECLARED = (
    r"(?i:\b(?:option|choice))\s{0,3}[(\[]?({L})[)\]]?\s{1,3}(?i:is)\s{1,3}(?i:the\s{1,3})?"
    r"(?i:correct|right|best|answer)"
)


def _clean(text: str) -> str:
    for _ in range(3):  # \text{\textbf{C}}: a few layers, never a loop over hostile nesting
        text = _WRAPPERS.sub(r"\1", text)
    return text.replace("$", "").replace("**", "").strip()


def _squash(text: str) -> str:
    return " ".join(_clean(text).lower().split()).rstrip(".")


def extract_choice(response: str, options: Sequence[str]) -> str | None:
    """The letter ``response`` commits to among ``options``, or None."""
    letters = LETTERS[: len(options)]
    letter = f"[{letters}]"
    boxed = last_boxed(response)
    if boxed is not None:
        content = _clean(boxed)
        found = re.fullmatch(
            rf"(?i:option|choice|answer)?[\s:]*\(?({letter})\)?(?:[.:)\s].*)?", content, re.S
        )
        if found:
            return found.group(1)
        matching = [i for i, opt in enumerate(options) if _squash(opt) == _squash(content)]
        if len(matching) == 1:
            return letters[matching[0]]
    stated = [
        (m.start(), m.group(1))
        for pattern in (_STATED, _DECLARED)
        for m in re.finditer(pattern.replace("{L}", letter), response)
    ]
    if stated:
        return max(stated)[1]
    lines = [line for line in response.splitlines() if line.strip()]
    if not lines:
        return None
    last = _clean(lines[-1])
    for pattern in (
        rf"^\W*({letter})\W*$",  # "C", "(C)", "C)", "C."
        rf"^\s*\(({letter})\)\s+\S",  # "(C) 42 m/s"
        rf"^\s*({letter})[).:]\s+\S",  # "C) 42 m/s", "C. 42 m/s"
        rf"(?<![A-Za-z0-9'])\(?({letter})\)?[\s.!)]*$",  # "... so B", "It is (B)."
    ):
        found = re.search(pattern, last)
        if found:
            return found.group(1)
    return None


class ChoiceGrader:
    def describe(self) -> dict[str, Any]:
        return {"name": "committed option letter"}

    def grade(
        self, problems: ProblemSet, responses: Sequence[Sequence[str]]
    ) -> list[list[Verdict]]:
        if problems.options is None:
            raise ValueError("multiple-choice grading needs problems with options")
        verdicts = []
        for truth, options, samples in zip(
            problems.answers, problems.options, responses, strict=False
        ):
            row = []
            for response in samples:
                letter = extract_choice(response, options)
                if letter is None:
                    row.append(Verdict(None, False, "no_answer"))
                elif letter == truth:
                    row.append(Verdict(letter, True, "correct"))
                else:
                    row.append(Verdict(letter, False, "wrong_answer"))
            verdicts.append(row)
        return verdicts
