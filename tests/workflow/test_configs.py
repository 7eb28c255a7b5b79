"""Which config a run uses: a config file given on the command line stands alone.

Snakemake deep-merges a command-line config file onto one the Snakefile loads itself, so the
paper config used to train the embedded default's toy runs and evaluate every run on the toy
splits as well. These dry runs start from the root of a fresh checkout, where
config/config.yaml exists, as a user's do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from launch import (
    USER_CONFIG,
    expected_jobs,
    parse_plan,
    planned_runs_and_benchmarks,
    rules_of,
    run,
    user_path,
)
from support import REPO

from mgrpo.config import load_config
from mgrpo.report import (
    FIGURES,
    LABEL_FREE_FIGURES,
    LABEL_FREE_TABLES,
    TABLE_FORMATS,
    table_names,
)


def dry_run(checkout: Path, tmp_path: Path, *args: str) -> list[tuple[str, list[str]]]:
    return parse_plan(run(checkout, "-n", *args, path=user_path(tmp_path / "bin")).stdout)


@pytest.mark.slow
def test_paper_config_alone_plans_only_the_papers_runs_and_benchmarks(checkout, tmp_path):
    paper = load_config(REPO / "config" / "paper.yaml")
    jobs = dry_run(checkout, tmp_path, "--configfile", "config/paper.yaml")
    assert rules_of(jobs) == expected_jobs(paper)
    runs, benches = planned_runs_and_benchmarks(jobs)
    assert runs == set(paper["runs"])
    assert benches == set(paper["benchmarks"])
    # The embedded default's runs and toy splits are nowhere in the plan.
    default = load_config(REPO / "config" / "config.yaml")
    outputs = " ".join(o for _, outs in jobs for o in outs)
    assert not any(f"/{run}/" in outputs for run in set(default["runs"]) - set(paper["runs"]))
    assert "results/data/test.parquet" not in outputs
    assert not any(rule.startswith("toy") for rule, _ in jobs)
    # The report writes exactly the paper's tables and figures, and the label-free ones.
    report = {o for rule, outs in jobs if rule in ("collapse", "tables", "figures") for o in outs}
    names = table_names(paper["report"])
    assert report == {"results/tables/collapse.csv"} | {
        f"results/tables/{t}.{ext}" for t in names for ext in TABLE_FORMATS
    } | {f"results/tables/{t}.{ext}" for t in LABEL_FREE_TABLES for ext in ("md", "csv")} | {
        f"results/figures/{f}.png" for f in (*FIGURES, *LABEL_FREE_FIGURES)
    }


@pytest.mark.slow
def test_the_cpu_paper_path_config_plans_verl_chunks_and_vllm_evaluations(checkout, tmp_path):
    """config/verl-cpu.yaml (the README's CPU paper-path command) plans its own runs alone:
    two verl chunks per run, every checkpoint on every benchmark, the report. Its execution is
    tests/paper_path (make test-paper-path)."""
    config = load_config(REPO / "config" / "verl-cpu.yaml")
    assert config["training"]["engine"] == "verl" and config["training"]["device"] == "cpu"
    assert config["evaluation"]["backend"] == "vllm"
    jobs = dry_run(checkout, tmp_path, "--configfile", "config/verl-cpu.yaml")
    assert rules_of(jobs) == expected_jobs(config)
    assert planned_runs_and_benchmarks(jobs) == (set(config["runs"]), set(config["benchmarks"]))
    chunks = sorted(o for rule, outs in jobs if rule == "train_chunk" for o in outs if "/step" in o)
    assert chunks == [
        f"results/runs/{run}/checkpoints/step{step}"
        for run in ("mgrpo_iqr", "mgrpo_iqr_sequential", "srt")
        for step in (2, 4)
    ]


def test_a_users_config_stands_alone(checkout, tmp_path):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(USER_CONFIG))
    jobs = dry_run(checkout, tmp_path, "--configfile", str(tmp_path / "mine.yaml"))
    assert rules_of(jobs) == expected_jobs(USER_CONFIG)
    assert planned_runs_and_benchmarks(jobs) == ({"mine", "theirs"}, {"own"})


def test_without_a_config_file_the_embedded_default_runs(checkout, tmp_path):
    default = load_config(REPO / "config" / "config.yaml")
    jobs = dry_run(checkout, tmp_path)
    assert rules_of(jobs) == expected_jobs(default)
    assert planned_runs_and_benchmarks(jobs) == (set(default["runs"]), set(default["benchmarks"]))


@pytest.mark.parametrize("with_file", [False, True], ids=["default", "config-file"])
def test_config_overrides_apply_to_whichever_config_is_used(checkout, tmp_path, with_file):
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(USER_CONFIG))
    base = USER_CONFIG if with_file else load_config(REPO / "config" / "config.yaml")
    files = ["--configfile", str(tmp_path / "mine.yaml")] if with_file else []
    jobs = dry_run(checkout, tmp_path, *files, "--config", "runs={extra: {method: srt}}")
    runs, benches = planned_runs_and_benchmarks(jobs)
    assert runs == {*base["runs"], "extra"}
    assert benches == set(base["benchmarks"])
