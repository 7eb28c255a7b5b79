"""GRPO group-relative advantages (mgrpo.algorithm.advantages)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.advantages import grpo_advantages

EPS = 1e-6


def test_one_correct_of_four():
    # r = [1,0,0,0]: mean 0.25; deviations 0.75, -0.25 x3
    # unbiased var = (0.75^2 + 3 * 0.25^2) / 3 = (0.5625 + 0.1875) / 3 = 0.25 -> std 0.5
    # A = 0.75 / 0.500001 = 1.499997..., -0.25 / 0.500001 = -0.499999...
    adv = grpo_advantages([1.0, 0.0, 0.0, 0.0])
    assert adv == pytest.approx([0.75 / 0.500001] + [-0.25 / 0.500001] * 3, rel=1e-12)
    assert adv[0] == pytest.approx(1.499997, abs=1e-6)


def test_two_correct_of_four():
    # r = [1,1,0,0]: mean 0.5; unbiased var = 4 * 0.25 / 3 = 1/3 -> std = 0.5773502691896258
    # A = +-0.5 / (0.5773502691896258 + 1e-6) = +-0.8660239...
    std = math.sqrt(1 / 3)
    expected = 0.5 / (std + EPS)
    adv = grpo_advantages([1.0, 1.0, 0.0, 0.0])
    assert adv == pytest.approx([expected, expected, -expected, -expected], rel=1e-12)
    assert expected == pytest.approx(0.8660239, abs=1e-7)


def test_uses_unbiased_std_not_population_std():
    # r = [1, 0]: mean 0.5; unbiased std = sqrt((0.25 + 0.25) / 1) = 0.70710678
    # A = +-0.5 / 0.70710778 = +-0.7071058  (population std 0.5 would give +-1)
    adv = grpo_advantages([1.0, 0.0])
    assert adv == pytest.approx([0.5 / (math.sqrt(0.5) + EPS), -0.5 / (math.sqrt(0.5) + EPS)])
    assert abs(adv[0]) < 0.71


def test_integer_rewards_and_eps():
    # r = [1,2,3]: mean 2, unbiased var = (1 + 0 + 1) / 2 = 1 -> std 1
    assert grpo_advantages([1, 2, 3]) == pytest.approx([-1 / (1 + EPS), 0.0, 1 / (1 + EPS)])
    # eps = 0 -> exactly [-1, 0, 1]
    assert grpo_advantages([1, 2, 3], eps=0.0) == [-1.0, 0.0, 1.0]
    # eps = 1 -> [-1/2, 0, 1/2]
    assert grpo_advantages([1, 2, 3], eps=1.0) == pytest.approx([-0.5, 0.0, 0.5])


def test_equal_rewards_give_zero_advantages():
    assert grpo_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]
    assert grpo_advantages([0.0, 0.0]) == [0.0, 0.0]
    assert grpo_advantages([0.37] * 5) == [0.0] * 5


def test_single_rollout_has_zero_advantage():
    # verl would give r / (1 + eps); a lone survivor must not be reinforced
    assert grpo_advantages([1.0]) == [0.0]
    assert grpo_advantages([0.0]) == [0.0]


def test_empty_group():
    assert grpo_advantages([]) == []


def test_returns_python_floats():
    assert all(type(a) is float for a in grpo_advantages([1.0, 0.0, 1.0]))


reward_lists = st.lists(
    st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=2, max_size=32
)


@settings(max_examples=100, deadline=None)
@given(reward_lists)
def test_non_constant_group_is_standardised(rewards):
    std = float(np.std(rewards, ddof=1))
    assume(std > 1e-2)
    adv = np.asarray(grpo_advantages(rewards))
    assert abs(adv.mean()) < 1e-9
    # std of advantages = std / (std + eps), i.e. 1 within eps / std <= 1e-4
    assert np.std(adv, ddof=1) == pytest.approx(std / (std + EPS), rel=1e-9)
    assert np.std(adv, ddof=1) == pytest.approx(1.0, abs=1e-4)


@settings(max_examples=100, deadline=None)
@given(reward_lists, st.floats(min_value=-100, max_value=100, allow_nan=False))
def test_shift_invariance(rewards, shift):
    assume(np.std(rewards, ddof=1) > 1e-2)
    base = grpo_advantages(rewards)
    shifted = grpo_advantages([r + shift for r in rewards])
    assert shifted == pytest.approx(base, abs=1e-8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=32))
def test_binary_rewards_correct_rollouts_get_positive_advantage(rewards):
    adv = grpo_advantages(rewards)
    if len(set(rewards)) == 1:
        assert adv == [0.0] * len(rewards)
    else:
        assert all((a > 0) == (r == 1.0) for a, r in zip(adv, rewards, strict=True))
