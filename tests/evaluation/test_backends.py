"""Generation backends: auto selection, the vLLM seam with a stand-in, the local sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
from vllm_stand_in import SamplingParams, ScriptedLLM

from mgrpo import lm
from mgrpo.evaluation.backends import (
    LocalBackend,
    Sampling,
    VllmBackend,
    resolve_backend,
    stop_token_ids,
)


def test_auto_picks_the_local_backend_here() -> None:
    # No vLLM and no GPU on development machines and in CI.
    assert resolve_backend("auto") == "local"
    assert resolve_backend("local") == "local"
    with pytest.raises(RuntimeError, match="vLLM is not installed"):
        resolve_backend("vllm")
    with pytest.raises(ValueError, match="'gpu'"):
        resolve_backend("gpu")


def stand_in(script: list[list[str]], finish: str = "stop", **options) -> VllmBackend:
    return VllmBackend(
        "ckpt/policy",
        [2, 7],
        options,
        llm_class=ScriptedLLM.make(script, finish),
        sampling_params_class=SamplingParams,
    )


def test_vllm_requests_are_built_from_prompts_and_sampling() -> None:
    backend = stand_in([["a", "b"], ["c", "d"]], gpu_memory_utilization=0.5)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    backend.generate(prompts, Sampling(n=2, temperature=0.8, max_tokens=100, seed=11))
    llm = backend._llm
    assert llm.kwargs == {
        "model": "ckpt/policy",
        "tokenizer": "ckpt/policy",
        "seed": 11,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.5,
        "tensor_parallel_size": 1,
        "max_model_len": 5 + 100,  # longest prompt + max_tokens
        "enforce_eager": False,
        "generation_config": "vllm",
    }
    ((requests, params),) = llm.calls
    assert requests == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5, 6, 7, 8]}]
    assert [p.seed for p in params] == [11, 12]  # one seed per prompt: batching-independent
    for p in params:
        assert (p.n, p.temperature, p.top_p, p.max_tokens) == (2, 0.8, 1.0, 100)
        assert p.stop_token_ids == [2, 7] and p.stop is None and p.skip_special_tokens
    backend.generate(prompts, Sampling(n=2, temperature=0.8, max_tokens=100, seed=11, stop=("##",)))
    assert llm.calls[1][1][0].stop == ["##"]
    assert backend._llm is llm  # the engine is built once


def test_a_kv_cache_size_replaces_the_memory_fraction() -> None:
    """vLLM's CPU build reads gpu_memory_utilization as a fraction of the machine's memory and
    refuses to start when that much is not free: a CPU config sizes the KV cache instead."""
    backend = stand_in([["a"]], dtype="float32", enforce_eager=True, kv_cache_gib=1.5)
    backend.generate([[1, 2]], Sampling(n=1, temperature=0.0, max_tokens=4, seed=0))
    kwargs = backend._llm.kwargs
    assert kwargs["kv_cache_memory_bytes"] == int(1.5 * 2**30)
    assert (kwargs["dtype"], kwargs["enforce_eager"]) == ("float32", True)
    assert "kv_cache_gib" not in kwargs  # not a vLLM argument


def test_vllm_results_are_parsed_in_sample_order() -> None:
    backend = stand_in([["first", "second", "third"]], finish="length")
    (completions,) = backend.generate([[1]], Sampling(n=3, temperature=1.0, max_tokens=5, seed=0))
    assert [c.text for c in completions] == ["first", "second", "third"]
    assert [c.tokens for c in completions] == [5, 6, 5]
    assert {c.finish_reason for c in completions} == {"length"}


@pytest.mark.parametrize(
    ("script", "n", "finish", "message"),
    [
        ([["a"]], 2, "stop", "the script must have n"),  # stand-in refuses: n mismatch
        ([["a", "b"]], 2, "abort", "did not finish prompt 0"),
    ],
)
def test_vllm_bad_results_are_errors(script, n, finish, message) -> None:
    backend = stand_in(script, finish=finish)
    with pytest.raises((RuntimeError, AssertionError), match=message):
        backend.generate([[1]], Sampling(n=n, temperature=1.0, max_tokens=5, seed=0))


# ----------------------------------------------------------------------------- local
@pytest.fixture(scope="module")
def local(toy_dir: Path) -> LocalBackend:
    tokenizer = lm.load_tokenizer(toy_dir / "model")
    stops = stop_token_ids(toy_dir / "model", tokenizer)
    backend = LocalBackend(toy_dir / "model", stops, device="cpu", micro_batch_size=3)
    prompts = lm.encode_prompts(tokenizer, ["Compute 12+3+4. Put it in \\boxed{}."] * 2, 64)
    return backend, prompts


def test_local_samples_are_seeded_and_grouped_per_prompt(local) -> None:
    backend, prompts = local
    sampling = Sampling(n=3, temperature=1.0, max_tokens=10, seed=5)
    a = backend.generate(prompts, sampling)
    assert [len(c) for c in a] == [3, 3]
    assert a == backend.generate(prompts, sampling)
    other = backend.generate(prompts, Sampling(n=3, temperature=1.0, max_tokens=10, seed=6))
    assert other != a
    for completion in (c for row in a for c in row):
        assert 1 <= completion.tokens <= 10
        assert completion.finish_reason == ("length" if completion.tokens == 10 else "stop")


def test_local_stop_strings_cut_the_text(local) -> None:
    backend, prompts = local
    plain = backend.generate(prompts, Sampling(n=1, temperature=0.0, max_tokens=12, seed=0))
    text = plain[0][0].text
    stop = text[3:5]
    cut = backend.generate(
        prompts, Sampling(n=1, temperature=0.0, max_tokens=12, seed=0, stop=(stop,))
    )
    assert cut[0][0].text == text[: text.find(stop)]
    assert cut[0][0].finish_reason == "stop"
