"""Multiple choice: the letter a response commits to as its final answer, or no answer.

Rules, in order; the first that finds an answer decides:

1. the last ``\\boxed{}``: ``\\boxed{C}``, ``\\boxed{(C)}``, ``\\boxed{\\text{C}}``,
   ``\\boxed{C. 42 m/s}``, or a box holding exactly one option's text;
2. the *last* answer statement: "the answer is (C)", "Answer: C", "the answer would be C",
   "the correct option is C", "option C is correct", "final answer: **C**". A statement needs its
   verb or colon: "answer D is a trap" states nothing;
3. the last non-empty line: a bare letter ("C", "(C)", "C)", "**C**"), a line that opens with
   an option label ("(C) 42 m/s", "C) 42 m/s"), or a line that ends on a letter
   ("A and C are wrong, so B").

A hedged answer ("(A) or (B)", ``\\boxed{A \\text{ or } B}``, "A/B", "A, C") is no answer, and so
is the rule's whole decision: a hedged box or final statement does not fall back to a letter
mentioned earlier. Only capital letters of the problem's options count, standing alone ("Also",
"vitamin E" with four options do not count); a bare "A" or "I" followed by a lowercase word is
the English word ("Answer: I think it is (B)", "Answer: A good choice is (C)"), unless the word
is one that follows a stated letter ("A because", "I is correct").

Why the *last* statement, where lm-eval's ``mmlu_pro`` filter, MMLU-Pro's own
``extract_answer`` and GPQA's ``parse_sampled_answer`` take the *first* "answer is (X)": the
prompt asks the model to *finish* with its answer, and a response that corrects itself ("... so
the answer is (A). But friction was ignored; the answer is (C).") answers C. docs/evaluation.md
cites the reference graders; lm-eval's own first-match number is reported beside ours.
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
    r"(?P<verb>[\s*:=]{0,6}(?i:(?:is|was|(?:would|should|must|will)\s{1,3}be)\b)?[\s*:=]{0,6})"
    r"(?i:(?:option|choice|letter)\s{0,3})?(?P<open>[\s*$(\[]{0,4})(?P<letter>{L})(?![A-Za-z0-9])"
)
_DECLARED = (
    r"(?i:\b(?:option|choice))\s{0,3}(?P<open>[(\[]?)(?P<letter>{L})[)\]]?\s{1,3}(?i:is)\s{1,3}"
    r"(?i:the\s{1,3})?(?i:correct|right|best|answer)"
)
# After a letter: "or (B)", "/B", ", C", "and C": the answer is hedged between options.
_JOINER = (
    r"\s{0,3}(?:(?:,\s{0,3})?(?i:or|and/or)\b(?:\s{1,3}(?i:possibly|maybe|perhaps))?"
    r"|,|/|&|(?i:and)\b)\s{0,3}"
)
_HEDGED_AFTER = r"[)\]*$]{0,3}" + _JOINER + r"[*$(\[]{0,3}{L}(?![A-Za-z0-9])"
_HEDGED_BEFORE = r"{L}[)\]*$]{0,3}" + _JOINER + r"[*$(\[]{0,3}$"
# Words after a bare "A" or "I" that make it a stated letter, not the English word.
_AFTER_A_LETTER = frozenset(
    {"because", "since", "as", "is", "was", "which", "this", "that", "for", "given", "due"}
    | {"so", "and", "or", "but"}
)


def _clean(text: str) -> str:
    for _ in range(3):  # \text{\textbf{C}}: a few layers, never a loop over hostile nesting
        text = _WRAPPERS.sub(r"\1", text)
    return text.replace("$", "").replace("**", "").strip()


def _squash(text: str) -> str:
    return " ".join(_clean(text).lower().split()).rstrip(".")


def _is_the_english_word(letter: str, opened: str, after: str) -> bool:
    """A bare "A"/"I" followed by a lowercase word is the article or the pronoun."""
    if letter not in "AI" or any(c in opened for c in "([*"):
        return False
    word = re.match(r"[ \t]{1,3}([a-z]+)", after)
    return word is not None and word.group(1) not in _AFTER_A_LETTER


def _statements(response: str, letter: str) -> list[tuple[int, str | None]]:
    """(position, letter or None if hedged) of every answer statement in ``response``."""
    found = []
    hedged_after = re.compile(_HEDGED_AFTER.replace("{L}", letter))
    for pattern in (_STATED, _DECLARED):
        for m in re.finditer(pattern.replace("{L}", letter), response):
            verb = m.groupdict().get("verb")
            if verb is not None and not re.search(r"[:=]|(?i:is|was|be)\b", verb):
                continue  # "answer D is a trap": no verb or colon between "answer" and D
            after = response[m.end("letter") : m.end("letter") + 40]
            if _is_the_english_word(m.group("letter"), m.group("open"), after):
                continue
            hedged = hedged_after.match(after) is not None
            found.append((m.start(), None if hedged else m.group("letter")))
    return found


def extract_choice(response: str, options: Sequence[str]) -> str | None:
    """The letter ``response`` commits to among ``options``, or None."""
    letters = LETTERS[: len(options)]
    letter = f"[{letters}]"
    boxed = last_boxed(response)
    if boxed is not None:
        content = _clean(boxed)
        found = re.fullmatch(
            rf"(?i:option|choice|answer)?[\s:]*(\(?)({letter})\)?(?P<rest>(?:[.:)\s].*)?)",
            content,
            re.S,
        )
        if found:
            hedged = re.match(_HEDGED_AFTER.replace("{L}", letter), found.group("rest"))
            return None if hedged else found.group(2)
        matching = [i for i, opt in enumerate(options) if _squash(opt) == _squash(content)]
        if len(matching) == 1:
            return letters[matching[0]]
    stated = _statements(response, letter)
    if stated:
        return max(stated, key=lambda found: found[0])[1]
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
            before, after = last[: found.start(1)], last[found.end(1) :]
            if re.search(_HEDGED_BEFORE.replace("{L}", letter), before) or re.match(
                _HEDGED_AFTER.replace("{L}", letter), after
            ):
                return None  # "... either (A) or (B).", "(A) or (B)"
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
