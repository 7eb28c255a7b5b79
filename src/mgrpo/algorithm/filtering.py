"""IQR-based trajectory-entropy filter (paper Section 2.2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def iqr_threshold(entropies: Sequence[float], k: float) -> float:
    """``Q1 - k * (Q3 - Q1)`` with numpy's default (linear) quartile interpolation."""
    if len(entropies) == 0:
        raise ValueError("iqr_threshold needs at least one entropy")
    values = np.asarray(entropies, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"trajectory entropies must be finite, got {values.tolist()}")
    q1, q3 = np.percentile(values, [25.0, 75.0])
    return float(q1 - k * (q3 - q1))


def iqr_keep_mask(entropies: Sequence[float], k: float) -> list[bool]:
    """Keep rollouts whose trajectory entropy is ``>= Q1 - k * IQR``; drop low-entropy outliers.

    Defined for every pool size: an empty pool keeps nothing, a single rollout or a pool of equal
    entropies (IQR = 0, threshold = Q1 = min) keeps everything. The threshold never exceeds Q1,
    so at most ``ceil((n - 1) / 4)`` of ``n`` rollouts are dropped.
    """
    if len(entropies) == 0:
        return []
    threshold = iqr_threshold(entropies, k)
    return [float(e) >= threshold for e in entropies]
