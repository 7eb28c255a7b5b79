"""A stand-in for vLLM's offline API (``LLM``, ``SamplingParams``, ``RequestOutput``).

Field names follow vLLM's own source (``vllm/sampling_params.py``, ``vllm/outputs.py``);
``SamplingParams`` accepts only real field names, so a misspelt argument fails here as it would
on a GPU node. ``LLM.generate`` answers from a script: response ``j`` of prompt ``i`` is
``script[i][j]`` (its tokens are its characters), and outputs come back out of index order, as
vLLM may return them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:  # a subset of vllm.SamplingParams, same names and defaults
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool


@dataclass
class ScriptedLLM:
    """``vllm.LLM(**engine_kwargs)`` stand-in; class attribute ``script`` set by the test."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[list[Any], list[SamplingParams]]] = field(default_factory=list)
    script: list[list[str]] = field(default_factory=list)
    finish: str = "stop"

    @classmethod
    def make(cls, script: list[list[str]], finish: str = "stop") -> type:
        """An ``LLM`` class whose instances answer from ``script``."""
        made: list[ScriptedLLM] = []

        def construct(**kwargs: Any) -> ScriptedLLM:
            llm = cls(kwargs=kwargs, script=script, finish=finish)
            made.append(llm)
            return llm

        construct.instances = made  # type: ignore[attr-defined]
        return construct  # type: ignore[return-value]

    def generate(
        self, prompts: list[Any], sampling_params: list[SamplingParams], use_tqdm: bool = True
    ) -> list[RequestOutput]:
        self.calls.append((prompts, sampling_params))
        outputs = []
        for i, (prompt, params) in enumerate(zip(prompts, sampling_params, strict=True)):
            texts = self.script[i]
            assert len(texts) == params.n, "the script must have n responses per prompt"
            completions = [
                CompletionOutput(
                    index=j, text=t, token_ids=[ord(c) for c in t], finish_reason=self.finish
                )
                for j, t in enumerate(texts)
            ]
            outputs.append(
                RequestOutput(
                    request_id=str(i),
                    prompt=None,
                    prompt_token_ids=prompt["prompt_token_ids"],
                    prompt_logprobs=None,
                    outputs=completions[::-1],  # not in index order
                    finished=True,
                )
            )
        return outputs
