"""The local engine: M-GRPO / SRT / Intuitor / GT-GRPO on one machine (CPU or one CUDA GPU).

One call trains one *chunk* of a run, ``start -> end``. Per step (paper Algorithm 1):

1. take ``prompts_per_step`` prompts; sample M rollouts from pi_q and N from pi_k;
2. trajectory entropies of all G rollouts under pi_q (the sampler's own, plus a pass over N);
3. per prompt, :func:`mgrpo.algorithm.groups.score_group`: IQR filter, vote, reward, advantage;
4. clipped-surrogate + KL loss on the kept policy rollouts (token mean, micro-batched), AdamW;
5. EMA: theta_k <- m theta_k + (1 - m) theta_q.

Everything a later chunk needs (weights, momentum, optimizer, schedule, RNG, data cursor) is in
the checkpoint, so chunks chain bit-identically on CPU. Inside a chunk a resume state is written
every ``resume_every`` steps *outside* the chunk's declared outputs and picked up after a kill.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mgrpo import lm
from mgrpo.algorithm.answers import extract_answer, math_verify_equal
from mgrpo.algorithm.ema import ema_update_
from mgrpo.algorithm.entropy import trajectory_mean
from mgrpo.algorithm.losses import policy_loss
from mgrpo.algorithm.methods import Method
from mgrpo.data import read_training_problems
from mgrpo.engines import ChunkPaths
from mgrpo.engines.local.records import ChunkRecorder
from mgrpo.engines.local.state import (
    DataCursor,
    TrainerState,
    load_trainer_state,
    save_checkpoint,
)
from mgrpo.progress import progress
from mgrpo.run_layout import MOMENTUM_DIR, POLICY_DIR, CheckpointManifest, require_manifest
from mgrpo.settings import RunSettings
from mgrpo.step_records import rollout_records, score_pool, step_metrics
from mgrpo.tracking import TrainingCurves


class TrainingDiverged(RuntimeError):
    """Loss or gradients became NaN/inf; the last good state on disk is left untouched."""


def lr_multiplier(step: int, settings: Mapping[str, Any]) -> float:
    """LR factor for the update made at ``step`` (0-based): linear warmup, then cosine/constant.

    The first update already uses ``1 / warmup`` of the LR (verl's schedule would spend it at 0).
    """
    horizon = settings["schedule_steps"]
    warmup = int(settings["warmup_ratio"] * horizon)
    floor = settings["min_lr_ratio"]
    if step < warmup:
        return (step + 1) / warmup
    if settings["lr_schedule"] == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LocalTrainer:
    """Holds the models and optimizer of one chunk; :meth:`step` is one RL update."""

    def __init__(self, settings: RunSettings, base_model: str | Path, train_data: str | Path):
        if settings["engine"] != "local":
            raise ValueError(f"engine {settings['engine']!r} is not the local engine")
        # The LR horizon is settings["schedule_steps"]; the run length is not a setting here.
        self.settings = settings
        self.method: Method = settings.method
        self.identity = settings.fingerprint
        self.base_model = Path(base_model)
        self.device = lm.pick_device(settings["device"])
        torch.set_num_threads(settings["threads"])
        self.equal = math_verify_equal if settings["answer_equivalence"] == "math_verify" else None
        problems = read_training_problems(train_data, self.method)
        self.problems = problems
        self.tokenizer = lm.load_tokenizer(self.base_model)
        self.prompt_ids = lm.encode_prompts(
            self.tokenizer, problems.questions, self.settings["max_prompt_tokens"]
        )
        self.policy: Any = None
        self.stop_ids: list[int] = []  # set with the policy (its generation config may add EOS)
        self.momentum: Any = None
        self.reference: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.cursor = DataCursor(seed=self.settings["seed"], size=len(problems))
        self.sampler_rng = torch.Generator(device=self.device)
        self.step_index = 0
        # The KL anchor is the frozen base model (never the momentum policy).
        if self.settings["kl_coef"] > 0:
            self.reference = lm.load_model(self.base_model, self.device)

    # ----------------------------------------------------------------- state
    def start_fresh(self) -> None:
        """Step 0: pi_q = pi_k = base model; fresh optimizer and RNG streams."""
        self._load_policy(self.base_model)
        if self.method.uses_momentum:
            self.momentum = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self._make_optimizer()
        self.sampler_rng.manual_seed(self.settings["seed"])
        torch.manual_seed(self.settings["seed"])
        self.step_index = 0

    def load(self, checkpoint: Path) -> None:
        """Resume from a checkpoint written by :meth:`save` (chunk handoff or resume state)."""
        require_manifest(checkpoint, self.identity)
        self._load_policy(checkpoint / POLICY_DIR)
        if self.method.uses_momentum:
            self.momentum = lm.load_model(checkpoint / MOMENTUM_DIR, self.device)
        state = load_trainer_state(checkpoint)
        self._make_optimizer()
        self.optimizer.load_state_dict(state.optimizer)
        self.cursor = state.cursor
        self.sampler_rng.set_state(state.sampler_rng)
        torch.set_rng_state(state.torch_rng)
        self.step_index = state.step

    def save(self, path: Path) -> None:
        state = TrainerState(
            step=self.step_index,
            cursor=copy.deepcopy(self.cursor),
            optimizer=self.optimizer.state_dict(),
            sampler_rng=self.sampler_rng.get_state(),
            torch_rng=torch.get_rng_state(),
            schedule={k: self.settings[k] for k in ("lr", "lr_schedule", "warmup_ratio")},
        )
        manifest = CheckpointManifest(
            run=self.settings.name,
            step=self.step_index,
            engine="local",
            identity=self.identity,
            method=self.method.label,
        )
        save_checkpoint(
            path,
            policy=self.policy,
            momentum=self.momentum,
            tokenizer=self.tokenizer,
            state=state,
            manifest=manifest,
        )

    def _load_policy(self, path: str | Path) -> None:
        self.policy = lm.load_model(path, self.device, trainable=True)
        self.stop_ids = lm.stop_token_ids(self.policy, self.tokenizer)

    def _make_optimizer(self) -> None:
        s = self.settings
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=s["lr"],
            betas=tuple(s["adam_betas"]),
            eps=s["adam_eps"],
            weight_decay=s["weight_decay"],
        )

    # ------------------------------------------------------------------ step
    def _sample(self, model: Any, prompts: list[list[int]], copies: int) -> lm.RolloutBatch:
        rows = [p for p in prompts for _ in range(copies)]
        return lm.sample(
            model,
            rows,
            temperature=self.settings["temperature"],
            max_new_tokens=self.settings["max_new_tokens"],
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=self.sampler_rng,
            self_certainty=self.method.reward == "self_certainty",
        )

    def step(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One RL update; returns the step's metrics and its per-rollout audit records."""
        s, method = self.settings, self.method
        t0 = time.perf_counter()
        n_prompts, m, n = s["prompts_per_step"], method.policy_rollouts, method.momentum_rollouts
        prompt_index = self.cursor.take(n_prompts)
        prompts = [self.prompt_ids[i] for i in prompt_index]

        # 1. Rollouts: rows [p0 x M, p1 x M, ..., p0 x N, p1 x N, ...].
        parts = [self._sample(self.policy, prompts, m)]
        if n:
            parts.append(self._sample(self.momentum, prompts, n))
        batch = lm.concat_batches(parts, self.tokenizer.pad_token_id)
        is_momentum = [False] * (n_prompts * m) + [True] * (n_prompts * n)
        pools = [
            [p * m + j for j in range(m)] + [n_prompts * m + p * n + j for j in range(n)]
            for p in range(n_prompts)
        ]
        t_sample = time.perf_counter() - t0

        # 2. Trajectory entropies (and self-certainties) under pi_q. Policy rows were drawn from
        #    pi_q itself, so the sampler measured them on the very logits it sampled from; only
        #    momentum rows need a forward pass of pi_q (unless entropy_model == "generator").
        entropy = batch.gen_entropy.clone()
        if n and method.entropy_model == "policy":
            momentum_rows = batch.select(range(n_prompts * m, len(batch)))
            stats = lm.score(
                self.policy,
                momentum_rows,
                temperature=s["temperature"],
                micro_batch_size=s["micro_batch_size"],
                entropy=True,
            )
            entropy[n_prompts * m :] = trajectory_mean(stats.entropy, momentum_rows.response_mask)
        texts = self.tokenizer.batch_decode(batch.responses, skip_special_tokens=True)
        answers = [extract_answer(t) for t in texts]
        entropy_list = entropy.tolist()
        certainty = batch.gen_self_certainty.tolist() if method.reward == "self_certainty" else None

        # 3. Per prompt: filter, vote, reward, advantage.
        lengths = batch.response_mask.sum(-1).tolist()
        scored = [
            score_pool(
                self.problems.ids[prompt_index[p]],
                rows,
                answers=answers,
                is_momentum=is_momentum,
                entropies=entropy_list,
                self_certainties=certainty,
                texts=texts,
                lengths=lengths,
                method=method,
                truth=self.problems.answers[prompt_index[p]],
                equal=self.equal,
            )
            for p, rows in enumerate(pools)
        ]
        advantages = torch.zeros(len(batch))
        trained = torch.zeros(len(batch), dtype=torch.bool)
        for pool, rows in zip(scored, pools, strict=True):
            for r, adv, used in zip(rows, pool.group.advantages, pool.group.trained, strict=True):
                if used:
                    advantages[r], trained[r] = adv, True

        # 4. Policy update on the kept policy rollouts only.
        update = self._update(batch, advantages, trained)

        # 5. Momentum policy follows the updated policy.
        if method.uses_momentum:
            ema_update_(list(self.momentum.parameters()), self.policy.parameters(), method.momentum)

        self.step_index += 1
        label = self.method.label
        metrics = step_metrics(self.settings["run"], label, self.step_index, scored, update)
        metrics.update(step_time=time.perf_counter() - t0, sample_time=t_sample)
        records = rollout_records(self.settings["run"], label, self.step_index, scored)
        return metrics, records

    def _update(
        self, batch: lm.RolloutBatch, advantages: torch.Tensor, trained: torch.Tensor
    ) -> dict[str, float]:
        """One optimizer step on the trained rows.

        One update per batch (verl: ppo_epochs=1, mini-batch = batch), so the rollouts are exactly
        on-policy: the old log-probs are the current ones, detached (ratio 1, the clip inactive).
        """
        s = self.settings
        index = trained.nonzero().squeeze(1)
        sub = batch.select(index)
        adv = advantages[index].to(self.device)
        tokens = int(sub.response_mask.sum())
        lr = s["lr"] * lr_multiplier(self.step_index, s)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if tokens == 0:
            return {
                "lr": lr,
                "loss": 0.0,
                "pg_loss": 0.0,
                "kl": 0.0,
                "clip_frac": 0.0,
                "grad_norm": 0.0,
            }
        ref = None
        if self.reference is not None:
            ref = lm.score(
                self.reference,
                sub,
                temperature=s["temperature"],
                micro_batch_size=s["micro_batch_size"],
            ).log_prob
        self.policy.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        for rows in lm.micro_batches(len(sub), s["micro_batch_size"]):
            with lm.autocast(self.device):
                logits = lm.response_logits(self.policy, sub, rows, s["temperature"])
            log_prob = lm.token_log_probs(logits, sub.responses[rows])
            out = policy_loss(
                log_prob,
                log_prob.detach(),
                None if ref is None else ref[rows],
                adv[rows],
                sub.response_mask[rows],
                clip_ratio=s["clip_ratio"],
                clip_ratio_c=s["clip_ratio_c"],
                kl_coef=s["kl_coef"],
                token_count=tokens,
            )
            if not torch.isfinite(out.loss):
                raise TrainingDiverged(f"step {self.step_index + 1}: loss is {out.loss.item()}")
            out.loss.backward()
            totals["loss"] += out.loss.item()
            totals["pg_loss"] += out.pg_loss
            totals["kl"] += out.kl
            totals["clip_frac"] += out.clip_frac
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), s["grad_clip"])
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(
                f"step {self.step_index + 1}: gradient norm is {grad_norm.item()}"
            )
        self.optimizer.step()
        return {"lr": lr, **totals, "grad_norm": grad_norm.item()}


