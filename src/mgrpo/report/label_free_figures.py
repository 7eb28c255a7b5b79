"""Figures of the label-free warning: its signals, and both detectors' steps on every run.

* ``label_free_signals``: one run (a collapse the warning caught, if any), validation accuracy
  on top and below it every label-free signal the run logged, smoothed exactly as the detector
  smooths it, with the thresholds of the watched ones; the labelled collapse step, the warning
  step and the two checkpoints (Best, label-free choice) marked on every panel.
* ``label_free_runs``: one small panel per run: validation accuracy, and each watched signal's
  change from its baseline with its threshold, with the labelled collapse and warning steps.

Steps come from collapse.csv (never recomputed here); curves from the detector's own smoothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS
from mgrpo.report import LABEL_FREE_FIGURES
from mgrpo.report.figures import FigureData, save_figure
from mgrpo.report.label_free import LabelFreeRule, smoothed_signals

COLLAPSE_STYLE = {"color": "red", "linestyle": "--", "linewidth": 1.8}
WARNING_STYLE = {"color": "darkorange", "linestyle": "-", "linewidth": 1.8}
# Watched signals' colours: never orange or red, which mark the warning and the collapse.
SIGNAL_COLORS = ("C0", "C2", "C4", "C5", "C6", "C7", "C8", "C9")


def _step(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _mark(ax: Axes, collapse: int | None, warning: int | None) -> None:
    if collapse is not None:
        ax.axvline(collapse, **COLLAPSE_STYLE)
    if warning is not None:
        ax.axvline(warning, **WARNING_STYLE)


def example_run(data: FigureData) -> str:
    """A collapsed run that was warned (largest drop), else any collapsed, else a warned one,
    else an evaluated one, else the first run (a partial results/ may have no evaluation)."""
    frame = data.collapse
    collapsed = frame["collapsed"].astype(bool)
    warned = frame["warning_step"].notna()
    evaluated = frame["final_step"].notna()
    for mask in (collapsed & warned, collapsed, warned, evaluated):
        candidates = frame[mask]
        if not candidates.empty:
            ordered = candidates.sort_values("drop", ascending=False, kind="stable")
            return str(ordered["run"].iloc[0])
    if frame.empty:
        raise ValueError("collapse table is empty: no run to show")
    return str(frame["run"].iloc[0])


def _run_metrics(data: FigureData, run: str) -> pd.DataFrame:
    return data.metrics[data.metrics["run"] == run]


def plot_signals(data: FigureData, rule: LabelFreeRule) -> Figure:
    """Validation accuracy and every logged label-free signal of one run, steps marked."""
    run = example_run(data)
    verdict = data.verdict(run)
    collapse, warning = _step(verdict["collapse_step"]), _step(verdict["warning_step"])
    metrics = _run_metrics(data, run).sort_values("step")
    # Every logged signal, smoothed exactly as the detector smooths the watched ones.
    curves = (
        smoothed_signals(metrics, rule, signals=LABEL_FREE_SIGNALS)
        if not metrics.empty
        else pd.DataFrame({"step": []})
    )
    shown = [name for name in LABEL_FREE_SIGNALS if name in curves.columns]
    fig, axes = plt.subplots(
        len(shown) + 1,
        1,
        figsize=(8, 1.9 * len(shown) + 3.6),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    top = axes[0, 0]
    acc = data.accuracy(run, data.select_on)
    top.plot(acc["step"], acc["accuracy"], marker="o", color="black", label="validation accuracy")
    for key, marker, label in (("choice_step", "D", "label-free"), ("best_step", "*", "Best")):
        if _step(verdict[key]) is None:  # not evaluated yet
            continue
        at = acc[acc["step"] == int(verdict[key])]
        top.plot(
            at["step"],
            at["accuracy"],
            marker=marker,
            markersize=11,
            linestyle="none",
            color="C2" if key == "best_step" else "darkorange",
            label=label,
        )
    top.set_ylabel(f"accuracy\n({data.select_on})")
    _mark(top, collapse, warning)
    for ax, name in zip(axes[1:, 0], shown, strict=True):
        raw = pd.to_numeric(metrics[name], errors="coerce")
        ax.plot(metrics["step"], raw, color="C0", alpha=0.25, linewidth=1)
        ax.plot(curves["step"], curves[name], color="C0", linewidth=2)
        if name in rule.thresholds:
            base = curves.loc[curves["step"] == rule.baseline_step, name]
            if len(base) and not math.isnan(float(base.iloc[0])):
                level = float(base.iloc[0]) * (1 + rule.thresholds[name])
                ax.axhline(level, color="gray", linestyle=":", linewidth=1.5)
            ax.set_title(
                f"watched: warns at {rule.thresholds[name]:+.0%} from step {rule.baseline_step}",
                fontsize=9,
                loc="right",
            )
        ax.set_ylabel(name.replace("_", " "), fontsize=9)
        _mark(ax, collapse, warning)
    axes[-1, 0].set_xlabel("training step")
    handles = [
        Line2D([], [], **COLLAPSE_STYLE, label=f"labelled collapse ({collapse or 'none'})"),
        Line2D([], [], **WARNING_STYLE, label=f"label-free warning ({warning or 'none'})"),
        Line2D([], [], color="gray", linestyle=":", label="threshold"),
    ]
    top.legend(handles=[*top.get_legend_handles_labels()[0], *handles], fontsize=8, loc="best")
    if acc.empty:
        top.text(0.5, 0.5, "no evaluations yet", ha="center", va="center", transform=top.transAxes)
    status = "" if data.evaluated(run) else " (not evaluated yet)"
    fig.suptitle(f"{run}{status}: label-free signals ({rule.window}-step trailing mean, raw faint)")
    return fig


def plot_runs(data: FigureData, rule: LabelFreeRule) -> Figure:
    """One panel per run: accuracy (left axis), each watched signal's change from its baseline
    with its threshold (right axis), and the collapse and warning steps."""
    runs = list(data.runs)
    ncols = min(6, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(6.0, 3.0 * ncols), 2.4 * nrows + 1.2),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    watched = list(rule.thresholds)
    twins = []
    for ax, run in zip(axes.flat, runs, strict=False):
        verdict = data.verdict(run)
        acc = data.accuracy(run, data.select_on)
        ax.plot(acc["step"], acc["accuracy"], marker="o", markersize=3, color="black")
        curves = smoothed_signals(_run_metrics(data, run), rule)
        twin = ax.twinx()
        twins.append(twin)
        for i, name in enumerate(watched):
            if f"{name}_change" in curves.columns:
                twin.plot(
                    curves["step"], curves[f"{name}_change"], color=SIGNAL_COLORS[i], linewidth=1.3
                )
            twin.axhline(rule.thresholds[name], color=SIGNAL_COLORS[i], linestyle=":", linewidth=1)
        _mark(ax, _step(verdict["collapse_step"]), _step(verdict["warning_step"]))
        ax.set_title(run if data.evaluated(run) else f"{run} (not evaluated yet)", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        twin.tick_params(labelsize=7)
    low = min([-0.1, *(t.get_ylim()[0] for t in twins), *rule.thresholds.values()])
    high = max([0.1, *(t.get_ylim()[1] for t in twins), *rule.thresholds.values()])
    for index, twin in enumerate(twins):
        twin.set_ylim(low - 0.05, high + 0.05)
        if index % ncols != ncols - 1 and index != len(twins) - 1:
            twin.set_yticklabels([])
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    handles = [
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markersize=3,
            label=f"validation accuracy ({data.select_on}, left)",
        ),
        *(
            Line2D(
                [],
                [],
                color=SIGNAL_COLORS[i],
                label=f"{n}: change from step {rule.baseline_step} "
                f"(right; dotted: {rule.thresholds[n]:+.0%})",
            )
            for i, n in enumerate(watched)
        ),
        Line2D([], [], **COLLAPSE_STYLE, label="labelled collapse"),
        Line2D([], [], **WARNING_STYLE, label="label-free warning"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(
        f"Both detectors on every run (watched signals: {rule.window}-step trailing mean, "
        "relative to their baseline)"
    )
    return fig


def write_label_free_figures(
    data: FigureData, rule: LabelFreeRule, out_dir: str | Path
) -> list[Path]:
    """Draw :data:`mgrpo.report.LABEL_FREE_FIGURES` to ``out_dir/<name>.png``, atomically."""
    plots = {"label_free_signals": plot_signals, "label_free_runs": plot_runs}
    return [
        save_figure(lambda name=name: plots[name](data, rule), Path(out_dir) / f"{name}.png")
        for name in LABEL_FREE_FIGURES
    ]
