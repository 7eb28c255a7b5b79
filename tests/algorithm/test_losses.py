"""PPO-clipped surrogate, low-variance KL and token-mean aggregation (mgrpo.algorithm.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from mgrpo.algorithm.losses import KL_CLAMP, clipped_surrogate, low_var_kl, policy_loss

E = math.e

# --------------------------------------------------------------------------- low_var_kl


@pytest.mark.parametrize(
    ("log_prob", "ref_log_prob", "expected"),
    [
        (0.0, 0.0, 0.0),  # d = ref - lp = 0: e^0 - 0 - 1 = 0
        (0.0, 1.0, E - 2.0),  # d = 1: e - 1 - 1 = 0.7182818
        (1.0, 0.0, 1.0 / E),  # d = -1: e^-1 + 1 - 1 = 0.3678794
        (-2.0, -1.0, E - 2.0),  # d = 1 again: only the difference matters
        (-0.5, -1.5, 1.0 / E),  # d = -1
        (0.0, 0.5, math.exp(0.5) - 1.5),  # d = 0.5: 1.6487213 - 0.5 - 1 = 0.1487213
        (0.0, -5.0, math.exp(-5.0) + 4.0),  # d = -5: 0.0067379 + 5 - 1 = 4.0067379
    ],
)
def test_low_var_kl_by_hand(log_prob, ref_log_prob, expected):
    out = low_var_kl(torch.tensor([log_prob]), torch.tensor([ref_log_prob]))
    assert out.item() == pytest.approx(expected, abs=1e-6)


def test_low_var_kl_is_clamped_at_ten():
    # d = 5: e^5 - 5 - 1 = 142.41 -> clamped to 10; d = -30: log-ratio clamped to -20 first,
    # e^-20 + 20 - 1 = 19.0 -> clamped to 10
    out = low_var_kl(torch.tensor([0.0, 0.0]), torch.tensor([5.0, -30.0]))
    torch.testing.assert_close(out, torch.tensor([KL_CLAMP, KL_CLAMP]))
    assert KL_CLAMP == 10.0
    # d = 100 would overflow e^d without the inner clamp; the result stays finite
    assert torch.isfinite(low_var_kl(torch.tensor([0.0]), torch.tensor([100.0]))).all()


def test_low_var_kl_is_non_negative_and_elementwise():
    torch.manual_seed(0)
    lp, ref = torch.randn(3, 7), torch.randn(3, 7)
    out = low_var_kl(lp, ref)
    assert out.shape == (3, 7)
    assert bool((out >= 0).all())


# --------------------------------------------------------------------------- clipped_surrogate


@pytest.mark.parametrize(
    ("ratio", "adv", "loss", "clipped"),
    [
        # A > 0, rho inside [0.8, 1.2]: -A*rho = -1.1 both ways
        (1.1, 1.0, -1.1, False),
        # A > 0, rho = 1.5 > 1.2: max(-1.5, -1.2) = -1.2 (clipped: no more push up)
        (1.5, 1.0, -1.2, True),
        # A > 0, rho = 0.5 < 0.8: max(-0.5, -0.8) = -0.5 (unclipped: pessimistic side)
        (0.5, 1.0, -0.5, False),
        # A < 0, rho = 1.5: max(1.5, 1.2) = 1.5 (unclipped)
        (1.5, -1.0, 1.5, False),
        # A < 0, rho = 0.5: max(0.5, 0.8) = 0.8 (clipped: no more push down)
        (0.5, -1.0, 0.8, True),
        # A < 0, rho = 0.9 inside: 0.9
        (0.9, -1.0, 0.9, False),
        # |A| = 2, rho = 1.3: max(-2.6, -2.4) = -2.4 (clipped)
        (1.3, 2.0, -2.4, True),
        # A = 0: loss 0 whatever rho, nothing counted as clipped
        (3.0, 0.0, 0.0, False),
    ],
)
def test_clipped_surrogate_by_hand(ratio, adv, loss, clipped):
    log_prob = torch.tensor([[math.log(ratio)]])
    old = torch.zeros(1, 1)
    out, mask = clipped_surrogate(log_prob, old, torch.tensor([adv]), clip_ratio=0.2)
    assert out.item() == pytest.approx(loss, abs=1e-6)
    assert bool(mask.item()) is clipped


def test_clipped_surrogate_ratio_uses_old_log_prob():
    # lp = -1, old = -1 - ln 1.5 -> rho = 1.5, A = 1 -> clipped to -1.2
    lp = torch.tensor([[-1.0]])
    old = torch.tensor([[-1.0 - math.log(1.5)]])
    out, mask = clipped_surrogate(lp, old, torch.tensor([1.0]), 0.2)
    assert out.item() == pytest.approx(-1.2, abs=1e-6)
    assert bool(mask.item())


def test_clipped_surrogate_broadcasts_per_rollout_advantages_over_tokens():
    lp = torch.zeros(2, 3)  # rho = 1 everywhere
    out, mask = clipped_surrogate(lp, torch.zeros(2, 3), torch.tensor([2.0, -0.5]), 0.2)
    torch.testing.assert_close(out, torch.tensor([[-2.0] * 3, [0.5] * 3]))
    assert not mask.any()
    per_token = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    out_tok, _ = clipped_surrogate(lp, torch.zeros(2, 3), per_token, 0.2)
    torch.testing.assert_close(out_tok, -per_token)


def test_clipped_surrogate_gradient_vanishes_on_clipped_tokens():
    # token 0: rho 1.5, A 1 -> clipped -> d/dlp = 0
    # token 1: rho 1.1, A 1 -> -A*rho -> d/dlp = -1.1
    lp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    out, _ = clipped_surrogate(lp, torch.zeros(1, 2), torch.tensor([1.0]), 0.2)
    out.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, -1.1]]))


# --------------------------------------------------------------------------- policy_loss


def _batch():
    # B = 2 rollouts, T = 3; rollout 0 has 2 response tokens, rollout 1 has 3 -> 5 tokens
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    old = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])
    return mask, adv, old


def test_policy_loss_token_mean_by_hand_at_ratio_one():
    mask, adv, old = _batch()
    # rho = 1: per-token loss = -A -> row 0: -1, -1 (pad ignored); row 1: +1, +1, +1
    # token mean = (-2 + 3) / 5 = 0.2
    out = policy_loss(old.clone(), old, None, adv, mask)
    assert out.pg_loss == pytest.approx(0.2)
    assert out.loss.item() == pytest.approx(0.2)
    assert out.kl == 0.0
    assert out.clip_frac == 0.0


def test_policy_loss_adds_kl_penalty_by_hand():
    mask, adv, old = _batch()
    # ref - lp = 1 on every token -> k3 = e - 2 = 0.7182818 per token, token mean 0.7182818
    # loss = 0.2 + 0.005 * 0.7182818 = 0.2035914
    out = policy_loss(old.clone(), old, old + 1.0, adv, mask)
    assert out.kl == pytest.approx(E - 2.0, abs=1e-6)
    assert out.pg_loss == pytest.approx(0.2)
    assert out.loss.item() == pytest.approx(0.2 + 0.005 * (E - 2.0), abs=1e-6)
    # kl_coef = 0.1 -> 0.2 + 0.0718282
    out = policy_loss(old.clone(), old, old + 1.0, adv, mask, kl_coef=0.1)
    assert out.loss.item() == pytest.approx(0.2 + 0.1 * (E - 2.0), abs=1e-6)


def test_policy_loss_without_reference_or_zero_coef_has_no_kl():
    mask, adv, old = _batch()
    out = policy_loss(old.clone(), old, old + 1.0, adv, mask, kl_coef=0.0)
    assert out.kl == 0.0
    assert out.loss.item() == pytest.approx(0.2)


def test_policy_loss_kl_ignores_padding_tokens():
    mask, adv, old = _batch()
    ref = old + 1.0
    ref[0, 2] = old[0, 2] + 50.0  # huge KL on the padding token must not count
    out = policy_loss(old.clone(), old, ref, adv, mask)
    assert out.kl == pytest.approx(E - 2.0, abs=1e-6)


def test_policy_loss_clip_fraction_by_hand():
    mask, adv, old = _batch()
    lp = old.clone()
    lp[0, 0] += math.log(1.5)  # A = +1, rho 1.5 -> clipped
    lp[1, 1] += math.log(0.5)  # A = -1, rho 0.5 -> clipped
    lp[1, 2] += math.log(1.5)  # A = -1, rho 1.5 -> not clipped (pessimistic side)
    lp[0, 2] += math.log(1.5)  # padding: ignored
    out = policy_loss(lp, old, None, adv, mask)
    # clipped response tokens: 2 of 5 -> 0.4
    assert out.clip_frac == pytest.approx(0.4)
    # per-token losses: row 0: -1.2, -1; row 1: 1, 0.8, 1.5 -> (-2.2 + 3.3) / 5 = 0.22
    assert out.pg_loss == pytest.approx(0.22, abs=1e-6)


def test_policy_loss_token_count_micro_batches_sum_to_full_batch():
    mask, adv, old = _batch()
    # full batch: 0.2 (see above). Micro-batch 0 = row 0: -2 / 5 = -0.4; row 1: 3 / 5 = 0.6.
    full = policy_loss(old.clone(), old, old + 1.0, adv, mask)
    first = policy_loss(old[:1], old[:1], old[:1] + 1.0, adv[:1], mask[:1], token_count=5)
    second = policy_loss(old[1:], old[1:], old[1:] + 1.0, adv[1:], mask[1:], token_count=5)
    assert first.pg_loss == pytest.approx(-0.4)
    assert second.pg_loss == pytest.approx(0.6)
    assert first.loss.item() + second.loss.item() == pytest.approx(full.loss.item(), abs=1e-6)
    assert first.kl + second.kl == pytest.approx(full.kl, abs=1e-6)
    # without token_count each micro-batch divides by its own count: -2/2 + 3/3 = 0 != 0.2
    own_1 = policy_loss(old[:1], old[:1], None, adv[:1], mask[:1])
    own_2 = policy_loss(old[1:], old[1:], None, adv[1:], mask[1:])
    assert own_1.pg_loss + own_2.pg_loss == pytest.approx(0.0)


def test_policy_loss_micro_batch_gradients_accumulate_to_full_batch_gradient():
    torch.manual_seed(0)
    b, t = 5, 6
    old = torch.randn(b, t) - 2.0
    ref = old + 0.3 * torch.randn(b, t)
    adv = torch.randn(b)
    mask = (torch.rand(b, t) > 0.3).long()
    mask[:, 0] = 1
    start = old + 0.4 * torch.randn(b, t)  # ratios spread across the clip range

    full_lp = start.clone().requires_grad_(True)
    full = policy_loss(full_lp, old, ref, adv, mask)
    full.loss.backward()

    acc_lp = start.clone().requires_grad_(True)
    total_tokens = int(mask.sum())
    total = 0.0
    for rows in (slice(0, 2), slice(2, 3), slice(3, 5)):
        part = policy_loss(
            acc_lp[rows], old[rows], ref[rows], adv[rows], mask[rows], token_count=total_tokens
        )
        part.loss.backward()
        total += part.loss.item()
    assert total == pytest.approx(full.loss.item(), abs=1e-6)
    torch.testing.assert_close(acc_lp.grad, full_lp.grad, atol=1e-7, rtol=1e-6)
    assert full.clip_frac > 0  # the case exercises clipping


def test_policy_loss_accepts_bool_mask_and_per_token_advantages():
    mask, adv, old = _batch()
    per_token = adv[:, None].expand(2, 3)
    a = policy_loss(old.clone(), old, None, adv, mask)
    b = policy_loss(old.clone(), old, None, per_token, mask.bool())
    assert a.pg_loss == pytest.approx(b.pg_loss)


def test_policy_loss_needs_response_tokens():
    mask, adv, old = _batch()
    with pytest.raises(ValueError, match="at least one response token"):
        policy_loss(old, old, None, adv, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="at least one response token"):
        policy_loss(old, old, None, adv, mask, token_count=0)
