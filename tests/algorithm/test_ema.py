"""Momentum policy as an EMA of the policy parameters, paper Eq. 1 (mgrpo.algorithm.ema)."""

from __future__ import annotations

import pytest
import torch

from mgrpo.algorithm.ema import ema_update_


def test_one_step_at_m_099_by_hand():
    momentum = [torch.tensor([0.0, 1.0, -2.0])]
    policy = [torch.tensor([1.0, 1.0, 2.0])]
    ema_update_(momentum, policy, 0.99)
    # 0.99*0 + 0.01*1 = 0.01;  0.99*1 + 0.01*1 = 1.0;  0.99*(-2) + 0.01*2 = -1.98 + 0.02 = -1.96
    torch.testing.assert_close(momentum[0], torch.tensor([0.01, 1.0, -1.96]))


def test_two_steps_at_m_099_by_hand():
    k = torch.zeros(2)
    ema_update_([k], [torch.tensor([1.0, 1.0])], 0.99)  # 0.01
    ema_update_([k], [torch.tensor([1.0, 2.0])], 0.99)
    # fixed target 1: 0.99*0.01 + 0.01*1 = 0.0099 + 0.01 = 0.0199
    # moving target 2: 0.99*0.01 + 0.01*2 = 0.0099 + 0.02 = 0.0299
    torch.testing.assert_close(k, torch.tensor([0.0199, 0.0299]))


def test_m_zero_copies_the_policy():
    k = torch.tensor([5.0, -5.0])
    ema_update_([k], [torch.tensor([1.5, 2.5])], 0.0)
    torch.testing.assert_close(k, torch.tensor([1.5, 2.5]))


def test_m_half_by_hand():
    k = torch.tensor([4.0])
    ema_update_([k], [torch.tensor([2.0])], 0.5)  # 0.5*4 + 0.5*2 = 3
    assert k.item() == 3.0


def test_updates_in_place_every_tensor_and_leaves_policy_untouched():
    k1, k2 = torch.zeros(2, 3), torch.ones(4)
    ptr1, ptr2 = k1.data_ptr(), k2.data_ptr()
    q1, q2 = torch.ones(2, 3), torch.full((4,), 3.0)
    assert ema_update_([k1, k2], [q1, q2], 0.9) is None
    assert (k1.data_ptr(), k2.data_ptr()) == (ptr1, ptr2)
    # 0.9*0 + 0.1*1 = 0.1;  0.9*1 + 0.1*3 = 1.2
    torch.testing.assert_close(k1, torch.full((2, 3), 0.1))
    torch.testing.assert_close(k2, torch.full((4,), 1.2))
    torch.testing.assert_close(q1, torch.ones(2, 3))
    torch.testing.assert_close(q2, torch.full((4,), 3.0))


def test_works_on_parameters_without_recording_autograd():
    policy = torch.nn.Linear(2, 2)
    momentum = [p.detach().clone().float() for p in policy.parameters()]
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    before = [t.clone() for t in momentum]
    ema_update_(momentum, policy.parameters(), 0.99)  # a generator is accepted
    for k, k0 in zip(momentum, before, strict=True):
        torch.testing.assert_close(k, k0 + 0.01)  # 0.99 k0 + 0.01 (k0 + 1) = k0 + 0.01
        assert not k.requires_grad


def test_bf16_policy_tensors_are_upcast():
    k = torch.zeros(1)
    q = torch.tensor([1.5], dtype=torch.bfloat16)  # exactly representable
    ema_update_([k], [q], 0.99)
    assert k.dtype == torch.float32
    assert k.item() == pytest.approx(0.015)  # 0.01 * 1.5


def test_bf16_momentum_is_rejected_and_nothing_is_modified():
    good = torch.zeros(2)
    bad = torch.zeros(2, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="float32"):
        ema_update_([good, bad], [torch.ones(2), torch.ones(2)], 0.99)
    assert torch.equal(good, torch.zeros(2))


@pytest.mark.parametrize("m", [1.0, 1.5, -0.01, -1.0])
def test_momentum_coefficient_outside_unit_interval_is_rejected(m):
    k = torch.zeros(1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ema_update_([k], [torch.ones(1)], m)
    assert k.item() == 0.0


def test_length_mismatch_is_rejected():
    k = torch.zeros(1)
    with pytest.raises(ValueError, match="momentum has 1 tensors, policy 2"):
        ema_update_([k], [torch.ones(1), torch.ones(1)], 0.99)
    with pytest.raises(ValueError):
        ema_update_([torch.zeros(1), torch.zeros(1)], [torch.ones(1)], 0.99)
    assert k.item() == 0.0


def test_fp32_accumulator_moves_where_a_bf16_one_would_stall():
    """Why momentum must be fp32: at m = 0.99 each step is 1 % of (q - k).

    With k = 1 and q = 1.296875 (1.3 in bf16) a step is 0.00297 while bf16 values next to 1 are
    2^-7 = 0.0078 apart (round-to-nearest needs > 0.0039 to move), so a bf16 EMA never moves.
    """
    q = torch.tensor([1.3], dtype=torch.bfloat16)
    assert q.item() == 1.296875

    bf16_k = torch.ones(1, dtype=torch.bfloat16)
    fp32_k = torch.ones(1)
    for _ in range(10):
        bf16_k.mul_(0.99).add_(q, alpha=0.01)  # the same update carried out in bf16
        ema_update_([fp32_k], [q], 0.99)
    assert bf16_k.item() == 1.0  # stalled: every step rounded away
    # fp32: k_10 = q + (1 - q) * 0.99^10 = 1 + 0.296875 * (1 - 0.9043821) = 1.0283866
    assert fp32_k.item() == pytest.approx(1.0 + 0.296875 * (1 - 0.99**10), abs=1e-6)
    assert fp32_k.item() == pytest.approx(1.0283866, abs=1e-6)
    # a single fp32 step (1.00296875) is below bf16 resolution at 1: it rounds back to 1.0
    assert torch.tensor([1.00296875]).bfloat16().item() == 1.0
