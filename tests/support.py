"""Helpers shared by the test suites (importable as ``support``; see pytest's pythonpath)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    Writes ``step{end}/``, ``metrics{end}.jsonl``, ``rollouts{end}.parquet``, ``tensorboard/``
    and, while it runs, ``resume{end}/``; prompts from the toy train split unless ``train_data``
    is given.
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
        tensorboard=out / "tensorboard",
    )
    train_chunk(settings, start, end, paths)
    return paths


def compose_chunk(settings: RunSettings, tmp_path: Path, start: int = 0, end: int = 50) -> Any:
    """The validated verl config of one chunk of ``settings`` (paths under ``tmp_path``)."""
    from mgrpo.engines.verl.config import chunk_config

    return chunk_config(
        settings,
        base_model="/models/base",
        train_file=tmp_path / "train.parquet",
        start=start,
        end=end,
        work_dir=tmp_path / "work",
        init_state=None if start == 0 else tmp_path / "init",
    )


def eval_spec(benchmark: dict[str, Any], **evaluation: Any) -> dict[str, Any]:
    """A benchmark's validated settings merged with the ``evaluation`` section, as the rule does."""
    from mgrpo.config import validate_config

    config = validate_config(
        {"runs": {"r": {}}, "benchmarks": {"b": benchmark}, "evaluation": evaluation}
    )
    return {**config["benchmarks"]["b"], **config["evaluation"]}


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


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``directory`` as TensorBoard's own reader shows it: tag -> (step, value).

    ``EventAccumulator`` is the reader behind TensorBoard's Python data path: it reads the event
    files in name order and drops the points a restart (``purge_step``) superseded.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    reader.Reload()
    return {
        tag: [(event.step, event.value) for event in reader.Scalars(tag)]
        for tag in reader.Tags()["scalars"]
    }


def raw_scalar_counts(directory: Path) -> dict[tuple[str, int], int]:
    """How often each (tag, step) occurs in the event files themselves, whatever a reader purges.

    TensorBoard's Rust data server and third-party readers see exactly this.
    """
    from collections import Counter

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    counts: Counter = Counter()
    for path in sorted(Path(directory).rglob("*tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                counts[value.tag, event.step] += 1
    return dict(counts)


def as_float32(value: float) -> float:
    """``value`` as TensorBoard stores a scalar (float32), for exact comparisons."""
    import numpy as np

    return float(np.float32(value))
