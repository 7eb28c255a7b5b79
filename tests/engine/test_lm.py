"""The shared causal-LM code (``mgrpo.lm``): sampling and scoring on the tiny toy model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mgrpo import lm
from mgrpo.algorithm.entropy import trajectory_mean
from mgrpo.data import read_problems


@pytest.fixture(scope="module")
def model_and_prompts(toy_dir: Path):
    tokenizer = lm.load_tokenizer(toy_dir / "model")
    model = lm.load_model(toy_dir / "model", torch.device("cpu"))
    questions = read_problems(toy_dir / "data" / "test.parquet").questions[:6]
    return model, tokenizer, lm.encode_prompts(tokenizer, questions, max_tokens=128)


def draw(model, tokenizer, prompts, seed: int, temperature: float = 1.0, max_new: int = 12):
    return lm.sample(
        model,
        prompts,
        temperature=temperature,
        max_new_tokens=max_new,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )


def test_same_generator_state_reproduces_samples(model_and_prompts) -> None:
    model, tokenizer, prompts = model_and_prompts
    a, b = draw(model, tokenizer, prompts, 3), draw(model, tokenizer, prompts, 3)
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.gen_entropy, b.gen_entropy)


def test_response_mask_ends_at_eos_and_padding_follows(model_and_prompts) -> None:
    model, tokenizer, prompts = model_and_prompts
    batch = draw(model, tokenizer, prompts, 0, max_new=30)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    for row, mask in zip(batch.responses, batch.response_mask, strict=True):
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # one contiguous prefix
        assert (row[length:] == pad).all()
        eos_positions = (row[:length] == eos).nonzero().flatten().tolist()
        assert eos_positions in ([], [length - 1])  # EOS only as the last response token
    assert batch.attention_mask[:, batch.prompt_len :].bool().equal(batch.response_mask)


def test_scoring_matches_an_unpadded_forward_pass(model_and_prompts) -> None:
    """Left padding, position ids and the sampler's entropies agree with a plain forward pass."""
    model, tokenizer, prompts = model_and_prompts
    temperature = 1.3
    batch = draw(model, tokenizer, prompts, 1, temperature=temperature, max_new=20)
    stats = lm.score(model, batch, temperature=temperature, micro_batch_size=4, entropy=True)
    sampler_entropy = batch.gen_entropy
    assert trajectory_mean(stats.entropy, batch.response_mask) == pytest.approx(
        sampler_entropy, abs=1e-5
    )
    for i, prompt in enumerate(prompts):
        length = int(batch.response_mask[i].sum())
        full = torch.tensor([prompt + batch.responses[i, :length].tolist()])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(prompt) - 1 : -1].float() / temperature
        expected = lm.token_log_probs(logits, full[0, len(prompt) :])
        assert stats.log_prob[i, :length] == pytest.approx(expected, abs=1e-5)


def test_greedy_is_deterministic_without_a_seed(model_and_prompts) -> None:
    model, tokenizer, prompts = model_and_prompts
    a = draw(model, tokenizer, prompts, 0, temperature=0.0)
    b = draw(model, tokenizer, prompts, 99, temperature=0.0)
    assert torch.equal(a.input_ids, b.input_ids)


def test_concat_and_select_keep_rows_aligned(model_and_prompts) -> None:
    model, tokenizer, prompts = model_and_prompts
    short = draw(model, tokenizer, prompts, 0, max_new=3)
    long = draw(model, tokenizer, prompts, 1, max_new=9)
    both = lm.concat_batches([short, long], tokenizer.pad_token_id)
    assert len(both) == 2 * len(prompts)
    assert torch.equal(
        both.response_mask[: len(prompts), : short.responses.shape[1]], short.response_mask
    )
    picked = both.select([len(prompts), 0])
    assert torch.equal(picked.input_ids[1, : short.input_ids.shape[1]], short.input_ids[0])
    assert picked.gen_entropy[0] == long.gen_entropy[0]


def test_overlong_prompt_is_an_error_naming_it(model_and_prompts) -> None:
    _, tokenizer, _ = model_and_prompts
    with pytest.raises(ValueError, match="max_prompt_tokens=3"):
        lm.encode_prompts(tokenizer, ["Compute 12+3+4."], max_tokens=3)


