"""Token-level policy loss: PPO-clipped surrogate plus a KL penalty to a frozen reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

KL_CLAMP = 10.0  # verl clamps the low-variance KL estimate to [-10, 10]


def low_var_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: ``e^(ref-lp) - (ref-lp) - 1``.

    Unbiased, non-negative and low variance; clamped like verl's ``low_var_kl``.
    """
    log_ratio = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
    kl = torch.exp(log_ratio) - log_ratio - 1.0
    return kl.clamp(-KL_CLAMP, KL_CLAMP)


def clipped_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss ``-min(rho*A, clip(rho, 1-c, 1+c)*A)`` and a mask of clipped tokens.

    ``advantages`` is per rollout ``(B,)`` or per token ``(B, T)``.
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio)
    return torch.maximum(unclipped, clipped), (clipped > unclipped)


@dataclass
class PolicyLoss:
    """Loss of one (micro-)batch; the float fields are already token-sums / ``token_count``."""

    loss: torch.Tensor
    pg_loss: float
    kl: float
    clip_frac: float


def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor | None,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_ratio: float = 0.2,
    kl_coef: float = 0.005,
    token_count: int | None = None,
) -> PolicyLoss:
    """Clipped surrogate + ``kl_coef`` * low-variance KL, aggregated as a token mean.

    ``token_count`` is the number of response tokens in the *whole* step batch. Dividing every
    micro-batch's token sum by it makes gradient accumulation exactly equal to one full-batch
    token mean (verl's ``token-mean``). Defaults to this batch's own token count.
    """
    mask = response_mask.to(log_prob.dtype)
    denom = float(token_count if token_count is not None else mask.sum().item())
    if denom <= 0:
        raise ValueError("policy_loss needs at least one response token")
    pg_tokens, clipped = clipped_surrogate(log_prob, old_log_prob, advantages, clip_ratio)
    pg = (pg_tokens * mask).sum() / denom
    loss = pg
    kl_value = 0.0
    if ref_log_prob is not None and kl_coef != 0.0:
        kl = (low_var_kl(log_prob, ref_log_prob) * mask).sum() / denom
        loss = loss + kl_coef * kl
        kl_value = kl.item()
    return PolicyLoss(
        loss=loss,
        pg_loss=pg.item(),
        kl=kl_value,
        clip_frac=((clipped.to(mask.dtype) * mask).sum() / denom).item(),
    )
