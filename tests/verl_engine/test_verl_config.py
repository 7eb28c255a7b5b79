"""The verl config of a chunk: composed with verl's own ppo_trainer and checked by verl itself."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from support import REPO, compose_chunk

from mgrpo.config import load_config
from mgrpo.engines.verl import keys
from mgrpo.engines.verl.config import chunk_config, compose, validate
from mgrpo.settings import RunSettings, resolve_run_settings

PAPER = REPO / "config" / "paper.yaml"
ONE_GPU = REPO / "config" / "verl-1gpu.yaml"


def settings_of(config_file: Path, run: str, **changes) -> RunSettings:
    settings = resolve_run_settings(load_config(config_file), run)
    return settings.replace(**changes) if changes else settings


@pytest.fixture(scope="module")
def paper_config(tmp_path_factory):
    settings = settings_of(PAPER, "mgrpo_iqr_g32")
    return settings, compose_chunk(settings, tmp_path_factory.mktemp("paper"), start=50, end=100)


def test_paper_settings_are_table_4(paper_config):
    _, c = paper_config
    actor, rollout = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
    optim = actor.optim
    assert c.data.train_batch_size == actor.ppo_mini_batch_size == 8
    assert c.data.max_prompt_length == rollout.prompt_length == 512
    assert c.data.max_response_length == rollout.response_length == 3072
    assert actor.clip_ratio == actor.clip_ratio_low == actor.clip_ratio_high == 0.2
    assert actor.clip_ratio_c == 3.0
    assert (optim.lr, optim.lr_scheduler_type, optim.lr_warmup_steps_ratio) == (
        1e-6,
        "cosine",
        0.1,
    )
    assert list(optim.betas) == [0.9, 0.999] and optim.override_optimizer_config.eps == 1e-8
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type) == (
        True,
        0.005,
        "low_var_kl",
    )
    assert actor.loss_agg_mode == "token-mean" and actor.entropy_coeff == 0
    assert rollout.temperature == 1.1 and rollout.top_p == 1.0 and rollout.top_k == -1
    assert rollout.n == 24  # M = G - G/4 policy rollouts; N = 8 come from pi_k
    assert c.trainer.n_gpus_per_node == 8 and c.trainer.use_v1 is False
    assert c.algorithm.use_kl_in_reward is False


def test_the_chunk_end_is_not_the_lr_horizon(paper_config):
    settings, c = paper_config
    assert c.trainer.total_training_steps == settings["schedule_steps"] == 1000
    assert (c.mgrpo.start_step, c.mgrpo.end_step) == (50, 100)
    assert c.mgrpo.init_state.endswith("init")


def test_every_paper_run_composes_and_passes_verl_validation(tmp_path):
    config = load_config(PAPER)
    for name in ["srt_t1.1_g16", "srt_t0.8_g16", "mgrpo_iqr_g8", "mgrpo_iqr_g256", "mgrpo_g32"]:
        settings = resolve_run_settings(config, name)
        c = compose_chunk(settings, tmp_path / name)
        assert c.actor_rollout_ref.rollout.n == settings.method.policy_rollouts
        assert c.actor_rollout_ref.rollout.temperature == settings["temperature"]


def test_the_hand_entry_point_composes_as_mgrpo_train_does(tmp_path, monkeypatch):
    """main.py applies the fixed keys and the settings table from the settings file, then the
    command line's keys, which win; the result is the chunk config ``mgrpo train`` runs."""
    from mgrpo.engines.verl import main as verl_main
    from mgrpo.engines.verl import task_runner
    from mgrpo.engines.verl.config import SETTINGS_FILE, chunk_keys

    settings = settings_of(PAPER, "mgrpo_iqr_g32")
    settings_file = tmp_path / "work" / SETTINGS_FILE
    settings_file.parent.mkdir()
    settings_file.write_text(settings.to_json())
    chunk = chunk_keys(
        settings,
        base_model="/models/base",
        train_file=tmp_path / "train.parquet",
        start=0,
        end=50,
        work_dir=tmp_path / "work",
        init_state=None,
    )
    ran = []
    monkeypatch.setattr(task_runner, "run", ran.append)
    verl_main.main(
        [f"{key}={keys.hydra_value(value)}" for key, value in chunk.items()]
        + ["actor_rollout_ref.actor.optim.lr=2e-6"]
    )
    (config,) = ran
    assert config.actor_rollout_ref.actor.optim.lr == 2e-6
    config.actor_rollout_ref.actor.optim.lr = 1e-6  # the paper's, from the settings table
    assert config == compose_chunk(settings, tmp_path)


def test_the_hand_entry_point_needs_the_settings_file():
    from mgrpo.engines.verl import main as verl_main

    with pytest.raises(SystemExit, match=r"mgrpo\.settings_file=PATH"):
        verl_main.main(["mgrpo.start_step=0"])


