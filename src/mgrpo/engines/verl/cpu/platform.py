"""verl's "cpu" platform, loaded in every process of a CPU chunk (driver and Ray workers).

verl 0.9.1 registers platforms for GPUs and NPUs only; with none available it falls back to CUDA
calls. This module registers one for the CPU through verl's extension point, the platform
registry; verl imports it at start-up because ``VERL_USE_EXTERNAL_MODULES`` names it and selects
it because ``VERL_PLATFORM=cpu`` (:func:`mgrpo.engines.verl.cpu.worker_env` sets both).

What the platform says, and why:

- the Ray resource is ``"GPU"``: Ray is started with ``num_gpus = gpus`` slots that stand for the
  training ranks (``ray_kwargs.ray_init.num_gpus``), so verl's placement groups and
  ``get_accelerator_ids()["GPU"]`` work unchanged;
- the device is ``"cpu"`` and :meth:`CpuPlatform.current_device` returns ``"cpu"``, not ``0``:
  verl moves tensors with ``.to(get_device_id())``, and an int means ``cuda:N`` to torch;
- no CUDA IPC: vLLM receives weights through ZMQ and shared memory;
- the device module answers the ``torch.cuda``-style calls verl makes through
  ``get_torch_device()`` (memory statistics, RNG state for checkpoints, seeds) for the CPU.

One thing has no extension point: verl's FSDP2 reference model is built with
``CPUOffloadPolicy(pin_memory=True)``, and pinning host memory needs a CUDA driver. The one
run-time patch of this project (:func:`unpinned_offload_policy`) replaces that class, in verl's
FSDP engine module only, by the same policy without pinning. It runs only where this module is
loaded, i.e. only on the CPU path; docs/verl-engine.md names it.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

NAME = "cpu"


def _device_module() -> types.SimpleNamespace:
    """``torch.cpu`` plus the ``torch.cuda`` calls verl makes, answered for the CPU."""
    module = types.SimpleNamespace(
        **{name: getattr(torch.cpu, name) for name in dir(torch.cpu) if not name.startswith("_")}
    )
    nothing = lambda *args, **kwargs: None  # noqa: E731
    zero = lambda *args, **kwargs: 0  # noqa: E731
    module.__dict__.update(
        is_available=lambda: True,
        device_count=lambda: 1,
        current_device=lambda: NAME,
        get_device_name=lambda *args, **kwargs: "CPU",
        empty_cache=nothing,
        ipc_collect=nothing,
        reset_peak_memory_stats=nothing,
        memory_allocated=zero,
        memory_reserved=zero,
        max_memory_allocated=zero,
        max_memory_reserved=zero,
        memory_stats=lambda *args, **kwargs: {},
        mem_get_info=lambda *args, **kwargs: (0, 0),
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        # verl's checkpoint manager saves and restores the device RNG under this platform's name
        get_rng_state=lambda *args, **kwargs: torch.get_rng_state(),
        set_rng_state=lambda state, *args, **kwargs: torch.set_rng_state(state),
    )
    return module


DEVICE_MODULE = _device_module()


@PlatformRegistry.register(platform=NAME)
class CpuPlatform(PlatformBase):
    """The CPU as verl's accelerator: one "device" per Ray GPU slot, gloo for collectives."""

    @property
    def device_name(self) -> str:
        return NAME

    @property
    def vendor_name(self) -> str:
        return NAME

    @property
    def device_module(self) -> types.SimpleNamespace:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return True

    def current_device(self) -> str:  # type: ignore[override]  (a device string: see above)
        return NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        pass

    def synchronize(self, device_index: int | None = None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):  # type: ignore[override]
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def unpinned_offload_policy() -> None:
    """verl's FSDP engine builds the reference model's offload policy without pinned memory."""
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine

    policy = fsdp_engine.CPUOffloadPolicy
    if getattr(policy, "unpinned", False):
        return

    @dataclass
    class UnpinnedCPUOffloadPolicy(policy):  # type: ignore[misc, valid-type]
        unpinned = True

        def __post_init__(self) -> None:
            self.pin_memory = False  # pinning needs a CUDA driver

    fsdp_engine.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


unpinned_offload_policy()
