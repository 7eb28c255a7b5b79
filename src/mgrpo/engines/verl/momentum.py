"""The momentum policy pi_k as an fp32 copy of the policy's *local* FSDP shards.

Every rank holds the momentum values of exactly the parameter shards it holds of the policy, so
the EMA (paper Eq. 1) is shard-local: no communication, no full-parameter gather, no second
model. The momentum model is never run on its own; when its weights are needed (pushed into vLLM,
or an entropy pass under pi_k) they are swapped into the actor's parameters for the duration of a
``with`` block and swapped back exactly, so verl's own weight-sync and log-prob code serve both
models.

Plain tensors work too (world size 1 without FSDP, and the CPU tests); DTensor shards are read
through ``to_local()``, which is a view: writing it writes the parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from mgrpo.algorithm.ema import ema_update_

# EMA in buckets, so a policy living on another device than the momentum copy (parameter
# offload) is staged a bucket at a time instead of all at once.
BUCKET_BYTES = 256 << 20


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The rank-local part of a parameter (a view for DTensors, the tensor itself otherwise)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _unique_parameters(module: torch.nn.Module) -> tuple[list[str], list[torch.Tensor], dict]:
    """Canonical names and parameters (tied weights once) and every name -> canonical name."""
    canonical: dict[int, str] = {}
    names, params, aliases = [], [], {}
    for name, param in module.named_parameters(remove_duplicate=False):
        if id(param) not in canonical:
            canonical[id(param)] = name
            names.append(name)
            params.append(param)
        aliases[name] = canonical[id(param)]
    return names, params, aliases


class MomentumShards:
    """fp32 momentum values of one rank's policy shards, in the module's parameter order."""

    def __init__(self, module: torch.nn.Module, device: torch.device | str | None = None):
        """Initialise pi_k = pi_q from ``module``'s current parameters (Algorithm 1, line 2).

        ``device`` defaults to where the policy shards live now (the GPU, or the CPU when verl
        offloads the actor's parameters between phases).
        """
        self.names, params, self.aliases = _unique_parameters(module)
        self.shards = [
            local(p).detach().to(device or local(p).device, dtype=torch.float32, copy=True)
            for p in params
        ]

    @property
    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.shards)

    def _params(self, module: torch.nn.Module) -> list[torch.Tensor]:
        names, params, _ = _unique_parameters(module)
        if names != self.names:
            raise ValueError(
                "the policy's parameters no longer match the momentum copy "
                f"({len(names)} vs {len(self.names)} tensors)"
            )
        return params

    @torch.no_grad()
    def ema_(self, module: torch.nn.Module, m: float) -> None:
        """``theta_k <- m * theta_k + (1 - m) * theta_q`` on this rank's shards, in fp32."""
        pairs = list(zip(self.shards, self._params(module), strict=True))
        bucket: list[tuple[torch.Tensor, torch.Tensor]] = []
        size = 0
        for shard, param in pairs:
            bucket.append((shard, param))
            size += shard.numel() * shard.element_size()
            if size >= BUCKET_BYTES:
                self._ema_bucket(bucket, m)
                bucket, size = [], 0
        if bucket:
            self._ema_bucket(bucket, m)

    @staticmethod
    def _ema_bucket(bucket: list[tuple[torch.Tensor, torch.Tensor]], m: float) -> None:
        momentum = [shard for shard, _ in bucket]
        policy = [local(param).detach().to(shard.device) for shard, param in bucket]
        ema_update_(momentum, policy, m)

    @contextlib.contextmanager
    def swapped_into(self, module: torch.nn.Module) -> Iterator[None]:
        """Inside the block ``module`` holds pi_k (and this object pi_q); restored on exit.

        A swap tensor by tensor: the extra memory is one parameter shard. Both copies must be
        fp32 so that swapping twice is exact (verl trains in fp32 master weights).
        """
        params = self._params(module)
        bad = [p.dtype for p in params if p.dtype != torch.float32]
        if bad:
            raise TypeError(
                f"swapping the momentum weights in needs fp32 policy parameters, got {bad[0]} "
                "(keep actor_rollout_ref.actor.fsdp_config.model_dtype=fp32)"
            )
        self._swap(params)
        try:
            yield
        finally:
            self._swap(self._params(module))

    @torch.no_grad()
    def _swap(self, params: list[torch.Tensor]) -> None:
        for shard, param in zip(self.shards, params, strict=True):
            view = local(param)
            held = view.detach().clone()
            view.copy_(shard)
            shard.copy_(held)

    def state_dict(self, module: torch.nn.Module) -> dict[str, Any]:
        """pi_k under every key of ``module.state_dict()`` (buffers from the policy).

        Sharded parameters become DTensors with the policy's mesh and placements, so the file has
        the format of verl's own ``model_world_size_{W}_rank_{r}.pt`` and verl's model merger
        turns a directory of them into a Hugging Face model.
        """
        params = dict(zip(self.names, self._params(module), strict=True))
        shards = dict(zip(self.names, self.shards, strict=True))
        out: dict[str, Any] = {}
        for key, value in module.state_dict().items():
            name = self.aliases.get(key)
            if name is None:  # a persistent buffer: never trained, the policy's is pi_k's
                out[key] = value
                continue
            param, shard = params[name], shards[name]
            if hasattr(param, "device_mesh"):
                from torch.distributed.tensor import DTensor

                out[key] = DTensor.from_local(
                    shard,
                    param.device_mesh,
                    param.placements,
                    run_check=False,
                    shape=param.shape,
                    stride=param.stride(),
                )
            else:
                out[key] = shard
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any], source: str = "momentum state") -> None:
        """Replace the momentum values by a saved :meth:`state_dict` of the same sharding."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(
                f"{source}: no momentum values for {missing[:3]} ({len(missing)} missing)"
            )
        for name, shard in zip(self.names, self.shards, strict=True):
            value = local(state[name])
            if value.shape != shard.shape:
                raise ValueError(
                    f"{source}: {name} has local shape {tuple(value.shape)}, this rank holds "
                    f"{tuple(shard.shape)} (saved with another world size?)"
                )
            shard.copy_(value)
