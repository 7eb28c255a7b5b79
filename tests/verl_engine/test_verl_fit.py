"""``MGRPOTrainer.fit()`` with the GPU side replaced by recording CPU stand-ins.

Everything else is verl's and ours for real: the composed config, verl's RL dataset, data
loader (and its saved state), ``DataProto``, padding, batch balancing, and the trainer's step,
checkpointing and resume logic. See ``verl_standins`` for what the stand-ins play.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support import as_float32, raw_scalar_counts, tensorboard_scalars, tiny_config
from verl import DataProto
from verl_standins import FakeAgentLoop, FakeCheckpointManager, FakeWorkers, World, server

from mgrpo.engines.verl.config import chunk_config
from mgrpo.engines.verl.data import write_verl_dataset
from mgrpo.engines.verl.replicas import SPLIT, replica_count
from mgrpo.engines.verl.rollout import ReplicaFailure
from mgrpo.engines.verl.states import STATE_MARKER, find_state, state_dir
from mgrpo.engines.verl.trainer import MGRPOTrainer, scheduled_lr
from mgrpo.lm import load_tokenizer
from mgrpo.settings import RunSettings, resolve_run_settings
from mgrpo.tracking import TRAIN_EVENTS, train_tag

FIT = {
    "method": "mgrpo",
    "iqr": True,
    "engine": "verl",
    "device": "cuda",  # the GPU path, its GPU side played by the stand-ins
    "gpus": 1,
    "rollouts": 4,  # M-GRPO: M = 3 policy + N = 1 momentum rollout per prompt
    "prompts_per_step": 2,
    "max_new_tokens": 10,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "warmup_ratio": 0.25,
    "schedule_steps": 8,
    "resume_every": 1,
    "micro_batch_size": 4,
}


def settings_for(**overrides) -> RunSettings:
    return resolve_run_settings(tiny_config(**{**FIT, **overrides}), "run")


@pytest.fixture(scope="module")
def tokenizer(toy_dir):
    return load_tokenizer(toy_dir / "model")


@pytest.fixture(scope="module")
def problems(toy_dir, tmp_path_factory) -> Path:
    """Four problems: two steps per epoch, so chunk ends fall on epoch boundaries too."""
    frame = pd.read_parquet(toy_dir / "data" / "train.parquet").head(4)
    path = tmp_path_factory.mktemp("data") / "problems.parquet"
    frame.to_parquet(path)
    return path


class Chunk:
    """One chunk's trainer with stand-ins, as the task runner would build it on a GPU node."""

    def __init__(
        self, settings, toy_dir, tokenizer, problems, work: Path, start, end, init=None, tb=None
    ):
        from verl.trainer.ppo.ray_trainer import Role
        from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
        from verl.utils.dataset.rl_dataset import collate_fn

        work.mkdir(parents=True, exist_ok=True)
        train_file = work / "train.parquet"
        write_verl_dataset(
            problems, tokenizer, settings["max_prompt_tokens"], train_file, method=settings.method
        )
        self.config = chunk_config(
            settings,
            base_model=toy_dir / "model",
            train_file=train_file,
            start=start,
            end=end,
            work_dir=work,
            init_state=init,
            tensorboard=tb,
        )
        data = create_rl_dataset(self.config.data.train_files, self.config.data, tokenizer, None)
        self.trainer = MGRPOTrainer(
            config=self.config,
            tokenizer=tokenizer,
            role_worker_mapping={Role.ActorRolloutRef: object},
            resource_pool_manager=None,
            train_dataset=data,
            val_dataset=data,
            collate_fn=collate_fn,
            train_sampler=create_rl_sampler(self.config.data, data),
            settings=settings,
        )
        self.world = World()

    def fit(
        self,
        world: World | None = None,
        dp_size: int = 1,
        groups: dict[str, dict] | None = None,
    ) -> World:
        """Run ``fit()``; ``groups`` overrides the split scheme's stand-in managers' arguments
        (``{"momentum": {"fail_on_call": 1}}``)."""
        t = self.trainer
        self.world = world or self.world
        micro = self.config.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu
        ranks = self.config.trainer.n_gpus_per_node
        t.actor_rollout_wg = t.ref_policy_wg = FakeWorkers(self.world, dp_size, micro, ranks)
        t.async_rollout_manager = FakeAgentLoop(self.world, t.tokenizer, self.config)
        t.checkpoint_manager = FakeCheckpointManager(self.world)
        # What Rollouts.start() finds on a node: one server per replica, a manager per group.
        replicas = list(range(replica_count(self.config)))
        self.world.held = dict.fromkeys(replicas)
        t.rollouts.ranks = {server(r): r for r in replicas}
        t.rollouts.servers = {"all": {server(r): object() for r in replicas}}
        if t.scheme == SPLIT:
            momentum = t.rollouts.momentum_replicas
            members = {
                "policy": [r for r in replicas if r not in momentum],
                "momentum": momentum,
            }
            for group, ranks in members.items():
                kwargs = {"replicas": ranks, **(groups or {}).get(group, {})}
                t.rollouts.servers[group] = {server(r): object() for r in kwargs["replicas"]}
                t.rollouts.groups[group] = FakeAgentLoop(
                    self.world, t.tokenizer, self.config, **kwargs
                )
        if t.method.uses_momentum:  # what init_workers does after verl's own
            t.actor_rollout_wg.init_momentum()
        t.fit()
        return self.world

    @property
    def records(self) -> pd.DataFrame:
        from mgrpo.step_records import ChunkRecords

        records = ChunkRecords(self.trainer.records.dir)
        records.restore(self.trainer.end)
        return pd.concat([pd.read_parquet(p) for p in records.parts], ignore_index=True)

    @property
    def metrics(self) -> list[dict]:
        return self.trainer.records.metrics


