"""M-GRPO's per-prompt scoring on a verl ``DataProto`` (Algorithm 1, lines 9-14), on the driver.

Rows are grouped by ``uid`` and ordered inside a pool by the pool position they were given at
generation time, never by row position: verl's ``balance_batch`` reorders rows. Each pool is
then scored by :func:`mgrpo.algorithm.groups.score_group`, the same function the local engine
calls, and the verdict is written back per row (who is trained, with which advantage).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mgrpo.algorithm.answers import Equivalence, extract_answer
from mgrpo.algorithm.entropy import trajectory_mean
from mgrpo.algorithm.methods import Method
from mgrpo.step_records import ScoredPool, score_pool

# Non-tensor columns the trainer adds to every row before generation.
UID = "uid"  # one per prompt and step (verl's own grouping key)
MOMENTUM = "mgrpo_momentum"  # True for rollouts sampled from pi_k
POOL_INDEX = "mgrpo_rollout"  # position in the prompt's pool: 0..M-1 policy, M..G-1 momentum
PROMPT_INDEX = "mgrpo_prompt"  # position of the prompt in the step's batch
PROMPT_ID = "mgrpo_prompt_id"  # the problem's id
TRUTH = "mgrpo_truth"  # the problem's normalised answer (None if unknown)

# Tensor columns the old-log-prob pass adds.
ENTROPY = "entropys"  # per-token entropy under pi_q (verl's name)
SELF_CERTAINTY = "self_certainty"  # per-token self-certainty under pi_q (Intuitor)


@dataclass
class StepScore:
    """The step's verdict: the pools in prompt order and, per batch row, what the loss uses."""

    pools: list[ScoredPool]
    rows: list[list[int]]  # batch row of each pool member, pool order
    trained: np.ndarray  # (B,) bool: kept policy rollouts
    advantages: np.ndarray  # (B,) float, 0 where not trained
    rewards: np.ndarray  # (B,) float, 0 where not trained


def response_texts(batch: Any, decode: Callable[[list[int]], str]) -> list[str]:
    """Decoded responses, each cut at its own length (the right padding never decoded)."""
    responses = batch.batch["responses"]
    lengths = batch.batch["response_mask"].sum(-1).tolist()
    return [decode(responses[i, : int(n)].tolist()) for i, n in enumerate(lengths)]


def score_batch(
    batch: Any,
    method: Method,
    texts: Sequence[str],
    *,
    equal: Equivalence | None,
) -> StepScore:
    """Score every prompt's pool of ``batch`` (a ``DataProto`` after the old-log-prob pass)."""
    nt = batch.non_tensor_batch
    mask = batch.batch["response_mask"]
    entropy = trajectory_mean(batch.batch[ENTROPY].float(), mask).tolist()
    certainty = None
    if method.reward == "self_certainty":
        certainty = trajectory_mean(batch.batch[SELF_CERTAINTY].float(), mask).tolist()
    lengths = [int(n) for n in mask.sum(-1).tolist()]
    is_momentum = [bool(m) for m in nt[MOMENTUM]]
    answers = [extract_answer(t) for t in texts]

    pools_by_uid: dict[Any, list[int]] = {}
    for row, uid in enumerate(nt[UID]):
        pools_by_uid.setdefault(uid, []).append(row)
    order = sorted(pools_by_uid, key=lambda u: int(nt[PROMPT_INDEX][pools_by_uid[u][0]]))

    size = len(batch)
    trained = np.zeros(size, dtype=bool)
    advantages = np.zeros(size, dtype=np.float64)
    rewards = np.zeros(size, dtype=np.float64)
    pools, all_rows = [], []
    for uid in order:
        rows = sorted(pools_by_uid[uid], key=lambda r: int(nt[POOL_INDEX][r]))
        _check_pool(uid, rows, nt, method)
        pool = score_pool(
            str(nt[PROMPT_ID][rows[0]]),
            rows,
            answers=answers,
            is_momentum=is_momentum,
            entropies=entropy,
            self_certainties=certainty,
            texts=texts,
            lengths=lengths,
            method=method,
            truth=nt[TRUTH][rows[0]],
            equal=equal,
        )
        group = pool.group
        for r, used, adv, rew in zip(
            rows, group.trained, group.advantages, group.rewards, strict=True
        ):
            if used:
                trained[r], advantages[r], rewards[r] = True, adv, rew
        pools.append(pool)
        all_rows.append(rows)
    return StepScore(pools, all_rows, trained, advantages, rewards)


def _check_pool(uid: Any, rows: list[int], nt: dict[str, np.ndarray], method: Method) -> None:
    """A pool is exactly positions 0..G-1, policy first: anything else is a lost or stray row."""
    positions = [int(nt[POOL_INDEX][r]) for r in rows]
    if positions != list(range(method.group_size)):
        raise ValueError(
            f"prompt uid {uid}: pool positions {positions}, expected 0..{method.group_size - 1} "
            f"(M={method.policy_rollouts} policy + N={method.momentum_rollouts} momentum rollouts)"
        )
    sources = [bool(nt[MOMENTUM][r]) for r in rows]
    expected = [i >= method.policy_rollouts for i in range(method.group_size)]
    if sources != expected:
        raise ValueError(f"prompt uid {uid}: policy/momentum rows out of place: {sources}")


def token_advantages(score: StepScore, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-token advantages (B, T): each trained rollout's advantage on its response tokens."""
    adv = torch.as_tensor(score.advantages, dtype=torch.float32)
    return adv[:, None] * response_mask.float()
