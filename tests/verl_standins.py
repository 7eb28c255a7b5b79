"""CPU stand-ins for the GPU side of a verl trainer, recording every call in one log.

The trainer under test is the real :class:`MGRPOTrainer` on verl's real dataset, data loader,
``DataProto`` and padding code; only what needs GPUs is replaced: the worker group (FSDP actor,
reference, momentum), the agent loop (vLLM) and the weight-sync manager. The stand-ins share a
:class:`World` that plays the models: the policy's version counts its updates, the momentum
policy is an EMA of those versions, and the rollout engine holds whichever was pushed last.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from verl import DataProto
from verl.single_controller.base import Worker
from verl.single_controller.base.decorator import Dispatch, register
from verl.utils import tensordict_utils as tu
from verl.utils.ray_utils import auto_await

from mgrpo.engines.verl.replicas import SERVER
from mgrpo.engines.verl.worker import SELF_CERTAINTY_FLAG, MomentumWorker, momentum_file


@dataclass
class World:
    log: list[tuple] = field(default_factory=list)
    policy: int = 0  # updates applied to pi_q
    momentum: float | None = None  # pi_k as an EMA of policy versions
    loaded: str | None = None  # what the rollout engine holds (every replica: sequential)
    held: dict[int, str] = field(default_factory=dict)  # replica -> model (split scheme)
    fail_at_update: int | None = None  # raise in the update of this policy version + 1
    updates: list[dict[str, Any]] = field(default_factory=list)

    def events(self, *kinds: str) -> list[tuple]:
        return [e for e in self.log if e[0] in kinds]


def token_entropy(ids: torch.Tensor) -> torch.Tensor:
    """A deterministic, varied per-token 'entropy' of each token id."""
    return 0.1 + (ids % 13).float() / 13.0


def _nested(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nested.nested_tensor_from_jagged(values, like.offsets())


class FakeWorkers:
    """The actor/rollout/ref worker group (with pi_k), one data-parallel rank."""

    def __init__(
        self, world: World, dp_size: int = 1, micro_batch_size: int = 1, world_size: int = 1
    ):
        self.world = world
        self.world_size = world_size  # ranks that save momentum shards
        self.dp_size, self.micro_batch_size = dp_size, micro_batch_size
        self._dispatch_info = {"actor": list(range(dp_size))}

    def _split(self, td: TensorDict) -> None:
        """What verl's engine asserts (``use_dynamic_bsz: false``): every rank gets whole
        micro-batches (verl/workers/engine/utils.py, ``prepare_micro_batches``)."""
        rows = int(td.batch_size[0])
        assert rows % self.dp_size == 0, f"{rows} rows do not split over {self.dp_size} ranks"
        assert (rows // self.dp_size) % self.micro_batch_size == 0, (
            "data size must be divisible by force_group_size * micro_batch_size_per_gpu: "
            f"{rows // self.dp_size} rows per rank, micro-batches of {self.micro_batch_size}"
        )

    def _query_dispatch_info(self, role: str) -> list[int]:
        return self._dispatch_info[role]

    # log-prob passes -------------------------------------------------------------------
    def compute_log_prob(self, td: TensorDict) -> TensorDict:
        self._split(td)
        ids = td["input_ids"]
        values = ids.values()
        flag = tu.get_non_tensor_data(data=td, key=SELF_CERTAINTY_FLAG, default=False)
        self.world.log.append(("log_prob", ids.size(0), "pi_q", bool(flag)))
        out = {"log_probs": _nested(-0.5 - 0.01 * (values % 7).float(), ids)}
        out["entropy"] = _nested(token_entropy(values), ids)
        if flag:
            out["self_certainty"] = _nested((values % 5).float() / 5.0, ids)
        return tu.get_tensordict(out, non_tensor_dict={"metrics": {"mfu": 0.0}})

    def compute_momentum_log_prob(self, td: TensorDict) -> TensorDict:
        self._split(td)
        ids = td["input_ids"]
        self.world.log.append(("log_prob", ids.size(0), "pi_k", False))
        out = {
            "log_probs": _nested(-0.5 * torch.ones(ids.values().shape), ids),
            "entropy": _nested(5.0 + token_entropy(ids.values()), ids),  # pi_k's own
        }
        return tu.get_tensordict(out, non_tensor_dict={"metrics": {"mfu": 0.0}})

    def compute_ref_log_prob(self, td: TensorDict) -> TensorDict:
        self._split(td)
        ids = td["input_ids"]
        self.world.log.append(("ref", ids.size(0)))
        out = {"log_probs": _nested(-0.6 * torch.ones(ids.values().shape), ids)}
        return tu.get_tensordict(out, non_tensor_dict={"metrics": {}})

    # the update and pi_k --------------------------------------------------------------
    def update_actor(self, td: TensorDict) -> TensorDict:
        self._split(td)
        if self.world.fail_at_update == self.world.policy + 1:
            raise RuntimeError("node lost")
        mask = td["response_mask"]
        self.world.updates.append(
            {
                "rows": int(td.batch_size[0]),
                "tokens": int(mask.sum()),
                "mini_batch_size": tu.get_non_tensor_data(td, "mini_batch_size", None),
                "advantage_sum": float((td["advantages"] * mask).sum()),
                "has_ref": "ref_log_prob" in td.keys(),  # noqa: SIM118 (a TensorDict)
            }
        )
        self.world.policy += 1
        self.world.log.append(("update", int(td.batch_size[0])))
        metrics = {"pg_loss": [0.1], "kl_loss": [0.01], "pg_clipfrac": [0.0], "loss": 0.2}
        metrics["grad_norm"] = 1.5
        return tu.get_tensordict({}, non_tensor_dict={"metrics": metrics})

    def init_momentum(self, offload: bool = False) -> list[int]:
        self.world.momentum = float(self.world.policy)
        self.world.log.append(("init_momentum",))
        return [0]

    def momentum_ema_update(self, m: float) -> list[float]:
        w = self.world
        w.momentum = m * w.momentum + (1.0 - m) * w.policy
        w.log.append(("ema", m))
        return [0.001]

    def update_weights_momentum(self, global_steps: int | None = None) -> list[None]:
        self.world.loaded = "momentum"
        self.world.log.append(("push", "momentum", global_steps))
        return [None]

    def update_weights_split(
        self, global_steps: int | None = None, momentum_replicas: tuple[int, ...] = ()
    ) -> list[None]:
        """Each replica of ``World.held`` receives the model of its group."""
        w = self.world
        w.held = {r: "momentum" if r in momentum_replicas else "policy" for r in w.held}
        w.log.append(("push", "split", global_steps, tuple(momentum_replicas)))
        return [None]

    # checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, local_path, hdfs_path=None, global_step=0, max_ckpt_to_keep=None):
        path = Path(local_path)
        (path / "huggingface").mkdir(parents=True, exist_ok=True)
        torch.save({"policy": self.world.policy}, momentum_file(path, 1, 0))
        self.world.log.append(("save", "actor", global_step))
        return [None]

    def load_checkpoint(self, local_path, hdfs_path=None, del_local_after_load=False):
        self.world.policy = torch.load(momentum_file(local_path, 1, 0))["policy"]
        self.world.log.append(("load", "actor", str(local_path)))
        return [None]

    def save_momentum(self, local_path: str, hf_config_dir: str | None = None) -> list[None]:
        path = Path(local_path)
        path.mkdir(parents=True, exist_ok=True)
        for rank in range(self.world_size):
            file = momentum_file(path, self.world_size, rank)
            torch.save({"momentum": self.world.momentum}, file)
        self.world.log.append(("save", "momentum", hf_config_dir))
        return [None]

    def load_momentum(self, local_path: str) -> list[None]:
        file = momentum_file(local_path, self.world_size, 0)
        self.world.momentum = torch.load(file)["momentum"]
        self.world.log.append(("load", "momentum", str(local_path)))
        return [None]


class FakeCheckpointManager:
    """verl's CheckpointEngineManager: pushes pi_q into the rollout engine, puts it to sleep."""

    def __init__(self, world: World):
        self.world = world

    def update_weights(self, global_steps: int | None = None) -> None:
        self.world.loaded = "policy"
        self.world.log.append(("push", "policy", global_steps))

    def sleep_replicas(self) -> None:
        self.world.log.append(("sleep",))