def chunk(
    tmp_path, toy_dir, tokenizer, problems, start, end, name="work", init=None, tb=None, **kw
):
    settings = settings_for(**kw)
    return Chunk(settings, toy_dir, tokenizer, problems, tmp_path / name, start, end, init, tb)


def step_events(world: World) -> list[list[tuple]]:
    """The log cut into steps (each ends with the EMA, or the update without momentum)."""
    steps, current = [], []
    for event in world.log:
        current.append(event)
        if event[0] in ("ema", "update") and (event[0] == "ema" or world.momentum is None):
            steps.append(current)
            current = []
    steps.append(current)
    return steps


def test_one_step_generates_pushes_scores_updates_in_order(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2)
    world = c.fit()
    kinds = [e[:2] if e[0] not in ("ref", "update") else e[:1] for e in world.log]
    assert kinds[:2] == [("init_momentum",), ("push", "policy")]
    step = [
        ("generate", "policy"),  # 1. M rollouts from pi_q
        ("sleep",),
        ("push", "momentum"),  # 2. pi_k into the same engine, N rollouts
        ("generate", "momentum"),
        ("sleep",),
        ("log_prob", 8),  # 3. entropies of all G = 4 x 2 prompts under pi_q
        ("ref",),  # 5. reference log-probs and the update: kept policy rollouts only
        ("update",),
        ("ema", 0.99),  # 6. the EMA after the update
        ("save", "actor"),
        ("save", "momentum"),  # pi_k saved with every state
    ]
    assert kinds[2 : 2 + len(step)] == step
    assert kinds[2 + len(step)] == ("push", "policy")  # pi_q pushed back for the next step
    assert kinds[2 + len(step) + 1 :] == step  # step 2 is the chunk's last: no push after it
    generated = [e[2] for e in world.events("generate")]
    assert generated == [8, 8, 8, 8]  # 2 prompts x M=3 padded to the agent loop's 8 workers
    trained = c.records.groupby("step").trained.sum().tolist()
    assert all(t <= 6 for t in trained)
    # the kept rows, padded to whole micro-batches of 4 (the padding carries no loss: below)
    padded = [-(-t // 4) * 4 for t in trained]
    assert [e[1] for e in world.events("ref")] == [e[1] for e in world.events("update")] == padded


def test_only_kept_policy_rollouts_are_trained(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2)
    world = c.fit()
    records = c.records
    for step, update in enumerate(world.updates, start=1):
        rows = records[records.step == step]
        assert update["rows"] == -(-rows.trained.sum() // 4) * 4  # whole micro-batches of 4
        assert update["mini_batch_size"] == update["rows"]  # one optimizer step per step
        assert update["has_ref"]
        tokens = rows[rows.trained].response.map(
            lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1  # + EOS
        )
        expected = (rows[rows.trained].advantage * tokens).sum()
        assert update["advantage_sum"] == pytest.approx(expected, abs=1e-5)
        assert update["tokens"] == tokens.sum()
    assert not records[records.source == "momentum"].trained.any()
    policy_kept = (records.kept & (records.source == "policy")).astype(bool)
    assert records.trained.tolist() == policy_kept.tolist()
    # The momentum answer (2) is in every pool's vote.
    assert set(records[records.source == "momentum"].answer) == {"2"}


def test_padding_rows_for_data_parallelism_carry_no_loss(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1)
    world = c.fit(dp_size=4)
    records = c.records
    trained = int(records.trained.sum())
    update = world.updates[0]
    # 4 ranks x whole micro-batches of 4 (verl refuses a part micro-batch: the stand-in too)
    assert update["rows"] % 16 == 0 and update["rows"] >= trained
    tokens = records[records.trained].response.map(
        lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1  # + EOS
    )
    assert update["tokens"] == tokens.sum()  # the padding rows have no loss tokens


def test_metrics_and_records_have_the_run_layout_columns(tmp_path, toy_dir, tokenizer, problems):
    from mgrpo.run_layout import METRICS_FIELDS, ROLLOUT_COLUMNS, check_metrics_line

    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2)
    c.fit()
    records = c.records
    assert list(records.columns) == list(ROLLOUT_COLUMNS)
    assert len(records) == 2 * 2 * 4  # steps x prompts x G
    pools = records.groupby(["step", "prompt_id"]).rollout.apply(list).tolist()
    assert pools == [[0, 1, 2, 3]] * 4
    assert [m["step"] for m in c.metrics] == [1, 2]
    for line in c.metrics:
        check_metrics_line(line)
    assert set(c.metrics[0]) == set(METRICS_FIELDS)
    assert c.metrics[0]["method"] == "M-GRPO+IQR"


def test_the_chunk_stops_at_its_end_and_keeps_the_lr_horizon(
    tmp_path, toy_dir, tokenizer, problems
):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2)
    world = c.fit()
    assert len(world.updates) == 2 and c.trainer.global_steps == 2
    optim = c.config.actor_rollout_ref.actor.optim
    assert optim.total_training_steps == 8  # schedule_steps, not the chunk end
    assert [m["lr"] for m in c.metrics] == [scheduled_lr(optim, 0), scheduled_lr(optim, 1)]
    assert c.metrics[0]["lr"] == pytest.approx(1e-3 / 2)  # warmup 2 of 8 steps, first = lr/2
    state = find_state(c.trainer.states, c.trainer.identity, 0, 2)
    assert state is not None and state[1] == 2
    assert sorted(p.name for p in c.trainer.states.iterdir()) == ["global_step_2"]
    marker = json.loads((state[0] / STATE_MARKER).read_text())
    assert marker == {"identity": c.trainer.identity, "run": "run", "step": 2, "start": 0, "end": 2}


def test_two_chunks_chain_like_one(tmp_path, toy_dir, tokenizer, problems):
    whole = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, name="whole")
    w = whole.fit()

    first = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2, name="first")
    first.fit()
    init = state_dir(first.trainer.states, 2)
    second = chunk(tmp_path, toy_dir, tokenizer, problems, 2, 4, name="second", init=init)
    w2 = second.fit()
    loads = w2.events("load")
    assert [e[1] for e in loads] == ["actor", "momentum"]
    assert all(e[2].startswith(str(init)) for e in loads)
    # Policy, momentum (restored, not reset) and the prompt order (incl. the epoch boundary at
    # step 2, where verl would have skipped the loader state) match the uninterrupted run.
    assert (w2.policy, w2.momentum) == (w.policy, pytest.approx(w.momentum))
    assert w.momentum != pytest.approx(w.policy)
    prompts = pd.concat([first.records, second.records]).groupby("step").prompt_id.apply(set)
    assert prompts.tolist() == whole.records.groupby("step").prompt_id.apply(set).tolist()


