"""Causal-LM code shared by the local engine, evaluation and the toy warm start.

Loading a model and its tokenizer, rendering prompts (the chat template), stop tokens, a batched
sampler for CPU or one GPU, and scoring. Any Hugging Face causal-LM directory works (the toy Qwen3
or ``Qwen/Qwen3-4B-Base``). Rows are laid out as ``[left-padded prompt | right-padded response]``
so one tensor layout serves sampling, scoring and training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgrpo.algorithm.entropy import probs_entropy, token_entropy, token_self_certainty


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (weights stay fp32), plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_tokenizer(path: str | Path) -> Any:
    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()  # AutoTokenizer imports the model machinery too
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), padding_side="left")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, device: torch.device, trainable: bool = False) -> Any:
    """Load a causal LM in fp32 (master weights; autocast handles bf16 compute on CUDA)."""
    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    model.to(device)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Tokens that end a response: the tokenizer's EOS and the model's generation-config EOS.

    Chat-templated base models (e.g. Qwen3-Base) may end a turn with ``<|im_end|>`` although
    the tokenizer's EOS is ``<|endoftext|>``; both must stop sampling.
    """
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, list | tuple) else {configured}
    return sorted(i for i in ids if i is not None)


def render_prompt(tokenizer: Any, question: str) -> str:
    """The text the model continues: the chat template if the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return question + "\n"


def encode_prompts(tokenizer: Any, questions: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Token ids per rendered prompt; a prompt over ``max_tokens`` is an error, not a truncation."""
    encoded = []
    for q in questions:
        ids = tokenizer(render_prompt(tokenizer, q), add_special_tokens=False)["input_ids"]
        if len(ids) > max_tokens:
            raise ValueError(
                f"prompt has {len(ids)} tokens > max_prompt_tokens={max_tokens}: {q!r}"
            )
        encoded.append(ids)
    return encoded


@dataclass
class RolloutBatch:
    """Prompts and sampled responses, one row per rollout."""

    input_ids: torch.Tensor  # (B, P + T): left-padded prompt, right-padded response
    attention_mask: torch.Tensor  # (B, P + T)
    response_mask: torch.Tensor  # (B, T) true on response tokens (incl. EOS), false on padding
    prompt_len: int  # P
    # Trajectory means under the model that sampled the row, at the sampling temperature,
    # computed from the very logits that were sampled from (no extra forward pass).
    gen_entropy: torch.Tensor  # (B,)
    gen_self_certainty: torch.Tensor | None  # (B,); None unless the sampler was asked for it

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_len :]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: Sequence[int] | torch.Tensor) -> RolloutBatch:
        index = torch.as_tensor(index, dtype=torch.long, device=self.input_ids.device)
        return RolloutBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.prompt_len,
            self.gen_entropy[index],
            None if self.gen_self_certainty is None else self.gen_self_certainty[index],
        )


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def token_rows(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    device: torch.device,
) -> RolloutBatch:
    """Given prompts and responses (token ids) in the row layout of sampled ones.

    Nothing was sampled, so the sampler's per-row means (entropy, self-certainty) are zeros.
    """
    p_ids, p_mask = left_pad(prompts, pad_id, device)
    width = max(len(r) for r in responses)
    r_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    r_mask = torch.zeros((len(responses), width), dtype=torch.bool)
    for i, r in enumerate(responses):
        r_ids[i, : len(r)] = torch.tensor(r)
        r_mask[i, : len(r)] = True
    r_ids, r_mask = r_ids.to(device), r_mask.to(device)
    return RolloutBatch(
        input_ids=torch.cat([p_ids, r_ids], dim=1),
        attention_mask=torch.cat([p_mask, r_mask.long()], dim=1),
        response_mask=r_mask,
        prompt_len=p_ids.shape[1],
        gen_entropy=torch.zeros(len(responses), device=device),
        gen_self_certainty=torch.zeros(len(responses), device=device),
    )


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp_min(0)


# Decoder-only models whose layers take the rotary embeddings and the attention mask from the
# caller (transformers' Llama family). Others are decoded through their own forward.
_STEPPABLE_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3"})


