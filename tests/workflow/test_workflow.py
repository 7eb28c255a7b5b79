"""The Snakemake workflow: DAG shape, a reduced full run, and what a change makes it plan."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from support import REPO, TINY_TOY, TINY_TRAINING

from mgrpo.config import load_config
from mgrpo.settings import resolve_run_settings

SNAKEFILE = REPO / "workflow" / "Snakefile"
REPORT_RULES = {"collapse", "tables", "figures", "all"}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow's CLI in ``workdir`` with the environment a user's venv would give."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--cores", "2", *args,
    ]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned(workdir: Path) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run would execute."""
    out = snakemake(workdir, "--dry-run").stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.append((head.group(1), outputs.group(1).split(", ") if outputs else []))
    return jobs


def rules_of(jobs: list[tuple[str, list[str]]]) -> Counter:
    return Counter(rule for rule, _ in jobs)


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def tiny_workflow_config() -> dict:
    return {
        **TINY_TOY,
        "training": {
            **TINY_TRAINING,
            "schedule_steps": 8,  # fixed LR horizon: raising `steps` later appends chunks
            "micro_batch_size": 8,
        },
        "runs": {"srt": {"method": "srt"}, "mgrpo_iqr": {"method": "mgrpo", "iqr": True}},
        "benchmarks": {
            "test": {"source": "toy", "split": "test", "max_new_tokens": 12},
            "hard": {"source": "toy", "split": "hard", "max_new_tokens": 12},
        },
        "report": {"select_on": "test"},
    }


# ----------------------------------------------------------------------------- no execution
def test_workflow_parsing_does_not_import_torch() -> None:
    # Every SLURM job re-parses the Snakefile; importing torch there would cost seconds each.
    code = (
        "import sys, mgrpo.config, mgrpo.settings, mgrpo.engines, mgrpo.report\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("config_name", ["config.yaml", "paper.yaml"])
def test_dry_run_dag_shape(tmp_path: Path, config_name: str) -> None:
    config = load_config(REPO / "config" / config_name)
    shutil.copy(REPO / "config" / config_name, tmp_path / "config.yaml")
    runs = {name: resolve_run_settings(config, name) for name in config["runs"]}
    chunks = sum(len(s.checkpoint_steps) for s in runs.values())
    benches = len(config["benchmarks"])
    toy = config["training"]["model"] == "toy"
    models = {s["model"] for s in runs.values()}
    expected = {
        "train_chunk": chunks,
        "eval_checkpoint": chunks * benches,
        "eval_base_model": len(models) * benches,
        "eval_step0": len(runs) * benches,
        "collapse": 1,
        "tables": 1,
        "figures": 1,
        "all": 1,
    }
    if toy:
        expected |= {"toy_data": 1, "toy_model": 1}
    hf = [b for b, spec in config["benchmarks"].items() if spec["source"] == "hf"]
    hf += ["train"] if config["data"]["source"] == "hf" else []
    if hf:
        expected["hf_problems"] = len(hf)
    assert rules_of(planned(tmp_path)) == Counter(expected)


def test_invalid_config_names_the_key(tmp_path: Path) -> None:
    config = tiny_workflow_config()
    config["training"]["lr"] = -1
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "config key 'training.lr'" in proc.stdout + proc.stderr


def test_chunk_length_must_divide_steps(tmp_path: Path) -> None:
    config = tiny_workflow_config()
    config["runs"]["srt"]["chunk_steps"] = 3
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "config key 'runs.srt.chunk_steps'" in proc.stdout + proc.stderr


def test_lint_and_format_are_clean(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config.yaml")
    lint = snakemake(tmp_path, "--lint", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", str(REPO / "workflow"), str(REPO / "rules")],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# ------------------------------------------------------------------ a reduced full run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workflow run to completion once; tests copy it before changing anything."""
    workdir = tmp_path_factory.mktemp("workflow") / "done"
    write_config(workdir, tiny_workflow_config())
    snakemake(workdir)
    return workdir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, symlinks=True)  # copy2 keeps modification times
    return copy


@pytest.mark.slow
def test_full_run_writes_every_output(finished_run: Path) -> None:
    results = finished_run / "results"
    for run in ("srt", "mgrpo_iqr"):
        for step in (0, 2, 4):
            for bench in ("test", "hard"):
                summary = yaml.safe_load(
                    (results / f"eval/{run}/step{step}/{bench}.json").read_text()
                )
                assert (summary["run"], summary["step"], summary["benchmark"]) == (run, step, bench)
                assert 0.0 <= summary["accuracy"] <= 1.0
                assert summary["problems"] == {"test": 24, "hard": 16}[bench]
        assert (results / f"runs/{run}/rollouts/to_step4.parquet").exists()
    assert (results / "runs/mgrpo_iqr/checkpoints/step4/momentum/model.safetensors").exists()
    assert not (results / "runs/srt/checkpoints/step4/momentum").exists()
    assert not list(results.glob("runs/*/resume/*"))
    for ext in ("md", "csv", "tex"):
        assert (results / f"tables/runs.{ext}").stat().st_size > 0
    for table in ("label_free", "seeds"):
        for ext in ("md", "csv"):
            assert (results / f"tables/{table}.{ext}").stat().st_size > 0
    collapse = (results / "tables/collapse.csv").read_text().splitlines()[0].split(",")
    assert {"collapse_step", "warning_step", "choice_step", "choice_accuracy"} <= set(collapse)
    figures = ("fig1_accuracy", "fig2_entropy", "fig4_reward_accuracy", "fig5_collapse",
               "label_free_signals", "label_free_runs")  # fmt: skip
    for fig in figures:
        assert (results / f"figures/{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_complete_run_plans_nothing(finished_run: Path) -> None:
    proc = snakemake(finished_run, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_deleting_one_eval_plans_exactly_that_eval(run_copy: Path) -> None:
    (run_copy / "results/eval/srt/step2/hard.json").unlink()
    jobs = planned(run_copy)
    assert rules_of(jobs) == Counter({"eval_checkpoint": 1} | dict.fromkeys(REPORT_RULES, 1))
    (_, outputs), *_ = [j for j in jobs if j[0] == "eval_checkpoint"]
    assert "results/eval/srt/step2/hard.json" in outputs


@pytest.mark.slow
def test_adding_a_benchmark_plans_only_its_evals(run_copy: Path) -> None:
    config = tiny_workflow_config()
    config["benchmarks"]["test_k2"] = {"source": "toy", "split": "test", "samples": 2}
    write_config(run_copy, config)
    jobs = planned(run_copy)
    # 2 runs x 2 checkpoints, the base model once, step 0 of each run; then the report.
    expected = {"eval_checkpoint": 4, "eval_base_model": 1, "eval_step0": 2}
    assert rules_of(jobs) == Counter(expected | dict.fromkeys(REPORT_RULES, 1))
    eval_outputs = [o for rule, outs in jobs if rule.startswith("eval") for o in outs]
    assert all("test_k2" in o for o in eval_outputs)


@pytest.mark.slow
def test_raising_steps_plans_only_new_chunks_and_their_evals(run_copy: Path) -> None:
    config = tiny_workflow_config()
    config["training"]["steps"] = 6
    write_config(run_copy, config)
    jobs = planned(run_copy)
    expected = {"train_chunk": 2, "eval_checkpoint": 4}
    assert rules_of(jobs) == Counter(expected | dict.fromkeys(REPORT_RULES, 1))
    new = [o for rule, outs in jobs if rule in expected for o in outs]
    assert all("step6" in o for o in new)