def test_a_state_without_momentum_is_refused(tmp_path, toy_dir, tokenizer, problems):
    import shutil

    first = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2, name="first")
    first.fit()
    init = state_dir(first.trainer.states, 2)
    shutil.rmtree(init / "momentum")
    second = chunk(tmp_path, toy_dir, tokenizer, problems, 2, 4, name="second", init=init)
    with pytest.raises(FileNotFoundError, match="without pi_k is refused"):
        second.fit()
    assert second.world.events("load") == []  # nothing was loaded: no silent base-model pi_k


def test_a_killed_chunk_resumes_from_its_last_state(tmp_path, toy_dir, tokenizer, problems):
    whole = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, name="whole")
    w = whole.fit()

    crashed = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, name="work")
    with pytest.raises(RuntimeError, match="node lost"):
        crashed.fit(World(fail_at_update=3))
    rerun = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, name="work")
    w2 = rerun.fit()
    assert [e[1] for e in w2.events("load")] == ["actor", "momentum"]
    assert len(w2.updates) == 2  # steps 3 and 4 only
    assert (w2.policy, w2.momentum) == (w.policy, pytest.approx(w.momentum))
    assert [m["step"] for m in rerun.metrics] == [1, 2, 3, 4]
    records = rerun.records
    assert records.groupby("step").size().tolist() == [8, 8, 8, 8]
    other = settings_for(lr=2e-3)  # another run's state in the same place is not resumed
    assert find_state(rerun.trainer.states, other.fingerprint, 0, 4) is None


