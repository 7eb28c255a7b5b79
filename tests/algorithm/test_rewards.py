"""Per-group scalar rewards (mgrpo.algorithm.rewards)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.rewards import (
    agreement_rewards,
    ground_truth_rewards,
    self_certainty_rewards,
)
from mgrpo.algorithm.voting import majority_vote


def test_agreement_rewards_one_where_answer_equals_label():
    assert agreement_rewards(["3", "4", "3", None], "3") == [1.0, 0.0, 1.0, 0.0]


def test_agreement_rewards_no_answer_never_agrees():
    assert agreement_rewards([None, None], "3") == [0.0, 0.0]


def test_agreement_rewards_no_label_gives_all_zero():
    # nobody answered -> label None -> no rollout is rewarded, not even a None "matching" None
    assert agreement_rewards([None, None, None], None) == [0.0, 0.0, 0.0]
    assert agreement_rewards(["3", None], None) == [0.0, 0.0]


def test_agreement_rewards_empty_group():
    assert agreement_rewards([], "3") == []
    assert agreement_rewards([], None) == []


def test_agreement_rewards_are_floats():
    assert all(type(r) is float for r in agreement_rewards(["a", "b"], "a"))


def test_ground_truth_rewards_compare_with_truth():
    assert ground_truth_rewards(["1", "2", None, "1"], "1") == [1.0, 0.0, 0.0, 1.0]


def test_ground_truth_rewards_need_truth():
    with pytest.raises(ValueError, match="ground-truth"):
        ground_truth_rewards(["1", "2"], None)


def test_self_certainty_rewards_are_the_values_as_floats():
    import numpy as np

    out = self_certainty_rewards([0.25, np.float32(1.5), 2])
    assert out == [0.25, 1.5, 2.0]
    assert all(type(r) is float for r in out)
    assert self_certainty_rewards([]) == []


@settings(max_examples=100, deadline=None)
@given(
    pool=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), max_size=16),
    rewarded=st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c"])), max_size=16),
)
def test_agreement_rewards_binary_and_sum_to_label_vote_count(pool, rewarded):
    label = majority_vote(pool).label
    rewards = agreement_rewards(rewarded, label)
    assert len(rewards) == len(rewarded)
    assert set(rewards) <= {0.0, 1.0}
    expected = 0 if label is None else sum(a == label for a in rewarded)
    assert sum(rewards) == expected