def one_token_decoder(model: Any) -> Any | None:
    """A function for one decoding step of ``model``, or None where only its forward will do.

    One step of a small model is much bookkeeping (building a 4-D mask, output records) around
    a few small matrix products: on the toy model the outer forward is a seventh of a decoding
    step (2.3 -> 2.0 ms for 48 rows). For an SDPA model whose every layer attends fully, the
    mask of a one-token query is just the padding mask, so the step can call the model's own
    embedding, rotary embedding, layers, norm and head with the mask transformers itself would
    build (None when nothing is padded, as transformers' ``_ignore_causal_mask_sdpa`` decides,
    which lets SDPA pick its fastest kernel on a GPU): the same operations on the same tensors,
    so the logits are bit-identical to ``model(...)``'s (tested).
    """
    config = model.config
    inner = getattr(model, "model", None)
    if (
        config.model_type not in _STEPPABLE_MODEL_TYPES
        or getattr(config, "_attn_implementation", None) != "sdpa"
        or any(t != "full_attention" for t in getattr(config, "layer_types", None) or [])
        or getattr(config, "use_sliding_window", False)
        or inner is None
        or not hasattr(model, "lm_head")
    ):
        return None

    def step(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Any,
    ) -> torch.Tensor:
        hidden = inner.embed_tokens(input_ids)
        rotary = inner.rotary_emb(hidden, position_ids)
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        for layer in inner.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                position_embeddings=rotary,
            )
        return model.lm_head(inner.norm(hidden))[:, -1]

    return step