def test_any_listed_stop_token_ends_a_row(model_and_prompts) -> None:
    model, tokenizer, prompts = model_and_prompts
    plain = draw(model, tokenizer, prompts, 5, max_new=12)
    # Stop also at whatever token the first row sampled first: that row must end right there.
    first = int(plain.responses[0, 0])
    both = lm.sample(
        model,
        prompts,
        temperature=1.0,
        max_new_tokens=12,
        eos_token_id=[tokenizer.eos_token_id, first],
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(5),
    )
    assert int(both.response_mask[0].sum()) == 1
    assert lm.stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id]


def test_sampler_measures_what_scoring_measures(model_and_prompts) -> None:
    """The sampler's trajectory entropy and self-certainty equal a scoring pass over the same
    rows, and leaving the self-certainty out changes neither the samples nor the entropy."""
    model, tokenizer, prompts = model_and_prompts
    kwargs = dict(
        temperature=1.1,
        max_new_tokens=12,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    full = lm.sample(model, prompts, generator=torch.Generator().manual_seed(5), **kwargs)
    lean = lm.sample(
        model,
        prompts,
        generator=torch.Generator().manual_seed(5),
        self_certainty=False,
        **kwargs,
    )
    stats = lm.score(
        model, full, temperature=1.1, micro_batch_size=4, entropy=True, self_certainty=True
    )
    assert torch.allclose(
        full.gen_self_certainty, trajectory_mean(stats.self_certainty, full.response_mask)
    )
    assert torch.allclose(full.gen_entropy, trajectory_mean(stats.entropy, full.response_mask))
    assert torch.equal(lean.input_ids, full.input_ids)
    assert torch.equal(lean.gen_entropy, full.gen_entropy)
    assert lean.gen_self_certainty is None
    both = lm.concat_batches([full, lean], tokenizer.pad_token_id)
    assert both.gen_self_certainty is None and len(both.select([0, len(both) - 1])) == 2


def model_steps(model, prompts, pad_id: int, tokens: torch.Tensor, decoder=None) -> list:
    """Logits of the prompt's next token, then of each of ``tokens``' columns fed in turn, with a
    KV cache: through ``decoder`` (after the prompt) if given, else the model's own forward."""
    from transformers import DynamicCache

    ids, mask = lm.left_pad(prompts, pad_id, torch.device("cpu"))
    cache, pos, logits = DynamicCache(), lm._positions(mask), []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache)
        logits.append(out.logits[:, -1])
        pos = pos[:, -1:]
        for column in tokens.T:
            mask, pos = torch.cat([mask, torch.ones_like(mask[:, :1])], 1), pos + 1
            if decoder is not None:
                logits.append(decoder(column[:, None], mask, pos, cache))
            else:
                out = model(
                    input_ids=column[:, None],
                    attention_mask=mask,
                    position_ids=pos,
                    past_key_values=cache,
                )
                logits.append(out.logits[:, -1])
    return logits