def test_curves_go_through_verls_tracking_each_step_once(tmp_path, toy_dir, tokenizer, problems):
    """Killed in step 4's update after step 3 was logged: the rerun redoes steps 3 and 4."""
    tensorboard = tmp_path / "tensorboard"
    crashed = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, tb=tensorboard, resume_every=2)
    with pytest.raises(RuntimeError, match="node lost"):
        crashed.fit(World(fail_at_update=4))
    shown = tensorboard_scalars(tensorboard / TRAIN_EVENTS)["train/reward_mean"]
    assert [step for step, _ in shown] == [1, 2, 3]  # as each step ended
    rerun = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 4, tb=tensorboard, resume_every=2)
    rerun.fit()

    curves = tensorboard_scalars(tensorboard / TRAIN_EVENTS)
    for name in ("reward_mean", "kept_fraction", "label_accuracy", "lr", "grad_norm"):
        expected = [(m["step"], as_float32(m[name])) for m in rerun.metrics if m[name] is not None]
        assert curves[train_tag(name)] == expected, name
    assert any(tag.startswith("timing_s/") for tag in curves)  # verl's own metrics beside them
    assert set(raw_scalar_counts(tensorboard).values()) == {1}


def test_srt_has_no_momentum(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, method="srt")
    world = c.fit()
    kinds = {e[0:2] for e in world.log}
    assert ("push", "momentum") not in kinds and ("save", "momentum") not in kinds
    assert not world.events("ema", "init_momentum")
    assert (c.records.source == "policy").all() and len(c.records) == 8


def test_intuitor_asks_for_self_certainty_and_is_rewarded_by_it(
    tmp_path, toy_dir, tokenizer, problems
):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, method="intuitor")
    world = c.fit()
    assert world.events("log_prob")[0][3] is True
    records = c.records
    assert records.self_certainty.notna().all()
    trained = records[records.trained]
    assert (trained.reward == trained.self_certainty).all()


def test_gt_grpo_is_rewarded_by_the_ground_truth(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, method="gt_grpo")
    c.fit()
    trained = c.records[c.records.trained]
    assert (trained.reward == (trained.answer == trained.ground_truth).astype(float)).all()


def test_generator_entropy_is_measured_under_pi_k(tmp_path, toy_dir, tokenizer, problems):
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, entropy_model="generator")
    world = c.fit()
    passes = world.events("log_prob")
    # the 2 momentum rows go to pi_k padded to a whole micro-batch of 4 (sliced off after)
    assert [(e[1], e[2]) for e in passes] == [(8, "pi_q"), (4, "pi_k")]
    records = c.records
    assert (records[records.source == "momentum"].entropy > 5).all()  # the stand-in's pi_k
    assert (records[records.source == "policy"].entropy < 2).all()


def test_the_push_audit_measures_each_source_against_pi_q():
    """vLLM's log-probs of its sampled tokens vs pi_q's, per source, response tokens only.
    Catches: the two sources mixed up, padding tokens counted, the audit lost."""
    from mgrpo.engines.verl import scoring
    from mgrpo.engines.verl.trainer import push_audit

    old = torch.zeros(3, 4)
    rollout = torch.tensor(
        [[0.1, 0.1, 9.0, 9.0], [0.3, 0.3, 0.3, 9.0], [1.0, 2.0, 9.0, 9.0]]
    )  # 9.0: tokens past the response (masked)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    batch = DataProto.from_single_dict(
        {"old_log_probs": old, "rollout_log_probs": -rollout, "response_mask": mask}
    )
    batch.non_tensor_batch[scoring.MOMENTUM] = np.array([False, False, True])
    audit = push_audit(batch)
    assert audit["rollout/logprob_gap_policy"] == pytest.approx((0.2 + 0.9) / 5)
    assert audit["rollout/logprob_gap_momentum"] == pytest.approx(1.5)
    del batch.batch["rollout_log_probs"]
    assert push_audit(batch) == {}  # an engine that reports no log-probs: nothing to audit


# -- the split rollout scheme (two replicas: pi_q on replica 0, pi_k on replica 1) ------------

SPLIT_RUN = {"gpus": 2, "rollout_scheme": "split"}


