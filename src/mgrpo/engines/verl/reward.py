"""The reward function verl's reward loop calls for every rollout while it is generated.

verl scores rollouts during generation; M-GRPO's rewards are computed afterwards on the driver
(per prompt, from the pool's vote), so this function only measures accuracy against the hidden
ground truth for verl's own logs (``reward/*``). It is never the training reward: the trainer
overwrites the scores with :func:`mgrpo.algorithm.groups.score_group`'s.

verl loads this file by path (``reward.custom_reward_function.path``).
"""

from __future__ import annotations

from typing import Any

from mgrpo.algorithm.answers import extract_answer


def ground_truth_accuracy(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **_: Any
) -> float:
    """1.0 if the response's normalised final answer is the (normalised) ground truth."""
    if not ground_truth:
        return 0.0
    return float(extract_answer(solution_str) == ground_truth)
