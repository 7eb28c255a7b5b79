"""The momentum policy as fp32 shard copies: EMA, exact swap, state dicts (plain CPU tensors).

The same class on real FSDP2 shards, through a Ray worker group, is in test_worker_ray.py.
"""

from __future__ import annotations

import pytest
import torch

from mgrpo.engines.verl.momentum import MomentumShards


class Tied(torch.nn.Module):
    """A tiny LM shape: embedding tied to the output head, a layer, a persistent buffer."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 4)
        self.layer = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 11, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor([2.0]))


def model(seed: int = 0) -> Tied:
    torch.manual_seed(seed)
    return Tied()


def params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def test_tied_weights_are_one_momentum_tensor():
    momentum = MomentumShards(model())
    assert momentum.names == ["embed.weight", "layer.weight", "layer.bias"]
    assert momentum.aliases["head.weight"] == "embed.weight"
    assert momentum.nbytes == 4 * (11 * 4 + 16 + 4)


def test_ema_is_fp32_and_follows_eq1():
    policy = model()
    theta0 = params(policy)
    momentum = MomentumShards(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    momentum.ema_(policy, 0.9)
    for name, shard in zip(momentum.names, momentum.shards, strict=True):
        assert shard.dtype == torch.float32
        expected = 0.9 * theta0[name] + 0.1 * (theta0[name] + 1.0)
        torch.testing.assert_close(shard, expected)
    # The policy itself is untouched by the EMA.
    torch.testing.assert_close(policy.layer.bias, theta0["layer.bias"] + 1.0)


def test_ema_in_fp32_keeps_small_steps_that_bf16_would_lose():
    policy = model()
    momentum = MomentumShards(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1e-3)
    before = [s.clone() for s in momentum.shards]
    for _ in range(10):
        momentum.ema_(policy, 0.99)
    moved = [(s - b).abs().max().item() for s, b in zip(momentum.shards, before, strict=True)]
    assert all(d > 5e-5 for d in moved)  # 1e-3 * (1 - 0.99**10) ~ 9.6e-5


def test_ema_with_momentum_on_another_device_than_the_policy(monkeypatch):
    # Parameter offload: the EMA stages the policy bucket by bucket to the momentum's device.
    import mgrpo.engines.verl.momentum as mod

    monkeypatch.setattr(mod, "BUCKET_BYTES", 16)  # every tensor its own bucket
    policy = model()
    momentum = MomentumShards(policy, device="cpu")
    with torch.no_grad():
        policy.layer.weight.mul_(0.0)
    momentum.ema_(policy, 0.5)
    torch.testing.assert_close(momentum.shards[1], 0.5 * params(model())["layer.weight"])


def test_swap_holds_momentum_inside_and_restores_policy_exactly():
    policy = model()
    momentum = MomentumShards(policy)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(3.0).add_(0.25)
    policy_values = params(policy)
    momentum_values = [s.clone() for s in momentum.shards]
    with momentum.swapped_into(policy):
        inside = params(policy)
        for name, value in zip(momentum.names, momentum_values, strict=True):
            assert torch.equal(inside[name], value)
        assert torch.equal(policy.head.weight, momentum_values[0])  # the tied head too
    after = params(policy)
    for name in policy_values:
        assert torch.equal(after[name], policy_values[name])
    for shard, value in zip(momentum.shards, momentum_values, strict=True):
        assert torch.equal(shard, value)


def test_swap_restores_the_policy_when_the_block_fails():
    policy = model()
    momentum = MomentumShards(policy)
    with torch.no_grad():
        policy.layer.bias.fill_(7.0)
    with pytest.raises(RuntimeError, match="push failed"), momentum.swapped_into(policy):
        raise RuntimeError("push failed")
    assert torch.equal(policy.layer.bias, torch.full((4,), 7.0))


def test_swap_refuses_low_precision_policy_parameters():
    policy = model().to(torch.bfloat16)
    momentum = MomentumShards(policy)
    with pytest.raises(TypeError, match="fp32"), momentum.swapped_into(policy):
        pass


def test_state_dict_has_every_key_of_the_model_and_round_trips():
    policy = model()
    momentum = MomentumShards(policy)
    with torch.no_grad():
        for shard in momentum.shards:
            shard.add_(5.0)
    state = momentum.state_dict(policy)
    assert set(state) == set(policy.state_dict())  # tied head and the buffer included
    assert torch.equal(state["head.weight"], state["embed.weight"])
    assert torch.equal(state["scale"], torch.tensor([2.0]))
    # A fresh copy (= policy values) loads the saved momentum back.
    restored = MomentumShards(policy)
    restored.load_state_dict(state)
    for a, b in zip(restored.shards, momentum.shards, strict=True):
        assert torch.equal(a, b)


def test_load_refuses_missing_tensors_and_other_shard_shapes():
    policy = model()
    momentum = MomentumShards(policy)
    state = momentum.state_dict(policy)
    with pytest.raises(KeyError, match=r"layer\.bias"):
        momentum.load_state_dict({k: v for k, v in state.items() if k != "layer.bias"})
    state["layer.weight"] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="another world size"):
        momentum.load_state_dict(state)


def test_parameter_mismatch_is_an_error():
    momentum = MomentumShards(model())
    with pytest.raises(ValueError, match="no longer match"):
        momentum.ema_(torch.nn.Linear(4, 4), 0.9)
