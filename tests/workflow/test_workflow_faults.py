"""What the workflow wires together, and faults it must survive: copies, touches, two users.

All tests but the first reuse the session's finished tiny run (``finished_run``) or a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from launch import (
    REPORT_RULES,
    SNAKEMAKE,
    planned,
    planned_commands,
    rules_of,
    snakemake,
    snakemake_args,
    tiny_workflow_config,
    user_env,
    workdir_path,
    write_config,
)

RUNS, STEPS, BENCHMARKS = ("srt", "mgrpo_iqr"), (2, 4), ("test", "hard")
TRAINING_AND_EVALUATION = {"train_chunk", "eval_checkpoint", "eval_base_model"}


# ----------------------------------------------------------------------------- wiring
def test_jobs_read_the_checkpoints_they_should(tmp_path: Path) -> None:
    """Eval of step N loads checkpoints/stepN/policy; chunk k starts from chunk k-1's checkpoint."""
    write_config(tmp_path, tiny_workflow_config())
    jobs = planned_commands(tmp_path)
    evals = [(outputs[0], command) for rule, outputs, command in jobs if rule == "eval_checkpoint"]
    assert len(evals) == len(RUNS) * len(STEPS) * len(BENCHMARKS)
    for summary, command in evals:
        run, step = re.match(r"results/eval/(\w+)/step(\d+)/", summary).groups()
        assert f" --model results/runs/{run}/checkpoints/step{step}/policy " in command
    trains = [(outputs[0], command) for rule, outputs, command in jobs if rule == "train_chunk"]
    assert len(trains) == len(RUNS) * len(STEPS)
    for checkpoint, command in trains:
        run, end = re.match(r"results/runs/(\w+)/checkpoints/step(\d+)$", checkpoint).groups()
        start = int(end) - 2
        init = "results/models/toy" if start == 0 else f"results/runs/{run}/checkpoints/step{start}"
        assert f" --start {start} --end {end} --init {init} " in command
        assert " --base-model results/models/toy " in command  # the KL anchor of every chunk


def test_the_report_reads_every_evaluation_and_every_chunks_metrics(tmp_path: Path) -> None:
    """Tables and figures are built from all of step 0 and each chunk end on every benchmark,
    and from every chunk's metrics (Figures 2, 4 and 5 plot whole runs, not their last chunk)."""
    write_config(tmp_path, tiny_workflow_config())
    commands = {rule: command for rule, _, command in planned_commands(tmp_path)}
    evals = {
        f"results/eval/{run}/step{step}/{bench}.json"
        for run in RUNS
        for step in (0, *STEPS)
        for bench in BENCHMARKS
    }
    metrics = {f"results/runs/{run}/metrics/to_step{step}.jsonl" for run in RUNS for step in STEPS}

    def listed(command: str, option: str) -> set[str]:
        (files,) = re.findall(rf" {option} (.*?) --", command)
        return set(files.split())

    for rule in ("collapse", "tables", "figures"):
        assert listed(commands[rule], "--evals") == evals, rule
    assert listed(commands["figures"], "--metrics") == metrics


@pytest.mark.slow
def test_every_evaluation_records_the_model_it_loaded(finished_run: Path) -> None:
    for run in RUNS:
        for bench in BENCHMARKS:
            step0 = json.loads(
                (finished_run / f"results/eval/{run}/step0/{bench}.json").read_text()
            )
            assert (step0["run"], step0["step"], step0["model"]) == (run, 0, "results/models/toy")
            for step in STEPS:
                path = finished_run / f"results/eval/{run}/step{step}/{bench}.json"
                summary = json.loads(path.read_text())
                assert summary["model"] == f"results/runs/{run}/checkpoints/step{step}/policy"


@pytest.mark.slow
@pytest.mark.parametrize("change", [{"seed": 1}, {"method": "gt_grpo"}], ids=["seed", "method"])
def test_changing_a_runs_identity_retrains_and_reevaluates_it_alone(
    run_copy: Path, change: dict
) -> None:
    config = tiny_workflow_config()
    config["runs"]["srt"].update(change)
    write_config(run_copy, config)
    jobs = planned(run_copy)
    expected = {"train_chunk": len(STEPS), "eval_checkpoint": len(STEPS) * len(BENCHMARKS)}
    assert rules_of(jobs) == Counter(expected | dict.fromkeys(REPORT_RULES, 1))
    redone = [o for rule, outputs in jobs if rule in expected for o in outputs]
    assert all("/srt/" in o for o in redone)


