"""The momentum worker through a real Ray worker group on CPU, and the Hugging Face export.

Two worker processes (``RayResourcePool(process_on_nodes=[2], use_gpu=False)``) each hold half
of a tiny Qwen3 sharded with FSDP2 over gloo, as verl's FSDP2 actor shards it; the worker's own
registered methods (``init_momentum``, ``momentum_ema_update``, ``save_momentum``,
``load_momentum``) run on both, dispatched by verl's ``RayWorkerGroup``. Then verl's model
merger turns the saved actor and momentum shards into Hugging Face directories and the
evaluator loads them. One Ray session for the module: starting Ray costs ~15-30 s here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from support import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workers(toy_dir):
    import ray
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup
    from verl_standins import CpuMomentumWorker

    path = os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}},
    )
    try:
        pool = RayResourcePool(process_on_nodes=[2], use_gpu=False, max_colocate_count=1)
        group = RayWorkerGroup(
            resource_pool=pool,
            ray_cls_with_init=RayClassWithInitArgs(
                cls=ray.remote(CpuMomentumWorker), model_dir=str(toy_dir / "model")
            ),
            device_name="cpu",
        )
        group.init_model()
        yield group
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def base(toy_dir) -> dict[str, torch.Tensor]:
    from mgrpo.lm import load_model

    model = load_model(toy_dir / "model", torch.device("cpu"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def close(a: dict, b: dict, **tolerance) -> None:
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], **tolerance)


def test_momentum_worker_on_fsdp2_shards(workers, base, tmp_path_factory, toy_dir):
    from ray.exceptions import RayTaskError

    from mgrpo.engines.verl.launch import export_hf
    from mgrpo.evaluation.runner import evaluate_model
    from mgrpo.lm import load_model

    tmp = tmp_path_factory.mktemp("worker")
    numel = sum(v.numel() for k, v in base.items() if k != "lm_head.weight")  # tied: once
    sizes = workers.init_momentum(offload=False)
    assert len(sizes) == 2 and sum(sizes) == 4 * numel  # each rank: fp32 of its half

    # pi_k = pi_q = base; one "update" of the policy, then the EMA on both ranks' shards.
    workers.train_step_stand_in(1.0)
    seconds = workers.momentum_ema_update(0.9)
    assert len(seconds) == 2
    policy = {k: v + 1.0 for k, v in base.items()}
    momentum = {k: v + 0.1 for k, v in base.items()}  # 0.9 base + 0.1 (base + 1)
    close(workers.full_weights()[0], policy)
    close(workers.full_weights(momentum=True)[0], momentum, rtol=0, atol=1e-6)
    close(workers.full_weights()[0], policy, rtol=0, atol=0)  # swapped back exactly

    # The split push: rank 1's replica serves pi_k, rank 0's pi_q; both ranks join both gathers
    # (a rank skipping one would hang the other), and pi_q is back in the actor afterwards.
    pushed = workers.split_push_tensors((1,))
    close(pushed[0], policy)
    close(pushed[1], momentum, rtol=0, atol=1e-6)
    close(workers.full_weights()[0], policy, rtol=0, atol=0)

    # Saved beside the actor (verl's own checkpoint manager), in the actor's shard format.
    actor, saved = tmp / "actor", tmp / "momentum"
    workers.save_actor(str(actor))
    workers.save_momentum(str(saved), hf_config_dir=str(actor / "huggingface"))
    assert sorted(p.name for p in saved.glob("model_world_size_*")) == [
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    ]

    # Restored on resume: move pi_k on, load the saved shards, pi_k is back.
    workers.momentum_ema_update(0.0)
    close(workers.full_weights(momentum=True)[0], policy)
    workers.load_momentum(str(saved))
    close(workers.full_weights(momentum=True)[0], momentum, rtol=0, atol=1e-6)

    # Shards of another GPU count are refused, never silently replaced.
    other = tmp / "other"
    other.mkdir()
    shutil.copy(saved / "model_world_size_2_rank_0.pt", other / "model_world_size_1_rank_0.pt")
    with pytest.raises(RayTaskError, match="another GPU count"):
        workers.load_momentum(str(other))

    # verl's merger -> Hugging Face directories the evaluator loads (bf16 in the merge).
    export_hf(actor, tmp / "hf_policy")
    export_hf(saved, tmp / "hf_momentum")
    for directory, want in [(tmp / "hf_policy", policy), (tmp / "hf_momentum", momentum)]:
        model = load_model(directory, torch.device("cpu"))
        got = {k: v.detach() for k, v in model.state_dict().items()}
        close(got, want, rtol=1e-2, atol=1e-2)
    spec = {
        "samples": 1,
        "temperature": 0.0,
        "max_new_tokens": 8,
        "limit": 4,
        "seed": 0,
        "answer_equivalence": "exact",
        "micro_batch_size": 4,
        "device": "cpu",
        "threads": 1,
        "backend": "local",
    }
    summary, records = evaluate_model(tmp / "hf_policy", toy_dir / "data" / "test.parquet", spec)
    assert len(records) == 4 and 0.0 <= summary["accuracy"] <= 1.0
    assert Path(tmp / "hf_policy" / "tokenizer_config.json").exists()


def test_a_dead_replica_is_named_by_the_failure(workers):
    """The liveness probe behind the split scheme's error: a killed Ray actor (as a dead vLLM
    server is) is reported dead, a live one alive, and the error names the dead one's group."""
    import ray

    from mgrpo.engines.verl.replicas import SPLIT
    from mgrpo.engines.verl.rollout import Rollouts, _alive

    @ray.remote(num_cpus=0)
    class Server:
        def ping(self) -> int:
            return 1

    live, dead = Server.remote(), Server.remote()
    ray.get([live.ping.remote(), dead.ping.remote()])
    ray.kill(dead)
    # ray.kill only asks Ray to end the actor; a call made at once may still be answered (seen
    # once in a full `make test`). A crashed vLLM server is dead before anyone probes it: wait
    # until the killed actor's calls fail, then probe.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(dead.ping.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            break
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.05)
    assert _alive(live) and not _alive(dead)
    rollouts = Rollouts(trainer=None, scheme=SPLIT, momentum_replicas=[1])
    rollouts.ranks = {"a": 0, "b": 1}
    rollouts.servers = {"policy": {"a": live}, "momentum": {"b": dead}}
    error = rollouts._failure("momentum", RuntimeError("request lost"))
    assert "momentum group: replica(s) [1] died" in str(error)
    assert "replicas [0] failed" in str(rollouts._failure("policy", RuntimeError("timeout")))