def test_the_one_gpu_config_composes(tmp_path):
    settings = settings_of(ONE_GPU, "mgrpo_iqr_1gpu")
    c = compose_chunk(settings, tmp_path, start=2, end=4)
    assert c.trainer.n_gpus_per_node == 1
    assert c.actor_rollout_ref.rollout.n == 6
    assert c.actor_rollout_ref.rollout.gpu_memory_utilization == 0.4  # from verl_overrides
    assert c.trainer.total_training_steps == 4


def test_verl_validation_runs_on_the_composed_config(tmp_path):
    # 4 prompts x M = 3 policy rollouts do not split over 8 GPUs: verl's own check refuses it.
    settings = settings_of(PAPER, "mgrpo_iqr_g32", prompts_per_step=4, rollouts=4)
    with pytest.raises(AssertionError, match=r"real_train_batch_size \(12\)"):
        compose_chunk(settings, tmp_path)


def test_a_step_that_does_not_split_over_the_gpus_is_refused(tmp_path):
    settings = settings_of(PAPER, "mgrpo_iqr_g32", gpus=7)
    with pytest.raises(ValueError, match=r"8 x 32 rollouts per step do not split over gpus=7"):
        compose_chunk(settings, tmp_path)


def test_engine_checks_refuse_what_the_momentum_swap_cannot_do(paper_config):
    _, c = paper_config
    c = c.copy()
    c.actor_rollout_ref.actor.strategy = "fsdp"
    with pytest.raises(ValueError, match=r"actor\.strategy='fsdp'"):
        validate(c)


def test_the_states_stay_where_the_launcher_finds_them(tmp_path):
    """verl saves resume states under trainer.default_local_dir; the launcher looks for them in
    the chunk's work directory, so a run's verl_overrides may not move them."""
    c = compose_chunk(settings_of(PAPER, "mgrpo_iqr_g32"), tmp_path)
    assert c.trainer.default_local_dir == str(tmp_path / "work" / "verl")
    moved = settings_of(
        PAPER, "mgrpo_iqr_g32", verl_overrides=["trainer.default_local_dir=/scratch/states"]
    )
    with pytest.raises(ValueError, match=r"trainer\.default_local_dir='/scratch/states'"):
        compose_chunk(moved, tmp_path)


def test_a_misspelt_verl_override_is_refused(tmp_path):
    settings = settings_of(ONE_GPU, "mgrpo_iqr_1gpu", verl_overrides=["trainer.nodes=2"])
    with pytest.raises(Exception, match="nodes"):
        compose_chunk(settings, tmp_path)


def test_hydra_values_survive_quoting():
    path = "/a b/it's.json"
    eps = keys.hydra_value({"eps": 1e-8})
    c = compose(
        [
            f"mgrpo.settings_file={keys.hydra_value(path)}",
            "mgrpo.start_step=0",
            "mgrpo.end_step=1",
            "mgrpo.work_dir='/w'",
            f"actor_rollout_ref.actor.optim.override_optimizer_config={eps}",
            f"actor_rollout_ref.actor.optim.betas={keys.hydra_value([0.9, 0.95])}",
        ]
    )
    assert c.mgrpo.settings_file == "/a b/it's.json"
    assert c.actor_rollout_ref.actor.optim.override_optimizer_config.eps == 1e-8
    assert list(c.actor_rollout_ref.actor.optim.betas) == [0.9, 0.95]
    with pytest.raises(ValueError, match="backslashes"):
        keys.hydra_value("a\\b")


