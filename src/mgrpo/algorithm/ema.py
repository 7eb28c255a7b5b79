"""Exponential moving average of parameters: the momentum policy (paper Eq. 1)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


@torch.no_grad()
def ema_update_(momentum: Sequence[torch.Tensor], policy: Iterable[torch.Tensor], m: float) -> None:
    """In place ``theta_k <- m * theta_k + (1 - m) * theta_q`` for every tensor pair.

    ``momentum`` must be float32: at m = 0.99 a bf16 EMA would round most of each 1 % step away.
    Policy tensors of any floating dtype are upcast first. Uses foreach kernels (one launch per
    op for the whole list on GPU).
    """
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum coefficient must be in [0, 1), got {m}")
    momentum = list(momentum)
    policy = [p.detach().float() for p in policy]
    if len(momentum) != len(policy):
        raise ValueError(f"momentum has {len(momentum)} tensors, policy {len(policy)}")
    bad = [t.dtype for t in momentum if t.dtype != torch.float32]
    if bad:
        raise TypeError(f"momentum tensors must be float32, got {bad[0]}")
    torch._foreach_mul_(momentum, m)
    torch._foreach_add_(momentum, policy, alpha=1.0 - m)
