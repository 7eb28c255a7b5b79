"""Label-free training signals of one step, from what an engine already has (no ground truth).

Both engines log these with their step metrics, so a collapse warning (``mgrpo.report.
label_free``) can read them from any run. Each is a mean over the step's prompts or rollouts;
``None`` where a step has nothing to average (e.g. ``vote_agreement`` for single-policy methods).

The mechanism they watch is self-reinforcing agreement: a policy rewarded for agreeing with its
own vote can sharpen onto wrong answers. Then the vote grows unanimous (``majority_ratio`` and
``reward_mean`` -> 1), sampling turns deterministic (``entropy_policy`` falls), and with a
momentum policy pi_q's own vote drifts away from pi_k's (``vote_agreement`` falls).
"""

from __future__ import annotations

from collections.abc import Sequence

from .groups import GroupScore

# Column name -> meaning; the order is the order of the metrics columns.
LABEL_FREE_SIGNALS: dict[str, str] = {
    "reward_mean": "mean reward of the trained rollouts (agreement with the vote for SRT/M-GRPO)",
    "majority_ratio": "share of a prompt's voting answers that back the pseudo-label (mean)",
    "vote_agreement": "share of prompts where pi_q's vote (M rollouts) equals pi_k's (N rollouts)",
    "entropy_policy": "mean trajectory entropy (nats/token) of the policy's M rollouts",
    "response_length": "mean response length in tokens, all G rollouts",
    "answer_rate": "share of all G rollouts with an extractable answer",
    "kept_fraction": "share of all G rollouts the IQR filter kept (1 without the filter)",
}


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for nothing to average (a metric a step cannot define)."""
    return sum(values) / len(values) if values else None


def step_signals(
    groups: Sequence[GroupScore],
    is_momentum: Sequence[Sequence[bool]],
    entropies: Sequence[Sequence[float]],
    lengths: Sequence[Sequence[int]],
) -> dict[str, float | None]:
    """The :data:`LABEL_FREE_SIGNALS` of one step.

    ``groups`` are the step's :func:`~mgrpo.algorithm.groups.score_group` results; the other
    arguments give, per group and in the same pool order, the momentum flags, trajectory
    entropies and response lengths (tokens) that went into it.
    """
    if not len(groups) == len(is_momentum) == len(entropies) == len(lengths):
        raise ValueError(
            f"step_signals: {len(groups)} groups but {len(is_momentum)} momentum flag lists, "
            f"{len(entropies)} entropy lists and {len(lengths)} length lists"
        )
    for g, flags, ents, lens in zip(groups, is_momentum, entropies, lengths, strict=True):
        if not len(g.answers) == len(flags) == len(ents) == len(lens):
            raise ValueError(
                f"step_signals: a pool of {len(g.answers)} rollouts came with {len(flags)} "
                f"momentum flags, {len(ents)} entropies and {len(lens)} lengths"
            )
    agreements = [float(a) for g in groups if (a := g.votes_agree) is not None]
    return {
        "reward_mean": mean_or_none([r for g in groups for r in g.rewards if r is not None]),
        "majority_ratio": mean_or_none([g.majority_ratio for g in groups]),
        "vote_agreement": mean_or_none(agreements),
        "entropy_policy": mean_or_none(
            [
                float(e)
                for flags, ents in zip(is_momentum, entropies, strict=True)
                for m, e in zip(flags, ents, strict=True)
                if not m
            ]
        ),
        "response_length": mean_or_none([float(n) for lens in lengths for n in lens]),
        "answer_rate": mean_or_none([float(a is not None) for g in groups for a in g.answers]),
        "kept_fraction": mean_or_none([float(k) for g in groups for k in g.kept]),
    }
