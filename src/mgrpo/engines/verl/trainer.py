"""The M-GRPO trainer: verl's v0 ``RayPPOTrainer`` with its own ``fit()`` (one chunk of a run).

One step (paper Algorithm 1; the numbers are the issue's):

1-2. M policy rollouts per prompt from pi_q and N momentum rollouts from pi_k through vLLM, by
   the chunk's rollout scheme (:mod:`.replicas`): ``split`` generates both at once on disjoint
   replica groups, each replica holding one model; ``sequential`` generates the M rollouts, then
   pushes pi_k into every replica for the N;
3. old log-probs of all G rollouts under pi_q, keeping verl's per-token ``entropys`` (and
   Intuitor's self-certainty);
4. per prompt, grouped by ``uid``: :func:`mgrpo.algorithm.groups.score_group` (IQR filter,
   vote, reward, advantage), the same function the local engine calls;
5. only the kept policy rollouts go on to the reference log-probs and one actor update (clipped
   surrogate + low-variance KL, token mean: verl's ``ppo_loss``);
6. the shard-local fp32 EMA of pi_k on the workers.

A chunk trains steps ``mgrpo.start_step + 1 .. mgrpo.end_step`` and returns; the LR horizon is
``trainer.total_training_steps`` (the run's ``schedule_steps``). Every ``mgrpo.resume_every``
steps, and at the end, a complete resume state is written to ``mgrpo.work_dir``:
``global_step_{N}/{actor, momentum, data.pt, mgrpo_state.json}`` (the marker last).
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from collections.abc import Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.protocol import pad_dataproto_to_divisor
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, compute_response_mask
from verl.utils import tensordict_utils as tu
from verl.utils.metric import reduce_metrics
from verl.utils.py_functional import rename_dict
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

from mgrpo.algorithm.answers import math_verify_equal
from mgrpo.algorithm.methods import Method
from mgrpo.engines.verl import scoring
from mgrpo.engines.verl.replicas import (
    REPLICA,
    SPLIT,
    config_scheme,
    momentum_replicas,
    replica_count,
)
from mgrpo.engines.verl.rollout import Rollouts, wait
from mgrpo.engines.verl.scoring import StepScore, response_texts, score_batch, token_advantages
from mgrpo.engines.verl.states import STATE_MARKER, find_state, records_dir, state_dir
from mgrpo.engines.verl.worker import SELF_CERTAINTY_FLAG, momentum_file
from mgrpo.io import write_json
from mgrpo.settings import RunSettings
from mgrpo.step_records import ChunkRecords, rollout_records, step_metrics
from mgrpo.tracking import TrainingCurves, tracked_metrics


def scheduled_lr(optim: Any, update_index: int) -> float:
    """The LR verl's actor uses for its ``update_index``-th update (0-based).

    Built from verl's own schedule functions exactly as its FSDP engine builds them; the worker
    reports the LR *after* stepping the schedule, i.e. the next update's.
    """
    from verl.utils.torch_functional import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
    )

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim.lr)
    warmup = optim.lr_warmup_steps
    if warmup <= 0:
        warmup = int(optim.lr_warmup_steps_ratio * optim.total_training_steps)
    if optim.lr_scheduler_type == "constant":
        schedule = get_constant_schedule_with_warmup(dummy, num_warmup_steps=warmup)
    else:
        schedule = get_cosine_schedule_with_warmup(
            dummy,
            num_warmup_steps=warmup,
            num_training_steps=optim.total_training_steps,
            min_lr_ratio=optim.min_lr_ratio,
            num_cycles=optim.num_cycles,
            zero_indexed_step=optim.zero_indexed_step,
        )
    return optim.lr * schedule.lr_lambdas[0](update_index)


def push_audit(full: DataProto) -> dict[str, float]:
    """How far vLLM's log-probs of the sampled tokens are from pi_q's, per rollout source.

    vLLM reports the log-prob of every token it sampled (``rollout_log_probs``); the old-log-
    prob pass scores the same tokens under pi_q. Policy rollouts were sampled while vLLM held
    pi_q: their gap is numerical noise (precision, kernels). Momentum rollouts were sampled
    while it held pi_k: their gap is that noise plus how far pi_k is from pi_q. A momentum push
    that never reached vLLM, or a pi_q push that failed, shows in these two numbers.
    """
    if "rollout_log_probs" not in full.batch.keys():  # noqa: SIM118 (a TensorDict)
        return {}
    gap = (full.batch["rollout_log_probs"].float() - full.batch["old_log_probs"].float()).abs()
    tokens = full.batch["response_mask"].bool()
    momentum = torch.as_tensor(full.non_tensor_batch[scoring.MOMENTUM].astype(bool))
    audit = {}
    for source, rows in (("policy", ~momentum), ("momentum", momentum)):
        mask = tokens & rows[:, None]
        if mask.any():
            audit[f"rollout/logprob_gap_{source}"] = gap[mask].mean().item()
    return audit


class MGRPOTrainer(RayPPOTrainer):
    """``RayPPOTrainer`` whose ``fit()`` runs M-GRPO steps from ``start_step`` to ``end_step``."""

    def __init__(self, *args: Any, settings: RunSettings, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.method: Method = settings.method
        self.identity = settings.fingerprint
        self.chunk = self.config.mgrpo
        self.start, self.end = int(self.chunk.start_step), int(self.chunk.end_step)
        if not 0 <= self.start < self.end:
            raise ValueError(f"mgrpo: chunk must satisfy 0 <= start < end, got {self.start}")
        self.equal = math_verify_equal if settings["answer_equivalence"] == "math_verify" else None
        self.scheme = config_scheme(self.config, self.method.uses_momentum)
        group = (
            momentum_replicas(
                replica_count(self.config),
                self.method.policy_rollouts,
                self.method.momentum_rollouts,
            )
            if self.scheme == SPLIT
            else []
        )
        self.rollouts = Rollouts(self, self.scheme, group)
        self.records = ChunkRecords(records_dir(self.chunk.work_dir))
        self.states = Path(self.config.trainer.default_local_dir)

    # ----------------------------------------------------------------- workers
    def init_workers(self) -> None:
        super().init_workers()
        self.rollouts.start()
        if self.method.uses_momentum:
            wait(self.actor_rollout_wg.init_momentum(offload=bool(self.chunk.momentum_offload)))

    # ------------------------------------------------------------------ states
    def resume_point(self) -> tuple[Path, int] | None:
        """The newest complete resume state of *this* chunk (same identity and bounds)."""
        return find_state(self.states, self.identity, self.start, self.end)

    def _check_state(self, state: Path) -> None:
        if not (state / "actor").is_dir():
            raise FileNotFoundError(f"{state}: no actor checkpoint (actor/)")
        if self.method.uses_momentum:
            world = self.config.trainer.n_gpus_per_node * self.config.trainer.nnodes
            if not momentum_file(state / "momentum", world, 0).exists():
                raise FileNotFoundError(
                    f"{state}/momentum: no momentum weights for {world} GPUs; a checkpoint "
                    "without pi_k is refused (it must not restart from the base model)"
                )

    def _load_checkpoint(self) -> int:
        """Resume this chunk, or start it from the previous chunk's state (or the base model)."""
        point = self.resume_point()
        if point is None:
            shutil.rmtree(self.records.dir, ignore_errors=True)  # another attempt's leftovers
            if self.start == 0:
                self.global_steps = 0
                return 0
            if self.chunk.init_state is None:
                raise ValueError(f"mgrpo.init_state: chunk starts at step {self.start} without one")
            point = (Path(self.chunk.init_state), self.start)
        state, step = point
        self._check_state(state)
        wait(
            self.actor_rollout_wg.load_checkpoint(str(state / "actor"), del_local_after_load=False)
        )
        if self.method.uses_momentum:
            wait(self.actor_rollout_wg.load_momentum(str(state / "momentum")))
        data = state / "data.pt"
        if not data.exists():
            raise FileNotFoundError(f"{data}: no data loader state")
        # Restored even at an epoch boundary (verl skips it there): :meth:`_batches` then finds
        # the epoch exhausted and starts the next one from the saved sampler generator, so the
        # prompt order of a chunked run is that of an unchunked one.
        self.train_dataloader.load_state_dict(torch.load(data, weights_only=False))
        self.global_steps = step
        self.records.restore(step)
        return step

    def _save_checkpoint(self) -> None:
        """A complete resume state at ``global_steps``; the marker is written last."""
        step = self.global_steps
        state = state_dir(self.states, step)
        shutil.rmtree(state, ignore_errors=True)  # an incomplete one from a killed attempt
        actor = state / "actor"
        wait(self.actor_rollout_wg.save_checkpoint(str(actor), None, step, max_ckpt_to_keep=None))
        if self.method.uses_momentum:
            wait(
                self.actor_rollout_wg.save_momentum(
                    str(state / "momentum"), hf_config_dir=str(actor / "huggingface")
                )
            )
        torch.save(self.train_dataloader.state_dict(), state / "data.pt")
        self.records.persist(step)
        write_json(
            state / STATE_MARKER,
            {
                "identity": self.identity,
                "run": self.settings.name,
                "step": step,
                "start": self.start,
                "end": self.end,
            },
        )
        for old in self.states.glob("global_step_*"):
            if old != state:
                shutil.rmtree(old, ignore_errors=True)

    # --------------------------------------------------------------------- fit
    def _batches(self) -> Iterator[dict[str, Any]]:
        """Prompt batches forever: the loader continues a resumed epoch, then starts new ones."""
        while True:
            yield from self.train_dataloader

    def fit(self) -> None:
        from omegaconf import OmegaConf
        from verl.utils.tracking import Tracking

        curves = self.chunk.get("tensorboard")
        backends = list(self.config.trainer.logger)
        if curves is not None:  # the run's curves replace verl's TensorBoard adapter (below)
            backends = [backend for backend in backends if backend != "tensorboard"]
        logger = Tracking(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=backends,
            config=OmegaConf.to_container(self.config, resolve=True),
        )
        self.global_steps = 0
        self._load_checkpoint()
        if curves is not None:
            # Continues the run's curves from the step training continues from, each step once
            # (verl's own adapter would show a resumed chunk's redone steps twice).
            logger.logger["tensorboard"] = TrainingCurves(curves, first_step=self.global_steps + 1)
        batches = self._batches()
        every = int(self.chunk.resume_every)
        while self.global_steps < self.end:
            t = time.perf_counter()
            push = self.rollouts.load_step_models(self.global_steps)  # as they are after the step
            pushed = time.perf_counter() - t
            self.global_steps += 1
            metrics, records, verl_metrics = self.train_step(next(batches))
            verl_metrics[f"timing_s/{push}"] = pushed
            self.records.add(metrics, records)
            logger.log(data={**verl_metrics, **tracked_metrics(metrics)}, step=self.global_steps)
            if self.global_steps == self.end or self.global_steps % every == 0:
                t = time.perf_counter()
                self._save_checkpoint()
                seconds = {"timing_s/save_checkpoint": time.perf_counter() - t}
                logger.log(data=seconds, step=self.global_steps)
        point = self.resume_point()
        if point is None or point[1] != self.end:
            raise RuntimeError(f"chunk ended without a state at step {self.end}")
        logger.finish(exit_code=0)

    # -------------------------------------------------------------------- step
    def train_step(
        self, batch_dict: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """One M-GRPO step on one batch of prompts: (metrics line, rollout records, verl's)."""
        method, step = self.method, self.global_steps
        timing: dict[str, float] = {}
        verl_metrics: dict[str, Any] = {}
        t0 = time.perf_counter()

        batch = DataProto.from_single_dict(batch_dict)
        batch.meta_info["temperature"] = self.config.actor_rollout_ref.rollout.temperature
        batch.non_tensor_batch[scoring.UID] = np.array(
            [str(uuid.uuid4()) for _ in range(len(batch))], dtype=object
        )
        info = batch.non_tensor_batch["extra_info"]
        prompts = {
            scoring.PROMPT_ID: np.array([str(i["problem_id"]) for i in info], dtype=object),
            scoring.TRUTH: np.array([i.get("answer") for i in info], dtype=object),
        }
        gen_batch = self._get_gen_batch(batch)
        gen_batch.meta_info["global_steps"] = step

        if self.chunk.get("scheme_check") and self.scheme == SPLIT:
            t = time.perf_counter()
            verl_metrics.update(self._check_schemes(gen_batch))
            timing["scheme_check"] = time.perf_counter() - t  # not part of a real step

        # 1-2. M rollouts from pi_q and N from pi_k (scheme: see the module docstring).
        parts = self._rollouts(batch, gen_batch, prompts, timing)
        audit = timing.get("scheme_check", 0.0)  # the step's own times leave the audit out
        sample_time = time.perf_counter() - t0 - audit
        meta = parts[0].meta_info
        for part in parts:  # the calls' own metadata may differ; concat insists on equality
            part.meta_info = {}
        full = DataProto.concat(parts)
        full.meta_info = meta
        if "response_mask" not in full.batch.keys():  # noqa: SIM118 (a TensorDict)
            full.batch["response_mask"] = compute_response_mask(full)
        if self.config.trainer.balance_batch:
            self._balance_batch(full, metrics=verl_metrics)  # reorders rows: pools go by uid
        full.meta_info["global_token_num"] = full.batch["attention_mask"].sum(-1).tolist()

        # 3. Per-token entropies (and self-certainties) of all G rollouts under pi_q.
        t = time.perf_counter()
        full = full.union(self._old_log_prob(full))
        if method.momentum_rollouts and method.entropy_model == "generator":
            self._momentum_entropy(full)
        timing["old_log_prob"] = time.perf_counter() - t
        verl_metrics.update(push_audit(full))

        # 4. Per prompt: IQR filter, vote, reward, advantage.
        texts = response_texts(
            full, lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)
        )
        score = score_batch(full, method, texts, equal=self.equal)

        # 5. Reference log-probs and the update, on the kept policy rollouts only.
        t = time.perf_counter()
        update = self._update(full, score, verl_metrics)
        timing["update_actor"] = time.perf_counter() - t

        # 6. pi_k follows pi_q.
        if method.uses_momentum:
            seconds = wait(self.actor_rollout_wg.momentum_ema_update(method.momentum))
            timing["momentum_ema"] = max(seconds)

        label = method.label
        run = self.settings.name
        metrics = step_metrics(run, label, step, score.pools, update)
        metrics.update(step_time=time.perf_counter() - t0 - audit, sample_time=sample_time)
        verl_metrics.update({f"timing_s/{k}": v for k, v in timing.items()})
        replicas = full.non_tensor_batch[REPLICA]
        served = [[int(replicas[r]) for r in rows] for rows in score.rows]
        return (
            metrics,
            rollout_records(self.settings["run"], label, step, score.pools, replicas=served),
            verl_metrics,
        )

    def _rollouts(
        self,
        batch: DataProto,
        gen_batch: DataProto,
        prompts: dict[str, np.ndarray],
        timing: dict[str, float],
    ) -> list[DataProto]:
        """The step's M policy and N momentum rollouts per prompt, by the chunk's scheme."""
        m, n = self.method.policy_rollouts, self.method.momentum_rollouts
        if n and self.scheme == SPLIT:  # one concurrent call; the models were loaded at the start
            policy, momentum = self.rollouts.generate_split(
                gen_batch.repeat(m, interleave=True), gen_batch.repeat(n, interleave=True), timing
            )
            return [
                self._tagged(batch, prompts, policy, 0, m),
                self._tagged(batch, prompts, momentum, m, n),
            ]
        out = self.rollouts.generate(gen_batch.repeat(m, interleave=True), timing, "gen_policy")
        parts = [self._tagged(batch, prompts, out, 0, m)]
        if n:  # pi_k into every replica, then its rollouts
            t = time.perf_counter()
            self.rollouts.load_momentum(self.global_steps)
            timing["update_weights_momentum"] = time.perf_counter() - t
            out = self.rollouts.generate(
                gen_batch.repeat(n, interleave=True), timing, "gen_momentum"
            )
            parts.append(self._tagged(batch, prompts, out, m, n))
        return parts

    def _check_schemes(self, gen_batch: DataProto) -> dict[str, float]:
        """``mgrpo.scheme_check``: this step's prompts decoded greedily from the step's pi_q and
        pi_k under both schemes; the responses must be identical row for row.

        Greedy through verl's own per-row override (``__do_sample__``). Ends with the step's
        own push again: every generation call puts the replicas to sleep, and only a push
        wakes them, so the step then starts exactly as it would have without the check.
        """
        m, n, step = self.method.policy_rollouts, self.method.momentum_rollouts, self.global_steps
        greedy = deepcopy(gen_batch)
        greedy.non_tensor_batch["__do_sample__"] = np.zeros(len(greedy), dtype=bool)
        policy, momentum = greedy.repeat(m, interleave=True), greedy.repeat(n, interleave=True)
        self.rollouts.load_policy(step - 1)
        sequential = [self.rollouts.generate(policy, {}, "check")]
        self.rollouts.load_momentum(step - 1)
        sequential.append(self.rollouts.generate(momentum, {}, "check"))
        self.rollouts.load_step_models(step - 1)
        split = self.rollouts.generate_split(policy, momentum, {})
        self.rollouts.load_step_models(step - 1)
        same = [
            (a.batch["responses"] == b.batch["responses"]).all(-1)
            for a, b in zip(sequential, split, strict=True)
        ]
        first = sequential[0].batch["responses"][::m]  # one greedy answer per prompt and model
        return {
            "scheme_check/compared": float(sum(len(x) for x in same)),
            "scheme_check/mismatched_policy": float((~same[0]).sum()),
            "scheme_check/mismatched_momentum": float((~same[1]).sum()),
            "scheme_check/momentum_differs": float(
                (first != sequential[1].batch["responses"][::n]).any(-1).float().mean()
            ),
        }

    @staticmethod
    def _tagged(
        batch: DataProto,
        prompts: dict[str, np.ndarray],
        output: DataProto,
        first: int,
        copies: int,
    ) -> DataProto:
        """``copies`` generated rollouts per prompt, tagged with their pool positions ``first..``
        (positions from ``M`` on are momentum rollouts)."""
        momentum = first > 0
        rows = batch.repeat(copies, interleave=True).union(output)
        prompt = np.arange(len(rows)) // copies
        nt = rows.non_tensor_batch
        nt[scoring.PROMPT_INDEX] = prompt
        nt[scoring.POOL_INDEX] = first + np.arange(len(rows)) % copies
        nt[scoring.MOMENTUM] = np.full(len(rows), momentum)
        for key, values in prompts.items():
            nt[key] = values[prompt]
        return rows

    def _dp_padded(self, batch: DataProto) -> tuple[DataProto, int]:
        """``batch`` padded to whole micro-batches on every data-parallel rank.

        With ``use_dynamic_bsz: false`` verl's engine splits each rank's rows into micro-batches
        of exactly ``*micro_batch_size_per_gpu`` rows and refuses a remainder; the IQR filter
        keeps any number of rows, so the pad covers the micro-batch sizes of every pass.
        """
        config = self.config.actor_rollout_ref
        sizes = (
            config.actor.ppo_micro_batch_size_per_gpu,
            config.rollout.log_prob_micro_batch_size_per_gpu,
            config.ref.log_prob_micro_batch_size_per_gpu,
        )
        micro = math.lcm(*(int(size) for size in sizes if size))
        dp = self._get_dp_size(self.actor_rollout_wg, "actor")
        return pad_dataproto_to_divisor(batch, dp * micro)

    def _old_log_prob(self, full: DataProto) -> DataProto:
        """verl's old-log-prob pass, keeping the entropies (and self-certainty for Intuitor)."""
        wants_certainty = self.method.reward == "self_certainty"
        padded, _ = self._dp_padded(full)
        td = left_right_2_no_padding(padded.to_tensordict())
        tu.assign_non_tensor(
            td, calculate_entropy=True, compute_loss=False, **{SELF_CERTAINTY_FLAG: wants_certainty}
        )
        output = self.actor_rollout_wg.compute_log_prob(td)
        result = {
            "old_log_probs": no_padding_2_padding(tu.get(output, "log_probs"), td).float(),
            scoring.ENTROPY: no_padding_2_padding(tu.get(output, "entropy"), td).float(),
        }
        if wants_certainty:
            certainty = tu.get(output, "self_certainty")
            result[scoring.SELF_CERTAINTY] = no_padding_2_padding(certainty, td).float()
        keep = len(full)
        return DataProto.from_single_dict({k: v[:keep] for k, v in result.items()})

    def _momentum_entropy(self, full: DataProto) -> None:
        """``entropy_model: generator``: the momentum rows' entropies under pi_k itself."""
        rows = np.flatnonzero(full.non_tensor_batch[scoring.MOMENTUM].astype(bool))
        sub, _ = self._dp_padded(full.select_idxs(rows))
        td = left_right_2_no_padding(sub.to_tensordict())
        tu.assign_non_tensor(td, calculate_entropy=True, compute_loss=False)
        output = self.actor_rollout_wg.compute_momentum_log_prob(td)
        entropy = no_padding_2_padding(tu.get(output, "entropy"), td).float()
        full.batch[scoring.ENTROPY][torch.as_tensor(rows)] = entropy[: len(rows)]

    def _update(
        self, full: DataProto, score: StepScore, verl_metrics: dict[str, Any]
    ) -> dict[str, float]:
        """Reference log-probs and one actor update on the trained rows; the step's losses."""
        mask = full.batch["response_mask"]
        full.batch["advantages"] = token_advantages(score, mask)
        full.batch["returns"] = full.batch["advantages"]
        rows = np.flatnonzero(score.trained)
        if len(rows) == 0:  # impossible: the filter keeps > 3/4 of every pool, M > G/4
            raise RuntimeError(f"step {self.global_steps}: no rollout left to train on")
        train, pad = self._dp_padded(full.select_idxs(rows))
        if pad:  # copies of real rows that must not count: no loss tokens, no advantage
            train.batch["response_mask"][-pad:] = 0
            train.batch["advantages"][-pad:] = 0.0
        if self.config.trainer.balance_batch:
            self._balance_batch(train, metrics={}, logging_prefix="train_seqlen")
        train.meta_info["global_token_num"] = train.batch["attention_mask"].sum(-1).tolist()
        if self.use_reference_policy:
            train = train.union(self._compute_ref_log_prob(train))
        actor = reduce_metrics(self._update_actor_once(train))
        verl_metrics.update(actor)
        return {
            "lr": scheduled_lr(self.config.actor_rollout_ref.actor.optim, self.global_steps - 1),
            "loss": float(actor.get("actor/loss", float("nan"))),
            "pg_loss": float(actor.get("actor/pg_loss", float("nan"))),
            "kl": float(actor.get("actor/kl_loss", 0.0)),
            "clip_frac": float(actor.get("actor/pg_clipfrac", float("nan"))),
            "grad_norm": float(actor.get("actor/grad_norm", float("nan"))),
        }

    def _update_actor_once(self, train: DataProto) -> dict[str, Any]:
        """verl's actor update with the whole batch as its single mini-batch (one optimizer
        step and one LR-schedule step per training step, however many rows the filter kept)."""
        actor = self.config.actor_rollout_ref.actor
        rollout = self.config.actor_rollout_ref.rollout
        train.meta_info["multi_turn"] = rollout.multi_turn.enable
        train.meta_info["temperature"] = rollout.temperature
        td = left_right_2_no_padding(train.to_tensordict())
        size = len(train)
        tu.assign_non_tensor(
            td,
            calculate_entropy=bool(actor.calculate_entropy or actor.entropy_coeff != 0.0),
            distillation_use_topk=False,
            distillation_only=False,
            global_batch_size=size,
            mini_batch_size=size,
            epochs=1,
            seed=actor.data_loader_seed,
            dataloader_kwargs={"shuffle": False},
            compute_loss=True,
        )
        output = self.actor_rollout_wg.update_actor(td)
        return rename_dict(tu.get(output, "metrics"), "actor/")
