r"""Token-level policy loss: PPO-clipped surrogate with dual-clip plus a KL penalty to a frozen
reference, aggregated as a token mean. The same objective as verl 0.9.1's ``vanilla`` policy loss
with ``loss_agg_mode: token-mean``, ``use_kl_loss: true`` and ``kl_loss_type: low_var_kl``.

Per response token t of a rollout with advantage A (``docs/architecture.md``, "The loss"):

    d   = clamp(log_prob - old_log_prob, -20, 20)        log-ratio, clamped before exp
    rho = exp(d)
    l   = max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps))   PPO clip, eps = clip_ratio
    l   = min(l, -A * c)              if A < 0             dual-clip, c = clip_ratio_c > 1
    k   = clamp(e^u - u - 1, -10, 10),  u = clamp(ref_log_prob - log_prob, -20, 20)
    loss = (sum_t l + kl_coef * sum_t k) / (response tokens in the whole step batch)

Padding is *selected* away (``torch.where``), never multiplied by a zero mask: a NaN or inf in
a padded position would survive ``0 * x`` in the value and in the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOG_RATIO_CLAMP = 20.0  # verl clamps log-ratios to [-20, 20] before exponentiating
KL_CLAMP = 10.0  # verl clamps the low-variance KL estimate to [-10, 10]


def low_var_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref) per token: ``e^(ref-lp) - (ref-lp) - 1``.

    Unbiased, non-negative and low variance; clamped like verl's ``low_var_kl``.
    """
    log_ratio = (ref_log_prob - log_prob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    kl = torch.exp(log_ratio) - log_ratio - 1.0
    return kl.clamp(-KL_CLAMP, KL_CLAMP)


def clipped_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float,
    clip_ratio_c: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token dual-clip PPO loss and a mask of the tokens the ordinary clip bounds.

    ``max(-A*rho, -A*clip(rho, 1-eps, 1+eps))``, capped at ``-A*clip_ratio_c`` where ``A < 0``
    (dual-clip: a token whose probability the policy has already raised far above the old one
    cannot make the loss of a bad rollout unbounded). ``advantages`` is per rollout ``(B,)`` or
    per token ``(B, T)``. The mask is verl's ``pg_clipfrac`` numerator.
    """
    if not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c: the dual-clip bound must be > 1, got {clip_ratio_c}")
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    log_ratio = (log_prob - old_log_prob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio)
    ppo = torch.maximum(unclipped, clipped)
    dual = torch.where(advantages < 0, torch.minimum(ppo, -advantages * clip_ratio_c), ppo)
    return dual, (clipped > unclipped)


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
    clip_ratio_c: float = 3.0,
    kl_coef: float = 0.005,
    token_count: int | None = None,
) -> PolicyLoss:
    """Dual-clip surrogate + ``kl_coef`` * low-variance KL, aggregated as a token mean.

    ``token_count`` is the number of response tokens in the *whole* step batch. Dividing every
    micro-batch's token sum by it makes gradient accumulation exactly equal to one full-batch
    token mean (verl's ``token-mean``). Defaults to this batch's own token count. The defaults
    of ``clip_ratio``, ``clip_ratio_c`` and ``kl_coef`` are verl's and the config's.
    """
    mask = response_mask.bool()
    denom = float(token_count if token_count is not None else mask.sum().item())
    if denom <= 0:
        raise ValueError("policy_loss needs at least one response token")

    def select(values: torch.Tensor) -> torch.Tensor:
        # Inputs are selected before any arithmetic, so padding contributes exactly 0 to the
        # value and to every gradient (a NaN there would otherwise reach backward via exp).
        return torch.where(mask, values, 0.0)

    log_prob, old_log_prob = select(log_prob), select(old_log_prob)
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(log_prob)
    pg_tokens, clipped = clipped_surrogate(
        log_prob, old_log_prob, select(advantages), clip_ratio, clip_ratio_c
    )
    pg = select(pg_tokens).sum() / denom
    loss = pg
    kl_value = 0.0
    if ref_log_prob is not None and kl_coef != 0.0:
        kl = select(low_var_kl(log_prob, select(ref_log_prob))).sum() / denom
        loss = loss + kl_coef * kl
        kl_value = kl.item()
    return PolicyLoss(
        loss=loss,
        pg_loss=pg.item(),
        kl=kl_value,
        clip_frac=((clipped & mask).sum() / denom).item(),
    )
