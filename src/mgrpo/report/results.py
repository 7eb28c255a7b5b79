"""Load evaluation summaries and training metrics into data frames, refusing bad input loudly.

A report built from a truncated or duplicated result would silently misstate the paper's
claims, so every problem is an error that names the file (and line) to look at.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from mgrpo.settings import RunSettings

EVAL_KEYS = ("run", "step", "benchmark")
METRICS_KEYS = ("run", "step")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fraction(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One level of nesting (``sampling``) becomes ``sampling_<key>`` columns."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}_{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


def _check_identity(record: Any, where: str, keys: tuple[str, ...]) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    if not isinstance(record["run"], str) or not record["run"]:
        raise ValueError(f"{where}: 'run' must be a non-empty string, got {record['run']!r}")
    if not _is_int(record["step"]) or record["step"] < 0:
        raise ValueError(f"{where}: 'step' must be an integer >= 0, got {record['step']!r}")


def _read_eval(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    _check_identity(record, str(path), (*EVAL_KEYS, "accuracy"))
    if not isinstance(record["benchmark"], str) or not record["benchmark"]:
        raise ValueError(f"{path}: 'benchmark' must be a non-empty string")
    for key in ("accuracy", "majority_accuracy"):
        if key in record and not _is_fraction(record[key]):
            raise ValueError(f"{path}: {key!r} must be a number in [0, 1], got {record[key]!r}")
    return {**_flatten(record), "path": str(path)}


def load_evals(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per evaluation JSON: run, step, benchmark, accuracy, ... and its ``path``.

    Two files for the same (run, step, benchmark) would make "the" accuracy ambiguous: error.
    """
    rows = [_read_eval(Path(p)) for p in paths]
    frame = pd.DataFrame.from_records(rows, columns=None if rows else [*EVAL_KEYS, "accuracy"])
    dup = frame[frame.duplicated(list(EVAL_KEYS), keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        same = dup[(dup[list(EVAL_KEYS)] == first[list(EVAL_KEYS)]).all(axis=1)]["path"]
        raise ValueError(
            f"duplicate evaluation of run {first['run']!r} step {first['step']} benchmark "
            f"{first['benchmark']!r}: {' and '.join(same)}"
        )
    return frame.sort_values(list(EVAL_KEYS), ignore_index=True)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from err
            _check_identity(record, where, METRICS_KEYS)
            rows.append({**record, "source": where})
    return rows


def load_metrics(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per training step (JSON line) across every chunk file, nulls as NaN.

    A step logged twice (overlapping chunk files) would double-count in the curves: error.
    """
    rows = [row for p in paths for row in _read_metrics(Path(p))]
    frame = pd.DataFrame.from_records(rows, columns=None if rows else [*METRICS_KEYS, "source"])
    dup = frame[frame.duplicated(list(METRICS_KEYS), keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        same = dup[(dup["run"] == first["run"]) & (dup["step"] == first["step"])]["source"]
        raise ValueError(
            f"duplicate metrics for run {first['run']!r} step {first['step']}: {' and '.join(same)}"
        )
    numeric = [c for c in frame.columns if c not in ("run", "method", "source")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame.sort_values(list(METRICS_KEYS), ignore_index=True)


def run_labels(runs: Mapping[str, RunSettings]) -> dict[str, str]:
    """Display name of each run, unique within the report, in the paper's style.

    The method label (``SRT``, ``M-GRPO+IQR``) when only one run has it; ``M-GRPO+IQR.G8``
    (Table 3) when runs differ in G only; the run's own name when even that is ambiguous.
    """
    method = {run: s.method.label for run, s in runs.items()}
    by_g = {run: f"{method[run]}.G{runs[run]['rollouts']}" for run in runs}
    labels = {}
    for run in runs:
        if list(method.values()).count(method[run]) == 1:
            labels[run] = method[run]
        elif list(by_g.values()).count(by_g[run]) == 1:
            labels[run] = by_g[run]
        else:
            labels[run] = run
    return labels
