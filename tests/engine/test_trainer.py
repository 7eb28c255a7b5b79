"""The local engine end to end on the tiny toy model: chunking, resume, audit records, failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from support import as_float32, chunk, raw_scalar_counts, run_settings, tensorboard_scalars

from mgrpo.algorithm.filtering import iqr_keep_mask
from mgrpo.algorithm.groups import score_group
from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS, step_signals
from mgrpo.engines.local import trainer as trainer_module
from mgrpo.engines.local.trainer import TrainingDiverged, lr_multiplier
from mgrpo.io import read_jsonl
from mgrpo.run_layout import METRICS_FIELDS, ROLLOUT_COLUMNS, ROLLOUT_DTYPES
from mgrpo.tracking import TRAIN_EVENTS, tracked_metrics

pytestmark = pytest.mark.slow
TIMING_KEYS = {"step_time", "sample_time"}


def weights(checkpoint: Path, part: str) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / part / "model.safetensors")


def metrics_without_timing(path: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_jsonl(path)]


def assert_curves_are_the_metrics(tensorboard: Path, metrics: list[dict]) -> None:
    """TensorBoard's reader shows exactly the steps and values of the metrics lines."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in metrics:
        for tag, value in tracked_metrics(line).items():
            expected.setdefault(tag, []).append((line["step"], as_float32(value)))
    assert tensorboard_scalars(tensorboard / TRAIN_EVENTS) == expected
    assert set(raw_scalar_counts(tensorboard).values()) == {1}  # in the files, too


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


MGRPO = {"method": "mgrpo", "iqr": True, "rollouts": 4, "momentum_rollouts": 1}


def test_two_chunks_equal_one_chunk_bit_for_bit(toy_dir: Path, tmp_path: Path) -> None:
    settings = run_settings(**MGRPO)
    whole = chunk(toy_dir, settings, tmp_path / "whole", 0, 4, toy_dir / "model")
    first = chunk(toy_dir, settings, tmp_path / "split", 0, 2, toy_dir / "model")
    second = chunk(toy_dir, settings, tmp_path / "split", 2, 4, first.checkpoint)

    for part in ("policy", "momentum"):
        assert_same_weights(weights(whole.checkpoint, part), weights(second.checkpoint, part))
    split_metrics = metrics_without_timing(first.metrics) + metrics_without_timing(second.metrics)
    assert metrics_without_timing(whole.metrics) == split_metrics
    split_rollouts = pd.concat(
        [pd.read_parquet(first.rollouts), pd.read_parquet(second.rollouts)], ignore_index=True
    )
    pd.testing.assert_frame_equal(pd.read_parquet(whole.rollouts), split_rollouts)
    assert_curves_are_the_metrics(
        tmp_path / "split" / "tensorboard", read_jsonl(first.metrics) + read_jsonl(second.metrics)
    )
    # The momentum policy really moved away from the policy (the EMA is not a copy).
    policy, momentum = weights(whole.checkpoint, "policy"), weights(whole.checkpoint, "momentum")
    assert any(not torch.equal(policy[k], momentum[k]) for k in policy)


def test_chunk_outputs_and_resume_state_cleanup(toy_dir: Path, tmp_path: Path) -> None:
    settings = run_settings(**MGRPO, resume_every=1)
    paths = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    manifest = json.loads((paths.checkpoint / "checkpoint.json").read_text())
    # The checkpoint is named by the same fingerprint the workflow passes to evaluation.
    assert manifest == {
        "run": "run",
        "step": 2,
        "engine": "local",
        "identity": settings.fingerprint,
        "method": "M-GRPO+IQR",
    }
    for name in ("policy/config.json", "policy/tokenizer.json", "momentum/model.safetensors"):
        assert (paths.checkpoint / name).exists(), name
    assert not paths.resume.exists()
    assert [m["step"] for m in read_jsonl(paths.metrics)] == [1, 2]


def test_outputs_have_exactly_the_run_layout_columns(toy_dir: Path, tmp_path: Path) -> None:
    """Metrics and rollouts carry the columns of mgrpo.run_layout, no more, no fewer."""
    # resume_every=1: the final rollouts are concatenated from resume parts, as after a kill.
    paths = chunk(toy_dir, run_settings(**MGRPO, resume_every=1), tmp_path, 0, 2, toy_dir / "model")
    for line in read_jsonl(paths.metrics):
        assert set(line) == set(METRICS_FIELDS)
    rollouts = pd.read_parquet(paths.rollouts)
    assert {c: str(t) for c, t in rollouts.dtypes.items()} == ROLLOUT_DTYPES
    assert list(rollouts.columns) == list(ROLLOUT_COLUMNS)


