"""Scalar rewards for one rollout group.

All rewards are computed per prompt from the group's (normalised) answers or scores; they
never see the hidden ground truth except :func:`ground_truth_rewards`, the oracle reference.
"""

from __future__ import annotations

from collections.abc import Sequence


def agreement_rewards(answers: Sequence[str | None], label: str | None) -> list[float]:
    """1.0 where a rollout's answer equals the pseudo-label, else 0.0 (SRT and M-GRPO).

    A rollout without an answer never agrees; with no label (nobody answered) all rewards are 0.
    """
    if label is None:
        return [0.0] * len(answers)
    return [1.0 if a is not None and a == label else 0.0 for a in answers]


def ground_truth_rewards(answers: Sequence[str | None], truth: str | None) -> list[float]:
    """1.0 where the answer equals the (normalised) ground truth: GT-GRPO, an oracle baseline."""
    if truth is None:
        raise ValueError("ground-truth reward needs a ground-truth answer for every prompt")
    return agreement_rewards(answers, truth)


def self_certainty_rewards(self_certainties: Sequence[float]) -> list[float]:
    """Intuitor: the reward is the rollout's trajectory self-certainty itself."""
    return [float(s) for s in self_certainties]
