"""A collapse warning that needs no labels, and how well it agrees with the labelled detector.

The labelled detector (:mod:`mgrpo.report.collapse`) reads validation accuracy, which a user of
self-supervised RL does not have. This one reads only the step signals every engine logs
(:data:`mgrpo.algorithm.signals.LABEL_FREE_SIGNALS`) and applies one explainable rule:

1. **Smooth.** Each watched signal becomes a trailing mean over ``window`` steps, so the value
   at step t uses steps t-window+1..t only (what a user sees online, nothing from the future).
2. **Baseline.** The run's own reference is the smoothed value at step ``baseline_step``: the
   first steps after the warm-up, before self-training has had time to feed on itself.
3. **Warn.** The warning step is the first step after ``baseline_step`` at which some watched
   signal has moved from its baseline by at least its threshold, in the direction the
   mechanism predicts (``report.label_free.thresholds``: a negative threshold warns on a fall,
   a positive one on a rise; changes are relative to the baseline value). Signals a run does
   not log (e.g. ``vote_agreement`` of single-policy methods) are skipped.
4. **Choose.** The label-free checkpoint is the last evaluated checkpoint at or before
   ``warning step - window`` (the smoothed curve lags the onset by about one window), the
   base model if there is none, and the final checkpoint when there is no warning.

Scoring compares, per run, the warning step with the labelled collapse step (lead = collapse
step - warning step, positive when the warning came first) and the accuracy of the label-free
choice with Best (needs labels) and Final (no choice at all).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS
from mgrpo.report import markdown_row

if TYPE_CHECKING:
    import pandas as pd

# Columns label_free.{md,csv} writes, one row per run.
LABEL_FREE_COLUMNS = (
    "run",
    "method",
    "finished",  # evaluated up to its last step: only these are scored
    "collapsed",
    "collapse_step",
    "warning_step",
    "warning_signal",
    "lead",
    "best_step",
    "best_accuracy",
    "final_accuracy",
    "choice_step",
    "choice_accuracy",
)


@dataclass(frozen=True)
class LabelFreeRule:
    """The detector's few parameters (``report.label_free`` in the config)."""

    window: int
    baseline_step: int
    thresholds: Mapping[str, float]  # signal -> relative change that warns (sign = direction)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"report.label_free.window: must be >= 1, got {self.window}")
        if self.baseline_step < self.window:
            raise ValueError(
                f"report.label_free.baseline_step: {self.baseline_step} is earlier than one "
                f"full smoothing window ({self.window} steps)"
            )
        if not self.thresholds:
            raise ValueError("report.label_free.thresholds: watch at least one signal")
        for name, threshold in self.thresholds.items():
            if name not in LABEL_FREE_SIGNALS:
                raise ValueError(
                    f"report.label_free.thresholds.{name}: not a label-free signal "
                    f"({sorted(LABEL_FREE_SIGNALS)})"
                )
            if not (math.isfinite(threshold) and threshold != 0):
                raise ValueError(
                    f"report.label_free.thresholds.{name}: must be a non-zero number, "
                    f"got {threshold}"
                )

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> LabelFreeRule:
        """The rule from a ``report`` section; keys it leaves out take the schema's defaults."""
        from mgrpo.config import load_schema

        keys = load_schema()["properties"]["report"]["properties"]["label_free"]["properties"]
        spec = {k: v["default"] for k, v in keys.items()} | dict(report.get("label_free") or {})
        unknown = sorted(set(spec) - set(keys))
        if unknown:
            raise ValueError(f"report.label_free: unknown key(s) {unknown}")
        return cls(int(spec["window"]), int(spec["baseline_step"]), dict(spec["thresholds"]))


@dataclass(frozen=True)
class Warning:
    """What the label-free detector concluded about one run."""

    step: int | None  # first step at which the rule fired; None = no warning
    signal: str | None  # the signal that fired first (ties: config order)
    choice_step: int | None  # the checkpoint a user without labels would keep (None: none yet)


def smoothed_signals(
    metrics: pd.DataFrame, rule: LabelFreeRule, signals: Iterable[str] | None = None
) -> pd.DataFrame:
    """Per step: each signal's trailing mean and its change relative to the baseline.

    ``metrics`` is one run's step metrics (``step`` plus signal columns, nulls as NaN);
    ``signals`` defaults to the rule's watched ones. Columns: ``step``, then ``<signal>``
    (smoothed) and ``<signal>_change`` for each of them the run logs. Steps before a full window
    are NaN.
    """
    import pandas as pd

    frame = metrics.sort_values("step").reset_index(drop=True)
    if frame["step"].duplicated().any():
        raise ValueError(
            f"metrics list step(s) twice: {sorted(frame['step'][frame['step'].duplicated()])}"
        )
    out = pd.DataFrame({"step": frame["step"].astype(int)})
    for name in rule.thresholds if signals is None else signals:
        if name not in frame.columns:
            continue
        values = pd.to_numeric(frame[name], errors="coerce")
        if values.isna().all():
            continue
        smooth = values.rolling(rule.window, min_periods=rule.window).mean()
        at_base = smooth[out["step"] == rule.baseline_step]
        base = float(at_base.iloc[0]) if len(at_base) else math.nan
        out[name] = smooth
        out[f"{name}_change"] = (smooth - base) / abs(base) if base else math.nan
    return out


