"""Build the embedded default's data files and base model (called by the workflow's rules)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgrpo.io import atomic_path, write_parquet
from mgrpo.progress import progress
from mgrpo.toy.problems import generate_splits


def write_toy_splits(spec: Mapping[str, Any], outputs: Mapping[str, str | Path]) -> None:
    """Generate every split in ``spec`` and write the requested ones as problem parquet files.

    Parquet columns: ``id, question, answer, solution, level`` (``solution`` feeds the warm
    start only). Splits are generated together so that they stay disjoint.
    """
    import pandas as pd

    missing = [s for s in outputs if s not in spec["splits"]]
    if missing:
        raise ValueError(f"data.toy.splits: no split(s) {missing} (have {sorted(spec['splits'])})")
    splits = generate_splits(spec["splits"], spec["levels"], seed=spec["seed"])
    for name, path in progress(outputs.items(), desc="toy splits", unit="split"):
        frame = pd.DataFrame([p.__dict__ for p in splits[name]])
        write_parquet(path, frame[["id", "question", "answer", "solution", "level"]])


def build_toy_model(spec: Mapping[str, Any], sft_path: str | Path, out_dir: str | Path) -> dict:
    """Tokenizer + tiny Qwen3 + supervised warm start, saved as a Hugging Face directory."""
    import pandas as pd
    import torch

    from mgrpo.toy.model import build_qwen3, prompt_text, train_tokenizer
    from mgrpo.toy.warmstart import warm_start

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    sft = pd.read_parquet(sft_path)
    questions, solutions = sft["question"].tolist(), sft["solution"].tolist()
    # The tokenizer sees the SFT split only (prompts and solutions): RL and eval data stay unseen.
    tokenizer = train_tokenizer(
        (prompt_text(q) + s for q, s in zip(questions, solutions, strict=True)), spec["vocab_size"]
    )
    model = build_qwen3(tokenizer, spec, seed=spec["seed"])
    losses = warm_start(
        model,
        tokenizer,
        questions,
        solutions,
        steps=spec["sft_steps"],
        batch_size=spec["sft_batch_size"],
        lr=spec["sft_lr"],
        seed=spec["seed"],
        answers=sft["answer"].tolist(),
        answer_noise=spec["sft_answer_noise"],
    )
    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "sft_loss_first": losses[0],
        "sft_loss_last": losses[-1],
        "seconds": round(time.perf_counter() - t0, 1),
        "spec": dict(spec),
    }
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "toy_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
