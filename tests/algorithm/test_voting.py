"""Majority vote over a pool of normalised answers (mgrpo.algorithm.voting)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.voting import Vote, majority_vote


def test_majority_vote_picks_most_frequent_answer():
    # counts: A=1, B=3, C=1 -> B with 3 of 5 valid
    vote = majority_vote(["A", "B", "C", "B", "B"])
    assert vote == Vote(label="B", votes=3, valid=5)
    assert vote.majority_ratio == pytest.approx(3 / 5)


def test_majority_vote_none_entries_do_not_vote():
    # counts: 7=2, 8=1; None x3 ignored -> valid = 3
    vote = majority_vote([None, "7", None, "8", "7", None])
    assert vote == Vote(label="7", votes=2, valid=3)
    assert vote.majority_ratio == pytest.approx(2 / 3)


def test_majority_vote_tie_goes_to_first_occurrence_in_pool_order():
    # B and A both have 2 votes; B appears first (index 0) -> B
    assert majority_vote(["B", "A", "A", "B"]).label == "B"
    # same counts, A first now -> A
    assert majority_vote(["A", "B", "B", "A"]).label == "A"
    # a None before both does not count as an occurrence
    assert majority_vote([None, "C", "D"]).label == "C"


def test_majority_vote_tie_rule_is_not_alphabetical_or_hash_based():
    pool = ["zeta", "alpha", "zeta", "alpha", "mid"]
    assert majority_vote(pool).label == "zeta"
    assert majority_vote(list(reversed(pool))).label == "alpha"  # mid, alpha, zeta, alpha, zeta


def test_majority_vote_empty_pool():
    vote = majority_vote([])
    assert vote == Vote(label=None, votes=0, valid=0)
    assert vote.majority_ratio == 0.0


def test_majority_vote_nobody_answered():
    vote = majority_vote([None, None, None])
    assert vote == Vote(label=None, votes=0, valid=0)
    assert vote.majority_ratio == 0.0


def test_majority_vote_single_answer():
    assert majority_vote(["5"]) == Vote(label="5", votes=1, valid=1)


def test_majority_vote_unanimous_ratio_is_one():
    assert majority_vote(["x"] * 4).majority_ratio == 1.0


answer_pools = st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"])), max_size=20)


@settings(max_examples=100, deadline=None)
@given(answer_pools)
def test_majority_vote_label_is_first_of_the_most_frequent(pool):
    vote = majority_vote(pool)
    counts = Counter(a for a in pool if a is not None)
    if not counts:
        assert vote == Vote(label=None, votes=0, valid=0)
        return
    best = max(counts.values())
    assert vote.votes == best == counts[vote.label]
    assert vote.valid == sum(a is not None for a in pool)
    first_index = pool.index(vote.label)
    # no other answer with the top count occurs before the label
    assert all(counts[a] < best for a in pool[:first_index] if a is not None)