def uneven(prompts: list[list[int]]) -> list[list[int]]:
    """Prompts of three different lengths (left padding to mask), whatever the toy's lengths."""
    shortest = min(len(p) for p in prompts[:3])
    return [prompts[0][-shortest:], prompts[1][2 - shortest :], prompts[2][5 - shortest :]]


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("family", ["qwen3 (toy)", "llama"])
def test_the_one_token_decoder_gives_the_models_own_logits_bit_for_bit(
    model_and_prompts, family: str, padded: bool
) -> None:
    """Unpadded rows must skip the mask as transformers does; padded rows must keep it."""
    model, tokenizer, prompts = model_and_prompts
    prompts = uneven(prompts)
    if family == "llama":
        model, prompts = tiny_llama(), [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    if not padded:
        prompts = [prompts[0]] * 3
    decoder = lm.one_token_decoder(model)
    assert decoder is not None
    tokens = torch.randint(2, 60, (len(prompts), 6), generator=torch.Generator().manual_seed(0))
    own = model_steps(model, prompts, tokenizer.pad_token_id, tokens)
    stepped = model_steps(model, prompts, tokenizer.pad_token_id, tokens, decoder)
    for a, b in zip(own, stepped, strict=True):
        assert torch.equal(a, b)


def test_sampling_without_the_one_token_decoder_draws_the_same_rollouts(
    model_and_prompts, monkeypatch
) -> None:
    model, tokenizer, prompts = model_and_prompts
    prompts = uneven(prompts)
    stepped = draw(model, tokenizer, prompts, 7, max_new=20)
    monkeypatch.setattr(lm, "one_token_decoder", lambda model: None)
    own = draw(model, tokenizer, prompts, 7, max_new=20)
    assert torch.equal(stepped.input_ids, own.input_ids)
    assert torch.equal(stepped.gen_entropy, own.gen_entropy)
    assert torch.equal(stepped.gen_self_certainty, own.gen_self_certainty)


def test_models_the_one_token_decoder_cannot_step_use_their_own_forward() -> None:
    model = tiny_llama()
    model.config._attn_implementation = "eager"  # its mask is additive, not the padding mask
    assert lm.one_token_decoder(model) is None
    model = tiny_llama()
    model.config.layer_types = ["full_attention", "sliding_attention"]
    assert lm.one_token_decoder(model) is None
    model = tiny_llama()
    model.config.model_type = "gemma"
    assert lm.one_token_decoder(model) is None


def logits_and_gradients(model, batch: lm.RolloutBatch, share: bool):
    model.zero_grad(set_to_none=True)
    logits = lm.response_logits(model, batch, slice(None), 1.1, share_prompts=share)
    log_prob = lm.token_log_probs(logits, batch.responses)
    (log_prob * batch.response_mask).sum().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "layout", ["rollouts of three prompts, interleaved", "same tokens, other padding"]
)
def test_rollouts_of_one_prompt_share_its_pass_with_the_same_logits_and_gradients(
    model_and_prompts, layout: str
) -> None:
    """Shared or not, the same numbers up to float order: a row given another row's prompt,
    a shifted position or a lost first logit are far outside the tolerance."""
    model, tokenizer, prompts = model_and_prompts
    pad = tokenizer.pad_token_id
    model.requires_grad_(True)
    try:
        if layout.startswith("rollouts"):
            rows = uneven(prompts) * 3
        else:  # the same ids, but the first token is padding in one row and real in the other
            rows = [[pad, *prompts[0]], [pad, *prompts[0]], prompts[0]]
        g = torch.Generator().manual_seed(0)
        responses = [
            torch.randint(
                2, 60, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g
            ).tolist()
            for _ in rows
        ]
        batch = lm.token_rows(rows, responses, pad, torch.device("cpu"))
        if not layout.startswith("rollouts"):
            batch.attention_mask[1, 0] = 0  # row 1: `pad` is padding; row 0: a real token
        plain_logits, plain_grads = logits_and_gradients(model, batch, share=False)
        shared_logits, shared_grads = logits_and_gradients(model, batch, share=True)
    finally:
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    mask = batch.response_mask
    assert torch.allclose(shared_logits[mask], plain_logits[mask], atol=1e-4)
    for shared, plain in zip(shared_grads, plain_grads, strict=True):
        assert (shared - plain).norm() <= 1e-5 * plain.norm()


def test_a_model_training_with_gradient_checkpointing_is_scored_in_one_pass() -> None:
    """Checkpointed layers drop the KV cache in training: sharing the prompt would lose it."""
    model = tiny_llama()
    model.gradient_checkpointing_enable()
    model.train()
    prompts, responses = [[3, 4, 5, 6], [3, 4, 5, 6], [7, 8]], [[9, 10, 11], [12, 13], [14]]
    batch = lm.token_rows(prompts, responses, 0, torch.device("cpu"))
    shared = lm.response_logits(model, batch, slice(None), 1.0)
    plain = lm.response_logits(model, batch, slice(None), 1.0, share_prompts=False)
    assert torch.allclose(shared[batch.response_mask], plain[batch.response_mask], atol=1e-4)
