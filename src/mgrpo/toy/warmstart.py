"""Supervised warm start of the toy model: a short SFT phase to *partial* accuracy.

Self-supervised RL needs a model whose majority answer is right more often than a single sample;
a randomly initialised model has nothing to vote on. The phase is deliberately short so the base
model leaves room to improve (and to collapse).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from mgrpo.lm import (
    RolloutBatch,
    encode_prompts,
    response_logits,
    token_log_probs,
    token_rows,
)
from mgrpo.progress import progress
from mgrpo.toy.problems import perturb_answer


def supervised_batch(
    tokenizer: Any, questions: Sequence[str], solutions: Sequence[str], device: torch.device
) -> RolloutBatch:
    """Prompt + reference solution + EOS, in the engine's row layout."""
    prompts = encode_prompts(tokenizer, questions, max_tokens=10_000)
    responses = [
        tokenizer(s, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for s in solutions
    ]
    return token_rows(prompts, responses, tokenizer.pad_token_id, device)


def warm_start(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    solutions: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    answers: Sequence[str] | None = None,
    answer_noise: float = 0.0,
) -> list[float]:
    """Train ``model`` in place with next-token cross-entropy on the solutions; returns losses.

    AdamW with linear warmup (10 %) and cosine decay; examples drawn with a seeded generator.
    With ``answer_noise`` > 0, each drawn example has that chance of a freshly perturbed final
    answer (:func:`mgrpo.toy.problems.perturb_answer`; needs ``answers``).
    """
    if answer_noise and answers is None:
        raise ValueError("answer_noise needs the problems' answers")
    noise_rng = random.Random(seed)
    device = next(model.parameters()).device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, steps // 10)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    bar = progress(range(steps), desc="warm start", unit="step")
    for step in bar:
        scale = (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(len(questions), (batch_size,), generator=generator).tolist()
        targets = [
            perturb_answer(solutions[i], answers[i], noise_rng)
            if answer_noise and noise_rng.random() < answer_noise
            else solutions[i]
            for i in idx
        ]
        batch = supervised_batch(tokenizer, [questions[i] for i in idx], targets, device)
        # Distinct draws, not groups of rollouts: one plain pass (and the base model stays the
        # one the toy task was tuned on, bit for bit).
        logits = response_logits(model, batch, slice(None), temperature=1.0, share_prompts=False)
        log_prob = token_log_probs(logits, batch.responses)
        mask = batch.response_mask.float()
        loss = -(log_prob * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    return losses
