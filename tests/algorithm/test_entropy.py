"""Token entropy, self-certainty and masked trajectory means (mgrpo.algorithm.entropy)."""

from __future__ import annotations

import math

import pytest
import torch

from mgrpo.algorithm.entropy import (
    masked_mean,
    probs_entropy,
    token_entropy,
    token_self_certainty,
    trajectory_mean,
)


@pytest.mark.parametrize("vocab", [2, 4, 50])
@pytest.mark.parametrize("level", [0.0, 3.7, -12.0])
def test_entropy_of_uniform_distribution_is_log_vocab(vocab, level):
    logits = torch.full((vocab,), level)
    assert token_entropy(logits).item() == pytest.approx(math.log(vocab), abs=1e-5)


def test_entropy_of_near_one_hot_is_zero():
    logits = torch.tensor([100.0, 0.0, 0.0, 0.0])
    # p0 = 1 - 3e-44: H ~ 3 * 100 * e^-100 ~ 0
    value = token_entropy(logits).item()
    assert abs(value) < 1e-6


def test_entropy_two_outcome_by_hand():
    # logits [0, ln 3] -> p = [1/4, 3/4]
    # H = 0.25 ln 4 + 0.75 ln(4/3) = 0.3465736 + 0.2157616 = 0.5623351
    logits = torch.tensor([0.0, math.log(3.0)])
    assert token_entropy(logits).item() == pytest.approx(0.5623351, abs=1e-6)


def test_entropy_matches_definition_on_random_logits():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    probs = torch.softmax(logits, dim=-1)
    reference = -(probs * torch.log(probs)).sum(-1)
    out = token_entropy(logits)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_entropy_upcasts_low_precision_logits():
    logits = torch.zeros(2, 8, dtype=torch.bfloat16)
    out = token_entropy(logits)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2,), math.log(8)), atol=1e-6, rtol=0)


def test_self_certainty_of_uniform_logits_is_zero():
    for level in (0.0, 5.0, -3.0):
        assert token_self_certainty(torch.full((7,), level)).item() == pytest.approx(0, abs=1e-6)


def test_self_certainty_two_outcome_by_hand():
    # logits [0, ln 3]: logsumexp = ln 4 = 1.3862944; mean = ln 3 / 2 = 0.5493061; ln V = 0.6931472
    # SC = 1.3862944 - 0.5493061 - 0.6931472 = 0.1438410
    # check: KL(U||p) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.3465736 - 0.2027326 = 0.1438410
    logits = torch.tensor([0.0, math.log(3.0)])
    assert token_self_certainty(logits).item() == pytest.approx(0.1438410, abs=1e-6)


def test_self_certainty_is_kl_from_uniform_on_random_logits():
    torch.manual_seed(1)
    logits = torch.randn(4, 9) * 2
    log_p = torch.log_softmax(logits, dim=-1)
    vocab = logits.shape[-1]
    reference = (1 / vocab * (math.log(1 / vocab) - log_p)).sum(-1)
    out = token_self_certainty(logits)
    assert out.shape == (4,)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    assert bool((out >= -1e-6).all())


def test_self_certainty_grows_with_confidence_and_ignores_logit_shift():
    soft = token_self_certainty(torch.tensor([1.0, 0.0, 0.0])).item()
    sharp = token_self_certainty(torch.tensor([10.0, 0.0, 0.0])).item()
    assert 0 < soft < sharp
    shifted = token_self_certainty(torch.tensor([11.0, 1.0, 1.0])).item()
    assert shifted == pytest.approx(sharp, abs=1e-5)


def test_masked_mean_by_hand_and_empty_mask_is_zero():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 1]])
    # row 0: (1 + 2) / 2 = 1.5; row 1: empty -> 0; row 2: (8 + 9) / 2 = 8.5
    out = masked_mean(values, mask)
    torch.testing.assert_close(out, torch.tensor([1.5, 0.0, 8.5]))


def test_masked_mean_along_other_dim_and_bool_mask():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False], [True, False]])
    # dim 0: column 0 -> (1 + 3) / 2 = 2; column 1 -> empty -> 0
    torch.testing.assert_close(masked_mean(values, mask, dim=0), torch.tensor([2.0, 0.0]))


def test_trajectory_mean_averages_over_response_tokens_only():
    token_entropies = torch.tensor([[0.5, 1.5, 100.0, 100.0], [2.0, 2.0, 2.0, 5.0]])
    response_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    # rollout 0: (0.5 + 1.5) / 2 = 1.0 (padding 100s ignored); rollout 1: 11 / 4 = 2.75
    out = trajectory_mean(token_entropies, response_mask)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.75]))


def test_entropy_from_probabilities_is_bit_identical_to_entropy_from_logits():
    """The sampler computes the entropy from the probabilities it samples from; it must be the
    very number token_entropy gives (runs stay bit-identical to those before the change)."""
    logits = torch.randn(64, 296, generator=torch.Generator().manual_seed(0)) * 3
    logits[0, :5] = -torch.inf
    assert torch.equal(probs_entropy(torch.softmax(logits, dim=-1)), token_entropy(logits))
