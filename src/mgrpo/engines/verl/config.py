"""Composing the verl config of one chunk and checking it with verl's own validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrpo.algorithm.methods import method_from_settings
from mgrpo.engines.verl import cpu
from mgrpo.engines.verl.keys import FIXED_KEYS, verl_overrides
from mgrpo.engines.verl.replicas import config_scheme
from mgrpo.engines.verl.states import states_dir

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_NAME = "mgrpo_trainer"
REWARD_FILE = Path(__file__).resolve().parent / "reward.py"
SETTINGS_FILE = "settings.json"  # the run settings, in the chunk's work directory


def chunk_keys(
    settings: Mapping[str, Any],
    *,
    base_model: str | Path,
    train_file: str | Path,
    start: int,
    end: int,
    work_dir: str | Path,
    init_state: str | Path | None,
    tensorboard: str | Path | None = None,
    trackers: Sequence[str] = (),
) -> dict[str, Any]:
    """The keys that are not run settings: paths, the chunk's bounds, names, tracking.

    ``tensorboard`` is the run's TensorBoard directory (None: no curves); ``trackers`` are
    further verl tracking backends (wandb, mlflow, ...), from the workflow's ``logging``.
    """
    return {
        "actor_rollout_ref.model.path": str(base_model),
        "data.train_files": str(train_file),
        # Never iterated (test_freq = -1), but verl builds a validation loader.
        "data.val_files": str(train_file),
        "reward.custom_reward_function.path": str(REWARD_FILE),
        "trainer.experiment_name": settings["run"],  # the run's name
        "mgrpo.settings_file": str(Path(work_dir) / SETTINGS_FILE),
        "mgrpo.start_step": start,
        "mgrpo.end_step": end,
        "mgrpo.init_state": None if init_state is None else str(init_state),
        "mgrpo.work_dir": str(work_dir),
        "trainer.default_local_dir": str(states_dir(work_dir)),
        "mgrpo.resume_every": settings["resume_every"],
        "mgrpo.tensorboard": None if tensorboard is None else str(tensorboard),
        "trainer.logger": ["console", *trackers],
    }


def compose(overrides: Sequence[str]) -> Any:
    """verl's ``ppo_trainer`` + ``mgrpo_trainer.yaml`` + ``overrides`` (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides))


def chunk_config(settings: Mapping[str, Any], **chunk: Any) -> Any:
    """The full, validated verl config of one chunk of a run."""
    group = settings["rollouts"]
    if settings["prompts_per_step"] * group % settings["gpus"]:
        raise ValueError(
            f"run {settings['run']!r}: prompts_per_step x rollouts = "
            f"{settings['prompts_per_step']} x {group} rollouts per step do not split over "
            f"gpus={settings['gpus']} (verl balances and dispatches them evenly)"
        )
    config = compose(chunk_overrides(settings, chunk_keys(settings, **chunk)))
    validate(config)
    config_scheme(config, method_from_settings(dict(settings)).uses_momentum)  # refuses a bad split
    return config


def chunk_overrides(
    settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> list[str]:
    """Hydra overrides of a run's chunk: fixed keys, the settings table, ``extra`` (the chunk's
    paths and bounds), the CPU path's keys (``device: cpu``), then the run's own
    ``verl_overrides``, which win."""
    device = cpu.verl_overrides(settings) if cpu.on_cpu(settings) else []
    return verl_overrides(settings, extra) + device + list(settings.get("verl_overrides", []))


def validate(config: Any) -> None:
    """verl's own validation (batch sizes, micro-batches, KL settings, ...) plus this engine's."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    # What the momentum swap and the v0 fit() rely on (the rest of FIXED_KEYS may be tuned).
    checks = {
        key: (OmegaConf.select(config, key), FIXED_KEYS[key][0])
        for key in (
            "trainer.use_v1",
            "actor_rollout_ref.actor.strategy",
            "actor_rollout_ref.rollout.checkpoint_engine.backend",
            "actor_rollout_ref.actor.fsdp_config.model_dtype",
            "trainer.nnodes",
        )
    }
    # The launcher finds the chunk's resume states there (mgrpo.engines.verl.states).
    checks["trainer.default_local_dir"] = (
        config.trainer.default_local_dir,
        str(states_dir(config.mgrpo.work_dir)),
    )
    for key, (value, needed) in checks.items():
        if value != needed:
            raise ValueError(f"verl key {key}={value!r}: the M-GRPO engine needs {needed!r}")
