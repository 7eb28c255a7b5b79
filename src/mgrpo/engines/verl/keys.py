"""The one table from run settings to verl's config keys (docs/verl-engine.md prints the same).

:data:`SETTING_KEYS` maps each run setting to the verl key(s) it sets; :data:`FIXED_KEYS` are
verl keys this engine always sets because the method needs them (the loss, the trainer, the
weight sync). :func:`verl_overrides` turns both into Hydra overrides for one chunk. Settings that
are not verl keys (method, IQR filter, momentum, answer equivalence, ...) reach the trainer
through ``mgrpo.settings`` and are read there.

Imported without verl (and without torch) so that the docs test and config validation stay cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ACTOR = "actor_rollout_ref.actor"
ROLLOUT = "actor_rollout_ref.rollout"
REF = "actor_rollout_ref.ref"
OPTIM = f"{ACTOR}.optim"


@dataclass(frozen=True)
class SettingKey:
    """One row: a run setting, the verl keys it sets and how its value becomes theirs."""

    setting: str
    keys: tuple[str, ...]
    value: Callable[[Mapping[str, Any]], Any]
    note: str


def _setting(name: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda s: s[name]


def _policy_rollouts(s: Mapping[str, Any]) -> int:
    """M: the rollouts drawn from pi_q per prompt (G minus the momentum rollouts)."""
    from mgrpo.algorithm.methods import method_from_settings

    method = getattr(s, "method", None)
    return (method or method_from_settings(dict(s))).policy_rollouts


SETTING_KEYS: tuple[SettingKey, ...] = (
    SettingKey(
        "prompts_per_step",
        ("data.train_batch_size", f"{ACTOR}.ppo_mini_batch_size"),
        _setting("prompts_per_step"),
        "one mini-batch per step: one update on the whole batch, as the local engine",
    ),
    SettingKey(
        "rollouts",
        (f"{ROLLOUT}.n",),
        _policy_rollouts,
        "M = G - N policy rollouts; the N momentum rollouts are a second generation",
    ),
    SettingKey(
        "temperature",
        (f"{ROLLOUT}.temperature",),
        _setting("temperature"),
        "sampling, and the logits of the log-prob, entropy and self-certainty passes",
    ),
    SettingKey(
        "max_prompt_tokens",
        ("data.max_prompt_length",),
        _setting("max_prompt_tokens"),
        "longer prompts are an error (data.truncation=error)",
    ),
    SettingKey(
        "max_new_tokens",
        ("data.max_response_length",),
        _setting("max_new_tokens"),
        "rollout.response_length follows it",
    ),
    SettingKey("lr", (f"{OPTIM}.lr",), _setting("lr"), ""),
    SettingKey("lr_schedule", (f"{OPTIM}.lr_scheduler_type",), _setting("lr_schedule"), ""),
    SettingKey("warmup_ratio", (f"{OPTIM}.lr_warmup_steps_ratio",), _setting("warmup_ratio"), ""),
    SettingKey("min_lr_ratio", (f"{OPTIM}.min_lr_ratio",), _setting("min_lr_ratio"), ""),
    SettingKey(
        "schedule_steps",
        ("trainer.total_training_steps",),
        _setting("schedule_steps"),
        "the LR horizon only; a chunk ends at mgrpo.end_step",
    ),
    SettingKey("weight_decay", (f"{OPTIM}.weight_decay",), _setting("weight_decay"), ""),
    SettingKey("adam_betas", (f"{OPTIM}.betas",), lambda s: list(s["adam_betas"]), "AdamW (torch)"),
    SettingKey(
        "adam_eps",
        (f"{OPTIM}.override_optimizer_config",),
        lambda s: {"eps": s["adam_eps"]},
        "passed to torch.optim.AdamW",
    ),
    SettingKey("grad_clip", (f"{OPTIM}.clip_grad",), _setting("grad_clip"), "max grad norm"),
    SettingKey(
        "clip_ratio",
        (f"{ACTOR}.clip_ratio", f"{ACTOR}.clip_ratio_low", f"{ACTOR}.clip_ratio_high"),
        _setting("clip_ratio"),
        "symmetric PPO clip",
    ),
    SettingKey(
        "clip_ratio_c",
        (f"{ACTOR}.clip_ratio_c",),
        _setting("clip_ratio_c"),
        "dual-clip bound for negative advantages",
    ),
    SettingKey(
        "kl_coef",
        (f"{ACTOR}.kl_loss_coef",),
        _setting("kl_coef"),
        "low-variance KL loss to the frozen base model",
    ),
    SettingKey(
        "kl_coef",
        (f"{ACTOR}.use_kl_loss",),
        lambda s: s["kl_coef"] > 0,
        "no reference model at all when the coefficient is 0",
    ),
    SettingKey(
        "micro_batch_size",
        (
            f"{ACTOR}.ppo_micro_batch_size_per_gpu",
            f"{ROLLOUT}.log_prob_micro_batch_size_per_gpu",
            f"{REF}.log_prob_micro_batch_size_per_gpu",
        ),
        _setting("micro_batch_size"),
        "rollouts per forward/backward pass, per GPU",
    ),
    SettingKey(
        "seed",
        ("data.seed", f"{ROLLOUT}.seed", f"{ACTOR}.data_loader_seed"),
        _setting("seed"),
        "prompt order, vLLM sampling seed",
    ),
    SettingKey(
        "gpus",
        ("trainer.n_gpus_per_node",),
        _setting("gpus"),
        "one node; checkpoints resume only on the same GPU count",
    ),
)

# verl keys the method needs, whatever the run settings.
FIXED_KEYS: dict[str, tuple[Any, str]] = {
    "trainer.use_v1": (False, "v0 RayPPOTrainer: M-GRPO's step is plain code in fit()"),
    "trainer.nnodes": (1, "one node per chunk"),
    "algorithm.adv_estimator": ("grpo", "advantages come from score_group, per uid"),
    "algorithm.use_kl_in_reward": (False, "KL is a loss term, not a reward penalty"),
    f"{ACTOR}.loss_agg_mode": ("token-mean", "token mean over the step's batch"),
    f"{ACTOR}.kl_loss_type": ("low_var_kl", "k3 estimator, clamped to [-10, 10]"),
    f"{ACTOR}.entropy_coeff": (0, "no entropy bonus"),
    f"{ACTOR}.ppo_epochs": (1, "one update per batch: the rollouts are on-policy"),
    f"{ACTOR}.policy_loss.loss_mode": ("vanilla", "clipped surrogate"),
    f"{ACTOR}.strategy": ("fsdp2", "momentum shards match the policy shards"),
    f"{REF}.strategy": ("fsdp2", "frozen base model for the KL loss"),
    f"{ACTOR}.fsdp_config.model_dtype": ("fp32", "fp32 master weights: the swap is exact"),
    f"{ACTOR}.optim.zero_indexed_step": (False, "the first update uses lr/warmup, not 0"),
    f"{ROLLOUT}.name": ("vllm", "the one rollout engine behind the seam"),
    f"{ROLLOUT}.mode": ("async", "the only mode verl 0.9.1 registers"),
    f"{ROLLOUT}.top_p": (1.0, "plain temperature sampling"),
    f"{ROLLOUT}.top_k": (-1, "plain temperature sampling"),
    f"{ROLLOUT}.free_cache_engine": (True, "sleep/wake per push also resets the prefix cache"),
    f"{ROLLOUT}.checkpoint_engine.backend": ("naive", "colocated push; the momentum swap needs it"),
    "data.truncation": ("error", "an over-long prompt is an error, as in the local engine"),
    "data.filter_overlong_prompts": (False, "never drop prompts silently"),
    "trainer.val_before_train": (False, "evaluation is the workflow's job"),
    "trainer.test_freq": (-1, "evaluation is the workflow's job"),
    "trainer.save_freq": (-1, "mgrpo.resume_every decides; fit() saves"),
    "trainer.resume_mode": ("disable", "mgrpo's _load_checkpoint decides what to load"),
}


def setting_values(settings: Mapping[str, Any]) -> dict[str, Any]:
    """verl key -> value for every row of :data:`SETTING_KEYS`."""
    values: dict[str, Any] = {}
    for row in SETTING_KEYS:
        value = row.value(settings)
        for key in row.keys:
            values[key] = value
    return values


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar (strings quoted, so any path is safe)."""
    if isinstance(value, str):
        if "\\" in value or "${" in value:
            raise ValueError(f"cannot pass {value!r} to verl: backslashes and ${{ are not allowed")
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    return json.dumps(value)  # bool -> true/false, None -> null, numbers


def verl_overrides(
    settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> list[str]:
    """Hydra overrides for a run: fixed keys, the settings table, then ``extra`` (paths, chunk)."""
    values = {key: value for key, (value, _) in FIXED_KEYS.items()}
    values.update(setting_values(settings))
    values.update(extra or {})
    return [f"{key}={hydra_value(value)}" for key, value in values.items()]
