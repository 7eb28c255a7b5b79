"""PPO-clipped surrogate, low-variance KL and token-mean aggregation (mgrpo.algorithm.losses)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mgrpo.algorithm.losses import (
    KL_CLAMP,
    LOG_RATIO_CLAMP,
    clipped_surrogate,
    low_var_kl,
    policy_loss,
)

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


@pytest.mark.parametrize(
    ("ratio", "adv", "clip_ratio_c", "loss"),
    [
        # A < 0, rho = 5 > c = 3: PPO gives max(5, 1.2) = 5; dual-clip caps it at c*|A| = 3
        (5.0, -1.0, 3.0, 3.0),
        # |A| = 2, rho = 4: max(8, 2.4) = 8 -> min(8, 6) = 6
        (4.0, -2.0, 3.0, 6.0),
        # the cap follows c: rho = 5, c = 4 -> 4
        (5.0, -1.0, 4.0, 4.0),
        # rho = 2.5 < c: the cap does not bind, plain PPO's 2.5
        (2.5, -1.0, 3.0, 2.5),
        # rho = 0.5, A < 0: the ordinary clip binds (0.8), far below the cap
        (0.5, -1.0, 3.0, 0.8),
        # A > 0: never capped, whatever rho: max(-5, -1.2) = -1.2; max(-20, -2.4) = -2.4
        (5.0, 1.0, 3.0, -1.2),
        (10.0, 2.0, 1.5, -2.4),
        (0.1, 1.0, 1.5, -0.1),
    ],
)
def test_dual_clip_by_hand(ratio, adv, clip_ratio_c, loss):
    lp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    out, _ = clipped_surrogate(lp, torch.zeros(1, 1), torch.tensor([adv]), 0.2, clip_ratio_c)
    assert out.item() == pytest.approx(loss, rel=1e-6)
    out.sum().backward()
    # d/dlp of -A*rho is -A*rho; a clipped or capped token has no gradient
    binds = loss != pytest.approx(-adv * ratio, rel=1e-6)
    assert lp.grad.item() == pytest.approx(0.0 if binds else -adv * ratio, rel=1e-6)


@pytest.mark.parametrize("clip_ratio_c", [1.0, 0.5, -3.0])
def test_dual_clip_bound_must_exceed_one(clip_ratio_c):
    mask, adv, old = _batch()
    with pytest.raises(ValueError, match="clip_ratio_c"):
        policy_loss(old, old, None, adv, mask, clip_ratio_c=clip_ratio_c)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    clip_ratio=st.floats(0.05, 0.5),
    clip_ratio_c=st.floats(1.01, 10.0),
)
def test_dual_clip_changes_nothing_below_its_bound(seed, clip_ratio, clip_ratio_c):
    # Ratios in (1/c, c) -- ratio 1 included, the only one at one update per batch: the value
    # and the gradient are plain PPO's, max(-A*rho, -A*clip(rho)), per token.
    gen = torch.Generator().manual_seed(seed)
    old = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    log_c = math.log(clip_ratio_c)
    shift = (torch.rand(4, 6, generator=gen, dtype=torch.float64) * 2 - 1) * 0.99 * log_c
    shift[0] = 0.0  # a row at ratio exactly 1
    adv = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    for lp_start in (old.clone(), old + shift):
        lp = lp_start.clone().requires_grad_(True)
        out, _ = clipped_surrogate(lp, old, adv, clip_ratio, clip_ratio_c)
        out.sum().backward()
        ref_lp = lp_start.clone().requires_grad_(True)
        ratio = torch.exp(ref_lp - old)
        plain = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_ratio, 1 + clip_ratio))
        plain.sum().backward()
        torch.testing.assert_close(out, plain)
        torch.testing.assert_close(lp.grad, ref_lp.grad)
    # at ratio 1 (row 0) the per-token loss is exactly -A
    torch.testing.assert_close(out[0], -adv[0])


def test_log_ratio_is_clamped_before_the_exponential():
    assert LOG_RATIO_CLAMP == 20.0
    # log-ratio 100 with A = 0: e^100 overflows float32 and 0 * inf would be NaN
    lp = torch.tensor([[100.0]], requires_grad=True)
    out, _ = clipped_surrogate(lp, torch.zeros(1, 1), torch.tensor([0.0]), 0.2)
    assert out.item() == 0.0
    out.sum().backward()
    assert lp.grad.item() == 0.0
    # the clamp is at 20: log-ratio 30, A = -1, no dual-clip in the way -> loss e^20
    lp = torch.tensor([[30.0]])
    out, _ = clipped_surrogate(lp, torch.zeros(1, 1), torch.tensor([-1.0]), 0.2, 1e30)
    assert out.item() == pytest.approx(math.exp(20.0), rel=1e-6)
    # ... and at -20: log-ratio -30, A = 1, clip disabled by a huge eps -> loss -e^-20
    out, _ = clipped_surrogate(-lp, torch.zeros(1, 1), torch.tensor([1.0]), 1e9)
    assert out.item() == pytest.approx(-math.exp(-20.0), rel=1e-6)


def test_policy_loss_with_a_huge_log_ratio_and_zero_advantage_is_finite():
    mask, _, old = _batch()
    lp = old.clone()
    lp[0, 0] += 100.0
    out = policy_loss(lp, old, None, torch.tensor([0.0, 0.0]), mask)
    assert out.loss.item() == 0.0


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["log_prob", "old_log_prob", "ref_log_prob", "advantages", "all"])
def test_padding_cannot_poison_the_loss_or_its_gradient(where, poison):
    # NaN / inf in the padded positions of any input must leave the value and the gradient
    # exactly as with clean padding. (Poisoning one input at a time matters: a NaN log-prob is
    # stopped by the log-ratio clamp's backward, a NaN advantage next to a finite one is not.)
    mask, _, old = _batch()
    inputs = {
        "log_prob": old + torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.0, -0.1]]),
        "old_log_prob": old,
        "ref_log_prob": old + 0.3,
        "advantages": torch.tensor([[1.0, 0.5, 0.0], [-1.0, -2.0, 0.5]]),
    }
    pad = ~mask.bool()
    poisoned = {
        name: value.masked_fill(pad, poison) if where in (name, "all") else value
        for name, value in inputs.items()
    }
    grads = []
    outs = []
    for batch in (inputs, poisoned):
        lp = batch["log_prob"].clone().requires_grad_(True)
        out = policy_loss(
            lp,
            batch["old_log_prob"],
            batch["ref_log_prob"],
            batch["advantages"],
            mask,
            kl_coef=0.1,
        )
        out.loss.backward()
        outs.append(out)
        grads.append(lp.grad)
    clean, dirty = outs
    assert torch.isfinite(dirty.loss)
    assert dirty.loss.item() == pytest.approx(clean.loss.item(), abs=1e-7)
    assert (dirty.pg_loss, dirty.kl, dirty.clip_frac) == pytest.approx(
        (clean.pg_loss, clean.kl, clean.clip_frac), abs=1e-7
    )
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0])
    assert (grads[1][pad] == 0).all()


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
