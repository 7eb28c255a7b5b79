"""The trainer's wiring: each test pins one place where the algorithm's parts are connected.

The pure functions have their own tests; these check that a training step feeds them the right
models, rows and coefficients. A run is traced one step per chunk, so every step leaves its
policy and momentum policy on disk; what the step must have done is then recomputed from those
files with independent, unpadded forward passes and compared with what it recorded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from support import chunk, eval_spec, run_settings

from mgrpo.engines.local import trainer as trainer_module
from mgrpo.io import read_jsonl

pytestmark = pytest.mark.slow

# G = 4 rollouts per prompt, N = 1 of them from the momentum policy, so the M = 3 policy rows and
# the N momentum rows of a step are told apart by the size of the batch they were sampled in.
# m = 0.9, not 0.5 where m and 1 - m coincide. At temperature 0.5 the tiny model writes answers
# often enough for rewards to differ within a group, and the LR moves the policy far enough for
# the KL and entropies under pi_q, pi_k and the base model to differ clearly.
TRACED = {
    "method": "mgrpo",
    "iqr": True,
    "rollouts": 4,
    "momentum_rollouts": 1,
    "momentum": 0.9,
    "temperature": 0.5,
    "max_new_tokens": 24,
    "lr": 5e-3,
    "kl_coef": 0.05,
}
STEPS = 3


@dataclass
class Update:
    """What one optimizer step applied: its learning rate and the norm of the gradient."""

    lr: float
    grad_norm: float


@contextlib.contextmanager
def applied_updates() -> Iterator[list[Update]]:
    """Every optimizer step taken inside the block, as the optimizer saw it just before."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    updates: list[Update] = []

    def record(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        (group,) = optimizer.param_groups
        grads = [p.grad.double().norm() for p in group["params"] if p.grad is not None]
        updates.append(Update(group["lr"], float(torch.stack(grads).norm())))

    handle = register_optimizer_step_pre_hook(record)
    try:
        yield updates
    finally:
        handle.remove()


@dataclass
class Trace:
    settings: dict[str, Any]
    models: list[Path]  # models[k]: checkpoint after step k; models[0] is the base model
    metrics: list[dict[str, Any]]  # metrics[k - 1]: step k
    records: pd.DataFrame
    sampled: dict[int, dict[str, Any]]  # step -> {"policy": batch, "momentum": batch}
    updates: list[Update]  # updates[k - 1]: the optimizer step of step k

    def policy(self, step: int) -> Path:
        """pi_q after ``step`` steps (the base model at 0)."""
        return self.models[0] if step == 0 else self.models[step] / "policy"

    def momentum(self, step: int) -> Path:
        """pi_k after ``step`` steps (the base model at 0)."""
        return self.models[0] if step == 0 else self.models[step] / "momentum"


def trace_run(toy_dir: Path, out: Path, steps: int, **training: Any) -> Trace:
    """Train ``steps`` one-step chunks; keep every rollout batch the trainer sampled."""
    settings = run_settings(**{**TRACED, **training})
    prompts = settings["prompts_per_step"]
    momentum_rows = prompts * settings["momentum_rollouts"]
    policy_rows = prompts * settings["rollouts"] - momentum_rows
    sample = trainer_module.lm.sample
    batches: list[Any] = []

    def recording_sample(*args: Any, **kwargs: Any) -> Any:
        batch = sample(*args, **kwargs)
        batches.append(batch)
        return batch

    models, metrics, records, sampled = [toy_dir / "model"], [], [], {}
    with pytest.MonkeyPatch.context() as patch, applied_updates() as updates:
        patch.setattr(trainer_module.lm, "sample", recording_sample)
        for step in range(1, steps + 1):
            batches.clear()
            paths = chunk(toy_dir, settings, out, step - 1, step, models[-1])
            by_size = {len(b): b for b in batches}
            assert sorted(by_size) == sorted({policy_rows, momentum_rows}), "one batch per model"
            sampled[step] = {"policy": by_size[policy_rows], "momentum": by_size[momentum_rows]}
            models.append(paths.checkpoint)
            metrics += read_jsonl(paths.metrics)
            records.append(pd.read_parquet(paths.rollouts))
    records = pd.concat(records, ignore_index=True)
    return Trace(settings, models, metrics, records, sampled, updates)


@pytest.fixture(scope="module")
def traced(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """M-GRPO+IQR, entropies of momentum rows under the policy (the default)."""
    return trace_run(toy_dir, tmp_path_factory.mktemp("traced"), STEPS)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


@dataclass
class RowStats:
    log_probs: torch.Tensor  # (T,) of the sampled response tokens
    entropies: torch.Tensor  # (T,) of the whole next-token distribution


def response_stats(model_dir: Path, batch: Any, temperature: float) -> list[RowStats]:
    """Each row's response tokens scored by one unpadded forward pass of ``model_dir``."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    stats = []
    for i in range(len(batch)):
        prompt = batch.input_ids[i, : batch.prompt_len][
            batch.attention_mask[i, : batch.prompt_len].bool()
        ]
        response = batch.input_ids[i, batch.prompt_len :][batch.response_mask[i].bool()]
        ids = torch.cat([prompt, response])[None]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double()
        log_p = torch.log_softmax(logits / temperature, dim=-1)
        stats.append(
            RowStats(
                log_probs=log_p.gather(-1, response[:, None]).squeeze(-1),
                entropies=-(log_p.exp() * log_p).sum(-1),
            )
        )
    return stats


def step_records(trace: Trace, step: int, source: str, model_dir: Path) -> pd.DataFrame:
    """The step's records of one source, each aligned with its sampled batch row.

    Rows are sampled prompt by prompt in record order; the decoded responses prove the pairing.
    """
    from transformers import AutoTokenizer

    rows = trace.records[(trace.records["step"] == step) & (trace.records["source"] == source)]
    batch = trace.sampled[step][source]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    decoded = tokenizer.batch_decode(
        batch.input_ids[:, batch.prompt_len :], skip_special_tokens=True
    )
    assert decoded == rows["response"].tolist()
    return rows.reset_index(drop=True)


# ------------------------------------------------------------------------------ EMA
def test_saved_momentum_is_the_ema_of_the_policies_produced(traced: Trace) -> None:
    """theta_k(t) = m theta_k(t-1) + (1 - m) theta_q(t) with theta_k(0) = the base model."""
    m = traced.settings["momentum"]
    expected = weights(traced.policy(0))
    for step in range(1, STEPS + 1):
        policy = weights(traced.policy(step))
        expected = {k: m * expected[k] + (1 - m) * policy[k] for k in expected}
        saved = weights(traced.momentum(step))
        assert saved.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(saved[name], expected[name], atol=1e-6, rtol=1e-5)
        # The recurrence is not satisfied trivially: policy and momentum really differ.
        assert any(not torch.allclose(saved[k], policy[k], atol=1e-4) for k in saved)


# ------------------------------------------------------------------------------ KL
def expected_kl(trace: Trace, step: int, reference: Path) -> float:
    """Token mean of k3 = e^(ref - lp) - (ref - lp) - 1 over the step's trained rows."""
    temperature = trace.settings["temperature"]
    rows = step_records(trace, step, "policy", trace.policy(0))
    batch = trace.sampled[step]["policy"]
    policy = response_stats(trace.policy(step - 1), batch, temperature)
    ref = response_stats(reference, batch, temperature)
    total, tokens = 0.0, 0
    for i in rows.index[rows["trained"]]:
        log_ratio = ref[i].log_probs - policy[i].log_probs
        total += float((log_ratio.exp() - log_ratio - 1).sum())
        tokens += len(log_ratio)
    return total / tokens


def test_kl_is_zero_at_step_one_and_measured_against_the_base_model(traced: Trace) -> None:
    assert traced.metrics[0]["kl"] == pytest.approx(0.0, abs=1e-7)
    for step in range(2, STEPS + 1):
        against_base = expected_kl(traced, step, traced.policy(0))
        against_momentum = expected_kl(traced, step, traced.momentum(step - 1))
        # The two candidate anchors are far enough apart for the comparison to tell them apart.
        assert against_base > 0 and abs(against_base - against_momentum) > 0.02 * against_base
        assert traced.metrics[step - 1]["kl"] == pytest.approx(against_base, rel=1e-4)


# ------------------------------------------------------------------------------ entropies
def recorded_vs_recomputed(trace: Trace, step: int, source: str, model_dir: Path):
    rows = step_records(trace, step, source, trace.policy(0))
    stats = response_stats(model_dir, trace.sampled[step][source], trace.settings["temperature"])
    recomputed = [float(s.entropies.mean()) for s in stats]
    return rows["entropy"].tolist(), recomputed


def test_every_rollout_entropy_is_measured_under_the_current_policy(traced: Trace) -> None:
    """entropy_model: policy. Momentum rows get a pass of pi_q, not the sampler's pi_k value."""
    for step in range(2, STEPS + 1):
        for source in ("policy", "momentum"):
            recorded, under_policy = recorded_vs_recomputed(
                traced, step, source, traced.policy(step - 1)
            )
            assert recorded == pytest.approx(under_policy, abs=1e-4), (step, source)
        _, under_momentum = recorded_vs_recomputed(
            traced, step, "momentum", traced.momentum(step - 1)
        )
        assert under_momentum != pytest.approx(recorded, abs=1e-3), "models indistinguishable"


def test_generator_entropy_is_measured_under_the_model_that_sampled(
    toy_dir: Path, tmp_path: Path
) -> None:
    """entropy_model: generator. Momentum rows keep pi_k's entropy; so they came from pi_k."""
    trace = trace_run(toy_dir, tmp_path, 2, entropy_model="generator")
    recorded, under_momentum = recorded_vs_recomputed(trace, 2, "momentum", trace.momentum(1))
    assert recorded == pytest.approx(under_momentum, abs=1e-4)
    _, under_policy = recorded_vs_recomputed(trace, 2, "momentum", trace.policy(1))
    assert under_policy != pytest.approx(recorded, abs=1e-3), "models indistinguishable"


def test_logged_entropies_are_the_policy_and_momentum_rows_means(traced: Trace) -> None:
    """Figure 2 plots ``entropy_policy``: the mean over pi_q's own rollouts, never pi_k's."""
    for metrics in traced.metrics:
        rows = traced.records[traced.records["step"] == metrics["step"]]
        by_source = rows.groupby("source")["entropy"].mean()
        assert metrics["entropy_policy"] == pytest.approx(by_source["policy"], abs=1e-12)
        assert metrics["entropy_momentum"] == pytest.approx(by_source["momentum"], abs=1e-12)


# ------------------------------------------------------------------------------ the update
def test_learning_rate_follows_the_run_schedule_not_the_chunk(traced: Trace) -> None:
    """One-step chunks still walk the run's cosine over schedule_steps (no warmup at 4 steps);
    the optimizer steps with the LR the metrics report, not the constant peak LR."""
    s = traced.settings
    assert (s["lr_schedule"], int(s["warmup_ratio"] * s["schedule_steps"])) == ("cosine", 0)
    assert len(traced.metrics) == STEPS
    pairs = zip(traced.metrics, traced.updates, strict=True)
    for step, (metrics, update) in enumerate(pairs, start=1):
        progress = (step - 1) / s["schedule_steps"]
        expected = s["lr"] * 0.5 * (1 + math.cos(math.pi * progress))
        assert metrics["lr"] == pytest.approx(expected)
        assert update.lr == pytest.approx(expected)


def test_the_update_clips_the_gradient_norm_to_grad_clip(toy_dir: Path, tmp_path: Path) -> None:
    """The logged grad_norm is the norm before clipping; the optimizer applies at most
    grad_clip. The same first step with and without an active clip tells them apart."""
    logged, applied = {}, {}
    for clip in (1e9, 1e-3):
        settings = run_settings(**TRACED, grad_clip=clip)
        with applied_updates() as updates:
            paths = chunk(toy_dir, settings, tmp_path / str(clip), 0, 1, toy_dir / "model")
        (logged[clip],), (applied[clip],) = read_jsonl(paths.metrics), updates
    norm = logged[1e9]["grad_norm"]
    assert norm > 1e-2  # the small clip is active
    assert applied[1e9].grad_norm == pytest.approx(norm, rel=1e-5)
    assert logged[1e-3]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert applied[1e-3].grad_norm == pytest.approx(1e-3, rel=1e-4)


def test_micro_batch_size_does_not_change_the_update(toy_dir: Path, tmp_path: Path) -> None:
    """The loss is one token mean over the step's trained rows however they are split."""
    logged = {}
    for size in (1, 64):
        settings = run_settings(**TRACED, micro_batch_size=size)
        paths = chunk(toy_dir, settings, tmp_path / str(size), 0, 1, toy_dir / "model")
        (logged[size],) = read_jsonl(paths.metrics)
    assert logged[1]["grad_norm"] > 0
    for key in ("loss", "pg_loss", "grad_norm", "kl", "trained_rollouts"):
        assert logged[1][key] == pytest.approx(logged[64][key], rel=1e-4, abs=1e-7), key


# ------------------------------------------------------------------------------ evaluation
def responses(model_dir: Path, problems: Path, **benchmark: Any) -> list[str]:
    """The sampled responses of an evaluation configured as the workflow configures one."""
    from mgrpo.evaluation.runner import evaluate_model

    benchmark = {"source": "toy", "split": "test", "samples": 2, "max_new_tokens": 12,
                 "limit": 6, "answer_equivalence": "exact", **benchmark}  # fmt: skip
    spec = eval_spec(benchmark, device="cpu", micro_batch_size=5)
    return [r["response"] for r in evaluate_model(model_dir, problems, spec)[1]]


def test_evaluation_seed_repeats_and_two_seeds_differ(toy_dir: Path) -> None:
    problems = toy_dir / "data" / "test.parquet"
    first = responses(toy_dir / "model", problems, seed=3)
    assert responses(toy_dir / "model", problems, seed=3) == first
    assert responses(toy_dir / "model", problems, seed=4) != first


def test_evaluation_of_a_checkpoint_samples_its_own_weights(traced: Trace, toy_dir: Path) -> None:
    problems = toy_dir / "data" / "test.parquet"
    base = responses(traced.policy(0), problems)
    assert responses(traced.policy(STEPS), problems) != base
    assert responses(traced.policy(0), problems) == base


def test_greedy_evaluation_is_the_argmax_of_an_independent_forward_pass(toy_dir: Path) -> None:
    """temperature 0: each token is the argmax of a plain forward pass over the text so far."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mgrpo.data import read_problems

    model_dir, problems = toy_dir / "model", toy_dir / "data" / "test.parquet"
    greedy = responses(model_dir, problems, temperature=0.0, samples=1, max_new_tokens=16)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    stops = {tokenizer.eos_token_id, model.generation_config.eos_token_id}
    for question, response in zip(read_problems(problems).questions, greedy, strict=False):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        new: list[int] = []
        while len(new) < 16 and (not new or new[-1] not in stops):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            new.append(int(logits.argmax()))
        assert response == tokenizer.decode(new, skip_special_tokens=True)


# ------------------------------------------------------------------------------ chunk hand-off
@pytest.mark.parametrize("change", [{"seed": 1}, {"method": "mgrpo"}], ids=["seed", "method"])
def test_a_checkpoint_of_another_seed_or_method_is_refused(
    toy_dir: Path, tmp_path: Path, change: dict
) -> None:
    """A changed run never continues from the old run's checkpoint."""
    first = chunk(toy_dir, run_settings(method="srt"), tmp_path, 0, 2, toy_dir / "model")
    changed = run_settings(**{"method": "srt", **change})
    with pytest.raises(ValueError, match="must restart from step 0"):
        chunk(toy_dir, changed, tmp_path / "changed", 2, 4, first.checkpoint)