@torch.inference_mode()
def sample(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int],
    pad_token_id: int,
    generator: torch.Generator,
    self_certainty: bool = True,
) -> RolloutBatch:
    """Batched ancestral sampling with a KV cache; ``temperature == 0`` means greedy.

    ``eos_token_id`` may list several stop tokens. Rows that emit one leave the batch (their KV
    cache rows are dropped), so short answers do not pay for long ones. All randomness comes
    from ``generator``: a saved generator state reproduces the samples. ``self_certainty=False``
    skips the per-token self-certainty (``gen_self_certainty`` is then None): every decoding
    step is a few small operations on a small model, so one fewer is measurable.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    stops = torch.tensor(
        [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device
    )
    ids, prompt_mask = left_pad(prompts, pad_token_id, device)
    batch, prompt_len = ids.shape
    response = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    entropy_sum = torch.zeros(batch, device=device)
    certainty_sum = torch.zeros(batch, device=device) if self_certainty else None
    active = torch.arange(batch, device=device)  # original row of each row still decoding
    cache = DynamicCache()
    decode_step = one_token_decoder(model)
    mask, step_ids, step_pos = prompt_mask, ids, _positions(prompt_mask)
    with autocast(device):
        for t in range(max_new_tokens):
            if t > 0 and decode_step is not None:
                logits = decode_step(step_ids, mask, step_pos, cache).float()
            else:  # the prompt (causal and padded: the model builds its mask), or any model
                out = model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                logits = out.logits[:, -1].float()
            if temperature > 0:
                logits = logits / temperature
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                entropy = probs_entropy(probs)  # = token_entropy(logits), one softmax fewer
            else:
                nxt = logits.argmax(-1)
                entropy = token_entropy(logits)
            response[active, t] = nxt
            lengths[active] += 1
            entropy_sum[active] += entropy
            if certainty_sum is not None:
                certainty_sum[active] += token_self_certainty(logits)
            running = ~torch.isin(nxt, stops)
            if not bool(running.any()):
                break
            if not bool(running.all()):
                keep = running.nonzero().squeeze(1)
                active, nxt, mask, step_pos = active[keep], nxt[keep], mask[keep], step_pos[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
    width = int(lengths.max())
    response = response[:, :width]
    response_mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    return RolloutBatch(
        input_ids=torch.cat([ids, response], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask.long()], dim=1),
        response_mask=response_mask,
        prompt_len=prompt_len,
        gen_entropy=entropy_sum / lengths.clamp_min(1),
        gen_self_certainty=None if certainty_sum is None else certainty_sum / lengths.clamp_min(1),
    )


def concat_batches(batches: Sequence[RolloutBatch], pad_token_id: int) -> RolloutBatch:
    """Stack rollout batches that share their prompt layout, right-padding responses."""
    prompt_len = batches[0].prompt_len
    if any(b.prompt_len != prompt_len for b in batches):
        raise ValueError("concat_batches: batches must share the prompt layout")
    width = max(b.responses.shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return RolloutBatch(
        input_ids=torch.cat(
            [
                torch.cat([b.input_ids[:, :prompt_len], pad(b.responses, pad_token_id)], 1)
                for b in batches
            ]
        ),
        attention_mask=torch.cat(
            [
                torch.cat(
                    [b.attention_mask[:, :prompt_len], pad(b.attention_mask[:, prompt_len:], 0)], 1
                )
                for b in batches
            ]
        ),
        response_mask=torch.cat([pad(b.response_mask, 0).bool() for b in batches]),
        prompt_len=prompt_len,
        gen_entropy=torch.cat([b.gen_entropy for b in batches]),
        gen_self_certainty=(
            None
            if any(b.gen_self_certainty is None for b in batches)
            else torch.cat([b.gen_self_certainty for b in batches])
        ),
    )


def micro_batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def response_logits(
    model: Any,
    batch: RolloutBatch,
    rows: slice,
    temperature: float,
    *,
    share_prompts: bool = True,
) -> torch.Tensor:
    """Temperature-scaled fp32 logits predicting each response token: ``(b, T, V)``.

    Rollouts of one prompt (a step's M, or N) begin with the same tokens, whose hidden states do
    not depend on the response: with ``share_prompts`` the prompt part runs once per distinct
    prompt, and every response of it attends to those keys and values through a KV cache that
    keeps their gradients. On the toy step that is a quarter of the update's forward and backward
    (docs/architecture.md); the result equals the one long pass up to floating-point order
    (tested). ``share_prompts=False`` is that one pass, and so is a model training with gradient
    checkpointing: transformers then drops a layer's KV cache, and the responses would not see
    their prompt.
    """
    ids = batch.input_ids[rows]
    mask = batch.attention_mask[rows]
    width = batch.responses.shape[1]
    checkpointing = getattr(model, "is_gradient_checkpointing", False) and model.training
    if share_prompts and not checkpointing:
        logits = _shared_prompt_logits(model, ids, mask, batch.prompt_len)
    else:
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=_positions(mask),
            use_cache=False,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1]
    logits = logits.float()
    return logits / temperature if temperature > 0 else logits


def _shared_prompt_logits(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, prompt_len: int
) -> torch.Tensor:
    from transformers import DynamicCache

    # A prompt is its tokens *and* its padding (a pad id may also be a real token).
    prompt_rows = torch.cat([ids[:, :prompt_len], mask[:, :prompt_len]], dim=1)
    distinct, row_prompt = torch.unique(prompt_rows, dim=0, return_inverse=True)
    prompt_ids, prompt_mask = distinct[:, :prompt_len], distinct[:, prompt_len:]
    cache = DynamicCache()
    prompt_out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=_positions(prompt_mask),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the last prompt position predicts the first response token
    )
    cache.batch_select_indices(row_prompt)  # indexing: gradients flow back to the prompt pass
    response_out = model(
        input_ids=ids[:, prompt_len:],
        attention_mask=mask,
        position_ids=_positions(mask)[:, prompt_len:],
        past_key_values=cache,
        use_cache=True,
    )
    return torch.cat([prompt_out.logits[row_prompt], response_out.logits[:, :-1]], dim=1)


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


@dataclass
class TokenStats:
    log_prob: torch.Tensor  # (B, T)
    entropy: torch.Tensor | None  # (B, T)
    self_certainty: torch.Tensor | None  # (B, T)


@torch.inference_mode()
def score(
    model: Any,
    batch: RolloutBatch,
    *,
    temperature: float,
    micro_batch_size: int,
    entropy: bool = False,
    self_certainty: bool = False,
) -> TokenStats:
    """Per-token log-probs (and optionally entropies / self-certainties) of the responses."""
    device = batch.input_ids.device
    parts: dict[str, list[torch.Tensor]] = {"lp": [], "ent": [], "sc": []}
    with autocast(device):
        for rows in micro_batches(len(batch), micro_batch_size):
            logits = response_logits(model, batch, rows, temperature)
            parts["lp"].append(token_log_probs(logits, batch.responses[rows]))
            if entropy:
                parts["ent"].append(token_entropy(logits))
            if self_certainty:
                parts["sc"].append(token_self_certainty(logits))
    return TokenStats(
        log_prob=torch.cat(parts["lp"]),
        entropy=torch.cat(parts["ent"]) if entropy else None,
        self_certainty=torch.cat(parts["sc"]) if self_certainty else None,
    )
