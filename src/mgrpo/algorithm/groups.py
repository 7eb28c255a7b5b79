"""Algorithm 1, lines 9-14, for one prompt: filter, vote, reward, advantage.

This is the single place where the pieces are composed; both engines call it per prompt and
record its output verbatim, so the audit records are exactly what the loss used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .advantages import grpo_advantages
from .answers import Equivalence, merge_equivalent
from .filtering import iqr_keep_mask
from .methods import Method
from .rewards import agreement_rewards, ground_truth_rewards, self_certainty_rewards
from .voting import majority_vote


@dataclass(frozen=True)
class GroupScore:
    """Per-rollout outcome for one prompt's pool of G rollouts (pool order)."""

    answers: list[str | None]  # after merging equivalent answers
    kept: list[bool]  # survived the IQR filter (all True without it): these vote
    trained: list[bool]  # policy rollouts with a gradient (kept ones, or all with scope "vote")
    rewards: list[float | None]  # None where not trained
    advantages: list[float | None]  # None where not trained
    label: str | None  # majority vote of the kept pool
    votes: int
    valid: int
    truth: str | None  # hidden ground truth, merged into the same answer classes
    # Label-free drift signal: each policy's own vote over *all* its rollouts (filter or not).
    policy_label: str | None = None  # majority of the M pi_q rollouts
    momentum_label: str | None = None  # majority of the N pi_k rollouts (None without any)

    @property
    def majority_ratio(self) -> float:
        return self.votes / self.valid if self.valid else 0.0

    @property
    def label_correct(self) -> bool | None:
        """Whether the pseudo-label equals the hidden ground truth (None if either is missing)."""
        if self.label is None or self.truth is None:
            return None
        return self.label == self.truth

    @property
    def votes_agree(self) -> bool | None:
        """Whether pi_q's own vote equals pi_k's own vote on this prompt.

        None when either sub-pool gave no answer (always so for single-policy methods).
        A policy drifting away from its momentum anchor shows up as this falling.
        """
        if self.policy_label is None or self.momentum_label is None:
            return None
        return self.policy_label == self.momentum_label


def score_group(
    answers: Sequence[str | None],
    is_momentum: Sequence[bool],
    entropies: Sequence[float],
    method: Method,
    *,
    self_certainties: Sequence[float] | None = None,
    truth: str | None = None,
    equal: Equivalence | None = None,
) -> GroupScore:
    """Score one prompt's pool: IQR filter over all G, vote over the kept, reward and normalise
    over the trained policy rollouts: the kept ones (paper), or every policy rollout when
    ``method.iqr_scope == "vote"`` (the filter then only decides who votes).

    ``answers`` are normalised answers (None = no answer) in pool order; ``truth`` is the hidden
    ground truth, used by the oracle reward and for label-accuracy metrics only.
    """
    n = len(answers)
    if not (len(is_momentum) == len(entropies) == n):
        raise ValueError(
            f"pool fields disagree in length: answers {n}, is_momentum {len(is_momentum)}, "
            f"entropies {len(entropies)}"
        )
    merged = merge_equivalent([*answers, truth], equal)
    pool, truth = merged[:n], merged[n]

    kept = iqr_keep_mask(entropies, method.iqr_k) if method.iqr_k is not None else [True] * n
    vote = majority_vote([a for a, k in zip(pool, kept, strict=True) if k])
    if method.iqr_scope == "vote":
        trained = [not m for m in is_momentum]
    else:
        trained = [k and not m for k, m in zip(kept, is_momentum, strict=True)]
    idx = [i for i in range(n) if trained[i]]

    if method.reward == "majority":
        group_rewards = agreement_rewards([pool[i] for i in idx], vote.label)
    elif method.reward == "ground_truth":
        group_rewards = ground_truth_rewards([pool[i] for i in idx], truth)
    elif method.reward == "self_certainty":
        if self_certainties is None:
            raise ValueError("self-certainty reward needs per-rollout self-certainties")
        group_rewards = self_certainty_rewards([self_certainties[i] for i in idx])
    else:  # pragma: no cover - Method validates the reward kind
        raise ValueError(f"unknown reward kind {method.reward!r}")
    group_advantages = grpo_advantages(group_rewards)

    policy_answers = [a for a, m in zip(pool, is_momentum, strict=True) if not m]
    momentum_answers = [a for a, m in zip(pool, is_momentum, strict=True) if m]
    rewards: list[float | None] = [None] * n
    advantages: list[float | None] = [None] * n
    for i, r, a in zip(idx, group_rewards, group_advantages, strict=True):
        rewards[i], advantages[i] = r, a
    return GroupScore(
        answers=pool,
        kept=kept,
        trained=trained,
        rewards=rewards,
        advantages=advantages,
        label=vote.label,
        votes=vote.votes,
        valid=vote.valid,
        truth=truth,
        policy_label=majority_vote(policy_answers).label,
        momentum_label=majority_vote(momentum_answers).label,
    )
