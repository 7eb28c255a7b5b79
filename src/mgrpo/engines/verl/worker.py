"""verl's hybrid actor/rollout/ref worker with M-GRPO's momentum policy pi_k on every rank.

:class:`MomentumWorker` adds to ``ActorRolloutRefWorker`` (``workers/engine_workers.py``):

- an fp32 copy of this rank's policy shards (:class:`~.momentum.MomentumShards`), separate from
  the frozen KL reference (verl's ``ref``, which never moves);
- the shard-local EMA after each update;
- the push of pi_k into this rank's vLLM engine (verl's own naive weight sync, with pi_k swapped
  into the actor's parameters for the duration of the push), and an entropy pass under pi_k;
- save/load of pi_k beside the actor checkpoint, in the format of verl's actor shards;
- per-token self-certainty (Intuitor) from the logits of the old-log-prob pass.

All methods run on every rank (``ONE_TO_ALL``), each on its own shards.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from verl.single_controller.base.decorator import (
    Dispatch,
    make_nd_compute_dataproto_dispatch_fn,
    register,
)
from verl.utils.device import get_device_name
from verl.workers.engine_workers import ActorRolloutRefWorker

from mgrpo.algorithm.entropy import token_self_certainty
from mgrpo.engines.verl import cpu
from mgrpo.engines.verl.momentum import MomentumShards
from mgrpo.progress import mark

SELF_CERTAINTY_FLAG = "calculate_self_certainty"
SELF_CERTAINTY_CHUNK = 2048  # tokens per chunk: a (chunk, vocab) fp32 temporary, not (all, vocab)


def momentum_file(directory: str | Path, world_size: int, rank: int) -> Path:
    """Where rank ``rank`` keeps its momentum shards (verl's actor shard naming)."""
    return Path(directory) / f"model_world_size_{world_size}_rank_{rank}.pt"


def save_momentum_shards(
    momentum: MomentumShards,
    module: torch.nn.Module,
    directory: str | Path,
    *,
    rank: int,
    world_size: int,
    hf_config_dir: str | Path | None,
) -> None:
    """Write this rank's pi_k shards; rank 0 adds ``fsdp_config.json`` and ``huggingface/``.

    The directory then has the layout of a verl actor checkpoint's model part, which
    ``python -m verl.model_merger merge --backend fsdp`` turns into a Hugging Face model.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(momentum.state_dict(module), momentum_file(directory, world_size, rank))
    if rank == 0:
        (directory / "fsdp_config.json").write_text(
            json.dumps({"FSDP_version": 2, "world_size": world_size}, indent=4)
        )
        if hf_config_dir is not None:
            shutil.copytree(hf_config_dir, directory / "huggingface", dirs_exist_ok=True)


def load_momentum_shards(
    momentum: MomentumShards, directory: str | Path, *, rank: int, world_size: int
) -> None:
    """Read this rank's pi_k shards; a checkpoint without them is refused, never replaced."""
    file = momentum_file(directory, world_size, rank)
    if not file.exists():
        saved = sorted(p.name for p in Path(directory).glob("model_world_size_*_rank_0.pt"))
        raise FileNotFoundError(
            f"{file}: no momentum weights for rank {rank} of {world_size} "
            + (f"(found {saved}: saved with another GPU count)" if saved else "(none saved)")
            + "; refusing to restart pi_k from the base model"
        )
    momentum.load_state_dict(torch.load(file, map_location="cpu", weights_only=False), str(file))


def _drain(tensors: Any) -> None:
    """Consume a per-tensor generator: this rank's part in its gathers, nothing sent."""
    for _ in tensors:
        pass


def one_model_per_replica(
    gather: Callable[..., tuple[Any, Any]],
    momentum: MomentumShards,
    module: torch.nn.Module,
    *,
    receives_momentum: bool,
) -> Callable[..., tuple[Any, None]]:
    """The engine's per-tensor export (``get_per_tensor_param``) for the split push: it yields
    pi_k's full tensors on a rank whose replica serves pi_k, pi_q's on the others.

    Gathering a full tensor from FSDP shards is a collective, so every rank takes part in both
    gathers, pi_q's then pi_k's, in the same order on all ranks, and yields only the model its
    replica serves: one push per replica per step, as GRPO has.
    """

    def per_tensor_param(**kwargs: Any) -> tuple[Any, None]:
        def tensors():
            policy, _ = gather(**kwargs)
            if receives_momentum:
                _drain(policy)
            else:
                yield from policy
            with momentum.swapped_into(module):
                held, _ = gather(**kwargs)
                if receives_momentum:
                    yield from held
                else:
                    _drain(held)

        return tensors(), None

    return per_tensor_param


def _scaled_self_certainty(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Per-token self-certainty of temperature-scaled logits ``(N, V) -> (N,)``, in chunks."""
    out = torch.empty(logits.shape[0], device=logits.device, dtype=torch.float32)
    for start in range(0, logits.shape[0], SELF_CERTAINTY_CHUNK):
        end = min(start + SELF_CERTAINTY_CHUNK, logits.shape[0])
        scaled = logits[start:end].float() / temperature[start:end, None].float()
        out[start:end] = token_self_certainty(scaled)
    return out


def with_self_certainty(engine: Any) -> Callable[..., dict[str, Any]]:
    """``engine.prepare_model_outputs`` that also returns ``self_certainty`` when asked.

    verl computes entropies from the logits of the old-log-prob pass but nothing else; Intuitor's
    self-certainty needs the same logits, so it is computed here, laid out exactly like verl's
    ``entropy`` output (nested, one row per sequence).
    """
    from verl.utils import tensordict_utils as tu

    prepare = engine.prepare_model_outputs

    def prepare_model_outputs(output, output_args, micro_batch, logits_processor_func):
        model_output = prepare(output, output_args, micro_batch, logits_processor_func)
        if not tu.get_non_tensor_data(data=micro_batch, key=SELF_CERTAINTY_FLAG, default=False):
            return model_output
        logits = getattr(output, "logits", None)
        if logits is None:
            raise ValueError(
                "self-certainty needs the logits: "
                "set actor_rollout_ref.model.use_fused_kernels=false"
            )
        if hasattr(logits, "full_tensor"):
            logits = logits.full_tensor()
        cu_seqlens = micro_batch["input_ids"].offsets()
        if "temperature_rmpad" in output_args:  # packed sequences (use_remove_padding)
            values = _scaled_self_certainty(logits.squeeze(0), output_args["temperature_rmpad"])
            values = engine._gather_and_unpad_packed(values, output_args["pad_size"])
        else:  # (bsz, seqlen, vocab), one temperature per row
            temperature = output_args["temperature"]
            lengths = cu_seqlens.diff().tolist()
            values = torch.cat(
                [
                    _scaled_self_certainty(
                        logits[i, :n],
                        temperature[i].expand(n) if temperature.dim() else temperature.expand(n),
                    )
                    for i, n in enumerate(lengths)
                ]
            )
        model_output["self_certainty"] = torch.nested.nested_tensor_from_jagged(values, cu_seqlens)
        return model_output

    return prepare_model_outputs


class MomentumWorker(ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` plus pi_k (see the module docstring)."""

    momentum: MomentumShards | None = None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        if get_device_name() == cpu.DEVICE:
            cpu.init_process_group()  # before verl's, whose backend string the CPU cannot take
        super().init_model()
        if self.rank == 0:
            mark("actor and reference built")
        if self.actor is not None:
            engine = self.actor.engine
            engine.prepare_model_outputs = with_self_certainty(engine)

    def _policy_module(self) -> torch.nn.Module:
        return self.actor.engine.module

    def _momentum(self) -> MomentumShards:
        if self.momentum is None:
            raise RuntimeError("the momentum policy was never initialised (init_momentum)")
        return self.momentum

    @staticmethod
    def _rank_and_size() -> tuple[int, int]:
        if torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    @staticmethod
    def _barrier() -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_momentum(self, offload: bool = False) -> int:
        """pi_k <- pi_q (Algorithm 1, line 2); returns this rank's momentum bytes."""
        self.momentum = MomentumShards(self._policy_module(), device="cpu" if offload else None)
        return self.momentum.nbytes

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def momentum_ema_update(self, m: float) -> float:
        """theta_k <- m theta_k + (1 - m) theta_q on this rank's shards; returns seconds."""
        start = time.perf_counter()
        self._momentum().ema_(self._policy_module(), m)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    async def update_weights_momentum(self, global_steps: int | None = None):
        """Push pi_k into this rank's rollout engine (verl's naive sync, pi_k swapped in)."""
        with self._momentum().swapped_into(self._policy_module()):
            return await super().update_weights(global_steps=global_steps, mode="naive")

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    async def update_weights_split(
        self, global_steps: int | None = None, momentum_replicas: tuple[int, ...] = ()
    ):
        """Push pi_q into the policy group's replicas and pi_k into the momentum group's (verl's
        naive sync, its per-tensor export wrapped by :func:`one_model_per_replica`)."""
        engine = self.actor.engine
        gather = engine.get_per_tensor_param
        engine.get_per_tensor_param = one_model_per_replica(
            gather,
            self._momentum(),
            self._policy_module(),
            receives_momentum=int(self.rollout.replica_rank) in set(momentum_replicas),
        )
        try:
            return await super().update_weights(global_steps=global_steps, mode="naive")
        finally:
            engine.get_per_tensor_param = gather

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute_momentum_log_prob(self, data):
        """Log-probs and entropies under pi_k (``entropy_model: generator``)."""
        with self._momentum().swapped_into(self._policy_module()):
            output = self.actor.infer_batch(data)
        return output.cpu() if output is not None else None

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_momentum(self, local_path: str, hf_config_dir: str | None = None) -> None:
        rank, world = self._rank_and_size()
        save_momentum_shards(
            self._momentum(),
            self._policy_module(),
            local_path,
            rank=rank,
            world_size=world,
            hf_config_dir=hf_config_dir if hf_config_dir and os.path.isdir(hf_config_dir) else None,
        )
        self._barrier()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_momentum(self, local_path: str) -> None:
        rank, world = self._rank_and_size()
        load_momentum_shards(self._momentum(), local_path, rank=rank, world_size=world)
        self._barrier()