# Responses per pool position: the policy mostly says 1, the momentum policy says 2.
POLICY_ANSWERS = [r"so \boxed{1}", r"\boxed{1}", r"\boxed{2}", "no idea", r"\boxed{1}", "x"]
MOMENTUM_ANSWERS = [r"\boxed{2}", r"\boxed{2} ok"]


def server(replica: int) -> str:
    """The address the stand-ins give replica ``replica``."""
    return f"fake-server-{replica}"


class FakeAgentLoop:
    """verl's AgentLoopManager: one response per row, from whichever model is loaded.

    With ``replicas`` it plays a manager over those replicas only (the split scheme): requests
    go round robin over them and each is answered by the model its replica holds
    (``World.held``). Call number ``fail_on_call`` (0-based) raises as a dead replica would.
    """

    def __init__(
        self,
        world: World,
        tokenizer: Any,
        config: Any,
        replicas: list[int] | None = None,
        fail_on_call: int | None = None,
    ):
        self.world, self.tokenizer = world, tokenizer
        self.prompt_length = config.actor_rollout_ref.rollout.prompt_length
        self.response_length = config.actor_rollout_ref.rollout.response_length
        self.replicas, self.fail_on_call = replicas, fail_on_call
        self.calls = 0

    @auto_await
    async def generate_sequences(self, batch: DataProto) -> DataProto:
        await asyncio.sleep(0)  # lets a concurrent call start, as a real manager's would
        tok, n = self.tokenizer, len(batch)
        if self.replicas is None:
            served = [0] * n
            models = [self.world.loaded] * n
        else:
            served = [self.replicas[i % len(self.replicas)] for i in range(n)]
            models = [self.world.held[r] for r in served]
        self.world.log.append(("generate", models[0] if len(set(models)) == 1 else models, n))
        if self.calls == self.fail_on_call:
            raise RuntimeError(f"server {server(served[0])} is gone")
        prompts = torch.full((n, self.prompt_length), tok.pad_token_id)
        responses = torch.full((n, self.response_length), tok.pad_token_id)
        prompt_mask = torch.zeros(n, self.prompt_length, dtype=torch.long)
        response_mask = torch.zeros(n, self.response_length, dtype=torch.long)
        for i, messages in enumerate(batch.non_tensor_batch["raw_prompt"]):
            text = tok.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=False
            )
            ids = tok(text, add_special_tokens=False)["input_ids"]
            prompts[i, -len(ids) :] = torch.tensor(ids)
            prompt_mask[i, -len(ids) :] = 1
            answers = MOMENTUM_ANSWERS if models[i] == "momentum" else POLICY_ANSWERS
            answer = answers[(self.calls + i) % len(answers)]
            out = tok(answer, add_special_tokens=False)["input_ids"][: self.response_length - 1]
            out = [*out, tok.eos_token_id]
            responses[i, : len(out)] = torch.tensor(out)
            response_mask[i, : len(out)] = 1
        self.calls += 1
        attention = torch.cat([prompt_mask, response_mask], 1)
        return DataProto.from_dict(
            tensors={
                "prompts": prompts,
                "responses": responses,
                "response_mask": response_mask,
                "input_ids": torch.cat([prompts, responses], 1),
                "attention_mask": attention,
                "position_ids": (attention.cumsum(-1) - 1).clamp_min(0),
            },
            non_tensors={
                "__num_turns__": np.full(n, 2),
                SERVER: np.array([server(r) for r in served], dtype=object),
            },
            meta_info={"timing": {"generate_sequences": 0.0}},
        )


