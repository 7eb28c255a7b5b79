"""Evaluation throughput on the embedded default: local-backend generation and each grader.

    python benchmarks/eval_throughput.py        # uses results/models/toy if `make run` built it
    python benchmarks/eval_throughput.py --threads 2 --json results/benchmarks/eval_throughput.json
    python benchmarks/eval_throughput.py --workdir /tmp/toy   # build the toy there once, reuse it

Generation: the default config's `test` benchmark (300 toy problems, T = 0.8, 48 new tokens, one
sample each) through :func:`mgrpo.evaluation.runner.evaluate_model` with the local backend; the
model is loaded once before timing, then ``--repeats`` timed evaluations report the median.
Graders: math-verify answers/s through the bounded pool, option letters/s, sandboxed programs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mgrpo.config import load_config  # noqa: E402


def toy_inputs(config: dict, workdir: Path) -> tuple[Path, Path]:
    """The toy model and test split: reuse the workflow's or ``workdir``'s, else build them."""
    for model, test in [
        (REPO / "results/models/toy", REPO / "results/data/test.parquet"),
        (workdir / "model", workdir / "test.parquet"),
    ]:
        if model.exists() and test.exists():
            return model, test
    from mgrpo.toy.build import build_toy_model, write_toy_splits

    splits = {s: workdir / f"{s}.parquet" for s in ("sft", "test")}
    write_toy_splits(config["data"]["toy"], splits)
    build_toy_model(config["toy_model"], splits["sft"], workdir / "model")
    return workdir / "model", splits["test"]


def generation(config: dict, model: Path, problems: Path, threads: int, repeats: int) -> dict:
    from mgrpo import lm
    from mgrpo.evaluation.backends import LocalBackend, stop_token_ids
    from mgrpo.evaluation.runner import evaluate_model

    spec = {**config["benchmarks"]["test"], **config["evaluation"], "threads": threads}
    backend = LocalBackend(
        model,
        stop_token_ids(model, lm.load_tokenizer(model)),
        device="cpu",
        threads=threads,
        micro_batch_size=spec["micro_batch_size"],
    )
    backend._load()  # time generation, not start-up
    rates, totals = [], []
    for _ in range(repeats):
        summary, _ = evaluate_model(model, problems, spec, backend=backend)
        rates.append(summary["samples_per_second"])
        totals.append(summary["seconds"])
    return {
        "samples": summary["samples"],
        "max_new_tokens": spec["max_new_tokens"],
        "mean_response_tokens": summary["mean_response_tokens"],
        "threads": threads,
        "samples_per_second": statistics.median(rates),
        "evaluation_seconds": statistics.median(totals),
    }


def graders() -> dict:
    from mgrpo.data import ProblemSet
    from mgrpo.evaluation.grade_choice import extract_choice
    from mgrpo.evaluation.grade_math import MathGrader
    from mgrpo.evaluation.sandbox import Limits, run_program

    n = 200
    problems = ProblemSet(ids=[str(i) for i in range(n)], questions=[""] * n,
                          answers=["\\frac{1}{2}"] * n)  # fmt: skip
    responses = [[f"so \\boxed{{\\frac{{{i + 1}}}{{{2 * i + 2}}}}}"] for i in range(n)]
    start = time.perf_counter()
    MathGrader(workers=2).grade(problems, responses)
    math_rate = n / (time.perf_counter() - start)

    texts = [f"Reasoning {i}... A and C are wrong, so the answer is (B)." for i in range(5000)]
    start = time.perf_counter()
    for text in texts:
        extract_choice(text, ["a", "b", "c", "d"])
    choice_rate = len(texts) / (time.perf_counter() - start)

    tests = {"mode": "assert", "cases": ["assert f(2) == 4"]}
    start = time.perf_counter()
    for _ in range(20):
        run_program("def f(x):\n    return x * 2\n", tests, Limits())
    code_rate = 20 / (time.perf_counter() - start)
    return {
        "math_verify_answers_per_second": round(math_rate, 1),
        "choice_extractions_per_second": round(choice_rate, 1),
        "sandboxed_programs_per_second": round(code_rate, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads for generation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", help="where to build (and find) the toy model; default: temp")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        model, problems = toy_inputs(config, Path(args.workdir or tmp))
        load_before = os.getloadavg()[0]
        result = {"generation": generation(config, model, problems, args.threads, args.repeats)}
        result["graders"] = graders()
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
