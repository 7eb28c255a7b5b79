"""The Snakemake workflow: DAG shape, a reduced full run, and what a change makes it plan.

Every run starts the venv's ``snakemake`` through its path with a PATH that lacks the venv and
whose ``python`` fails, as on a fresh machine (launch.py): rules must find their interpreter.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from launch import (
    REPORT_RULES,
    SNAKEMAKE,
    planned,
    rules_of,
    snakemake,
    snakemake_args,
    tiny_workflow_config,
    user_env,
    workdir_path,
    write_config,
)
from support import REPO, as_float32, tensorboard_scalars

from mgrpo.config import load_config
from mgrpo.io import read_jsonl
from mgrpo.settings import resolve_run_settings
from mgrpo.tracking import EVAL_EVENTS, TRAIN_EVENTS, tracked_metrics


# ----------------------------------------------------------------------------- no execution
def test_workflow_parsing_does_not_import_torch() -> None:
    # Every SLURM job re-parses the Snakefile; importing torch there would cost seconds each.
    code = (
        "import sys, mgrpo.config, mgrpo.settings, mgrpo.engines, mgrpo.report\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


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
# The finished tiny run and its copies are session fixtures (conftest.py).


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
def test_every_run_has_training_and_evaluation_curves(finished_run: Path) -> None:
    for run in ("srt", "mgrpo_iqr"):
        tensorboard = finished_run / f"results/runs/{run}/tensorboard"
        lines = [
            line
            for step in (2, 4)
            for line in read_jsonl(finished_run / f"results/runs/{run}/metrics/to_step{step}.jsonl")
        ]
        reward = [(line["step"], as_float32(line["reward_mean"])) for line in lines]
        train = tensorboard_scalars(tensorboard / TRAIN_EVENTS)
        assert train["train/reward_mean"] == reward
        assert set(train) == set(tracked_metrics(lines[0]))
        evals = tensorboard_scalars(tensorboard / EVAL_EVENTS)
        for bench in ("test", "hard"):
            accuracy = [
                json.loads((finished_run / f"results/eval/{run}/step{s}/{bench}.json").read_text())
                for s in (0, 2, 4)
            ]
            expected = [(a["step"], as_float32(a["accuracy"])) for a in accuracy]
            assert evals[f"eval/{bench}/accuracy"] == expected


@pytest.mark.slow
def test_long_jobs_log_readable_progress(finished_run: Path) -> None:
    logs = finished_run / "results/logs"
    for log in ("runs/srt/train_to_step2.log", "eval/srt/step2/test.log", "models/toy.log"):
        text = (logs / log).read_text()
        assert "\r" not in text, f"{log}: a progress bar redrawn with carriage returns"
        final = [line for line in text.splitlines() if "mgrpo.progress" in line][-1]
        assert re.search(r": (\d+)/\1 \w+ \(100%\) elapsed [\d:]+, ETA [\d:]+, ", final), final


@pytest.mark.slow
def test_html_report_bundles_every_table_and_figure(run_copy: Path) -> None:
    snakemake(run_copy, "--report", "results/report.html")
    html = (run_copy / "results/report.html").read_text()
    start = html.rindex("var results = ") + len("var results = ")  # the embedded results
    bundled, _ = json.JSONDecoder().raw_decode(html, start)
    made = sorted(
        path.relative_to(run_copy).as_posix()
        for folder in ("results/tables", "results/figures")
        for path in (run_copy / folder).iterdir()
    )
    assert sorted(bundled) == made
    fingerprints = [
        resolve_run_settings(load_config(run_copy / "config.yaml"), run).fingerprint
        for run in ("srt", "mgrpo_iqr")
    ]
    for path, entry in bundled.items():
        content = base64.b64decode(entry["data_uri"].partition(";base64,")[2])
        assert content == (run_copy / path).read_bytes(), path
        caption = entry["caption"]
        # What it shows, and which config and run settings produced it.
        assert len(caption) > 300, (path, caption)
        assert "config.yaml" in caption and all(f in caption for f in fingerprints), caption
    assert "Figure 5 analogue" in bundled["results/figures/fig5_collapse.png"]["caption"]
    for path in ("results/tables/label_free.md", "results/tables/label_free.csv"):
        assert "label-free collapse warning beside" in bundled[path]["caption"]
    assert "over its seeds" in bundled["results/tables/seeds.md"]["caption"]
    assert "every run" in bundled["results/figures/label_free_runs.png"]["caption"]
    # The start page describes the runs and shows the configuration they came from.
    start = html.index("var workflow_desc = ") + len("var workflow_desc = ")
    description, _ = json.JSONDecoder().raw_decode(html, start)
    assert "mgrpo_iqr" in description and "configuration as given" in description
    assert "resume_every" in description


@pytest.mark.slow
def test_logging_settings_rerun_nothing(run_copy: Path) -> None:
    config = tiny_workflow_config()
    config["logging"] = {"tensorboard": False, "trackers": ["wandb"], "progress_seconds": 60}
    write_config(run_copy, config)
    proc = snakemake(run_copy, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_training_and_evaluation_jobs_ran_on_one_job_server(finished_run: Path) -> None:
    """mgrpo.jobserver: one server per local workflow run, every train and eval job forked from
    it and finished there, and the server gone once Snakemake has ended."""
    log = (finished_run / "results/logs/job_server.log").read_text().splitlines()
    ready = [re.match(r"job server (\d+): ready on (.+)$", line) for line in log]
    servers = [(int(m[1]), Path(m[2])) for m in ready if m]
    assert len(servers) == 1, log
    (pid, socket), *_ = servers
    served = Counter(line.split(": ")[1] for line in log if re.match(r"job \d+: mgrpo ", line))
    logs = finished_run / "results/logs"
    trained = list((logs / "runs").rglob("train_to_step*.log"))
    evaluated = [p for p in (logs / "eval").rglob("*.log") if p.parent.name != "step0"]
    assert served == Counter({"mgrpo train": len(trained), "mgrpo eval": len(evaluated)})
    assert sum(" exit 0 after " in line for line in log) == len(trained) + len(evaluated)
    assert not Path(f"/proc/{pid}").exists(), "the job server outlived the workflow"
    assert not socket.parent.exists(), "the workflow's end did not stop its job server"


@pytest.mark.slow
def test_the_job_server_can_be_turned_off(run_copy: Path) -> None:
    (run_copy / "results/eval/srt/step2/hard.json").unlink()
    log = run_copy / "results/logs/job_server.log"
    before = log.read_text()
    env = user_env(workdir_path(run_copy), MGRPO_NO_JOB_SERVER="1")
    done = subprocess.run(
        [str(SNAKEMAKE), *snakemake_args(run_copy)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (run_copy / "results/eval/srt/step2/hard.json").exists()
    assert log.read_text() == before  # no server started, the evaluation ran alone


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


@pytest.mark.slow
def test_naming_report_files_builds_them_from_the_results_present(run_copy: Path) -> None:
    # srt's last checkpoint was never evaluated (e.g. its job failed under --keep-going).
    for path in (run_copy / "results/eval/srt/step4").glob("*.json"):
        path.unlink()
    targets = ["results/tables/runs.md", "results/figures/fig1_accuracy.png"]
    assert rules_of(planned(run_copy, *targets)) == Counter(collapse=1, tables=1, figures=1)
    snakemake(run_copy, *targets)
    table = (run_copy / "results/tables/runs.md").read_text()
    assert "`srt`: evaluated up to step 2 of 4 (in progress)" in table
    assert "| SRT_Final | `srt` |  |  |  |" in table
    # The default target still wants every evaluation, then the report again.
    expected = {"eval_checkpoint": 2} | dict.fromkeys(REPORT_RULES, 1)
    assert rules_of(planned(run_copy)) == Counter(expected)
