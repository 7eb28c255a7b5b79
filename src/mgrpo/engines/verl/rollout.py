"""The one seam between the M-GRPO step and the rollout engine (vLLM behind verl's agent loop).

Everything the trainer asks of vLLM goes through :class:`Rollouts`: load the step's models into
the replicas, and generate. Two schemes (:mod:`.replicas`):

- ``sequential``: every replica holds pi_q for the policy rollouts; pi_k is then pushed into
  every replica for the momentum rollouts (two calls, one after the other).
- ``split``: the policy group holds pi_q and the momentum group pi_k, each replica receiving
  one model per step; both kinds of rollouts are generated in one concurrent call, each through
  its own agent loop manager and router.

Weights are pushed with verl's own weight sync (colocated, naive backend), which wakes the
engine and resets its prefix cache, so no KV entry computed under one model is reused under the
other. Every generated row names the replica that served it (``replicas.REPLICA``); under
``split`` a row served by the other model's group fails the step before it is scored.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from mgrpo.engines.verl.replicas import REPLICA, SERVER, SPLIT, misrouted


def wait(result: Any) -> Any:
    """``ray.get`` for what a non-blocking worker-group call returned (plain values pass)."""
    import ray

    refs = result if isinstance(result, list) else [result]
    if refs and all(isinstance(r, ray.ObjectRef) for r in refs):
        return ray.get(result)
    return result


class ReplicaFailure(RuntimeError):
    """Generation failed on a group of replicas; the step is not scored."""


class Rollouts:
    """Weight loading and generation for one trainer (its worker group and rollout managers)."""

    def __init__(self, trainer: Any, scheme: str, momentum_replicas: list[int]):
        self.trainer = trainer
        self.scheme = scheme
        self.momentum_replicas = list(momentum_replicas)
        self.ranks: dict[str, int] = {}  # server address -> replica rank
        self.groups: dict[str, Any] = {}  # "policy" / "momentum" -> agent loop manager (split)
        self.servers: dict[str, dict[str, Any]] = {}  # group -> {address: server handle}

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        """Map servers to replica ranks; under ``split``, one agent loop manager per group."""
        t = self.trainer
        manager = getattr(t, "llm_server_manager", None)
        if manager is None:  # stand-ins without replicas
            return
        replicas = manager.get_replicas()
        handles = dict(zip(manager.server_addresses, manager.server_handles, strict=True))
        self.ranks = {
            address: int(replica.replica_rank)
            for address, replica in zip(manager.server_addresses, replicas, strict=True)
        }
        self.servers = {"all": handles}
        if self.scheme != SPLIT:
            return
        from mgrpo.engines.verl.routing import group_manager

        momentum = set(self.momentum_replicas)
        self.servers["policy"] = {a: h for a, h in handles.items() if self.ranks[a] not in momentum}
        self.servers["momentum"] = {a: h for a, h in handles.items() if self.ranks[a] in momentum}
        reward = t.async_rollout_manager.reward_loop_worker_handles
        for group in ("policy", "momentum"):
            self.groups[group] = group_manager(t.config, self.servers[group], reward)

    # ------------------------------------------------------------------ weights
    def load_step_models(self, step: int) -> str:
        """The models a step starts from: pi_q everywhere (``sequential``, pi_k follows later),
        or pi_q into the policy group and pi_k into the momentum group (``split``). Returns the
        timing name of the push."""
        if self.scheme == SPLIT:
            wait(
                self.trainer.actor_rollout_wg.update_weights_split(
                    global_steps=step, momentum_replicas=tuple(self.momentum_replicas)
                )
            )
            return "update_weights_split"
        self.load_policy(step)
        return "update_weights_policy"

    def load_policy(self, step: int) -> None:
        """Push pi_q into every replica (verl's own weight sync)."""
        self.trainer.checkpoint_manager.update_weights(step)

    def load_momentum(self, step: int) -> None:
        """Push pi_k into every replica (the worker swaps it into the actor for the push)."""
        wait(self.trainer.actor_rollout_wg.update_weights_momentum(global_steps=step))

    # --------------------------------------------------------------- generation
    def generate(self, gen_batch: Any, timing: dict[str, float], name: str) -> Any:
        """One response per row of ``gen_batch`` from every replica's current model."""
        output = self._run({"all": (self.trainer.async_rollout_manager, gen_batch)})["all"]
        return self._finish(output, timing, name)

    def generate_split(
        self, policy_batch: Any, momentum_batch: Any, timing: dict[str, float]
    ) -> tuple[Any, Any]:
        """Policy rows on the policy group and momentum rows on the momentum group, at once."""
        outputs = self._run(
            {
                "policy": (self.groups["policy"], policy_batch),
                "momentum": (self.groups["momentum"], momentum_batch),
            }
        )
        policy = self._finish(outputs["policy"], timing, "gen_policy")
        momentum = self._finish(outputs["momentum"], timing, "gen_momentum")
        for output, is_momentum in ((policy, False), (momentum, True)):
            replicas = output.non_tensor_batch[REPLICA]
            wrong = misrouted([is_momentum] * len(replicas), replicas, self.momentum_replicas)
            if wrong:
                model = "pi_k" if is_momentum else "pi_q"
                raise ReplicaFailure(
                    f"{len(wrong)} {model} rollouts were served by replicas "
                    f"{sorted({int(replicas[r]) for r in wrong})} of the other model's group "
                    f"(momentum group: {self.momentum_replicas}); the step is not scored"
                )
        return policy, momentum

    def _run(self, calls: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
        """``generate_sequences`` of each group's manager, concurrently; padded to its workers."""
        from verl.protocol import pad_dataproto_to_divisor, unpad_dataproto

        divisor = self.trainer.config.actor_rollout_ref.rollout.agent.num_workers
        padded = {g: pad_dataproto_to_divisor(batch, divisor) for g, (_, batch) in calls.items()}

        async def together() -> list[Any]:
            # Called here, in a coroutine's own frame: verl's ``auto_await`` then hands back
            # coroutines to gather (from a comprehension's frame it would run each to the end).
            pending = []
            for group, (manager, _) in calls.items():
                pending.append(manager.generate_sequences(padded[group][0]))
            return await asyncio.gather(*pending, return_exceptions=True)

        if len(calls) == 1:
            ((group, (manager, _)),) = calls.items()
            try:
                results = [manager.generate_sequences(padded[group][0])]
            except Exception as error:
                results = [error]
        else:
            results = asyncio.run(together())
        self.trainer.checkpoint_manager.sleep_replicas()
        for group, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                raise self._failure(group, result) from result
        return {
            group: unpad_dataproto(result, pad_size=padded[group][1])
            for group, result in zip(calls, results, strict=True)
        }

    def _failure(self, group: str, error: BaseException) -> ReplicaFailure:
        """An error naming the group and its replicas that no longer answer."""
        servers = self.servers.get(group, {})
        dead = sorted(self.ranks[a] for a, handle in servers.items() if not _alive(handle))
        ranks = sorted(self.ranks[a] for a in servers)
        who = f"replica(s) {dead} died" if dead else f"replicas {ranks} failed"
        return ReplicaFailure(
            f"generation on the {group} group: {who} mid-step ({type(error).__name__}: {error}); "
            "the step is not scored and the chunk resumes from its last resume state"
        )

    def _finish(self, output: Any, timing: dict[str, float], name: str) -> Any:
        for key, seconds in output.meta_info.pop("timing", {}).items():
            timing[f"{name}/{key}"] = seconds
        nt = output.non_tensor_batch
        served = nt.pop(SERVER, None)
        if served is not None and self.ranks:
            nt[REPLICA] = np.array([self.ranks.get(a, -1) for a in served], dtype=np.int64)
        else:  # stand-ins: no servers to name
            nt[REPLICA] = np.full(len(output), -1, dtype=np.int64)
        return output


def _alive(handle: Any, timeout: float = 30.0) -> bool:
    """Whether a Ray actor still answers (every actor has ``__ray_ready__``)."""
    import ray

    try:
        ray.get(handle.__ray_ready__.remote(), timeout=timeout)
    except Exception:
        return False
    return True
