"""The generated toy problems and the warm start's answer noise."""

from __future__ import annotations

import random

import pytest

from mgrpo.algorithm.answers import extract_answer
from mgrpo.toy.problems import generate_splits, perturb_answer

LEVELS = {"a": [1, 2, 3], "b": [1, 2, 3], "hard": [3]}


def test_splits_are_disjoint_correct_and_reproducible() -> None:
    splits = generate_splits({"a": 300, "b": 200, "hard": 100}, LEVELS, seed=7)
    again = generate_splits({"a": 300, "b": 200, "hard": 100}, LEVELS, seed=7)
    assert splits == again
    questions = [p.question for split in splits.values() for p in split]
    assert len(questions) == len(set(questions))
    for problem in (p for split in splits.values() for p in split):
        terms = [int(t) for t in problem.question.split()[1].rstrip(".").split("+")]
        assert len(terms) == problem.level + 2
        assert problem.answer == str(sum(terms))
        assert extract_answer(problem.solution) == problem.answer
        assert "\\boxed{}" in problem.question
    assert {p.level for p in splits["hard"]} == {3}


def test_impossible_request_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot draw"):
        generate_splits({"x": 8000}, {"x": [1]}, seed=0)  # level 1 has 90 * 9**2 = 7290


def test_perturbed_answer_differs_in_exactly_one_digit() -> None:
    rng = random.Random(0)
    solution = "59+7=66, 66+1=67. \\boxed{67}"
    for _ in range(200):
        noisy = perturb_answer(solution, "67", rng)
        wrong = extract_answer(noisy)
        assert wrong != "67" and len(wrong) == 2 and wrong[0] != "0"
        assert sum(a != b for a, b in zip(wrong, "67", strict=True)) == 1
        assert noisy.startswith("59+7=66, 66+1=") and f"={wrong}." in noisy
