"""GRPO group-relative advantages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grpo_advantages(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """``(r - mean) / (std + eps)`` over one prompt's group, with the unbiased std as verl does.

    The group holds only the rollouts that are trained on (the kept policy rollouts); momentum
    and filtered rollouts never enter it. A group of one has no relative baseline, so its
    advantage is 0 (verl would return ``r / (1 + eps)`` there; a lone survivor of the filter should
    not be reinforced for merely existing). Equal rewards give 0 for everyone.
    """
    n = len(rewards)
    if n == 0:
        return []
    if n == 1:
        return [0.0]
    r = np.asarray(rewards, dtype=np.float64)
    std = float(np.std(r, ddof=1))
    return ((r - r.mean()) / (std + eps)).tolist()
