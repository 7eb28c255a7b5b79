"""`snakemake --profile slurm` from the repository root, with stand-ins for SLURM and conda.

There is no SLURM (and no conda) here: standins.py provides ``sbatch``, ``sacct``, ``srun``, ...
and a ``conda`` whose environments run the project's interpreter. The profile itself is used
exactly as shipped, except for the three site values a site edits (account, partition, GPU).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from launch import (
    USER_CONFIG,
    VENV_BIN,
    expected_jobs,
    fresh_checkout,
    parse_plan,
    planned_runs_and_benchmarks,
    rules_of,
    run,
)
from standins import calls, install_standins, path_without, submissions
from support import REPO, TINY_TOY, TINY_TRAINING

from mgrpo.config import load_config

SITE = {"slurm_account": "site-acct", "slurm_partition": "site-gpu", "gpu_model": "h200"}
# A paper-like config, reduced: two runs of one chunk on one base model, a benchmark named like
# the paper's, and Table 2 with the paper's numbers beside ours.
PAPER_LIKE = {
    **TINY_TOY,
    "training": {**TINY_TRAINING, "steps": 2},
    "runs": {"srt_g4": {"method": "srt"}, "mgrpo_iqr_g4": {"method": "mgrpo", "iqr": True}},
    "benchmarks": {"math500": {"source": "toy", "split": "test", "max_new_tokens": 12}},
    "report": {
        "select_on": "math500",
        "tables": {
            "table2": {
                "title": "Table 2 (reduced)",
                "paper": "Table 2",
                "rows": [
                    {"run": "srt_g4", "pick": "base", "paper_row": 1},
                    {"run": "srt_g4", "pick": "best", "paper_row": 2},
                    {"run": "srt_g4", "pick": "final", "paper_row": 3},
                    {"run": "mgrpo_iqr_g4", "pick": "final", "paper_row": 5},
                ],
            }
        },
        "figures": {"fig5_collapse": {"runs": ["srt_g4"]}},
    },
}
TRAIN_JOBS, EVAL_JOBS, BASE_JOBS = 2, 2, 1  # chunks; their evaluations; the base model
ENV_OF_COMMAND = {"toy-data": "core", "toy-model": "train", "train": "train", "eval": "eval",
                  "copy-eval": "core", "report": "core"}  # fmt: skip


def slurm_path(tmp_path: Path, checkout: Path) -> tuple[str, Path]:
    """PATH with the SLURM and conda stand-ins first and no venv; and their log directory."""
    state = tmp_path / "slurm-state"
    install_standins(tmp_path / "slurm-bin", state, checkout / "envs", SITE["slurm_account"])
    return f"{tmp_path / 'slurm-bin'}:{path_without(VENV_BIN)}", state


def test_the_local_default_has_no_cluster_profile():
    # A `profiles/default` (or workflow/profiles/default) would apply to `snakemake -c2` too.
    assert not (REPO / "profiles" / "default").exists()
    assert not (REPO / "workflow" / "profiles").exists()
    # `slurm` at the root is the profile in profiles/, not a second copy of it.
    assert (REPO / "slurm").is_symlink()
    assert (REPO / "slurm").resolve() == (REPO / "profiles" / "slurm").resolve()


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["slurm", "profiles/slurm"])
def test_profile_as_typed_plans_the_papers_experiments(checkout, tmp_path, profile):
    path, _ = slurm_path(tmp_path, checkout)
    jobs = parse_plan(run(checkout, "--profile", profile, "-n", path=path).stdout)
    paper = load_config(REPO / "config" / "paper.yaml")
    assert rules_of(jobs) == expected_jobs(paper)
    assert planned_runs_and_benchmarks(jobs) == (set(paper["runs"]), set(paper["benchmarks"]))


def test_a_config_file_replaces_the_profiles(checkout, tmp_path):
    path, _ = slurm_path(tmp_path, checkout)
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(USER_CONFIG))
    proc = run(checkout, "--profile", "slurm", "-n", "--configfile", str(tmp_path / "mine.yaml"),
               path=path)  # fmt: skip
    jobs = parse_plan(proc.stdout)
    assert rules_of(jobs) == expected_jobs(USER_CONFIG)
    assert planned_runs_and_benchmarks(jobs) == ({"mine", "theirs"}, {"own"})


def edit_site_values(profile: Path) -> None:
    """What a site does: set account, partition and GPU model, the profile's only site values."""
    text = profile.read_text()
    for key, value in SITE.items():
        text, count = re.subn(rf"^(\s*{key}:) \S+", rf"\1 {value}", text, flags=re.M)
        assert count == 1, f"{key} must be set in exactly one place of {profile}"
    profile.write_text(text)


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The paper-like config run to the end through `--profile slurm` on stand-in SLURM.

    The base model's evaluation times out once, so its retry shows how the time limit grows.
    """
    tmp = tmp_path_factory.mktemp("slurm")
    checkout = fresh_checkout(tmp / "checkout")
    edit_site_values(checkout / "profiles" / "slurm" / "profile.yaml")
    (checkout / "paper-like.yaml").write_text(yaml.safe_dump(PAPER_LIKE, sort_keys=False))
    path, state = slurm_path(tmp, checkout)
    (state / "fail-once").write_text("eval_base_model\n")
    run(checkout, "--profile", "slurm", "--configfile", "paper-like.yaml",
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        path=path)  # fmt: skip
    return checkout, state


@pytest.mark.slow
def test_training_chunks_get_one_exclusive_8_gpu_node_and_evaluations_one_gpu(slurm_run):
    _, state = slurm_run
    jobs = submissions(state)
    # Only GPU work is submitted; data, the toy model and the report run beside the orchestrator.
    assert Counter(job["rule"] for job in jobs) == {
        "train_chunk": TRAIN_JOBS, "eval_checkpoint": EVAL_JOBS, "eval_base_model": BASE_JOBS + 1
    }  # fmt: skip
    for job in jobs:
        args = job["args"]
        assert (option(args, "-A"), option(args, "-p")) == ("site-acct", "site-gpu"), args
        if job["rule"] == "train_chunk":
            assert option(args, "--gpus") == "h200:8"
            assert option(args, "--nodes") == "1"
            assert "--exclusive" in args
            assert option(args, "-t") == str(12 * 60)
            assert option(args, "--cpus-per-gpu") == "8"
        else:
            assert option(args, "--gpus") == "h200:1"
            assert "--exclusive" not in args and option(args, "--nodes") is None
            assert option(args, "--cpus-per-task") == "8"
    # Evaluation time grows with each attempt: the timed-out job came back with twice the time.
    evals = [job for job in jobs if job["rule"].startswith("eval")]
    assert [(job["rule"], job["state"]) for job in evals if job["state"] != "COMPLETED"] == [
        ("eval_base_model", "TIMEOUT")
    ]
    limits = [(job["rule"], option(job["args"], "-t")) for job in evals]
    assert Counter(limits) == {
        ("eval_checkpoint", "120"): EVAL_JOBS, ("eval_base_model", "120"): 1,
        ("eval_base_model", "240"): 1,
    }  # fmt: skip
    # Inside the allocation, the job step asks for the same GPUs (srun --gpus).
    steps = [args for args in calls(state, "srun") if "--gpus=8" in args]
    assert len(steps) == TRAIN_JOBS


@pytest.mark.slow
def test_every_rule_ran_in_its_own_conda_env_and_the_report_was_written(slurm_run):
    checkout, state = slurm_run
    ran = Counter()
    for line in (state / "conda-python.log").read_text().splitlines():
        env, _, _, command = line.split()[:4]  # "<env> -m mgrpo <command> ..."
        assert env == ENV_OF_COMMAND[command], line
        ran[command] += 1
    assert ran["train"] == TRAIN_JOBS
    assert ran["eval"] == EVAL_JOBS + BASE_JOBS  # the timed-out attempt never started
    assert ran["report"] == 3
    results = checkout / "results"
    table = (results / "tables" / "table2.md").read_text()
    assert "| Model | Run | Step | math500 | paper | Δ |" in table
    assert "| SRT_Best | `srt_g4` |" in table
    assert (results / "figures" / "fig5_collapse.png").stat().st_size > 10_000