def test_split_pushes_one_model_per_replica_and_generates_once(
    tmp_path, toy_dir, tokenizer, problems
):
    """Catches: pi_k pushed into every replica (a second push), a second generation call after
    the first, the groups swapped, momentum rows generated by the policy group's model."""
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 2, **SPLIT_RUN)
    world = c.fit()
    pushes = world.events("push")
    assert pushes == [("push", "split", 0, (1,)), ("push", "split", 1, (1,))]
    steps = step_events(world)[:2]
    for events in steps:
        generated = [e for e in events if e[0] == "generate"]
        # one concurrent call: both groups' generations, then a single sleep of all replicas
        assert sorted(e[1] for e in generated) == ["momentum", "policy"]
        kinds = [e[0] for e in events]
        assert kinds.index("sleep") > max(i for i, k in enumerate(kinds) if k == "generate")
        assert kinds.count("sleep") == 1
    records = c.records
    assert set(records[records.source == "policy"].replica) == {0}
    assert set(records[records.source == "momentum"].replica) == {1}
    assert set(records[records.source == "momentum"].answer) == {"2"}  # pi_k's answers
    assert not records[records.source == "momentum"].trained.any()


def test_split_and_sequential_give_score_group_the_same_pools(
    tmp_path, toy_dir, tokenizer, problems
):
    """The scheme changes who generates, never how scoring groups: the same prompts, pool
    positions and sources, and each source answered by its own model."""
    columns = ["step", "prompt_id", "rollout", "source"]
    frames = {}
    for scheme in ("sequential", "split"):
        c = chunk(
            tmp_path, toy_dir, tokenizer, problems, 0, 2, name=scheme,
            gpus=2, rollout_scheme=scheme,
        )  # fmt: skip
        c.fit()
        frames[scheme] = c.records
    assert frames["sequential"][columns].equals(frames["split"][columns])
    for frame in frames.values():
        assert set(frame[frame.source == "momentum"].answer) == {"2"}
    assert set(frames["sequential"].replica) == {0}  # the stand-in's one engine
    assert set(frames["split"].replica) == {0, 1}


def test_a_dead_replica_fails_the_step_naming_it_and_the_chunk_resumes(
    tmp_path, toy_dir, tokenizer, problems
):
    """Step 2's momentum generation dies: the error names the group and the replica, step 2 is
    never scored or recorded, and the next attempt resumes from step 1's state."""
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 3, **SPLIT_RUN)
    with pytest.raises(ReplicaFailure, match=r"momentum group: replica\(s\) \[1\] died"):
        c.fit(groups={"momentum": {"fail_on_call": 1}})
    assert len(c.world.updates) == 1  # step 2 never reached the update
    assert find_state(c.trainer.states, c.trainer.identity, 0, 3)[1] == 1
    again = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 3, **SPLIT_RUN)
    world = again.fit(world=c.world)
    assert ("load", "actor", str(state_dir(again.trainer.states, 1) / "actor")) in world.log
    records = again.records
    assert sorted(set(records.step)) == [1, 2, 3]
    assert (records.groupby("step").size() == 8).all()


def test_a_rollout_from_the_other_group_is_never_scored(tmp_path, toy_dir, tokenizer, problems):
    """A momentum manager that reaches a pi_q replica (a router over the wrong servers) fails
    the step before scoring. Catches: the audit dropped, replica tags ignored."""
    c = chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, **SPLIT_RUN)
    with pytest.raises(ReplicaFailure, match=r"pi_k rollouts were served by replicas \[0\]"):
        c.fit(groups={"momentum": {"replicas": [0]}})
    assert c.world.updates == []


@pytest.mark.parametrize(
    ("replicas", "m", "n", "expected"),
    [(8, 24, 8, [6, 7]), (2, 6, 2, [1]), (2, 3, 1, [1]), (8, 28, 4, [7]), (4, 1, 3, [1, 2, 3])],
)
def test_the_momentum_group_is_its_share_of_the_replicas(replicas, m, n, expected):
    from mgrpo.engines.verl.replicas import momentum_replicas

    assert momentum_replicas(replicas, m, n) == expected


def test_split_is_the_default_where_it_applies_and_refused_where_it_cannot(
    tmp_path, toy_dir, tokenizer, problems
):
    from mgrpo.engines.verl.replicas import resolve_scheme

    assert resolve_scheme("auto", uses_momentum=True, replicas=8) == "split"
    assert resolve_scheme("auto", uses_momentum=True, replicas=1) == "sequential"
    assert resolve_scheme("split", uses_momentum=False, replicas=8) == "sequential"  # SRT
    assert chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, gpus=2).trainer.scheme == "split"
    with pytest.raises(ValueError, match="rollout_scheme 'split' needs at least 2 vLLM replicas"):
        chunk(tmp_path, toy_dir, tokenizer, problems, 0, 1, name="one", rollout_scheme="split")
