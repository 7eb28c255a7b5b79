"""Graders by hand: math answers (bounded math-verify), option letters, code extraction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from support import fails_after

from mgrpo.algorithm.answers import normalize_answer
from mgrpo.data import ProblemSet, read_problems
from mgrpo.evaluation.backends import Completion
from mgrpo.evaluation.grade_choice import ChoiceGrader, extract_choice
from mgrpo.evaluation.grade_code import extract_program
from mgrpo.evaluation.grade_math import MathGrader
from mgrpo.evaluation.grading import Verdict
from mgrpo.evaluation.pool import BoundedPool


def math_problems(*truths: str) -> ProblemSet:
    ids = [f"p{i}" for i in range(len(truths))]
    return ProblemSet(ids=ids, questions=ids, answers=list(truths))


def reasons(verdicts: list[list[Verdict]]) -> list[list[str]]:
    return [[v.reason for v in row] for row in verdicts]


# ----------------------------------------------------------------------------- math
def test_math_equivalent_forms_last_box_and_no_box() -> None:
    problems = math_problems("\\frac{1}{2}", "7", "3\\sqrt{2}")
    responses = [
        ["so \\boxed{0.5}", "\\boxed{\\dfrac12}", "first \\boxed{1/2} then \\boxed{0.4}"],
        ["\\boxed{7}", "no box: 7", "\\boxed{3} or rather \\boxed{7}"],
        ["\\boxed{\\sqrt{18}}", "\\boxed{}", "\\boxed{4.24}"],
    ]
    verdicts = MathGrader(workers=1).grade(problems, responses)
    assert reasons(verdicts) == [
        ["correct", "correct", "wrong_answer"],  # the last box counts, not the first
        ["correct", "no_answer", "correct"],
        ["correct", "no_answer", "wrong_answer"],
    ]
    assert verdicts[0][2].answer == "0.4"
    assert verdicts[1][1].answer is None


def test_exact_equivalence_never_calls_math_verify() -> None:
    problems = math_problems("\\sqrt{3}")
    verdicts = MathGrader(equivalence="exact").grade(
        problems, [["\\boxed{3^{1/2}}", "\\boxed{\\sqrt3}"]]
    )
    assert reasons(verdicts) == [["wrong_answer", "correct"]]  # \sqrt3 normalises to \sqrt{3}


def test_a_pathological_answer_times_out_and_is_graded_wrong() -> None:
    problems = math_problems("3", "\\frac{1}{2}")
    responses = [["\\boxed{9^{9^{9^{9}}}}", "\\boxed{3}"], ["\\boxed{0.5}", "\\boxed{2^{-1}}"]]
    grader = MathGrader(workers=2, timeout_s=1.0)
    start = time.monotonic()
    with fails_after(60):
        verdicts = grader.grade(problems, responses)
    elapsed = time.monotonic() - start
    assert reasons(verdicts) == [["timeout", "correct"], ["correct", "correct"]]
    assert verdicts[0][0].answer == "9^{9^{9^{9}}}" and not verdicts[0][0].correct
    assert grader.timeouts == 1
    assert elapsed < 30  # unbounded, math-verify on this input runs for minutes


def _sleep_then_echo(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _die(value: int) -> int:
    if value < 0:
        os._exit(3)
    return value


def test_pool_kills_a_stuck_worker_and_keeps_going() -> None:
    with fails_after(30), BoundedPool(_sleep_then_echo, workers=2, timeout_s=0.5) as pool:
        outcomes = pool.map([(0.0, 1), (60.0, 2), (0.0, 3), (60.0, 4), (0.0, 5)])
        assert [o.status for o in outcomes] == ["ok", "timeout", "ok", "timeout", "ok"]
        assert [o.value for o in outcomes if o.status == "ok"] == [1, 3, 5]
        assert pool.replaced == 2
        assert pool.map([(0.0, 6)])[0].value == 6  # replacements work


def test_pool_survives_a_worker_that_dies() -> None:
    with BoundedPool(_die, workers=1, timeout_s=5) as pool:
        outcomes = pool.map([(1,), (-1,), (2,)])
    assert [o.status for o in outcomes] == ["ok", "error", "ok"]
    assert "died" in outcomes[1].detail


# ----------------------------------------------------------------------------- choices
FOUR = ["red", "green", "blue", "42 m/s"]


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("Thinking... \\boxed{C}", "C"),
        ("\\boxed{(B)}", "B"),
        ("\\boxed{\\text{D}}", "D"),
        ("so $\\boxed{\\textbf{A}}$", "A"),
        ("\\boxed{C. blue}", "C"),
        ("\\boxed{42 m/s}", "D"),  # the box holds an option's text
        ("The answer is (C).", "C"),
        ("The answer is C", "C"),
        ("Answer: B", "B"),
        ("**Final answer:** (D)", "D"),
        ("The correct option is A.", "A"),
        ("Option B is correct.", "B"),
        ("After all that:\n(C)", "C"),
        ("After all that:\nC)", "C"),
        ("After all that:\n**B**", "B"),
        ("Checking each one.\n(D) 42 m/s", "D"),
        ("Checking each one.\nB) green", "B"),
        ("A and C are wrong, so B", "B"),
        ("(A) is tempting and (C) fails too, so the answer is (D).", "D"),
        ("The answer is not A. It is B.", "B"),
        ("B is wrong. The answer is A, not C.", "A"),
        ("I thought \\boxed{A} at first.\nThe answer is D.", "A"),  # a box beats prose
    ],
)
def test_choice_letter_the_response_commits_to(response: str, letter: str) -> None:
    assert extract_choice(response, FOUR) == letter


@pytest.mark.parametrize(
    "response",
    [
        "",
        "Options A and B both look plausible to me.",
        "I cannot decide.\nMore context is needed.",
        "Also, the blue one might be right.",  # "Also" is not a letter
        "The answer is E.",  # no option E among four
        "the answer is c",  # letters are capitals
        "\\boxed{purple}",
    ],
)
def test_no_committed_letter_is_no_answer(response: str) -> None:
    assert extract_choice(response, FOUR) is None


@pytest.mark.parametrize(
    "response",
    [
        "The answer" + " " * 50_000 + "is" + " " * 50_000,  # 93 s with nested \s* quantifiers
        "answer" + " :" * 5_000 + " x",
        "\\text{" * 20_000 + "C" + "}" * 20_000,
    ],
)
def test_hostile_responses_are_read_in_linear_time(response: str) -> None:
    start = time.monotonic()
    with fails_after(60):
        extract_choice(response, FOUR)
        extract_program(response + "```python\n" * 20_000)
    assert time.monotonic() - start < 10


def test_choice_grader_verdicts() -> None:
    problems = ProblemSet(
        ids=["q"], questions=["q"], answers=["B"], kind="multiple_choice", options=[FOUR]
    )
    responses = [["The answer is (B)", "The answer is (C)", "hmm", "A and C are wrong, so B"]]
    verdicts = ChoiceGrader().grade(problems, responses)
    assert reasons(verdicts) == [["correct", "wrong_answer", "no_answer", "correct"]]


# ----------------------------------------------------------------------------- code blocks
def test_program_is_the_last_python_block() -> None:
    response = (
        "First try:\n```python\ndef f():\n    return 1\n```\n"
        "Better:\n```python\ndef f():\n    return 2\n```\n"
        "Output:\n```text\n2\n```\n"
    )
    assert extract_program(response) == "def f():\n    return 2\n"
    assert extract_program("```\nprint(3)\n```") == "print(3)\n"  # untagged when none is tagged
    assert extract_program("```py\nx = 1\n```\n```\nplain\n```") == "x = 1\n"


@pytest.mark.parametrize(
    "response", ["no code at all", "```python\ndef f():\n    return 1", "```python\n\n```"]
)
def test_no_complete_code_block_is_no_program(response: str) -> None:
    assert extract_program(response) is None


def test_majority_at_k_votes_over_answer_classes() -> None:
    # Two samples write sqrt(3) in different forms, one says 1. As strings the three tie and the
    # first ("1") would win; math-verify merges the two roots, which then win 2:1.
    from mgrpo.evaluation.runner import summarize

    problems = math_problems("\\sqrt{3}")
    texts = [["\\boxed{1}", "\\boxed{\\sqrt{3}}", "\\boxed{3^{1/2}}"]]
    completions = [[Completion(t, 1, "stop") for t in texts[0]]]
    for equivalence, majority in (("math_verify", 1.0), ("exact", 0.0)):
        verdicts = MathGrader(equivalence=equivalence, workers=1).grade(problems, texts)
        assert summarize(problems, completions, verdicts)[0]["majority_accuracy"] == majority


def test_exact_grading_of_file_answers_written_in_other_forms(tmp_path: Path) -> None:
    # Truths read from a problem file and responses that box another form of the same answer
    # agree under the string rules alone (answer_equivalence: exact).
    truths = ["\\$5", "\\frac12", "a=3", "\\sqrt3", "90^\\circ", "\\text{(C)}"]
    texts = ["5\\text{ dollars}", "0.5", "3", "\\sqrt{3}", "90 degrees", "C"]
    path = tmp_path / "problems.parquet"
    ids = [f"p{i}" for i in range(len(truths))]
    pd.DataFrame({"id": ids, "question": ["q"] * len(ids), "answer": truths}).to_parquet(path)
    responses = [[f"so \\boxed{{{t}}}"] for t in texts]
    verdicts = MathGrader(equivalence="exact").grade(read_problems(path), responses)
    assert all(v.correct for row in verdicts for v in row)


def test_math_words_and_lists_are_graded_as_written() -> None:
    # `\text{no}` and `\text{on}` were one product n*o to math-verify; `0,125` was read as 125.
    truths = ["\\text{no}", "0,125", "\\text{stop}"]
    problems = math_problems(*map(normalize_answer, truths))  # as read_problems reads them
    responses = [
        ["\\boxed{\\text{on}}", "\\boxed{\\text{No}}", "\\boxed{no}"],
        ["\\boxed{125}", "\\boxed{0, 125}", "\\boxed{0.125}"],
        ["\\boxed{\\text{pots}}", "\\boxed{\\text{stop}}", "\\boxed{\\text{spot}}"],
    ]
    verdicts = MathGrader(workers=1).grade(problems, responses)
    assert reasons(verdicts) == [
        ["wrong_answer", "correct", "correct"],
        ["wrong_answer", "correct", "wrong_answer"],
        ["wrong_answer", "correct", "wrong_answer"],
    ]
    # maj@k: "on" and "no" are two answer classes, not one
    assert verdicts[0][0].vote_key != verdicts[0][1].vote_key
