"""Algorithm 1, lines 9-14, for one prompt: filter, vote, reward, advantage (groups.score_group)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.answers import math_verify_equal
from mgrpo.algorithm.filtering import iqr_keep_mask
from mgrpo.algorithm.groups import GroupScore, score_group
from mgrpo.algorithm.methods import Method, method_from_settings
from mgrpo.algorithm.voting import majority_vote

EPS = 1e-6
# [1,1,0,0] (any order): mean 0.5, unbiased std sqrt(1/3) = 0.5773503 -> A = +-0.8660239
A_HALF = 0.5 / (math.sqrt(1 / 3) + EPS)


def make_method(
    reward="majority", m=4, n=0, iqr_k=None, name=None, iqr_scope="vote_and_train"
) -> Method:
    if name is None:
        name = {"majority": "mgrpo" if n else "srt", "ground_truth": "gt_grpo"}.get(
            reward, "intuitor"
        )
    return Method(
        name=name,
        reward=reward,
        policy_rollouts=m,
        momentum_rollouts=n,
        iqr_k=iqr_k,
        momentum=0.99,
        iqr_scope=iqr_scope,
    )


SRT = make_method()


def test_srt_pool_by_hand():
    score = score_group(["A", "B", "A", None], [False] * 4, [1.0, 1.0, 1.0, 1.0], SRT)
    # label A: 2 votes of 3 answers; rewards [1,0,1,0] -> advantages +-0.8660239
    assert score.label == "A"
    assert (score.votes, score.valid) == (2, 3)
    assert score.majority_ratio == pytest.approx(2 / 3)
    assert score.kept == [True] * 4
    assert score.trained == [True] * 4
    assert score.rewards == [1.0, 0.0, 1.0, 0.0]
    assert score.advantages == pytest.approx([A_HALF, -A_HALF, A_HALF, -A_HALF])
    assert score.answers == ["A", "B", "A", None]
    assert score.truth is None
    assert score.label_correct is None


def test_momentum_rollouts_vote_but_are_never_trained_or_rewarded():
    method = make_method(m=4, n=2)
    answers = ["A", "A", "B", "B", "B", "B"]
    is_momentum = [False] * 4 + [True] * 2
    score = score_group(answers, is_momentum, [1.0] * 6, method)
    # policy alone would tie A/A/B/B -> A (first); the momentum votes B, B make B win 4 to 2
    assert majority_vote(answers[:4]).label == "A"
    assert score.label == "B"
    assert (score.votes, score.valid) == (4, 6)
    assert score.trained == [True, True, True, True, False, False]
    assert score.rewards == [0.0, 0.0, 1.0, 1.0, None, None]
    assert score.advantages == pytest.approx([-A_HALF, -A_HALF, A_HALF, A_HALF, None, None])
    assert score.advantages[4] is None and score.advantages[5] is None


# Pool of 8 (6 policy + 2 momentum). Entropies sorted: [0.2,0.4,1.2,1.2,1.6,1.6,2.0,2.0]
# Q1 = 0.4 + 0.75*0.8 = 1.0, Q3 = 1.6 + 0.25*0.4 = 1.7, T = 1.0 - 0.75*0.7 = 0.475:
# pool indices 1 (0.2) and 4 (0.4) are dropped.
FILTER_ENTROPIES = [1.2, 0.2, 2.0, 1.6, 0.4, 1.2, 2.0, 1.6]
FILTER_MOMENTUM = [False] * 6 + [True] * 2
FILTER_ANSWERS = ["B", "A", "C", "B", "A", "A", "B", "A"]


def test_filter_drops_low_entropy_rollouts_and_changes_the_label():
    method = make_method(m=6, n=2, iqr_k=0.75)
    score = score_group(FILTER_ANSWERS, FILTER_MOMENTUM, FILTER_ENTROPIES, method)
    assert score.kept == [True, False, True, True, False, True, True, True]
    # kept answers B, C, B, A, B, A -> B has 3 (A 2, C 1)
    assert score.label == "B"
    assert (score.votes, score.valid) == (3, 6)
    # trained = kept policy rollouts 0, 2, 3, 5 with answers B, C, B, A -> [1, 0, 1, 0]
    assert score.trained == [True, False, True, True, False, True, False, False]
    assert score.rewards == [1.0, None, 0.0, 1.0, None, 0.0, None, None]
    assert score.advantages == pytest.approx(
        [A_HALF, None, -A_HALF, A_HALF, None, -A_HALF, None, None]
    )


def test_vote_only_filter_keeps_filtered_policy_rollouts_in_training():
    # Ablation iqr_scope=vote: the same rollouts are dropped from the vote (label stays B, not
    # the unfiltered A), but every policy rollout, filtered or not, is rewarded and trained.
    method = make_method(m=6, n=2, iqr_k=0.75, iqr_scope="vote")
    score = score_group(FILTER_ANSWERS, FILTER_MOMENTUM, FILTER_ENTROPIES, method)
    assert score.kept == [True, False, True, True, False, True, True, True]
    assert score.label == "B"
    assert (score.votes, score.valid) == (3, 6)
    assert score.trained == [True] * 6 + [False] * 2
    # policy answers B, A, C, B, A, A against B -> [1, 0, 0, 1, 0, 0]; filtered ones (1, 4) get 0
    assert score.rewards == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, None, None]
    # mean 1/3, unbiased var = (2 * 4/9 + 4 * 1/9) / 5 = 4/15, std 0.5163978
    # A = (2/3) / 0.5163988 = 1.2909919 and (-1/3) / 0.5163988 = -0.6454960
    hi, lo = (2 / 3) / (math.sqrt(4 / 15) + EPS), (-1 / 3) / (math.sqrt(4 / 15) + EPS)
    assert hi == pytest.approx(1.2909919, abs=1e-6)
    assert score.advantages == pytest.approx([hi, lo, lo, hi, lo, lo, None, None])


def test_vote_only_scope_without_a_filter_drop_is_the_paper_filter():
    # when the filter drops nothing, both scopes train exactly the same rollouts
    entropies = [1.0] * 8
    paper = score_group(
        FILTER_ANSWERS, FILTER_MOMENTUM, entropies, make_method(m=6, n=2, iqr_k=0.75)
    )
    vote = score_group(
        FILTER_ANSWERS,
        FILTER_MOMENTUM,
        entropies,
        make_method(m=6, n=2, iqr_k=0.75, iqr_scope="vote"),
    )
    assert paper == vote


def test_policy_and_momentum_sub_votes_ignore_the_filter():
    # Policy answers B, A, C, B, A, A -> A (3 votes); over the kept ones only (B, C, B, A) it
    # would be B. Momentum answers B, A -> tie, first (B). The two sub-votes disagree.
    method = make_method(m=6, n=2, iqr_k=0.75)
    score = score_group(FILTER_ANSWERS, FILTER_MOMENTUM, FILTER_ENTROPIES, method)
    assert (score.policy_label, score.momentum_label) == ("A", "B")
    assert score.votes_agree is False
    # momentum rollouts answering A, A agree with the policy's A
    agreeing = score_group(
        [*FILTER_ANSWERS[:6], "A", "A"], FILTER_MOMENTUM, FILTER_ENTROPIES, method
    )
    assert (agreeing.policy_label, agreeing.momentum_label) == ("A", "A")
    assert agreeing.votes_agree is True


def test_sub_votes_are_none_without_momentum_or_without_answers():
    score = score_group(["A", "B", "A", None], [False] * 4, [1.0] * 4, SRT)
    assert (score.policy_label, score.momentum_label, score.votes_agree) == ("A", None, None)
    silent = score_group(
        ["A", "A", None, None], [False, False, True, True], [1.0] * 4, make_method(m=2, n=2)
    )
    assert (silent.policy_label, silent.momentum_label, silent.votes_agree) == ("A", None, None)


def test_sub_votes_use_merged_answers():
    score = score_group(
        ["0.5", "0.5", r"\frac{1}{2}"],
        [False, False, True],
        [1.0] * 3,
        make_method(m=2, n=1),
        equal=_half_equal,
    )
    assert score.votes_agree is True


def test_same_pool_without_filter_votes_the_other_label():
    method = make_method(m=6, n=2, iqr_k=None)
    score = score_group(FILTER_ANSWERS, FILTER_MOMENTUM, FILTER_ENTROPIES, method)
    # all 8 vote: A at 1, 4, 5, 7 -> 4; B at 0, 3, 6 -> 3 -> A
    assert score.label == "A"
    assert (score.votes, score.valid) == (4, 8)
    # policy answers B, A, C, B, A, A -> rewards [0,1,0,0,1,1]; mean 0.5,
    # unbiased var = 6 * 0.25 / 5 = 0.3, std 0.5477226 -> A = +-0.5 / 0.5477236 = +-0.9128692
    a = 0.5 / (math.sqrt(0.3) + EPS)
    assert score.rewards == [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, None, None]
    assert score.advantages == pytest.approx([-a, a, -a, -a, a, a, None, None])
    assert a == pytest.approx(0.9128692, abs=1e-6)


def test_single_kept_policy_rollout_has_zero_advantage():
    method = make_method(m=2, n=3, iqr_k=0.75)
    # entropies [0,1,1,1,1]: Q1 = Q3 = 1, T = 1 -> policy rollout 0 dropped
    score = score_group(
        ["A", "A", "A", "B", "B"], [False, False, True, True, True], [0, 1, 1, 1, 1], method
    )
    assert score.kept == [False, True, True, True, True]
    # kept A, A, B, B: tie -> A (first kept occurrence, index 1)
    assert score.label == "A"
    assert score.trained == [False, True, False, False, False]
    assert score.rewards == [None, 1.0, None, None, None]
    assert score.advantages == [None, 0.0, None, None, None]


def test_no_kept_policy_rollout_trains_nothing():
    method = make_method(m=1, n=4, iqr_k=0.75)
    score = score_group(["A", "B", "B", "B", "B"], [False] + [True] * 4, [0.0, 1, 1, 1, 1], method)
    assert score.kept == [False, True, True, True, True]
    assert score.label == "B"
    assert score.trained == [False] * 5
    assert score.rewards == [None] * 5
    assert score.advantages == [None] * 5


def test_nobody_answered_gives_no_label_and_zero_rewards():
    score = score_group([None] * 4, [False] * 4, [0.5, 0.6, 0.7, 0.8], SRT)
    assert score.label is None
    assert (score.votes, score.valid) == (0, 0)
    assert score.majority_ratio == 0.0
    assert score.rewards == [0.0] * 4
    assert score.advantages == [0.0] * 4


def test_label_is_none_when_only_filtered_rollouts_answered():
    method = make_method(m=5, iqr_k=0.75)
    # entropies [0,1,1,1,1]: rollout 0 dropped; it is the only one with an answer
    score = score_group(["A", None, None, None, None], [False] * 5, [0, 1, 1, 1, 1], method)
    assert score.label is None
    assert score.rewards == [None, 0.0, 0.0, 0.0, 0.0]
    assert score.advantages == [None, 0.0, 0.0, 0.0, 0.0]


def test_equal_rewards_give_zero_advantages():
    score = score_group(["7", "7", "7"], [False] * 3, [1.0, 2.0, 3.0], SRT)
    assert score.rewards == [1.0, 1.0, 1.0]
    assert score.advantages == [0.0, 0.0, 0.0]
    assert score.majority_ratio == 1.0


@pytest.mark.parametrize("iqr_k", [None, 0.75])
def test_empty_pool(iqr_k):
    score = score_group([], [], [], make_method(iqr_k=iqr_k))
    assert score == GroupScore(
        answers=[],
        kept=[],
        trained=[],
        rewards=[],
        advantages=[],
        label=None,
        votes=0,
        valid=0,
        truth=None,
        policy_label=None,
        momentum_label=None,
    )


def test_single_rollout_pool():
    score = score_group(["5"], [False], [0.3], make_method(m=1, iqr_k=0.75))
    assert score.kept == [True]
    assert score.label == "5"
    assert score.rewards == [1.0]
    assert score.advantages == [0.0]


def test_non_finite_entropy_with_filter_raises():
    with pytest.raises(ValueError, match="finite"):
        score_group(["A", "B"], [False, False], [0.5, math.nan], make_method(iqr_k=0.75))


def test_entropies_are_ignored_without_filter():
    # without the filter, entropies are never inspected (a NaN there is harmless)
    score = score_group(["A", "B"], [False, False], [0.5, math.nan], SRT)
    assert score.kept == [True, True]


@pytest.mark.parametrize(
    ("answers", "is_momentum", "entropies"),
    [
        (["A", "B"], [False], [1.0, 1.0]),
        (["A", "B"], [False, False], [1.0]),
        (["A"], [False, False], [1.0, 1.0]),
    ],
)
def test_pool_fields_must_agree_in_length(answers, is_momentum, entropies):
    with pytest.raises(ValueError, match="disagree in length"):
        score_group(answers, is_momentum, entropies, SRT)


# --------------------------------------------------------------------------- equivalence merge


def _half_equal(a: str, b: str) -> bool:
    return {a, b} <= {"0.5", r"\frac{1}{2}"}


def test_equivalent_answers_are_merged_before_voting():
    answers = ["2", r"\frac{1}{2}", "0.5", "2", "0.5"]
    # string identity: "2" x2, "0.5" x2, frac x1 -> tie, "2" first
    assert score_group(answers, [False] * 5, [1.0] * 5, SRT).label == "2"
    merged = score_group(answers, [False] * 5, [1.0] * 5, SRT, equal=_half_equal)
    # merged: frac (first seen at index 1) x3 -> label frac; "0.5" entries reported as frac
    assert merged.label == r"\frac{1}{2}"
    assert merged.answers == ["2", r"\frac{1}{2}", r"\frac{1}{2}", "2", r"\frac{1}{2}"]
    assert (merged.votes, merged.valid) == (3, 5)
    assert merged.rewards == [0.0, 1.0, 1.0, 0.0, 1.0]


def test_default_equality_is_string_identity():
    score = score_group(["0.5", r"\frac{1}{2}"], [False, False], [1.0, 1.0], SRT)
    assert score.answers == ["0.5", r"\frac{1}{2}"]
    assert (score.label, score.votes) == ("0.5", 1)


# --------------------------------------------------------------------------- other rewards


def test_ground_truth_reward_with_math_verify_merge():
    method = make_method("ground_truth")
    answers = ["2", "2", "0.5", None]
    score = score_group(
        answers, [False] * 4, [1.0] * 4, method, truth=r"\frac{1}{2}", equal=math_verify_equal
    )
    # truth merged into the pool's class "0.5"; the majority label "2" is wrong
    assert score.truth == "0.5"
    assert score.label == "2"
    assert score.label_correct is False
    assert score.rewards == [0.0, 0.0, 1.0, 0.0]
    # r = [0,0,1,0]: mean 0.25; unbiased var = (3 * 0.0625 + 0.5625) / 3 = 0.25 -> std 0.5
    # A = [-0.25, -0.25, 0.75, -0.25] / 0.500001 = [-0.499999, -0.499999, 1.499997, -0.499999]
    lo, hi = -0.25 / 0.500001, 0.75 / 0.500001
    assert score.advantages == pytest.approx([lo, lo, hi, lo], rel=1e-12)


def test_ground_truth_reward_needs_truth():
    with pytest.raises(ValueError, match="ground-truth"):
        score_group(["1", "2"], [False, False], [1.0, 1.0], make_method("ground_truth"))


def test_label_correct_against_truth_for_majority_methods():
    score = score_group(["3", "3", "4"], [False] * 3, [1.0] * 3, SRT, truth="3")
    assert score.label_correct is True
    assert score.rewards == [1.0, 1.0, 0.0]  # the truth never enters a majority reward
    wrong = score_group(["3", "4", "4"], [False] * 3, [1.0] * 3, SRT, truth="3")
    assert wrong.label_correct is False
    assert wrong.rewards == [0.0, 1.0, 1.0]


def test_self_certainty_reward_uses_trained_rollouts_values():
    method = make_method("self_certainty", m=5, iqr_k=0.75)
    # entropies [0,1,1,1,1]: rollout 0 dropped -> rewards are the certainties of 1..4
    score = score_group(
        [None] * 5,
        [False] * 5,
        [0.0, 1, 1, 1, 1],
        method,
        self_certainties=[9.0, 0.1, 0.3, 0.5, 0.3],
    )
    assert score.rewards == [None, 0.1, 0.3, 0.5, 0.3]
    # r = [0.1,0.3,0.5,0.3]: mean 0.3; unbiased var = (0.04+0+0.04+0)/3 = 0.0266667,
    # std 0.1632993 -> A = [-0.2, 0, 0.2, 0] / 0.1633003 = [-1.2247373, 0, 1.2247373, 0]
    a = 0.2 / (math.sqrt(0.08 / 3) + EPS)
    assert score.advantages == pytest.approx([None, -a, 0.0, a, 0.0], abs=1e-9)
    assert a == pytest.approx(1.2247373, abs=1e-6)


def test_self_certainty_reward_needs_values():
    with pytest.raises(ValueError, match="self-certaint"):
        score_group(["1", "2"], [False, False], [1.0, 1.0], make_method("self_certainty"))


def test_works_with_a_method_from_settings():
    method = method_from_settings({"method": "mgrpo", "rollouts": 8})  # M = 6, N = 2, IQR on
    is_momentum = [False] * method.policy_rollouts + [True] * method.momentum_rollouts
    score = score_group(FILTER_ANSWERS, is_momentum, FILTER_ENTROPIES, method)
    assert score.label == "B"


# --------------------------------------------------------------------------- invariants


@st.composite
def pools(draw):
    n = draw(st.integers(min_value=0, max_value=12))
    answers = draw(st.lists(st.sampled_from([None, "a", "b", "c"]), min_size=n, max_size=n))
    is_momentum = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    entropies = draw(
        st.lists(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), min_size=n, max_size=n)
    )
    iqr_k = draw(st.sampled_from([None, 0.0, 0.75, 2.0]))
    scope = draw(st.sampled_from(["vote_and_train", "vote"]))
    return answers, is_momentum, entropies, iqr_k, scope


@settings(max_examples=100, deadline=None)
@given(pools())
def test_score_group_invariants(pool):
    answers, is_momentum, entropies, iqr_k, scope = pool
    n = len(answers)
    method = make_method(m=n, iqr_k=iqr_k, name="mgrpo", iqr_scope=scope)
    score = score_group(answers, is_momentum, entropies, method)

    expected_kept = [True] * n if iqr_k is None else iqr_keep_mask(entropies, iqr_k)
    assert score.kept == expected_kept
    if scope == "vote":  # the filter only decides who votes
        assert score.trained == [not m for m in is_momentum]
    else:
        assert score.trained == [k and not m for k, m in zip(score.kept, is_momentum, strict=True)]
    for i in range(n):
        assert (score.rewards[i] is None) == (not score.trained[i])
        assert (score.advantages[i] is None) == (not score.trained[i])

    kept_answers = [a for a, k in zip(answers, score.kept, strict=True) if k]
    assert (score.label is None) == all(a is None for a in kept_answers)
    vote = majority_vote(kept_answers)
    assert (score.label, score.votes, score.valid) == (vote.label, vote.votes, vote.valid)

    trained = [i for i in range(n) if score.trained[i]]
    for i in trained:
        agrees = score.label is not None and answers[i] == score.label
        assert score.rewards[i] == (1.0 if agrees else 0.0)
    advantages = [score.advantages[i] for i in trained]
    assert abs(sum(advantages)) < 1e-9
    if len({score.rewards[i] for i in trained}) <= 1:
        assert advantages == [0.0] * len(trained)

    policy = [a for a, m in zip(answers, is_momentum, strict=True) if not m]
    momentum = [a for a, m in zip(answers, is_momentum, strict=True) if m]
    assert score.policy_label == majority_vote(policy).label
    assert score.momentum_label == majority_vote(momentum).label