def test_rollout_records_are_what_the_loss_used(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = run_settings(**MGRPO, clip_ratio_c=2.5)
    used: list[torch.Tensor] = []
    real_loss = trainer_module.policy_loss

    def spy(log_prob, old_log_prob, ref_log_prob, advantages, *args, **kwargs):
        used.append(advantages.detach().clone())
        assert kwargs["clip_ratio_c"] == 2.5  # the run's dual-clip bound reaches the loss
        return real_loss(log_prob, old_log_prob, ref_log_prob, advantages, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "policy_loss", spy)
    paths = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    records = pd.read_parquet(paths.rollouts)
    method = settings.method
    group_size = method.group_size
    assert len(records) == 2 * settings["prompts_per_step"] * group_size

    # The advantages fed to the loss are exactly the recorded ones of trained rows, in order.
    loss_advantages = torch.cat(used).tolist()
    trained = records[records["trained"]]
    # Rows are trained in batch order: all policy rows of a step, prompt by prompt.
    recorded = trained.sort_values(["step", "rollout"], kind="stable").groupby("step")
    expected = [a for _, g in recorded for a in g.sort_index()["advantage"].tolist()]
    assert loss_advantages == pytest.approx(expected, abs=1e-6)

    # Re-scoring each recorded pool reproduces filter, label, rewards and advantages, and the
    # step's label-free signals are those of the re-scored pools.
    rescored: dict[int, list] = {}
    for (step, _), pool in records.groupby(["step", "prompt_id"], sort=False):
        pool = pool.sort_values("rollout")
        score = score_group(
            [None if pd.isna(a) else a for a in pool["answer"]],
            (pool["source"] == "momentum").tolist(),
            pool["entropy"].tolist(),
            method,
            truth=pool["ground_truth"].iloc[0],
        )
        assert score.kept == pool["kept"].tolist()
        assert score.trained == pool["trained"].tolist()
        assert score.label == (
            None if pd.isna(pool["pseudo_label"].iloc[0]) else pool["pseudo_label"].iloc[0]
        )
        assert score.rewards == [None if pd.isna(r) else r for r in pool["reward"]]
        flags = (pool["source"] == "momentum").tolist()
        rescored.setdefault(step, []).append((score, flags, pool["entropy"].tolist()))
    assert (records.loc[records["source"] == "momentum", "trained"] == False).all()  # noqa: E712
    for line in read_jsonl(paths.metrics):
        groups, flags, entropies = zip(*rescored[line["step"]], strict=True)
        lengths = [[0] * len(f) for f in flags]  # not in the records; checked by hand elsewhere
        signals = step_signals(groups, flags, entropies, lengths)
        for name in set(LABEL_FREE_SIGNALS) - {"response_length"}:
            assert line[name] == pytest.approx(signals[name]), name
        assert line["response_length"] > 0


def test_nan_loss_stops_and_keeps_last_good_state(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = run_settings(method="srt", resume_every=1)
    real_loss = trainer_module.policy_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real_loss(*args, **kwargs)
        calls["n"] += 1
        # Step 1 trains 2 prompts x 4 rollouts = 8 rows in ceil(8 / 3) = 3 micro-batches.
        if calls["n"] > 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "policy_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match="step 2: loss is nan"):
        chunk(toy_dir, settings, out, 0, 4, toy_dir / "model")
    assert not (out / "step4").exists() and not (out / "metrics4.jsonl").exists()
    latest = json.loads((out / "resume4" / "latest.json").read_text())
    assert latest["step"] == 1
    assert (out / "resume4" / latest["state"] / "checkpoint.json").exists()


def test_checkpoint_of_other_settings_is_refused(toy_dir: Path, tmp_path: Path) -> None:
    settings = run_settings(method="srt")
    first = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    changed = settings.replace(lr=settings["lr"] * 2)
    with pytest.raises(ValueError, match="must restart from step 0"):
        chunk(toy_dir, changed, tmp_path / "b", 2, 4, first.checkpoint)


def test_killed_chunk_resumes_to_identical_result(toy_dir: Path, tmp_path: Path) -> None:
    """SIGKILL a real training process mid-chunk; the rerun continues from its resume state."""
    settings = run_settings(**MGRPO, resume_every=2)
    steps = 10
    reference = chunk(toy_dir, settings, tmp_path / "reference", 0, steps, toy_dir / "model")

    out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "mgrpo", "train",
        "--settings", settings.to_json(),
        "--base-model", str(toy_dir / "model"),
        "--train-data", str(toy_dir / "data" / "train.parquet"),
        "--start", "0", "--end", str(steps),
        "--init", str(toy_dir / "model"),
        "--checkpoint", str(out / f"step{steps}"),
        "--metrics", str(out / "metrics.jsonl"),
        "--rollouts", str(out / "rollouts.parquet"),
        "--resume-dir", str(out / "resume"),
        "--tensorboard", str(out / "tensorboard"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    pointer = out / "resume" / "latest.json"

    def resume_state_and_last_curve_step() -> tuple[int, int]:
        state = json.loads(pointer.read_text())["step"] if pointer.exists() else 0
        counts = raw_scalar_counts(out / "tensorboard")
        return state, max((s for tag, s in counts if tag == "train/reward_mean"), default=0)

    # Kill once a step after the last resume state is on the curves (it will be redone): look
    # while the process is stopped, so that it cannot move on between looking and killing.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        proc.send_signal(signal.SIGSTOP)
        state, shown = resume_state_and_last_curve_step()
        if state >= 4 and shown > state:
            break
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / f"step{steps}").exists() and not (out / "metrics.jsonl").exists()
    killed_at, shown = resume_state_and_last_curve_step()
    assert 4 <= killed_at < shown < steps
    # The curves were written as the steps ended, not at the chunk's end.
    curve = tensorboard_scalars(out / "tensorboard" / TRAIN_EVENTS)["train/reward_mean"]
    assert [step for step, _ in curve] == list(range(1, shown + 1))

    subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)
    assert not (out / "resume").exists()
    for part in ("policy", "momentum"):
        assert_same_weights(
            weights(reference.checkpoint, part), weights(out / f"step{steps}", part)
        )
    assert metrics_without_timing(reference.metrics) == metrics_without_timing(
        out / "metrics.jsonl"
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(reference.rollouts), pd.read_parquet(out / "rollouts.parquet")
    )
    # The resumed curves continue the killed ones: every step once, the metrics file's values.
    assert_curves_are_the_metrics(out / "tensorboard", read_jsonl(out / "metrics.jsonl"))


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.25), (3, 1.0), (4, 1.0), (14, 0.5), (24, 0.0), (30, 0.0)],
)
def test_lr_multiplier_warmup_then_cosine(step: int, expected: float) -> None:
    # horizon 24, warmup int(0.2 * 24) = 4: steps 0..3 ramp 1/4..4/4; cosine over the 20 after.
    settings = {
        "schedule_steps": 24,
        "warmup_ratio": 0.2,
        "min_lr_ratio": 0.0,
        "lr_schedule": "cosine",
    }
    assert lr_multiplier(step, settings) == pytest.approx(expected)


