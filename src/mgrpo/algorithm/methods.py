"""Methods as configuration: SRT, M-GRPO, Intuitor and GT-GRPO differ only in these fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RewardKind = Literal["majority", "self_certainty", "ground_truth"]
# What the IQR filter removes a low-entropy rollout from: the paper's filter takes it out of the
# vote *and* the gradient (Algorithm 1, lines 12-16); the "vote" ablation only out of the vote.
IqrScope = Literal["vote_and_train", "vote"]
IQR_SCOPES: tuple[IqrScope, ...] = ("vote_and_train", "vote")

METHOD_REWARDS: dict[str, RewardKind] = {
    "srt": "majority",  # plain majority-vote GRPO (Shafayat et al.)
    "mgrpo": "majority",  # + momentum rollouts in the voting pool
    "intuitor": "self_certainty",  # Zhao et al.
    "gt_grpo": "ground_truth",  # oracle reference, uses the labels
}


@dataclass(frozen=True)
class Method:
    """Everything that distinguishes one method (or ablation) from another."""

    name: str
    reward: RewardKind
    policy_rollouts: int  # M, sampled from pi_q, the only rollouts trained on
    momentum_rollouts: int  # N, sampled from pi_k, vote only
    iqr_k: float | None  # None: no entropy filter
    momentum: float  # m in theta_k <- m theta_k + (1 - m) theta_q
    entropy_model: Literal["policy", "generator"] = "policy"
    iqr_scope: IqrScope = "vote_and_train"  # only read when iqr_k is set

    @property
    def group_size(self) -> int:
        """G = M + N rollouts per prompt."""
        return self.policy_rollouts + self.momentum_rollouts

    @property
    def uses_momentum(self) -> bool:
        return self.momentum_rollouts > 0

    @property
    def label(self) -> str:
        """Display name, e.g. ``M-GRPO+IQR`` or ``SRT``."""
        base = {"srt": "SRT", "mgrpo": "M-GRPO", "intuitor": "Intuitor", "gt_grpo": "GT-GRPO"}
        if self.iqr_k is None:
            return base[self.name]
        return base[self.name] + ("+IQR" if self.iqr_scope == "vote_and_train" else "+IQR(vote)")


def method_from_settings(settings: dict[str, Any]) -> Method:
    """Build a :class:`Method` from a run's validated settings.

    ``rollouts`` is G. For ``mgrpo``, ``momentum_rollouts`` defaults to G/4 (paper); every other
    method samples all G from the policy. ``iqr`` switches the filter on with ``iqr_k``
    (None: on for mgrpo only); ``iqr_scope`` says whether a filtered rollout leaves the vote and
    the gradient (paper) or the vote only (ablation).
    """
    name = settings["method"]
    if name not in METHOD_REWARDS:
        raise ValueError(f"method: unknown method {name!r}; choose from {sorted(METHOD_REWARDS)}")
    group = int(settings["rollouts"])
    requested = settings.get("momentum_rollouts")
    if name == "mgrpo":
        n_momentum = max(1, group // 4) if requested is None else int(requested)
        if not 1 <= n_momentum < group:
            raise ValueError(f"momentum_rollouts: mgrpo needs 1 <= N < G={group}, got {n_momentum}")
    else:
        if requested:
            raise ValueError(
                f"momentum_rollouts: only method 'mgrpo' samples from the momentum policy "
                f"(got {requested} for method {name!r})"
            )
        n_momentum = 0
    iqr = settings.get("iqr")
    if iqr is None:  # unset: the filter belongs to M-GRPO, and only to it
        iqr = name == "mgrpo"
    iqr_k = float(settings.get("iqr_k", 0.75)) if iqr else None
    iqr_scope = settings.get("iqr_scope") or "vote_and_train"
    if iqr_scope not in IQR_SCOPES:
        raise ValueError(f"iqr_scope: unknown scope {iqr_scope!r}; choose from {IQR_SCOPES}")
    if iqr_scope != "vote_and_train" and iqr_k is None:
        raise ValueError(
            f"iqr_scope: {iqr_scope!r} changes what the IQR filter does, but the filter is off "
            f"for method {name!r} here (set iqr: true)"
        )
    return Method(
        name=name,
        reward=METHOD_REWARDS[name],
        policy_rollouts=group - n_momentum,
        momentum_rollouts=n_momentum,
        iqr_k=iqr_k,
        momentum=float(settings.get("momentum", 0.99)),
        entropy_model=settings.get("entropy_model", "policy"),
        iqr_scope=iqr_scope,
    )
