"""Evaluate one model on one benchmark: generate, grade, summarise.

``samples`` responses per problem at ``temperature``, from the configured backend (vLLM or the
local sampler), either driven by the project's own loop or by lm-eval (``lm_eval: true``; then
lm-eval's metrics on the same generations are reported beside the project's). Every sample is
graded by its problem kind's grader. The summary gives avg@k (``accuracy``, the mean over all
samples, as the paper reports for AIME and GPQA), maj@k (``majority_accuracy``, math and
multiple choice) or pass@k (``pass_at_k``, code), the answer rate and the verdict counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrpo.algorithm.voting import majority_vote
from mgrpo.data import ProblemSet, read_problems
from mgrpo.evaluation.backends import (
    Backend,
    Completion,
    Sampling,
    make_backend,
    resolve_backend,
    stop_token_ids,
)
from mgrpo.evaluation.grading import Verdict, make_grader


def evaluate_model(
    model_dir: str | Path,
    problems_path: str | Path,
    spec: Mapping[str, Any],
    backend: Backend | None = None,
    label: str = "evaluation",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate; returns the summary and one record per sample.

    ``spec``: the benchmark's settings (kind, samples, temperature, max_new_tokens, limit, seed,
    answer_equivalence, lm_eval) merged with the ``evaluation`` section (backend, device,
    threads, micro_batch_size, grader, sandbox, vllm). ``backend`` replaces the configured one
    (tests pass a vLLM backend with a stand-in engine). ``label`` names the job in its progress
    lines.
    """
    from mgrpo import lm

    t0 = time.perf_counter()
    kind = spec.get("kind", "math")
    problems = read_problems(problems_path, kind).head(spec.get("limit"))
    if kind == "math":
        missing = [pid for pid, a in zip(problems.ids, problems.answers, strict=True) if a is None]
        if missing:
            raise ValueError(f"{problems_path}: problem {missing[0]!r} has no answer to grade")
    tokenizer = lm.load_tokenizer(model_dir)
    stops = stop_token_ids(model_dir, tokenizer)
    if backend is None:
        name = resolve_backend(spec.get("backend", "auto"))
        backend = make_backend(name, model_dir, stops, spec, label=label)
    sampling = Sampling(
        n=spec["samples"],
        temperature=spec["temperature"],
        max_tokens=spec["max_new_tokens"],
        seed=spec["seed"],
    )

    def encode(question: str) -> list[int]:
        return lm.encode_prompts(tokenizer, [question], max_tokens=1 << 30)[0]

    lm_eval_metrics = None
    t_generate = time.perf_counter()
    if spec.get("lm_eval"):
        from mgrpo.evaluation.lm_eval_harness import run_task

        completions, lm_eval_metrics = run_task(
            kind, problems_path, problems.ids, sampling, backend, encode
        )
    else:
        completions = backend.generate([encode(q) for q in problems.questions], sampling)
    t1 = time.perf_counter()
    grader = make_grader(kind, spec)
    verdicts = grader.grade(problems, [[c.text for c in samples] for samples in completions])
    t2 = time.perf_counter()

    summary, records = summarize(problems, completions, verdicts)
    summary.update(
        kind=kind,
        backend=backend.describe(),
        grader=grader.describe(),
        sampling={
            "temperature": sampling.temperature,
            "max_new_tokens": sampling.max_tokens,
            "seed": sampling.seed,
        },
        generation_seconds=round(t1 - t_generate, 2),
        grading_seconds=round(t2 - t1, 2),
        seconds=round(time.perf_counter() - t0, 2),
    )
    # Throughput of generation alone (model loading included, lm-eval's set-up too if used).
    summary["samples_per_second"] = round(summary["samples"] / max(t1 - t_generate, 1e-9), 3)
    if lm_eval_metrics is not None:
        summary["lm_eval"] = lm_eval_metrics
    return summary, records


def summarize(
    problems: ProblemSet,
    completions: Sequence[Sequence[Completion]],
    verdicts: Sequence[Sequence[Verdict]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Records (one per sample) and the summary statistics of graded samples."""
    k = len(completions[0]) if completions else 0
    if len(completions) != len(problems) or any(len(c) != k for c in completions):
        raise ValueError(f"expected {k} samples for each of {len(problems)} problems")
    records = []
    majority_correct = any_correct = 0
    for i, (samples, graded) in enumerate(zip(completions, verdicts, strict=True)):
        if problems.kind != "code":
            # maj@k: the most frequent answer class (ties: first seen) and its verdict.
            label = majority_vote([v.vote_key for v in graded]).label
            majority_correct += any(v.correct for v in graded if v.vote_key == label)
        any_correct += any(v.correct for v in graded)
        for j, (completion, verdict) in enumerate(zip(samples, graded, strict=True)):
            records.append(
                {
                    "problem_id": problems.ids[i],
                    "sample": j,
                    "response": completion.text,
                    "answer": verdict.answer,
                    "ground_truth": problems.answers[i],
                    "correct": verdict.correct,
                    "verdict": verdict.reason,
                    "detail": verdict.detail,
                    "response_tokens": completion.tokens,
                    "finish_reason": completion.finish_reason,
                }
            )
    n = len(records)
    summary: dict[str, Any] = {
        "accuracy": sum(r["correct"] for r in records) / n,
        "answer_rate": sum(r["answer"] is not None for r in records) / n,
        "mean_response_tokens": sum(r["response_tokens"] for r in records) / n,
        "truncated_rate": sum(r["finish_reason"] == "length" for r in records) / n,
        "problems": len(problems),
        "samples_per_problem": k,
        "samples": n,
        "verdicts": dict(Counter(r["verdict"] for r in records)),
    }
    if problems.kind == "code":
        summary["pass_at_k"] = any_correct / len(problems)
    else:
        summary["majority_accuracy"] = majority_correct / len(problems)
    return summary, records