def test_lr_multiplier_constant_after_warmup() -> None:
    settings = {
        "schedule_steps": 10,
        "warmup_ratio": 0.2,
        "min_lr_ratio": 0.0,
        "lr_schedule": "constant",
    }
    assert [lr_multiplier(s, settings) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "intuitor"},
        {"method": "gt_grpo"},
        {"method": "srt", "iqr": True},
        {**MGRPO, "entropy_model": "generator"},
        {**MGRPO, "iqr_scope": "vote"},
    ],
    ids=["intuitor", "gt_grpo", "srt_iqr", "mgrpo_generator_entropy", "mgrpo_iqr_vote_only"],
)
def test_every_method_trains_and_records_its_reward(
    toy_dir: Path, tmp_path: Path, overrides: dict
) -> None:
    settings = run_settings(**overrides)
    paths = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    records = pd.read_parquet(paths.rollouts)
    trained = records[records["trained"]]
    assert len(trained) > 0
    if overrides["method"] == "intuitor":
        # Self-certainty is the reward itself: continuous, and recorded for every rollout.
        assert trained["reward"].tolist() == pytest.approx(trained["self_certainty"].tolist())
    elif overrides["method"] == "gt_grpo":
        agree = (trained["answer"] == trained["ground_truth"]).fillna(False).astype(float)
        assert trained["reward"].tolist() == agree.tolist()
    else:
        agree = (trained["answer"] == trained["pseudo_label"]).fillna(False).astype(float)
        assert trained["reward"].tolist() == agree.tolist()
    for _, pool in records.groupby(["step", "prompt_id"]):
        expected = iqr_keep_mask(pool["entropy"].tolist(), 0.75) if overrides.get("iqr") else None
        assert pool["kept"].tolist() == (expected or [True] * len(pool))
        policy = (pool["source"] == "policy").tolist()
        if overrides.get("iqr_scope") == "vote":  # filtered policy rollouts are still trained
            assert pool["trained"].tolist() == policy
        else:
            kept = pool["kept"].tolist()
            assert pool["trained"].tolist() == [k and p for k, p in zip(kept, policy, strict=True)]
