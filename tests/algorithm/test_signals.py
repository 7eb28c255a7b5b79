"""Label-free step signals (mgrpo.algorithm.signals), computed by hand on two small pools."""

from __future__ import annotations

import pytest

from mgrpo.algorithm.groups import score_group
from mgrpo.algorithm.methods import Method
from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS, step_signals


def method(m: int, n: int, iqr_k: float | None = None) -> Method:
    name = "mgrpo" if n else "srt"
    return Method(name, "majority", m, n, iqr_k, 0.99)


# Two M-GRPO pools of M = 2 policy + N = 2 momentum rollouts, no filter.
FLAGS = [[False, False, True, True], [False, False, True, True]]
ANSWERS = [["A", "B", "A", "A"], ["C", None, "D", "D"]]
ENTROPIES = [[0.1, 0.3, 0.5, 0.7], [0.2, 0.4, 0.6, 0.8]]
LENGTHS = [[10, 20, 30, 40], [5, 15, 25, 35]]


def scored(m: Method, answers=ANSWERS, flags=FLAGS, entropies=ENTROPIES):
    return [score_group(a, f, e, m) for a, f, e in zip(answers, flags, entropies, strict=True)]


def test_signals_by_hand():
    groups = scored(method(2, 2))
    signals = step_signals(groups, FLAGS, ENTROPIES, LENGTHS)
    assert list(signals) == list(LABEL_FREE_SIGNALS)
    # pool 1: vote A (3 of 4), policy rewards [1, 0]; pi_q's vote A (tie A/B, first), pi_k's A
    # pool 2: vote D (2 of 3 answers), policy rewards [0, 0]; pi_q's vote C, pi_k's D
    assert signals["reward_mean"] == pytest.approx(1 / 4)
    assert signals["majority_ratio"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # mean over prompts
    assert signals["vote_agreement"] == pytest.approx(1 / 2)
    assert signals["entropy_policy"] == pytest.approx((0.1 + 0.3 + 0.2 + 0.4) / 4)  # policy only
    assert signals["response_length"] == pytest.approx(180 / 8)
    assert signals["answer_rate"] == pytest.approx(7 / 8)
    assert signals["kept_fraction"] == 1.0


def test_single_policy_method_has_no_vote_agreement():
    flags = [[False] * 4, [False] * 4]
    groups = scored(method(4, 0), flags=flags)
    signals = step_signals(groups, flags, ENTROPIES, LENGTHS)
    assert signals["vote_agreement"] is None
    assert signals["entropy_policy"] == pytest.approx(3.6 / 8)  # every rollout is the policy's


def test_kept_fraction_counts_the_filtered():
    # entropies [0, 1, 1, 1]: Q1 = Q3 = 1 -> threshold 1, rollout 0 dropped in each pool
    entropies = [[0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]]
    groups = scored(method(2, 2, iqr_k=0.75), entropies=entropies)
    signals = step_signals(groups, FLAGS, entropies, LENGTHS)
    assert signals["kept_fraction"] == pytest.approx(6 / 8)
    # the vote agreement is over *all* of each policy's rollouts, filtered or not
    assert signals["vote_agreement"] == pytest.approx(1 / 2)


def test_empty_step_gives_nones():
    assert step_signals([], [], [], []) == dict.fromkeys(LABEL_FREE_SIGNALS)


def test_mismatched_inputs_are_refused():
    groups = scored(method(2, 2))
    with pytest.raises(ValueError, match="groups"):
        step_signals(groups, FLAGS[:1], ENTROPIES, LENGTHS)
    with pytest.raises(ValueError, match="pool of 4"):
        step_signals(groups, FLAGS, ENTROPIES, [[1, 2, 3], [1, 2, 3, 4]])