# ----------------------------------------------------------------------------- copies and touches
def upstream_newest(workdir: Path) -> None:
    """New modification times on every file, each input newer than what was made from it.

    The worst order a copy (cp -r, rsync without -t, a cluster file system) can leave behind.
    """
    order = ["data", "models", "runs", "eval/base", "eval", "tables", "figures", ""]  # "": logs

    def age(path: Path) -> float:
        name = path.relative_to(workdir / "results").as_posix()
        stage = next(i for i, prefix in enumerate(order) if name.startswith(prefix))
        step = re.search(r"step(\d+)", name)
        return 1000.0 * stage + (int(step.group(1)) if step else 0)

    now = time.time()
    for path in (workdir / "results").rglob("*"):
        os.utime(path, (now - age(path), now - age(path)), follow_symlinks=False)


@pytest.mark.slow
def test_touching_every_run_file_plans_nothing(run_copy: Path) -> None:
    later = time.time() + 60
    for path in [run_copy / "results/runs", *(run_copy / "results/runs").rglob("*")]:
        os.utime(path, (later, later))
    assert planned(run_copy) == []


@pytest.mark.slow
def test_a_copy_with_new_times_plans_nothing(finished_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(finished_run), str(copy)], check=True)  # times not kept
    assert planned(copy) == []
    upstream_newest(copy)
    assert planned(copy) == []


@pytest.mark.slow
def test_results_copied_without_snakemake_metadata_train_and_evaluate_nothing(
    finished_run: Path, tmp_path: Path
) -> None:
    """E.g. `rsync -r results/` into a fresh checkout: no .snakemake/, only modification times.

    Modification times are then all Snakemake has: it may redo the report and step 0's copy,
    and rebuild the toy model from an SFT file that looks newer (deterministic, and on purpose
    never a reason to retrain: see the next test), but it must not retrain a run or re-evaluate.
    """
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.yaml").write_bytes((finished_run / "config.yaml").read_bytes())
    subprocess.run(["cp", "-r", str(finished_run / "results"), str(copy)], check=True)
    upstream_newest(copy)
    assert not set(rules_of(planned(copy))) & TRAINING_AND_EVALUATION


@pytest.mark.slow
def test_new_toy_data_rebuilds_the_toy_model(run_copy: Path) -> None:
    """Why the toy model's SFT input is not ancient(): Snakemake would then skip the rebuild."""
    config = tiny_workflow_config()
    config["data"]["toy"]["seed"] = 1
    write_config(run_copy, config)
    assert {"toy_data", "toy_model"} <= set(rules_of(planned(run_copy)))


# ----------------------------------------------------------------------------- two at once
def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


# The first invocation's `mgrpo eval` job holds here (before it writes anything) until released.
HOLD = """\
import os, sys, time
if sys.orig_argv[1:4] == ["-m", "mgrpo", "eval"]:
    open(os.environ["HOLD_STARTED"], "w").close()
    while not os.path.exists(os.environ["HOLD_RELEASE"]):
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_a_second_invocation_is_refused_by_the_lock(run_copy: Path, tmp_path: Path) -> None:
    """While one `snakemake` runs a job, another in the same directory is refused and changes
    nothing; the first then finishes as if alone."""
    missing = run_copy / "results/eval/srt/step2/hard.json"
    missing.unlink()
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text(HOLD)  # on PYTHONPATH: every python runs it first
    started, release = hold / "started", hold / "release"
    env = user_env(
        workdir_path(run_copy),
        PYTHONPATH=str(hold),
        HOLD_STARTED=str(started),
        HOLD_RELEASE=str(release),
    )
    target = str(missing.relative_to(run_copy))  # that one evaluation
    first = subprocess.Popen(
        [str(SNAKEMAKE), *snakemake_args(run_copy, target)],
        cwd=run_copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not started.exists():
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first invocation never started its job"
            time.sleep(0.05)
        before = file_hashes(run_copy / "results")
        second = snakemake(run_copy, check=False)
        assert second.returncode != 0
        assert "LockException" in second.stdout + second.stderr
        assert file_hashes(run_copy / "results") == before
        release.touch()
        output, _ = first.communicate(timeout=300)
        assert first.returncode == 0, output
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    summary = json.loads(missing.read_text())
    assert (summary["run"], summary["step"], summary["benchmark"]) == ("srt", 2, "hard")
    assert not list(run_copy.rglob(".*.tmp"))
    assert set(rules_of(planned(run_copy))) <= REPORT_RULES  # only the report is left to do
