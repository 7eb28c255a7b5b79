"""Which config a run uses: a config file given on the command line stands alone.

Snakemake deep-merges a command-line config file onto one the Snakefile loads itself, so the
paper config used to train the embedded default's toy runs and evaluate every run on the toy
splits as well. These dry runs start from the root of a fresh checkout, where
config/config.yaml exists, as a user's do.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from launch import parse_plan, rules_of, run, user_path
from support import REPO, TINY_TOY, TINY_TRAINING

from mgrpo.config import load_config, validate_config
from mgrpo.report import FIGURES, TABLE_FORMATS, table_names
from mgrpo.settings import resolve_run_settings

USER_CONFIG = {
    **TINY_TOY,
    "training": {**TINY_TRAINING, "steps": 6},
    "runs": {"mine": {"method": "srt"}, "theirs": {"method": "mgrpo", "rollouts": 8}},
    "benchmarks": {"own": {"source": "toy", "split": "test"}},
    "report": {"select_on": "own"},
}


def expected_jobs(config: dict[str, Any]) -> Counter:
    """Jobs of a complete run from nothing: runs x chunks trainings, runs x checkpoints x
    benchmarks evaluations, one base-model evaluation per (model, benchmark), the report."""
    config = validate_config(config)
    runs = {name: resolve_run_settings(config, name) for name in config["runs"]}
    chunks = sum(len(s.checkpoint_steps) for s in runs.values())
    benches = config["benchmarks"].values()
    models = {s["model"] for s in runs.values()}
    expected = Counter(
        train_chunk=chunks,
        eval_checkpoint=chunks * len(benches),
        eval_base_model=len(models) * len(benches),
        eval_step0=len(runs) * len(benches),
        collapse=1,
        tables=1,
        figures=1,
        all=1,
    )
    if config["data"]["source"] == "toy" or any(b["source"] == "toy" for b in benches):
        expected["toy_data"] = 1
    if "toy" in models:
        expected["toy_model"] = 1
    hf = sum(b["source"] == "hf" for b in benches) + (config["data"]["source"] == "hf")
    if hf:
        expected["hf_problems"] = hf
    return expected


def planned_runs_and_benchmarks(jobs: list[tuple[str, list[str]]]) -> tuple[set, set]:
    """Runs that train and (run, benchmark) pairs evaluated, from the planned outputs."""
    runs = {o.split("/")[2] for rule, outs in jobs if rule == "train_chunk" for o in outs}
    benches = {
        o.rsplit("/", 1)[1].removesuffix(".json")
        for rule, outs in jobs
        if rule.startswith("eval")
        for o in outs
        if o.endswith(".json")
    }
    return runs, benches


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
    # The report writes exactly the paper's tables and figures.
    report = {o for rule, outs in jobs if rule in ("collapse", "tables", "figures") for o in outs}
    names = table_names(paper["report"])
    assert report == {"results/tables/collapse.csv"} | {
        f"results/tables/{t}.{ext}" for t in names for ext in TABLE_FORMATS
    } | {f"results/figures/{f}.png" for f in FIGURES}


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
