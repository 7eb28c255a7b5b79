"""Helpers shared by the test suites (importable as ``support``; see pytest's pythonpath)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mgrpo.engines import ChunkPaths
    from mgrpo.settings import RunSettings

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"

# Small enough to build in seconds; big enough that sampling is not degenerate.
TINY_TOY = {
    "data": {
        "toy": {
            "seed": 0,
            "splits": {"sft": 400, "train": 64, "test": 24, "hard": 16},
            "levels": {"sft": [1], "train": [1], "test": [1], "hard": [3]},
        }
    },
    "toy_model": {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "sft_steps": 30,
        "sft_batch_size": 16,
        "sft_lr": 0.01,
        "threads": 1,
    },
}


# Training settings of the tiny runs: a few steps of a few rollouts, seconds on one core.
TINY_TRAINING = {
    "rollouts": 4,
    "prompts_per_step": 2,
    "max_new_tokens": 12,
    "max_prompt_tokens": 64,
    "lr": 1e-3,
    "steps": 4,
    "chunk_steps": 2,
    "resume_every": 100,
    "micro_batch_size": 3,
    "device": "cpu",
    "answer_equivalence": "exact",
}


def tiny_config(name: str = "run", **training: Any) -> dict[str, Any]:
    """A full, validated config on the tiny toy task with one run, ``name``."""
    from mgrpo.config import validate_config

    return validate_config(
        {
            **TINY_TOY,
            "training": {**TINY_TRAINING, **training},
            "runs": {name: {}},
            "benchmarks": {"test": {"source": "toy", "split": "test"}},
        }
    )


def run_settings(name: str = "run", **training: Any) -> RunSettings:
    """The resolved settings of the tiny config's one run, ``name``."""
    from mgrpo.settings import resolve_run_settings

    return resolve_run_settings(tiny_config(name, **training), name)


def chunk(
    toy_dir: Path,
    settings: RunSettings,
    out: Path,
    start: int,
    end: int,
    init: Path,
    train_data: Path | None = None,
) -> ChunkPaths:
    """Train steps ``start+1..end`` of ``settings`` on the toy model into ``out``.

    Writes ``step{end}/``, ``metrics{end}.jsonl``, ``rollouts{end}.parquet`` and, while it runs,
    ``resume{end}/``; prompts from the toy train split unless ``train_data`` is given.
    """
    from mgrpo.engines import ChunkPaths
    from mgrpo.engines.local.trainer import train_chunk

    paths = ChunkPaths(
        base_model=toy_dir / "model",
        train_data=train_data or toy_dir / "data" / "train.parquet",
        init=init,
        checkpoint=out / f"step{end}",
        metrics=out / f"metrics{end}.jsonl",
        rollouts=out / f"rollouts{end}.parquet",
        resume=out / f"resume{end}",
    )
    train_chunk(settings, start, end, paths)
    return paths


def eval_spec(benchmark: dict[str, Any], **evaluation: Any) -> dict[str, Any]:
    """A benchmark's validated settings merged with the ``evaluation`` section, as the rule does."""
    from mgrpo.config import validate_config

    config = validate_config(
        {"runs": {"r": {}}, "benchmarks": {"b": benchmark}, "evaluation": evaluation}
    )
    return {**config["benchmarks"]["b"], **config["evaluation"]}


# ----------------------------------------------------------------------------- the workflow
REPORT_RULES = {"collapse", "tables", "figures", "all"}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The workflow's CLI on ``workdir`` (its ``config.yaml``), as a user would call it."""
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--cores", "2", *args,
    ]  # fmt: skip


def snakemake_env(*first_on_path: Path) -> dict[str, str]:
    """The environment a user's venv gives: its ``python`` on PATH, after ``first_on_path``."""
    path = [*map(str, first_on_path), str(Path(sys.executable).parent), os.environ["PATH"]]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow's CLI in ``workdir`` and wait for it."""
    command = snakemake_command(workdir, *args)
    proc = subprocess.run(command, env=snakemake_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(workdir: Path) -> list[tuple[str, list[str], str]]:
    """(rule, outputs, shell command) of every job a dry run would execute."""
    out = snakemake(workdir, "--dry-run", "--printshellcmds").stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
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


def planned(workdir: Path) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run would execute."""
    return [(rule, outputs) for rule, outputs, _ in planned_jobs(workdir)]


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


@contextlib.contextmanager
def fails_after(seconds: int) -> Iterator[None]:
    """Turn a hang (the bug a test looks for) into a failure: SIGALRM in the main thread."""

    def hung(signum: int, frame: object) -> None:
        raise AssertionError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
