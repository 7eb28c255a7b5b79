"""Sampled accuracy of one model on one problem set (the local evaluation backend).

``samples`` answers per problem at ``temperature``; accuracy is the mean over all samples
(avg@k, as the paper reports for AIME/GPQA), and majority-vote accuracy (maj@k) is reported
beside it. A sample is correct when its last ``\\boxed{}`` answer equals the ground truth after
normalisation (and math-verify equivalence, unless ``answer_equivalence`` is ``exact``); the
majority vote counts equivalent answers as one, as the trainer's vote does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mgrpo import lm
from mgrpo.algorithm.answers import (
    Equivalence,
    extract_answer,
    math_verify_equal,
    merge_equivalent,
)
from mgrpo.algorithm.voting import majority_vote
from mgrpo.data import read_problems
from mgrpo.progress import progress


def evaluate_model(
    model_dir: str | Path,
    problems_path: str | Path,
    spec: Mapping[str, Any],
    label: str = "evaluation",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate; returns the summary and one record per sample.

    ``spec`` keys: samples, temperature, max_new_tokens, limit, seed, micro_batch_size, device,
    threads, answer_equivalence. ``label`` names the job in its progress lines.
    """
    t0 = time.perf_counter()
    torch.set_num_threads(spec["threads"])
    device = lm.pick_device(spec["device"])
    problems = read_problems(problems_path)
    count = len(problems) if spec.get("limit") is None else min(spec["limit"], len(problems))
    missing = [problems.ids[i] for i in range(count) if problems.answers[i] is None]
    if missing:
        raise ValueError(f"{problems_path}: problem {missing[0]!r} has no answer to grade against")
    tokenizer = lm.load_tokenizer(model_dir)
    model = lm.load_model(model_dir, device)
    stops = lm.stop_token_ids(model, tokenizer)
    prompt_ids = lm.encode_prompts(tokenizer, problems.questions[:count], max_tokens=1 << 30)
    equal = math_verify_equal if spec["answer_equivalence"] == "math_verify" else None
    k = spec["samples"]
    rows = [(i, j) for i in range(count) for j in range(k)]
    generator = torch.Generator(device=device).manual_seed(spec["seed"])
    texts: list[str] = []
    lengths: list[int] = []
    with progress(total=len(rows), desc=label, unit="sample") as bar:
        for part in lm.micro_batches(len(rows), spec["micro_batch_size"]):
            batch = lm.sample(
                model,
                [prompt_ids[i] for i, _ in rows[part]],
                temperature=spec["temperature"],
                max_new_tokens=spec["max_new_tokens"],
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                generator=generator,
            )
            texts.extend(tokenizer.batch_decode(batch.responses, skip_special_tokens=True))
            lengths.extend(batch.response_mask.sum(-1).tolist())
            bar.update(len(batch))

    summary, records = grade_samples(
        texts, lengths, problems.ids[:count], problems.answers[:count], k, equal
    )
    summary["sampling"] = {
        "temperature": spec["temperature"],
        "max_new_tokens": spec["max_new_tokens"],
        "seed": spec["seed"],
    }
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary, records


def grade_samples(
    texts: Sequence[str],
    lengths: Sequence[int],
    ids: Sequence[str],
    truths: Sequence[str],
    k: int,
    equal: Equivalence | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``k`` consecutive samples per problem: avg@k, maj@k, answer rate, records."""
    if len(texts) != k * len(ids):
        raise ValueError(f"expected {k} samples for each of {len(ids)} problems, got {len(texts)}")

    def matches(answer: str | None, truth: str) -> bool:
        return answer is not None and (
            answer == truth or (equal is not None and equal(truth, answer))
        )

    records = []
    majority_correct = 0
    for i, (problem_id, truth) in enumerate(zip(ids, truths, strict=True)):
        answers = [extract_answer(texts[i * k + j]) for j in range(k)]
        # maj@k votes over the same answer classes as the trainer's pseudo-label
        majority_correct += matches(majority_vote(merge_equivalent(answers, equal)).label, truth)
        for j, answer in enumerate(answers):
            records.append(
                {
                    "problem_id": problem_id,
                    "sample": j,
                    "response": texts[i * k + j],
                    "answer": answer,
                    "ground_truth": truth,
                    "correct": matches(answer, truth),
                    "response_tokens": int(lengths[i * k + j]),
                }
            )
    n = len(records)
    summary = {
        "accuracy": sum(r["correct"] for r in records) / n,
        "majority_accuracy": majority_correct / len(ids),
        "answer_rate": sum(r["answer"] is not None for r in records) / n,
        "mean_response_tokens": sum(lengths) / n,
        "problems": len(ids),
        "samples_per_problem": k,
        "samples": n,
    }
    return summary, records