def detect_warning(
    metrics: pd.DataFrame, checkpoint_steps: Sequence[int], rule: LabelFreeRule
) -> Warning:
    """The warning step and label-free checkpoint of one run (see the module docstring)."""
    curves = smoothed_signals(metrics, rule)
    after = curves[curves["step"] > rule.baseline_step]
    step = signal = None
    for row in after.itertuples(index=False):
        fired = [
            name
            for name, threshold in rule.thresholds.items()
            if f"{name}_change" in curves.columns
            and _crossed(getattr(row, f"{name}_change"), threshold)
        ]
        if fired:
            step, signal = int(row.step), fired[0]
            break
    choice = choose_checkpoint(checkpoint_steps, step, rule.window) if checkpoint_steps else None
    return Warning(step, signal, choice)


def _crossed(change: float, threshold: float) -> bool:
    if change is None or math.isnan(change):
        return False
    return change <= threshold if threshold < 0 else change >= threshold


def choose_checkpoint(checkpoint_steps: Sequence[int], warning_step: int | None, lag: int) -> int:
    """The last checkpoint at or before ``warning_step - lag``; the final one if no warning."""
    steps = sorted(set(int(s) for s in checkpoint_steps))
    if not steps:
        raise ValueError("no checkpoints to choose from")
    if warning_step is None:
        return steps[-1]
    before = [s for s in steps if s <= warning_step - lag]
    return before[-1] if before else steps[0]


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Score:
    """How the label-free warnings agree with the labelled collapse verdicts over many runs."""

    runs: int
    collapsed: int  # runs the labelled detector calls collapsed
    warned: int  # runs with a label-free warning
    true_positives: int  # warned and collapsed
    precision: float | None  # true positives / warned (None without any warning)
    recall: float | None  # true positives / collapsed (None without any collapse)
    median_lead: float | None  # collapse step - warning step over the true positives
    early: int  # true positives warned at or before the collapse step
    best_accuracy: float  # mean over runs: Best (needs labels)
    final_accuracy: float  # mean over runs: the last checkpoint
    choice_accuracy: float  # mean over runs: the label-free choice


def warning_columns(
    evals_curve: pd.DataFrame, metrics: pd.DataFrame, rule: LabelFreeRule
) -> dict[str, Any]:
    """The label-free columns of one run's collapse-table row.

    ``evals_curve`` is the run's (step, accuracy) on the select_on benchmark: its steps are the
    checkpoints a user could keep (step 0 = the base model). A run without metrics yet has no
    warning; one without evaluations yet has no checkpoint to choose (empty cells).
    """
    steps = [int(s) for s in evals_curve["step"]]
    accuracy = dict(zip(steps, (float(a) for a in evals_curve["accuracy"]), strict=True))
    warning = detect_warning(metrics, steps, rule)
    return {
        "warning_step": warning.step,
        "warning_signal": warning.signal,
        "choice_step": warning.choice_step,
        "choice_accuracy": accuracy.get(warning.choice_step, math.nan),
    }


def is_finished(final_step: int | None, steps: int | None) -> bool:
    """Whether a run is evaluated at its last step ``steps`` (without a length: at all)."""
    return final_step is not None and (steps is None or final_step == steps)


def label_free_table(
    collapse: pd.DataFrame, run_steps: Mapping[str, int | None] | None = None
) -> pd.DataFrame:
    """One row per run: the labelled verdict next to the label-free one (LABEL_FREE_COLUMNS).

    ``run_steps`` maps each run to its length: a run is ``finished`` once its last evaluated
    step is its length (without a length: once it has any evaluation). Only finished runs are
    scored; the others are a partial ``results/`` (in progress or not evaluated yet).
    """
    import pandas as pd

    frame = collapse.copy()
    missing = [c for c in LABEL_FREE_COLUMNS if c not in (*frame.columns, "lead", "finished")]
    if missing:
        raise ValueError(f"collapse table lacks the label-free column(s) {missing}")
    collapse_step = frame["collapse_step"].astype("Int64")
    warning_step = frame["warning_step"].astype("Int64")
    final_step = frame["final_step"].astype("Int64")
    steps = run_steps or {}
    frame["finished"] = [
        is_finished(None if pd.isna(last) else int(last), steps.get(run))
        for run, last in zip(frame["run"], final_step, strict=True)
    ]
    frame["lead"] = collapse_step - warning_step  # <NA> unless both exist
    frame["collapsed"] = frame["collapsed"].astype(bool)
    frame["collapse_step"], frame["warning_step"] = collapse_step, warning_step
    for column in ("best_step", "choice_step"):
        frame[column] = frame[column].astype("Int64")
    return pd.DataFrame(frame[list(LABEL_FREE_COLUMNS)]).reset_index(drop=True)


