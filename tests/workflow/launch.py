"""Start Snakemake the way a user does, and read what a dry run plans.

Snakemake is started through the venv's own ``snakemake`` script, with a ``PATH`` that lacks
the venv and whose ``python`` fails (see :func:`user_path`): a rule that ran whatever
``python`` comes first on ``PATH`` would fail here, as it fails on a fresh machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from standins import install_wrong_python, path_without
from support import REPO, TINY_TOY, TINY_TRAINING

from mgrpo.config import validate_config
from mgrpo.settings import resolve_run_settings

VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"


def user_path(tmp: Path) -> str:
    """PATH of a fresh shell: no venv on it, and a ``python`` that fails if a rule uses it."""
    install_wrong_python(tmp)
    return f"{tmp}:{path_without(VENV_BIN)}"


def run(
    cwd: Path, *args: str, path: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake ARGS`` in ``cwd`` with ``PATH=path``."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = path
    proc = subprocess.run(
        [str(SNAKEMAKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def parse_plan(output: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.append((head.group(1), outputs.group(1).split(", ") if outputs else []))
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
