"""Generation backends: one seam, two engines, the same completions.

A backend takes tokenised prompts (the chat template is applied once, by the caller, so both
backends see identical token ids) and returns ``n`` :class:`Completion` per prompt:

- ``local``: the project's own batched sampler (:func:`mgrpo.lm.sample`) on CPU or
  one GPU; all randomness from one seeded ``torch.Generator``.
- ``vllm``: an offline ``vllm.LLM`` on the checkpoint's ``policy/`` directory, ``n`` samples per
  prompt from a per-prompt seed (``seed + prompt index``), so a prompt's samples do not depend on
  how vLLM batches. vLLM is imported only when this backend is used (GPU nodes); tests pass a
  stand-in ``LLM`` class and ``SamplingParams`` through the same constructor.

``evaluation.backend: auto`` picks vLLM where it is installed and a GPU is visible, else local.
Sampling is plain temperature sampling in both (top-p 1, no top-k), stopping at the tokenizer's
and the generation config's EOS tokens, or at a stop string if the caller gives one.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mgrpo.progress import progress, progress_factory
from mgrpo.vllm_sockets import private_rpc_directory

BACKENDS = ("auto", "local", "vllm")


@dataclass(frozen=True)
class Sampling:
    n: int
    temperature: float
    max_tokens: int
    seed: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # generated tokens, the stop token included
    finish_reason: str  # "stop" (a stop token or string) | "length" (max_tokens reached)


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: Sampling
    ) -> list[list[Completion]]: ...

    def describe(self) -> dict[str, Any]: ...


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(requested: str) -> str:
    """The backend ``requested`` (``auto`` | ``local`` | ``vllm``) means on this machine."""
    if requested not in BACKENDS:
        raise ValueError(f"evaluation.backend {requested!r} is not one of {BACKENDS}")
    if requested == "auto":
        return "vllm" if vllm_usable() else "local"
    if requested == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "evaluation.backend is 'vllm' but vLLM is not installed in this environment "
            "(pip install 'mgrpo[vllm]' on a GPU node, or use backend: auto or local)"
        )
    return requested


def stop_token_ids(model_dir: str | Path, tokenizer: Any) -> list[int]:
    """The tokenizer's EOS and the generation config's EOS token(s) (e.g. ``<|im_end|>``)."""
    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()
    from transformers import GenerationConfig

    ids = {tokenizer.eos_token_id}
    try:
        configured = GenerationConfig.from_pretrained(str(model_dir)).eos_token_id
    except OSError:  # no generation_config.json: transformers derives it from config.json
        from transformers import AutoConfig

        configured = getattr(AutoConfig.from_pretrained(str(model_dir)), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured) if isinstance(configured, list | tuple) else {configured}
    return sorted(i for i in ids if i is not None)


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


@dataclass
class LocalBackend:
    """The project's sampler; ``micro_batch_size`` rows (prompt x sample) per forward pass."""

    model_dir: str | Path
    stop_token_ids: list[int]
    device: str = "auto"
    threads: int = 1
    micro_batch_size: int = 64
    name: str = "local"
    label: str = "evaluation"  # names the job in its progress lines
    _model: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": str(self.device), "threads": self.threads}

    def _load(self) -> None:
        if self._model is None:
            import torch

            from mgrpo import lm

            torch.set_num_threads(self.threads)
            self.device = lm.pick_device(self.device)
            self._tokenizer = lm.load_tokenizer(self.model_dir)
            self._model = lm.load_model(self.model_dir, self.device)

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: Sampling
    ) -> list[list[Completion]]:
        import torch

        from mgrpo import lm

        self._load()
        rows = [(i, j) for i in range(len(prompts)) for j in range(sampling.n)]
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        stops = set(self.stop_token_ids)
        flat: list[Completion] = []
        bar = progress(total=len(rows), desc=self.label, unit="sample")
        for part in lm.micro_batches(len(rows), self.micro_batch_size):
            batch = lm.sample(
                self._model,
                [prompts[i] for i, _ in rows[part]],
                temperature=sampling.temperature,
                max_new_tokens=sampling.max_tokens,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self._tokenizer.pad_token_id,
                generator=generator,
            )
            lengths = batch.response_mask.sum(-1).tolist()
            texts = self._tokenizer.batch_decode(batch.responses, skip_special_tokens=True)
            for text, length, tokens in zip(texts, lengths, batch.responses.tolist(), strict=True):
                stopped = length > 0 and tokens[length - 1] in stops
                text, cut = _cut_at_stop(text, sampling.stop)
                reason = "stop" if stopped or cut else "length"
                flat.append(Completion(text, int(length), reason))
            bar.update(len(batch))
        bar.close()
        return [flat[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]


class VllmBackend:
    """Offline vLLM on ``model_dir``. ``llm_class``/``sampling_params_class`` default to vLLM's."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        stop_token_ids: list[int],
        options: Mapping[str, Any] | None = None,
        llm_class: Callable[..., Any] | None = None,
        sampling_params_class: Callable[..., Any] | None = None,
        label: str = "evaluation",
    ) -> None:
        self.label = label  # names the job in its progress lines
        self.model_dir = str(model_dir)
        self.stop_token_ids = list(stop_token_ids)
        self.options = dict(options or {})
        self._llm_class, self._params_class = llm_class, sampling_params_class
        self._llm: Any = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}

    def engine_kwargs(self, max_model_len: int, seed: int) -> dict[str, Any]:
        """Arguments of ``vllm.LLM``: the checkpoint, precision, memory and context length."""
        options = {
            "dtype": "bfloat16",
            "gpu_memory_utilization": 0.85,
            "tensor_parallel_size": 1,
            "max_model_len": None,
            "enforce_eager": False,
            "kv_cache_gib": None,
            **self.options,
        }
        kv_cache = options["kv_cache_gib"]
        sized = {} if kv_cache is None else {"kv_cache_memory_bytes": int(kv_cache * 2**30)}
        return {
            "model": self.model_dir,
            "tokenizer": self.model_dir,
            "seed": seed,
            "dtype": options["dtype"],
            "gpu_memory_utilization": options["gpu_memory_utilization"],
            "tensor_parallel_size": options["tensor_parallel_size"],
            "max_model_len": options["max_model_len"] or max_model_len,
            "enforce_eager": options["enforce_eager"],
            "generation_config": "vllm",  # no sampling defaults from the checkpoint's config
            **sized,
        }

    def sampling_params(self, sampling: Sampling, prompt_index: int) -> Any:
        return self._params_class(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=1.0,
            seed=sampling.seed + prompt_index,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            stop_token_ids=self.stop_token_ids,
            skip_special_tokens=True,
        )

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: Sampling
    ) -> list[list[Completion]]:
        if self._params_class is None or self._llm_class is None:
            private_rpc_directory()
            import vllm  # GPU nodes only

            self._llm_class = self._llm_class or vllm.LLM
            self._params_class = self._params_class or vllm.SamplingParams
        if self._llm is None:
            longest = max(len(p) for p in prompts)
            self._llm = self._llm_class(
                **self.engine_kwargs(longest + sampling.max_tokens, sampling.seed)
            )
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        params = [self.sampling_params(sampling, i) for i in range(len(prompts))]
        # vLLM's own bar redraws with carriage returns; this one logs lines (mgrpo.progress).
        outputs = self._llm.generate(
            requests, params, use_tqdm=progress_factory(self.label, "prompt")
        )
        return parse_outputs(outputs, len(prompts), sampling.n)


def parse_outputs(outputs: Sequence[Any], prompts: int, n: int) -> list[list[Completion]]:
    """vLLM ``RequestOutput``s (in prompt order) -> ``n`` completions per prompt, by index."""
    if len(outputs) != prompts:
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {prompts} prompts")
    completions = []
    for i, output in enumerate(outputs):
        samples = sorted(output.outputs, key=lambda c: c.index)
        if [c.index for c in samples] != list(range(n)):
            raise RuntimeError(f"vLLM returned {len(samples)} samples for prompt {i}, wanted {n}")
        unfinished = [c.finish_reason for c in samples if c.finish_reason not in ("stop", "length")]
        if unfinished:
            raise RuntimeError(f"vLLM did not finish prompt {i}: finish_reason {unfinished[0]!r}")
        completions.append([Completion(c.text, len(c.token_ids), c.finish_reason) for c in samples])
    return completions


def make_backend(
    name: str,
    model_dir: str | Path,
    stop_ids: list[int],
    spec: Mapping[str, Any],
    label: str = "evaluation",
) -> Backend:
    """The backend ``name`` (already resolved) configured from the evaluation spec.

    ``label`` names the job in the backend's progress lines.
    """
    if name == "vllm":
        return VllmBackend(model_dir, stop_ids, spec.get("vllm"), label=label)
    return LocalBackend(
        model_dir,
        stop_ids,
        device=spec.get("device", "auto"),
        threads=spec.get("threads", 1),
        micro_batch_size=spec.get("micro_batch_size", 64),
        label=label,
    )