class CpuMomentumWorker(MomentumWorker):
    """The real :class:`MomentumWorker` whose actor is a tiny Qwen3, FSDP2-sharded on CPU.

    verl's engines need CUDA, so ``init_model`` builds what the worker's momentum methods touch
    (``self.actor.engine.module``) by hand: the base model loaded in fp32 and sharded with
    ``fully_shard`` over a gloo process group, as verl's FSDP2 engine shards its actor.
    """

    def __init__(self, model_dir: str):
        Worker.__init__(self)
        self.model_dir = model_dir

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from transformers import AutoModelForCausalLM

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("fsdp",))
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        self.actor = SimpleNamespace(engine=SimpleNamespace(module=model))

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def train_step_stand_in(self, delta: float) -> None:
        """What an optimizer step does to pi_q, here: every local shard += delta."""
        with torch.no_grad():
            for p in self._policy_module().parameters():
                p.to_local().add_(delta)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def full_weights(self, momentum: bool = False) -> dict[str, torch.Tensor]:
        """Full tensors of pi_q, or of pi_k read through the swap (collective: every rank)."""
        module = self._policy_module()
        if momentum:
            with self._momentum().swapped_into(module):
                return {k: v.full_tensor().clone() for k, v in module.state_dict().items()}
        return {k: v.full_tensor().clone() for k, v in module.state_dict().items()}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def split_push_tensors(self, momentum_ranks: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """What this rank's replica would receive from the split push (collective), with the
        FSDP2 module's own gather standing in for the engine's ``get_per_tensor_param``."""
        import torch.distributed as dist

        from mgrpo.engines.verl.worker import one_model_per_replica

        module = self._policy_module()

        def gather(**_):
            return ((k, v.full_tensor()) for k, v in module.state_dict().items()), None

        export = one_model_per_replica(
            gather, self._momentum(), module, receives_momentum=dist.get_rank() in momentum_ranks
        )
        tensors, _ = export()
        return {k: v.clone() for k, v in tensors}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_actor(self, local_path: str) -> None:
        """The actor's model shards with verl's own FSDPCheckpointManager."""
        from transformers import AutoTokenizer
        from verl.trainer.config import CheckpointConfig
        from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

        manager = FSDPCheckpointManager(
            model=self._policy_module(),
            processing_class=AutoTokenizer.from_pretrained(self.model_dir),
            checkpoint_config=CheckpointConfig(save_contents=["model"], load_contents=["model"]),
        )
        manager.save_checkpoint(local_path, global_step=1)
