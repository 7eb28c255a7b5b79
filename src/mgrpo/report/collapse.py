"""The automatic collapse detector: replaces the paper's hand-picked "best checkpoint".

The paper picks SRT_Best "manually ... before collapse". Here the best checkpoint and the
collapse point follow from fixed definitions, so every Best row is reproducible:

* best: the highest validation accuracy; ties go to the earliest step (the first time the
  run got there, before any later instability);
* final: the last evaluated step;
* collapse step: the first step after the best one from which accuracy stays below
  ``best - margin`` at every later evaluated step, the final one included. A dip that
  recovers, or a drop within the margin, is not a collapse.

The collapse table also carries the label-free detector's verdict (:mod:`.label_free`) beside
this one: its warning step and the checkpoint it would keep without labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mgrpo.report.label_free import LabelFreeRule, warning_columns

if TYPE_CHECKING:
    import pandas as pd

    from mgrpo.settings import RunSettings

COLLAPSE_COLUMNS = (
    "run",
    "method",
    "benchmark",
    "best_step",
    "best_accuracy",
    "final_step",
    "final_accuracy",
    "drop",
    "collapse_step",
    "collapsed",
    "warning_step",  # label-free: first step the rule fired (empty = no warning)
    "warning_signal",
    "choice_step",  # label-free checkpoint choice
    "choice_accuracy",
)
STEP_COLUMNS = ("best_step", "final_step", "collapse_step", "warning_step", "choice_step")


@dataclass(frozen=True)
class Collapse:
    """What the detector concluded about one run's accuracy curve."""

    best_step: int
    best_accuracy: float
    final_step: int
    final_accuracy: float
    drop: float  # best - final, >= 0
    collapse_step: int | None
    collapsed: bool


def _sorted_curve(steps: Sequence[int], accuracies: Sequence[float]) -> list[tuple[int, float]]:
    if len(steps) != len(accuracies):
        raise ValueError(f"{len(steps)} steps but {len(accuracies)} accuracies")
    if not steps:
        raise ValueError("no evaluations: cannot detect a collapse on an empty curve")
    if len(set(steps)) != len(steps):
        raise ValueError(f"duplicate steps in {sorted(steps)}")
    if not all(math.isfinite(a) for a in accuracies):
        raise ValueError(f"non-finite accuracy in {list(accuracies)}")
    return sorted(zip((int(s) for s in steps), (float(a) for a in accuracies), strict=True))


def detect_collapse(steps: Sequence[int], accuracies: Sequence[float], margin: float) -> Collapse:
    """Best, final and collapse point of one accuracy curve (steps in any order)."""
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    curve = _sorted_curve(steps, accuracies)
    best_step, best_accuracy = max(curve, key=lambda point: (point[1], -point[0]))
    final_step, final_accuracy = curve[-1]
    threshold = best_accuracy - margin
    collapse_step = None
    for step, accuracy in reversed(curve):  # the longest tail that stays below the threshold
        if accuracy >= threshold:
            break
        collapse_step = step
    return Collapse(
        best_step=best_step,
        best_accuracy=best_accuracy,
        final_step=final_step,
        final_accuracy=final_accuracy,
        drop=best_accuracy - final_accuracy,
        collapse_step=collapse_step,
        collapsed=collapse_step is not None,
    )


def collapse_table(
    evals_df: pd.DataFrame,
    metrics_df: pd.DataFrame,
    runs: Mapping[str, RunSettings],
    select_on: str,
    margin: float,
    rule: LabelFreeRule,
) -> pd.DataFrame:
    """One row per run (config order): the detectors' verdicts on the ``select_on`` benchmark.

    The labelled verdict reads the accuracy curve, the label-free one the run's step metrics
    only. This table is the single source of each run's best step: tables and figures read it.
    A run with no evaluation on ``select_on`` yet (a partial ``results/``) keeps its row with
    empty steps and accuracies, so the report can say which runs are missing; a run with
    metrics but no evaluation still gets its label-free warning step.
    """
    import pandas as pd

    rows = []
    for run, settings in runs.items():
        row = {"run": run, "method": settings.method.label, "benchmark": select_on}
        curve = evals_df[(evals_df["run"] == run) & (evals_df["benchmark"] == select_on)]
        metrics = metrics_df[metrics_df["run"] == run]
        labelled = (
            {"collapsed": False}  # not evaluated yet: no verdict
            if curve.empty
            else asdict(detect_collapse(curve["step"].tolist(), curve["accuracy"].tolist(), margin))
        )
        rows.append({**row, **labelled, **warning_columns(curve, metrics, rule)})
    frame = pd.DataFrame.from_records(rows, columns=list(COLLAPSE_COLUMNS))
    for column in STEP_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    frame["collapsed"] = frame["collapsed"].astype(bool)
    return frame


def read_collapse(path: str | Path) -> pd.DataFrame:
    """Read back the table :func:`collapse_table` wrote, so tables and figures agree with it."""
    import pandas as pd

    frame = pd.read_csv(
        path,
        dtype={"run": str, "warning_signal": str, **dict.fromkeys(STEP_COLUMNS, "Int64")},
    )
    missing = [c for c in COLLAPSE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a collapse table, missing column(s) {missing}")
    twice = sorted(set(frame["run"][frame["run"].duplicated()]))
    if twice:
        raise ValueError(f"{path}: run(s) listed twice: {twice}")
    return frame