def unavailable_reason(settings: RunSettings) -> str | None:
    """The engine contract (:mod:`mgrpo.engines`): can this machine train ``settings``?"""
    device = settings["device"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        return f"device {device!r} is set but torch sees no CUDA device"
    return None


def train_chunk(settings: RunSettings, start: int, end: int, paths: ChunkPaths) -> None:
    """Train steps ``start+1 .. end`` of a run and write the chunk's outputs (last: checkpoint)."""
    if not 0 <= start < end:
        raise ValueError(f"chunk must satisfy 0 <= start < end, got {start} -> {end}")
    trainer = LocalTrainer(settings, paths.base_model, paths.train_data)
    recorder = ChunkRecorder(paths.resume)
    resumed = recorder.latest_state(trainer.identity, start, end)
    if resumed is not None:
        trainer.load(resumed)
        recorder.restore(trainer.step_index)
    elif start == 0:
        trainer.start_fresh()
    else:
        trainer.load(paths.init)
        if trainer.step_index != start:
            raise ValueError(
                f"{paths.init}: checkpoint is at step {trainer.step_index}, not {start}"
            )

    every = settings["resume_every"]
    # Curves continue from the step training continues from (a kill's extra steps are redone).
    curves = TrainingCurves(paths.tensorboard, first_step=trainer.step_index + 1)
    bar = progress(
        total=end - start,
        initial=trainer.step_index - start,
        desc=f"{settings.name} steps {start + 1}-{end}",
        unit="step",
    )
    with curves, bar:
        while trainer.step_index < end:
            metrics, records = trainer.step()
            recorder.add(metrics, records)
            curves.log_metrics(metrics)
            bar.set_postfix(
                reward=metrics["reward_mean"], label_acc=metrics["label_accuracy"], refresh=False
            )
            bar.update()
            if trainer.step_index % every == 0 and trainer.step_index < end:
                recorder.checkpoint(trainer.step_index, trainer.save, trainer.identity, start, end)

    recorder.write_outputs(paths.metrics, paths.rollouts)
    trainer.save(paths.checkpoint)
    shutil.rmtree(paths.resume, ignore_errors=True)
