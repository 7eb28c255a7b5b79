"""Evaluation: grading by hand, and a real evaluation of the tiny toy model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support import as_float32, raw_scalar_counts, tensorboard_scalars

from mgrpo.algorithm.answers import math_verify_equal
from mgrpo.cli import main
from mgrpo.data import read_problems
from mgrpo.evaluation.local import evaluate_model, grade_samples
from mgrpo.tracking import EVAL_EVENTS

SPEC = {
    "samples": 2,
    "temperature": 0.8,
    "max_new_tokens": 12,
    "limit": 5,
    "seed": 0,
    "micro_batch_size": 4,
    "device": "cpu",
    "threads": 1,
    "answer_equivalence": "math_verify",
}


def test_grading_avg_and_majority_at_k_by_hand() -> None:
    texts = [
        "\\boxed{0.5}",  # p1: equal to 1/2 symbolically
        "\\boxed{3}",
        "\\boxed{3}",  # p1: maj@3 = "3", wrong
        "no answer",  # p2
        "\\boxed{7}",
        "\\boxed{7}",  # p2: maj@3 = "7", right
    ]
    summary, records = grade_samples(
        texts, [1] * 6, ["p1", "p2"], ["\\frac{1}{2}", "7"], 3, math_verify_equal
    )
    assert [r["correct"] for r in records] == [True, False, False, False, True, True]
    assert summary["accuracy"] == pytest.approx(3 / 6)
    assert summary["majority_accuracy"] == pytest.approx(1 / 2)
    assert summary["answer_rate"] == pytest.approx(5 / 6)
    exact, _ = grade_samples(texts, [1] * 6, ["p1", "p2"], ["\\frac{1}{2}", "7"], 3, None)
    assert exact["accuracy"] == pytest.approx(2 / 6)


def test_majority_at_k_votes_over_answer_classes() -> None:
    # p1: two samples write sqrt(3) in different forms; one says 1. As strings the three tie and
    # the first ("1") would win; math-verify merges the two roots, which then win 2:1.
    texts = ["\\boxed{1}", "\\boxed{\\sqrt{3}}", "\\boxed{3^{1/2}}"]
    merged, _ = grade_samples(texts, [1] * 3, ["p1"], ["\\sqrt{3}"], 3, math_verify_equal)
    assert merged["majority_accuracy"] == 1.0
    exact, _ = grade_samples(texts, [1] * 3, ["p1"], ["\\sqrt{3}"], 3, None)
    assert exact["majority_accuracy"] == 0.0


def test_exact_grading_of_file_answers_written_in_other_forms(tmp_path: Path) -> None:
    # Truths read from a problem file and rollouts that box another form of the same answer
    # agree under the string rules alone (answer_equivalence: exact).
    truths = ["\\$5", "\\frac12", "a=3", "\\sqrt3", "90^\\circ", "\\text{(C)}"]
    texts = [
        "\\boxed{5\\text{ dollars}}",
        "\\boxed{0.5}",
        "\\boxed{3}",
        "\\boxed{\\sqrt{3}}",
        "\\boxed{90 degrees}",
        "\\boxed{C}",
    ]
    ids = [f"p{i}" for i in range(len(truths))]
    path = tmp_path / "problems.parquet"
    pd.DataFrame({"id": ids, "question": ["q"] * len(ids), "answer": truths}).to_parquet(path)
    problems = read_problems(path)
    summary, _ = grade_samples(texts, [1] * len(texts), problems.ids, problems.answers, 1, None)
    assert summary["accuracy"] == 1.0


def test_grading_refuses_a_wrong_sample_count() -> None:
    with pytest.raises(ValueError, match="expected 2 samples for each of 2 problems, got 3"):
        grade_samples(["a"] * 3, [1] * 3, ["p1", "p2"], ["1", "2"], 2, None)


def test_evaluation_of_a_checkpoint_is_reproducible(toy_dir: Path) -> None:
    problems = toy_dir / "data" / "test.parquet"
    summary, records = evaluate_model(toy_dir / "model", problems, SPEC)
    again, _ = evaluate_model(toy_dir / "model", problems, SPEC)
    assert summary["accuracy"] == again["accuracy"]
    assert (summary["problems"], summary["samples"]) == (5, 10)
    assert len(records) == 10
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in records) / 10)
    assert summary["sampling"] == {"temperature": 0.8, "max_new_tokens": 12, "seed": 0}


def test_evaluations_join_the_runs_curves_once_per_step(toy_dir: Path, tmp_path: Path) -> None:
    """`mgrpo eval` and `copy-eval` (step 0) add their numbers at their step; a repeat replaces."""
    tensorboard = tmp_path / "runs" / "r" / "tensorboard"
    problems = toy_dir / "data" / "test.parquet"
    spec = json.dumps({**SPEC, "samples": 1, "limit": 3})

    def evaluate(run: str, step: int, out: Path, *extra: str) -> dict:
        main([
            "eval", "--spec", spec, "--model", str(toy_dir / "model"), "--problems", str(problems),
            "--out", str(out / "test.json"), "--records", str(out / "test.samples.parquet"),
            "--run", run, "--step", str(step), "--benchmark", "test", *extra,
        ])  # fmt: skip
        return json.loads((out / "test.json").read_text())

    base = evaluate("base", 0, tmp_path / "base")  # shared by the runs: no curves of its own
    main([
        "copy-eval", "--src", str(tmp_path / "base/test.json"),
        "--src-records", str(tmp_path / "base/test.samples.parquet"),
        "--out", str(tmp_path / "step0/test.json"),
        "--records", str(tmp_path / "step0/test.samples.parquet"),
        "--run", "r", "--tensorboard", str(tensorboard),
    ])  # fmt: skip
    for _ in range(2):  # evaluated twice: the points are replaced, not added again
        step2 = evaluate("r", 2, tmp_path / "step2", "--tensorboard", str(tensorboard))
    curves = tensorboard_scalars(tensorboard / EVAL_EVENTS)
    assert curves["eval/test/accuracy"] == [
        (0, as_float32(base["accuracy"])),
        (2, as_float32(step2["accuracy"])),
    ]
    assert curves["eval/test/answer_rate"] == [
        (0, as_float32(base["answer_rate"])),
        (2, as_float32(step2["answer_rate"])),
    ]
    assert set(raw_scalar_counts(tensorboard).values()) == {1}