def doc_table_rows() -> list[tuple[str, str]]:
    """(setting, verl key) pairs of the table in docs/verl-engine.md."""
    text = (REPO / "docs" / "verl-engine.md").read_text()
    section = text.split("<!-- settings-table -->")[1].split("<!-- /settings-table -->")[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        setting = cells[0].strip("`")
        for key in re.findall(r"`([^`]+)`", cells[1]):
            rows.append((setting, key))
    return rows


def test_the_docs_table_is_the_code_table():
    code = [(row.setting, key) for row in keys.SETTING_KEYS for key in row.keys]
    code += [("(fixed)", key) for key in keys.FIXED_KEYS]
    assert sorted(doc_table_rows()) == sorted(code)


def verl_ppo_loss(config, log_prob, old, ref, advantages, mask):
    """verl's worker-side ppo_loss on one micro-batch (no padding layout, one DP rank)."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.losses import ppo_loss

    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    size, width = mask.shape
    prompt_len = 2
    attention = torch.cat([torch.ones(size, prompt_len, dtype=torch.long), mask.long()], 1)
    values, offsets = [], [0]
    for i in range(size):
        n = int(mask[i].sum())
        seq = torch.zeros(prompt_len + n)
        seq[prompt_len - 1 : prompt_len - 1 + n] = log_prob[i, :n]  # shifted by one token
        values.append(seq)
        offsets.append(offsets[-1] + len(seq))
    nested = torch.nested.nested_tensor_from_jagged(torch.cat(values), torch.tensor(offsets))
    data = TensorDict(
        {
            "prompts": torch.ones(size, prompt_len, dtype=torch.long),
            "responses": torch.ones(size, width, dtype=torch.long),
            "attention_mask": attention,
            "response_mask": mask.float(),
            "old_log_probs": old,
            "advantages": advantages[:, None] * mask,
            "ref_log_prob": ref,
        },
        batch_size=[size],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=size)
    loss, metrics = ppo_loss(actor, {"log_probs": nested}, data)
    return loss, metrics


def test_verl_loss_with_these_keys_is_the_local_objective(paper_config):
    from mgrpo.algorithm.losses import policy_loss

    _, config = paper_config
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    old = -torch.rand(3, 4, generator=gen) - 0.5
    # ratios in [0.55, 1.8] (both PPO clips bind) and one ratio of e^1.5 = 4.5 > c = 3 on a
    # negative advantage (the dual clip binds)
    log_prob = old + torch.empty(3, 4).uniform_(-0.6, 0.6, generator=gen)
    log_prob[1, 0] = old[1, 0] + 1.5
    ref = old + torch.empty(3, 4).uniform_(-0.3, 0.3, generator=gen)
    advantages = torch.tensor([1.0, -0.7, 0.4])
    loss, metrics = verl_ppo_loss(config, log_prob, old, ref, advantages, mask)
    ours = policy_loss(log_prob, old, ref, advantages, mask, clip_ratio=0.2, kl_coef=0.005)
    ratio = (log_prob - old).exp()[mask]
    assert (ratio > 1.2).any() and (ratio < 0.8).any()
    torch.testing.assert_close(loss, ours.loss, rtol=1e-6, atol=1e-7)
    assert float(metrics["kl_loss"].values[0]) == pytest.approx(ours.kl, rel=1e-6)


def test_the_lr_schedule_follows_the_horizon_as_the_local_engine(paper_config):
    from mgrpo.engines.local.trainer import lr_multiplier
    from mgrpo.engines.verl.trainer import scheduled_lr

    settings, c = paper_config
    optim = c.actor_rollout_ref.actor.optim.copy()
    optim.total_training_steps = c.trainer.total_training_steps  # verl sets it from the horizon
    horizon, warmup = 1000, 100
    local = [settings["lr"] * lr_multiplier(k, settings) for k in range(horizon)]
    verl = [scheduled_lr(optim, k) for k in range(horizon)]
    # Warmup agrees exactly (the first update already uses lr / warmup) ...
    assert verl[:warmup] == pytest.approx(local[:warmup], rel=1e-12)
    assert verl[0] == pytest.approx(1e-8)
    # ... the cosine runs one update ahead: verl counts updates from 1 there.
    assert verl[warmup:-1] == pytest.approx(local[warmup + 1 :], rel=1e-9, abs=1e-18)
    assert max(abs(a - b) for a, b in zip(verl, local, strict=True)) < math.pi / (2 * 900) * 1e-6


def test_tracking_reaches_verls_logger(tmp_path, monkeypatch):
    """`logging.trackers` and the run's TensorBoard directory are chunk keys, not settings."""
    from mgrpo.tracking import extra_trackers

    settings = settings_of(ONE_GPU, "mgrpo_iqr_1gpu")
    plain = compose_chunk(settings, tmp_path)
    assert list(plain.trainer.logger) == ["console"] and plain.mgrpo.tensorboard is None
    monkeypatch.setenv("MGRPO_TRACKERS", "wandb,mlflow")  # the workflow's logging.trackers
    tracked = chunk_config(
        settings,
        base_model="/models/base",
        train_file=tmp_path / "train.parquet",
        start=0,
        end=50,
        work_dir=tmp_path / "work",
        init_state=None,
        tensorboard=tmp_path / "tensorboard",
        trackers=extra_trackers(),
    )
    assert list(tracked.trainer.logger) == ["console", "wandb", "mlflow"]
    assert tracked.mgrpo.tensorboard == str(tmp_path / "tensorboard")


def test_the_readme_gpu_hour_table_is_the_step_time_models():
    """The README's table is printed by benchmarks/verl_overhead.py --table (default scheme)."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import verl_overhead
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    table = verl_overhead.gpu_hour_table("split").replace("(x", "(×")
    assert table in (REPO / "README.md").read_text()
