"""Methods as configuration (mgrpo.algorithm.methods)."""

from __future__ import annotations

import dataclasses

import pytest

from mgrpo.algorithm.methods import METHOD_REWARDS, Method, method_from_settings


def test_srt_samples_all_rollouts_from_policy_without_filter():
    method = method_from_settings({"method": "srt", "rollouts": 8})
    assert method == Method(
        name="srt",
        reward="majority",
        policy_rollouts=8,
        momentum_rollouts=0,
        iqr_k=None,
        momentum=0.99,
        entropy_model="policy",
    )
    assert method.group_size == 8
    assert not method.uses_momentum
    assert method.label == "SRT"


def test_srt_with_iqr_is_srt_plus_iqr():
    method = method_from_settings({"method": "srt", "rollouts": 8, "iqr": True})
    assert method.iqr_k == 0.75
    assert method.label == "SRT+IQR"
    custom = method_from_settings({"method": "srt", "rollouts": 8, "iqr": True, "iqr_k": 1.5})
    assert custom.iqr_k == 1.5


@pytest.mark.parametrize(("name", "iqr_k"), [("srt", None), ("mgrpo", 0.75), ("intuitor", None)])
def test_iqr_none_means_the_method_default(name, iqr_k):
    # an explicit `iqr: None` (unset in a validated config) is the default: on for mgrpo only
    method = method_from_settings({"method": name, "rollouts": 8, "iqr": None})
    assert method.iqr_k == iqr_k


def test_srt_ignores_iqr_k_unless_iqr_is_on():
    method = method_from_settings({"method": "srt", "rollouts": 8, "iqr_k": 1.5})
    assert method.iqr_k is None


@pytest.mark.parametrize(
    ("group", "n_momentum"),
    [(16, 4), (8, 2), (12, 3), (7, 1), (4, 1), (3, 1), (2, 1), (64, 16), (10, 2)],
)
def test_mgrpo_momentum_rollouts_default_to_a_quarter_of_g(group, n_momentum):
    # N = max(1, G // 4): 16 -> 4, 7 -> 1, 2 -> max(1, 0) = 1, 10 -> 2
    method = method_from_settings({"method": "mgrpo", "rollouts": group})
    assert method.momentum_rollouts == n_momentum
    assert method.policy_rollouts == group - n_momentum
    assert method.group_size == group
    assert method.uses_momentum


def test_mgrpo_defaults():
    method = method_from_settings({"method": "mgrpo", "rollouts": 16})
    assert method.reward == "majority"
    assert method.iqr_k == 0.75  # filter on by default for M-GRPO
    assert method.momentum == 0.99
    assert method.label == "M-GRPO+IQR"


def test_mgrpo_without_iqr():
    method = method_from_settings({"method": "mgrpo", "rollouts": 16, "iqr": False})
    assert method.iqr_k is None
    assert method.label == "M-GRPO"


def test_mgrpo_explicit_momentum_rollouts_and_settings():
    method = method_from_settings(
        {
            "method": "mgrpo",
            "rollouts": 16,
            "momentum_rollouts": 6,
            "momentum": 0.9,
            "iqr_k": 1.0,
            "entropy_model": "generator",
        }
    )
    assert (method.policy_rollouts, method.momentum_rollouts) == (10, 6)
    assert method.momentum == 0.9
    assert method.iqr_k == 1.0
    assert method.entropy_model == "generator"


@pytest.mark.parametrize(("group", "n_momentum"), [(8, 0), (8, 8), (8, 9), (8, -1), (1, None)])
def test_mgrpo_momentum_rollouts_out_of_range(group, n_momentum):
    # needs 1 <= N < G (G = 1 has no valid N, not even the default max(1, 0) = 1)
    settings = {"method": "mgrpo", "rollouts": group, "momentum_rollouts": n_momentum}
    with pytest.raises(ValueError) as info:
        method_from_settings(settings)
    assert str(info.value).startswith("momentum_rollouts:")


@pytest.mark.parametrize("name", ["srt", "intuitor", "gt_grpo"])
def test_momentum_rollouts_only_for_mgrpo(name):
    with pytest.raises(ValueError) as info:
        method_from_settings({"method": name, "rollouts": 8, "momentum_rollouts": 2})
    assert str(info.value).startswith("momentum_rollouts:")


def test_zero_or_missing_momentum_rollouts_are_fine_for_srt():
    for extra in ({}, {"momentum_rollouts": None}, {"momentum_rollouts": 0}):
        assert (
            method_from_settings({"method": "srt", "rollouts": 4, **extra}).momentum_rollouts == 0
        )


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError) as info:
        method_from_settings({"method": "ppo", "rollouts": 8})
    assert str(info.value).startswith("method:")
    assert "ppo" in str(info.value)


@pytest.mark.parametrize(
    ("name", "reward", "label"),
    [("intuitor", "self_certainty", "Intuitor"), ("gt_grpo", "ground_truth", "GT-GRPO")],
)
def test_other_methods_reward_and_label(name, reward, label):
    method = method_from_settings({"method": name, "rollouts": 8})
    assert method.reward == reward
    assert method.momentum_rollouts == 0
    assert method.iqr_k is None
    assert method.label == label
    assert (
        method_from_settings({"method": name, "rollouts": 8, "iqr": True}).label == label + "+IQR"
    )


def test_every_method_has_a_reward_and_label():
    assert set(METHOD_REWARDS) == {"srt", "mgrpo", "intuitor", "gt_grpo"}
    for name in METHOD_REWARDS:
        assert method_from_settings({"method": name, "rollouts": 8}).label


def test_method_is_frozen():
    method = method_from_settings({"method": "srt", "rollouts": 8})
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.iqr_k = 0.75  # type: ignore[misc]


def test_iqr_scope_defaults_to_the_papers_filter():
    method = method_from_settings({"method": "mgrpo", "rollouts": 8})
    assert method.iqr_scope == "vote_and_train"
    assert method.label == "M-GRPO+IQR"


@pytest.mark.parametrize(
    ("name", "label"), [("srt", "SRT+IQR(vote)"), ("mgrpo", "M-GRPO+IQR(vote)")]
)
def test_vote_only_filter_is_its_own_arm(name, label):
    settings = {"method": name, "rollouts": 8, "iqr": True, "iqr_scope": "vote"}
    method = method_from_settings(settings)
    assert method.iqr_scope == "vote"
    assert method.label == label


@pytest.mark.parametrize("name", ["srt", "mgrpo"])
def test_vote_only_scope_needs_the_filter(name):
    with pytest.raises(ValueError) as info:
        method_from_settings({"method": name, "rollouts": 8, "iqr": False, "iqr_scope": "vote"})
    assert str(info.value).startswith("iqr_scope:")
    assert "iqr: true" in str(info.value)


def test_unknown_iqr_scope_is_rejected():
    with pytest.raises(ValueError) as info:
        method_from_settings({"method": "srt", "rollouts": 8, "iqr": True, "iqr_scope": "train"})
    assert str(info.value).startswith("iqr_scope:")
