"""Start Snakemake the way a user does, and read what a dry run plans.

Snakemake is started through the venv's own ``snakemake`` script, with a ``PATH`` that lacks
the venv and whose ``python`` fails (see :func:`user_path`): a rule that ran whatever
``python`` comes first on ``PATH`` would fail here, as it fails on a fresh machine.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from standins import install_wrong_python, path_without
from support import REPO, TINY_TOY, TINY_TRAINING

from mgrpo.config import validate_config
from mgrpo.settings import resolve_run_settings

VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"
SNAKEFILE = REPO / "workflow" / "Snakefile"
REPORT_RULES = {"collapse", "tables", "figures", "all"}


def user_path(tmp: Path) -> str:
    """PATH of a fresh shell: no venv on it, and a ``python`` that fails if a rule uses it."""
    install_wrong_python(tmp)
    return f"{tmp}:{path_without(VENV_BIN)}"


def user_env(path: str, **extra: str) -> dict[str, str]:
    """This process's environment as a user's shell has it: no venv, ``PATH=path``."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    return {**env, "PATH": path, **extra}


def run(
    cwd: Path, *args: str, path: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake ARGS`` in ``cwd`` with ``PATH=path``."""
    proc = subprocess.run(
        [str(SNAKEMAKE), *args],
        cwd=cwd,
        env=user_env(path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def parse_plan(output: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run lists."""
    return [(rule, outputs) for rule, outputs, _ in parse_plan_commands(output)]


def parse_plan_commands(output: str) -> list[tuple[str, list[str], str]]:
    """(rule, outputs, shell command) of every job a dry run with --printshellcmds lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            command = re.search(r"^Shell command: (.*)$", block, re.M)
            jobs.append(
                (
                    head.group(1),
                    outputs.group(1).split(", ") if outputs else [],
                    command.group(1) if command else "",
                )
            )
    return jobs


def rules_of(jobs: list[tuple[str, list[str]]]) -> Counter:
    return Counter(rule for rule, _ in jobs)


# A user's own config: the tests write it and check that it alone is planned.
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


def fresh_checkout(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored ones)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        src, dst = REPO / name, dest / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(src.readlink())
        else:
            shutil.copy2(src, dst)
    return dest


# ----------------------------------------------------------------------------- the tiny workflow
def snakemake_args(workdir: Path, *args: str) -> list[str]:
    """Arguments of ``snakemake`` on ``workdir/config.yaml`` with 2 cores."""
    return [
        "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args,
    ]  # fmt: skip


def workdir_path(workdir: Path) -> str:
    """The user PATH of runs in ``workdir`` (its wrong ``python`` lives beside it)."""
    return user_path(workdir.parent / f"{workdir.name}-bin")


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake`` on ``workdir/config.yaml``, 2 cores, without the venv on PATH."""
    return run(workdir, *snakemake_args(workdir, *args), path=workdir_path(workdir), check=check)


def planned(workdir: Path, *targets: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run would execute."""
    return parse_plan(snakemake(workdir, "--dry-run", *targets).stdout)


def planned_commands(workdir: Path) -> list[tuple[str, list[str], str]]:
    """(rule, outputs, shell command) of every job a dry run would execute."""
    return parse_plan_commands(snakemake(workdir, "--dry-run", "--printshellcmds").stdout)


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def tiny_workflow_config() -> dict:
    """A new config each call: tests edit nested keys, which must not reach the next test."""
    return copy.deepcopy(
        {
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
    )
