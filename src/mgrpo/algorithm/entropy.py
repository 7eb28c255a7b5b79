"""Per-token and per-trajectory uncertainty measures computed from logits."""

from __future__ import annotations

import math

import torch


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at every position: ``(..., V) -> (...)``.

    Pass logits already divided by the sampling temperature to measure the distribution that was
    sampled from (verl does the same).
    """
    return probs_entropy(torch.softmax(logits.float(), dim=-1))


def probs_entropy(probs: torch.Tensor) -> torch.Tensor:
    """:func:`token_entropy` from the probabilities themselves (a sampler that already has
    them saves a softmax): ``(..., V) -> (...)``."""
    # xlogy(0, 0) = 0: masked (-inf) logits contribute nothing instead of 0 * -inf = NaN.
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def token_self_certainty(logits: torch.Tensor) -> torch.Tensor:
    """Intuitor's self-certainty ``KL(U || p)`` at every position: ``(..., V) -> (...)``.

    ``KL(U || p) = logsumexp(z) - mean(z) - log V``. It is zero for a uniform distribution and
    grows as the model becomes confident.
    """
    logits = logits.float()
    vocab = logits.shape[-1]
    return torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1) - math.log(vocab)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is true; 0 where the mask is empty."""
    mask = mask.to(values.dtype)
    total = (values * mask).sum(dim=dim)
    count = mask.sum(dim=dim)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def trajectory_mean(token_values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Per-rollout mean of a per-token quantity over response tokens: ``(B, T) -> (B,)``.

    With token entropies this is the paper's trajectory-level entropy; with token
    self-certainties it is Intuitor's trajectory self-certainty.
    """
    return masked_mean(token_values, response_mask, dim=-1)
