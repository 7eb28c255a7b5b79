"""The embedded default's base model: a BPE tokenizer and a tiny Qwen3, built from scratch.

Both are saved as a normal Hugging Face directory, so the engines load them with exactly the code
that loads ``Qwen/Qwen3-4B-Base`` on a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
# A compact prompt format: the tiny model should spend its capacity on arithmetic, not on
# ChatML boilerplate. Real models keep their own chat template.
GENERATION_PROMPT = "Solution: "
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}" + GENERATION_PROMPT + "{% endif %}"
)


def prompt_text(question: str) -> str:
    """What :data:`CHAT_TEMPLATE` renders for one user message (used for the tokenizer corpus)."""
    return f"{question}\n{GENERATION_PROMPT}"


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE with one token per digit (so numbers are spelled digit by digit)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=1024,
    )


def build_qwen3(tokenizer: Any, architecture: dict[str, int], seed: int) -> Any:
    """A randomly initialised ``Qwen3ForCausalLM`` of the given size, tied embeddings."""
    import torch

    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    hidden = architecture["hidden_size"]
    heads = architecture["num_attention_heads"]
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=architecture["intermediate_size"],
        num_hidden_layers=architecture["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=architecture["num_key_value_heads"],
        head_dim=hidden // heads,
        max_position_embeddings=architecture.get("max_position_embeddings", 256),
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config)
