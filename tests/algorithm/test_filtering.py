"""IQR trajectory-entropy filter (mgrpo.algorithm.filtering)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.filtering import iqr_keep_mask, iqr_threshold


def test_threshold_odd_pool():
    # n = 5, sorted [1,2,3,4,5]; linear quartile positions (n-1)*p = 1 and 3
    # Q1 = x[1] = 2, Q3 = x[3] = 4, IQR = 2 -> T = 2 - 0.75 * 2 = 0.5
    assert iqr_threshold([1, 2, 3, 4, 5], 0.75) == pytest.approx(0.5)
    assert iqr_keep_mask([1, 2, 3, 4, 5], 0.75) == [True] * 5


def test_threshold_interpolates_between_order_statistics():
    # n = 4, sorted [0,4,8,12]; positions 3*0.25 = 0.75 and 3*0.75 = 2.25
    # Q1 = 0 + 0.75 * (4 - 0) = 3;  Q3 = 8 + 0.25 * (12 - 8) = 9;  IQR = 6
    # T = 3 - 0.75 * 6 = -1.5
    assert iqr_threshold([12, 0, 8, 4], 0.75) == pytest.approx(-1.5)


def test_threshold_eight_rollouts_paper_k():
    # sorted [0.2,0.4,1.2,1.2,1.6,1.6,2.0,2.0]; positions 7*0.25 = 1.75, 7*0.75 = 5.25
    # Q1 = 0.4 + 0.75 * (1.2 - 0.4) = 1.0;  Q3 = 1.6 + 0.25 * (2.0 - 1.6) = 1.7;  IQR = 0.7
    # T = 1.0 - 0.75 * 0.7 = 0.475 -> 0.2 and 0.4 are dropped
    entropies = [1.2, 0.2, 2.0, 1.6, 0.4, 1.2, 2.0, 1.6]
    assert iqr_threshold(entropies, 0.75) == pytest.approx(0.475)
    assert iqr_keep_mask(entropies, 0.75) == [True, False, True, True, False, True, True, True]


def test_keep_mask_drops_low_outlier_in_pool_order():
    # sorted [0.1,1.0,1.1,1.2,1.3]: Q1 = x[1] = 1.0, Q3 = x[3] = 1.2, IQR = 0.2
    # T = 1.0 - 0.75 * 0.2 = 0.85 -> only 0.1 (pool index 1) is dropped
    assert iqr_keep_mask([1.3, 0.1, 1.2, 1.0, 1.1], 0.75) == [True, False, True, True, True]


def test_keep_mask_never_drops_high_entropy_outliers():
    # sorted [1.0,1.1,1.2,1.3,9.0]: Q1 = 1.1, Q3 = 1.3, T = 1.1 - 0.15 = 0.95: 9.0 is kept
    assert iqr_keep_mask([1.0, 1.1, 1.2, 1.3, 9.0], 0.75) == [True] * 5


def test_larger_k_is_more_permissive():
    # same pool as above: Q1 = 1.0, IQR = 0.2; k = 5 -> T = 1.0 - 1.0 = 0.0 <= 0.1: keep all
    assert iqr_threshold([1.3, 0.1, 1.2, 1.0, 1.1], 5.0) == pytest.approx(0.0)
    assert iqr_keep_mask([1.3, 0.1, 1.2, 1.0, 1.1], 5.0) == [True] * 5


def test_k_zero_threshold_is_q1():
    # [1,2,3,4,5]: Q1 = 2 -> only 1 is below
    assert iqr_threshold([1, 2, 3, 4, 5], 0.0) == pytest.approx(2.0)
    assert iqr_keep_mask([1, 2, 3, 4, 5], 0.0) == [False, True, True, True, True]


def test_value_equal_to_threshold_is_kept():
    # [0,1,1,1,1]: Q1 = Q3 = 1, IQR = 0 -> T = 1; 0 dropped, the 1s (== T) kept
    assert iqr_keep_mask([0.0, 1.0, 1.0, 1.0, 1.0], 0.75) == [False, True, True, True, True]


def test_empty_pool_keeps_nothing():
    assert iqr_keep_mask([], 0.75) == []


def test_threshold_of_empty_pool_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        iqr_threshold([], 0.75)


def test_single_rollout_is_kept():
    assert iqr_threshold([0.3], 0.75) == pytest.approx(0.3)
    assert iqr_keep_mask([0.3], 0.75) == [True]


def test_constant_entropies_keep_everything():
    # IQR = 0 -> T = Q1 = the common value; every value >= T
    assert iqr_keep_mask([0.7] * 6, 0.75) == [True] * 6
    assert iqr_keep_mask([0.0] * 3, 0.75) == [True] * 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_entropies_are_rejected(bad):
    with pytest.raises(ValueError, match="finite"):
        iqr_keep_mask([0.5, bad, 0.7], 0.75)
    with pytest.raises(ValueError, match="finite"):
        iqr_threshold([bad], 0.75)


def test_accepts_numpy_and_torch_inputs():
    import torch

    values = [1.3, 0.1, 1.2, 1.0, 1.1]
    expected = [True, False, True, True, True]
    assert iqr_keep_mask(np.asarray(values), 0.75) == expected
    assert iqr_keep_mask(torch.tensor(values, dtype=torch.float64), 0.75) == expected


entropy_pools = st.lists(
    st.floats(min_value=0.0, max_value=12.0, allow_nan=False), min_size=1, max_size=40
)


@settings(max_examples=100, deadline=None)
@given(entropy_pools, st.floats(min_value=0.0, max_value=3.0))
def test_keep_mask_keeps_everything_at_or_above_q1_and_drops_few(entropies, k):
    mask = iqr_keep_mask(entropies, k)
    n = len(entropies)
    q1 = float(np.percentile(entropies, 25.0))
    assert len(mask) == n
    assert all(keep for e, keep in zip(entropies, mask, strict=True) if e >= q1)
    assert mask.count(False) <= math.ceil((n - 1) / 4)
    # monotone: a dropped rollout has lower entropy than every kept one
    kept = [e for e, keep in zip(entropies, mask, strict=True) if keep]
    dropped = [e for e, keep in zip(entropies, mask, strict=True) if not keep]
    assert kept
    assert not dropped or max(dropped) < min(kept)