def score(table: pd.DataFrame) -> Score:
    """Precision, recall and lead of the warnings over the finished runs of a
    :func:`label_free_table` (a run in progress has no final verdict yet)."""
    table = table[table["finished"].astype(bool)]
    if table.empty:
        raise ValueError("no finished runs to score")
    collapsed = table["collapsed"].astype(bool)
    warned = table["warning_step"].notna()
    hits = table[collapsed & warned]
    leads = [int(v) for v in hits["lead"]]
    n_warned, n_collapsed = int(warned.sum()), int(collapsed.sum())
    return Score(
        runs=len(table),
        collapsed=n_collapsed,
        warned=n_warned,
        true_positives=len(hits),
        precision=len(hits) / n_warned if n_warned else None,
        recall=len(hits) / n_collapsed if n_collapsed else None,
        median_lead=float(statistics.median(leads)) if leads else None,
        early=sum(1 for v in leads if v >= 0),
        best_accuracy=float(table["best_accuracy"].mean()),
        final_accuracy=float(table["final_accuracy"].mean()),
        choice_accuracy=float(table["choice_accuracy"].mean()),
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def _step(value: Any) -> str:
    return "none" if pd_isna(value) else str(int(value))


def label_free_markdown(table: pd.DataFrame, rule: LabelFreeRule, select_on: str) -> str:
    """The per-run table with the summary scores (finished runs only) above it."""
    thresholds = ", ".join(f"`{k}` {v:+.0%}" for k, v in rule.thresholds.items())
    lines = [
        "# Label-free collapse warning vs the labelled detector",
        "",
        f"Rule: trailing mean over {rule.window} steps; warn at the first step after step "
        f"{rule.baseline_step} where a signal has changed from its value at step "
        f"{rule.baseline_step} by {thresholds} (relative). The label-free choice is the last "
        f"checkpoint at or before warning - {rule.window} steps (the final one without a "
        f"warning). Accuracy on `{select_on}` in percent; lead = collapse step - warning step.",
        "",
    ]
    finished = table["finished"].astype(bool)
    if finished.any():
        s = score(table)
        median = "n/a" if s.median_lead is None else f"{s.median_lead:+.0f} steps"
        lines += [
            f"- runs scored: {s.runs} (finished); collapsed (labelled): {s.collapsed}; "
            f"warned (label-free): {s.warned}",
            f"- base rate: {_pct(s.collapsed / s.runs)} % of runs collapsed (the precision a "
            "warning on every run would have)",
            f"- precision: {_pct(s.precision)} % ({s.true_positives}/{s.warned} warnings were "
            f"collapses); recall: {_pct(s.recall)} % ({s.true_positives}/{s.collapsed} "
            "collapses were warned)",
            f"- median lead over warned collapses: {median}; warned at or before the collapse "
            f"step: {s.early}/{s.true_positives}",
            f"- mean accuracy over runs: Best {_pct(s.best_accuracy)}, label-free choice "
            f"{_pct(s.choice_accuracy)}, Final {_pct(s.final_accuracy)}",
        ]
    else:
        lines.append("- no finished runs to score yet")
    pending = table.loc[~finished, "run"].tolist()
    if pending:
        lines.append(
            f"- not scored, not finished in results/ yet ({len(pending)}): "
            + ", ".join(f"`{run}`" for run in pending)
            + "; their rows show the verdicts so far"
        )
    lines += [
        "",
        "| Run | Method | Collapsed | Collapse step | Warning step | Signal | Lead "
        "| Best (step) | Final | Choice (step) |",
        "|:--|:--|:--|--:|--:|:--|--:|--:|--:|--:|",
    ]
    for r in table.to_dict("records"):
        evaluated = not pd_isna(r["best_step"])
        if r["finished"]:
            collapsed = "yes" if r["collapsed"] else "no"
        else:
            collapsed = "in progress" if evaluated else "not evaluated"
        cells = [
            r["run"],
            r["method"],
            collapsed,
            _step(r["collapse_step"]),
            _step(r["warning_step"]),
            "" if _step(r["warning_step"]) == "none" else str(r["warning_signal"]),
            _step(r["lead"]) if _step(r["lead"]) == "none" else f"{int(r['lead']):+d}",
            f"{_pct(r['best_accuracy'])} ({int(r['best_step'])})" if evaluated else "",
            _pct(r["final_accuracy"]) if r["finished"] else "",
            f"{_pct(r['choice_accuracy'])} ({int(r['choice_step'])})" if evaluated else "",
        ]
        lines.append(markdown_row(cells))
    return "\n".join(lines) + "\n"


def pd_isna(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))
