"""Which vLLM replica serves which model: the rollout schemes of an M-GRPO step.

``sequential`` (the reference): every replica holds pi_q for the M policy rollouts, then pi_k
is pushed into every replica for the N momentum rollouts: two generation calls per step, one
after the other, and two pushes into every replica.

``split``: the replicas are partitioned in proportion M:N into a policy group (pi_q) and a
momentum group (pi_k). Each replica receives one model per step, and the policy and momentum
rollouts are generated in one concurrent call, each prompt copy sent only to its group's load
balancer (verl's router) through its own agent loop manager.

Every generated row carries the rank of the replica that served it (``REPLICA``), from the
client that routed the request (:mod:`.routing`), so a step's records show which model produced
each rollout. This module is plain logic: no verl, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SEQUENTIAL, SPLIT, AUTO = "sequential", "split", "auto"
SCHEMES = (AUTO, SEQUENTIAL, SPLIT)
REPLICA = "mgrpo_replica"  # non-tensor column: rank of the vLLM replica that served the row
SERVER = "mgrpo_server"  # the same, as the server's address (set by the client)


def replica_count(config: Any) -> int:
    """vLLM replicas of one chunk: the node's GPUs over the GPUs of one replica."""
    rollout = config.actor_rollout_ref.rollout
    per_replica = (
        int(rollout.tensor_model_parallel_size)
        * int(rollout.data_parallel_size)
        * int(rollout.pipeline_model_parallel_size)
    )
    return int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes) // per_replica


def momentum_replicas(replicas: int, policy_rollouts: int, momentum_rollouts: int) -> list[int]:
    """Ranks of the replicas that hold pi_k under ``split``: the last round(R·N/G), at least one,
    leaving at least one for pi_q (8 replicas, G = 32, N = 8: replicas 6 and 7)."""
    if replicas < 2 or momentum_rollouts < 1 or policy_rollouts < 1:
        raise ValueError(
            f"cannot split {replicas} replica(s) between {policy_rollouts} policy and "
            f"{momentum_rollouts} momentum rollouts per prompt"
        )
    group = policy_rollouts + momentum_rollouts
    count = min(max(round(replicas * momentum_rollouts / group), 1), replicas - 1)
    return list(range(replicas - count, replicas))


def resolve_scheme(setting: str, *, uses_momentum: bool, replicas: int, run: str = "run") -> str:
    """The scheme a chunk runs: ``auto`` is ``split`` for momentum methods when the replicas can
    be split, else ``sequential``. An explicit ``split`` that cannot be honoured is an error."""
    if setting not in SCHEMES:
        raise ValueError(f"run {run!r}: rollout_scheme {setting!r}, expected one of {SCHEMES}")
    if not uses_momentum:
        return SEQUENTIAL  # one model, one generation call: nothing to split
    if setting == SPLIT and replicas < 2:
        raise ValueError(
            f"run {run!r}: rollout_scheme 'split' needs at least 2 vLLM replicas (one for pi_q, "
            f"one for pi_k); this chunk has {replicas} (gpus / rollout tensor-parallel size). "
            "Set training.rollout_scheme to 'sequential' (or 'auto'), or give the run more gpus."
        )
    if setting == AUTO:
        return SPLIT if replicas >= 2 else SEQUENTIAL
    return setting


def config_scheme(config: Any, uses_momentum: bool) -> str:
    """:func:`resolve_scheme` for a composed verl config (``mgrpo.rollout_scheme``)."""
    return resolve_scheme(
        str(config.mgrpo.rollout_scheme),
        uses_momentum=uses_momentum,
        replicas=replica_count(config),
        run=str(config.trainer.experiment_name),
    )


def misrouted(
    sources_momentum: Sequence[bool], replicas: Sequence[int], momentum_group: Sequence[int]
) -> list[int]:
    """Rows whose replica belongs to the other model's group (the audit of a ``split`` step)."""
    group = set(momentum_group)
    return [
        row
        for row, (momentum, replica) in enumerate(zip(sources_momentum, replicas, strict=True))
        if bool(momentum) != (int(replica) in group)
    ]
