"""The run layout: what every engine writes and evaluation, report and workflow read.

::

    results/runs/{run}/checkpoints/step{N}/
        policy/            Hugging Face directory of pi_q (what evaluation loads)
        momentum/          Hugging Face directory of pi_k (methods with momentum rollouts)
        ...                the engine's own resume state (local: trainer_state.pt)
        checkpoint.json    the manifest (CheckpointManifest), written last
    results/runs/{run}/metrics/to_step{N}.jsonl     one JSON line per step: METRICS_FIELDS
    results/runs/{run}/rollouts/to_step{N}.parquet  one row per rollout: ROLLOUT_COLUMNS

The columns and fields are defined here once; engines write through :func:`write_chunk_records`
and :func:`write_manifest`, which refuse a record with a missing or unknown field, so a new
column is added in this module or nowhere. A checkpoint directory is assembled under a temporary
name and renamed into place (:func:`mgrpo.io.atomic_path`), so a ``step{N}`` that exists is
complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS
from mgrpo.io import write_json, write_jsonl, write_parquet

if TYPE_CHECKING:
    import pandas as pd

POLICY_DIR = "policy"
MOMENTUM_DIR = "momentum"
MANIFEST = "checkpoint.json"


@dataclass(frozen=True)
class Column:
    dtype: str  # pandas dtype; a capitalised one (Float64) is nullable
    meaning: str


# One row per rollout (policy and momentum) of every step, in pool order per prompt.
ROLLOUT_COLUMNS: dict[str, Column] = {
    "run": Column("string", "run name"),
    "method": Column("string", "method label, e.g. M-GRPO+IQR"),
    "step": Column("int64", "the step (1-based) whose update scored this rollout"),
    "prompt_id": Column("string", "problem id"),
    "rollout": Column("int64", "position in the prompt's pool: M policy, then N momentum"),
    "source": Column("string", "policy (pi_q) or momentum (pi_k)"),
    "response": Column("string", "decoded response"),
    "answer": Column("string", "extracted final answer after merging equivalents; null = none"),
    "entropy": Column("float64", "trajectory entropy the IQR filter saw (mean over tokens)"),
    "self_certainty": Column("Float64", "trajectory self-certainty (Intuitor's reward); else null"),
    "kept": Column("bool", "survived the IQR entropy filter (always true without it)"),
    "trained": Column(
        "bool", "has a gradient: a kept policy rollout (any policy rollout if iqr_scope: vote)"
    ),
    "pseudo_label": Column("string", "majority vote over the pool's kept answers; null = none"),
    "reward": Column("Float64", "reward the loss used; null exactly where not trained"),
    "advantage": Column("Float64", "advantage the loss used; null exactly where not trained"),
    "ground_truth": Column("string", "the problem's answer (metrics only, except for GT-GRPO)"),
    "replica": Column(
        "Int64", "verl engine: rank of the vLLM replica that generated it; null: local engine"
    ),
}
ROLLOUT_DTYPES: dict[str, str] = {name: column.dtype for name, column in ROLLOUT_COLUMNS.items()}

# One JSON line per training step. Means are over the step's prompts or rollouts; null where
# nothing was measured (e.g. entropy_momentum without momentum rollouts).
METRICS_FIELDS: dict[str, str] = {
    "run": "run name",
    "method": "method label, e.g. M-GRPO+IQR",
    "step": "the step (1-based) this line describes",
    "lr": "learning rate of the step's update",
    "loss": "total loss: policy-gradient loss + kl_coef * KL (token mean over the batch)",
    "pg_loss": "clipped-surrogate policy-gradient loss",
    "kl": "low-variance KL to the frozen base model",
    "clip_frac": "fraction of trained tokens whose ratio was clipped",
    "grad_norm": "gradient norm before clipping",
    # Label-free signals (no ground truth): what the label-free collapse warning reads.
    **LABEL_FREE_SIGNALS,
    # Diagnostics that read the hidden labels; they never feed training.
    "label_accuracy": "fraction of pseudo-labels equal to the ground truth (prompts with both)",
    "label_rate": "fraction of prompts whose kept pool produced a pseudo-label",
    "policy_accuracy": "fraction of policy rollouts whose answer is the ground truth",
    "entropy_momentum": "mean trajectory entropy of the momentum rollouts",
    "trained_rollouts": "number of rollouts with a gradient",
    "step_time": "seconds for the whole step",
    "sample_time": "seconds spent sampling rollouts",
}


def _check_fields(record: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    known = set(known)
    missing, unknown = sorted(known - set(record)), sorted(set(record) - known)
    if missing or unknown:
        raise ValueError(
            f"{what} does not match mgrpo.run_layout: missing {missing}, unknown {unknown}"
        )


def check_metrics_line(line: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``line`` has exactly the fields of :data:`METRICS_FIELDS`."""
    _check_fields(line, METRICS_FIELDS, f"metrics line of step {line.get('step')!r}")


