"""Evaluations join their run's TensorBoard curves (`mgrpo eval` / `copy-eval --tensorboard`)."""

from __future__ import annotations

import json
from pathlib import Path

from support import as_float32, raw_scalar_counts, tensorboard_scalars

from mgrpo.cli import main
from mgrpo.config import validate_config
from mgrpo.tracking import EVAL_EVENTS


def test_evaluations_join_the_runs_curves_once_per_step(toy_dir: Path, tmp_path: Path) -> None:
    """Step 0 (the base model's evaluation, copied) and step 2 at their steps; a repeat replaces."""
    tensorboard = tmp_path / "runs" / "r" / "tensorboard"
    problems = toy_dir / "data" / "test.parquet"
    config = validate_config(
        {
            "runs": {"r": {}},
            "benchmarks": {"test": {"source": "toy", "split": "test", "limit": 3}},
            "evaluation": {"device": "cpu", "micro_batch_size": 4},
        }
    )
    spec = json.dumps({**config["benchmarks"]["test"], **config["evaluation"]})

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
    for key in ("accuracy", "majority_accuracy", "answer_rate", "truncated_rate"):
        expected = [(0, as_float32(base[key])), (2, as_float32(step2[key]))]
        assert curves[f"eval/test/{key}"] == expected, key
    assert "eval/test/seconds" not in curves and "eval/test/samples" not in curves
    assert set(raw_scalar_counts(tensorboard).values()) == {1}