def rollout_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rollout records as a typed DataFrame in column order (nullable columns stay nullable)."""
    import pandas as pd

    records = list(records)
    for record in records:
        _check_fields(record, ROLLOUT_COLUMNS, "rollout record")
    frame = pd.DataFrame.from_records(records, columns=list(ROLLOUT_COLUMNS))
    return frame.astype(ROLLOUT_DTYPES)


def write_chunk_records(
    metrics_path: str | Path,
    metrics: list[dict[str, Any]],
    rollouts_path: str | Path,
    rollouts: pd.DataFrame,
) -> None:
    """Write a chunk's metrics (JSON lines) and rollouts (parquet), each atomically.

    ``rollouts`` must have exactly the :data:`ROLLOUT_COLUMNS` (e.g. from :func:`rollout_frame`
    or concatenated parts of it); the file gets their order and dtypes.
    """
    for line in metrics:
        check_metrics_line(line)
    if list(rollouts.columns) != list(ROLLOUT_COLUMNS):
        raise ValueError(
            f"rollout columns {list(rollouts.columns)} are not mgrpo.run_layout's "
            f"{list(ROLLOUT_COLUMNS)}"
        )
    write_parquet(rollouts_path, rollouts.astype(ROLLOUT_DTYPES))
    write_jsonl(metrics_path, metrics)


@dataclass(frozen=True)
class CheckpointManifest:
    """``checkpoint.json``: what a checkpoint is. Written last; its presence means complete."""

    run: str
    step: int
    engine: str  # which engine wrote it (its resume state is that engine's own)
    identity: str  # fingerprint of the run settings (mgrpo.settings.RunSettings.fingerprint)
    method: str  # method label


def write_manifest(checkpoint: str | Path, manifest: CheckpointManifest) -> None:
    write_json(Path(checkpoint) / MANIFEST, asdict(manifest))


def read_manifest(checkpoint: str | Path) -> CheckpointManifest | None:
    """The checkpoint's manifest, or None if ``checkpoint`` is not a (complete) checkpoint."""
    file = Path(checkpoint) / MANIFEST
    if not file.exists():
        return None
    values = json.loads(file.read_text())
    try:
        return CheckpointManifest(**values)
    except TypeError as err:
        raise ValueError(f"{file}: not a checkpoint manifest ({err})") from None


def require_manifest(
    checkpoint: str | Path, identity: str, *, engine: str | None = None, step: int | None = None
) -> CheckpointManifest:
    """The manifest of the checkpoint a chunk starts or resumes from, after checking that it is
    complete, of these run settings (``identity``) and, where given, of ``engine`` at ``step``."""
    manifest = read_manifest(checkpoint)
    if manifest is None:
        raise FileNotFoundError(f"{checkpoint}: not a complete checkpoint (no {MANIFEST})")
    if engine is not None and manifest.engine != engine:
        raise ValueError(
            f"{checkpoint}: written by the {manifest.engine!r} engine; the {engine} engine "
            "resumes only its own checkpoints"
        )
    if manifest.identity != identity:
        raise ValueError(
            f"{checkpoint}: written by run settings {manifest.identity}, these settings are "
            f"{identity}; a changed run must restart from step 0"
        )
    if step is not None and manifest.step != step:
        raise ValueError(f"{checkpoint}: checkpoint is at step {manifest.step}, not {step}")
    return manifest
