"""The paper's figures (1, 2, 4, 5) as PNGs, drawn from evaluations, metrics and collapse.csv.

Collapse steps come from collapse.csv (the detector), never recomputed here, so figures and
tables always mark the same checkpoints. Metrics may hold nulls (a value a step did not log):
each curve drops them rather than drawing a gap as zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on cluster nodes

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mgrpo.io import atomic_path
from mgrpo.report import FIGURES

if TYPE_CHECKING:
    from mgrpo.settings import RunSettings

DPI = 120
SMOOTH_WINDOW = 10  # training steps in the rolling mean of noisy per-step metrics
STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@dataclass(frozen=True)
class FigureData:
    """Everything the figures draw; ``runs`` (name -> settings) and ``labels`` in config order."""

    evals: pd.DataFrame
    metrics: pd.DataFrame
    collapse: pd.DataFrame
    runs: Mapping[str, RunSettings]
    labels: Mapping[str, str]
    benchmarks: Sequence[str]
    select_on: str

    def color(self, run: str) -> Any:
        """One colour per run, the same in every figure (distinct for up to 20 runs)."""
        index = list(self.runs).index(run)
        if len(self.runs) <= 10:
            return f"C{index}"
        return plt.get_cmap("tab20")(index % 20)

    def verdict(self, run: str) -> Mapping[str, Any]:
        return self.collapse.set_index("run").loc[run].to_dict()

    def collapse_step(self, run: str) -> int | None:
        step = self.verdict(run)["collapse_step"]
        return None if pd.isna(step) else int(step)

    def accuracy(self, run: str, benchmark: str) -> pd.DataFrame:
        rows = self.evals[(self.evals["run"] == run) & (self.evals["benchmark"] == benchmark)]
        return rows.sort_values("step")[["step", "accuracy"]]

    def metric(self, run: str, column: str) -> pd.DataFrame:
        """(step, value) of one metrics column for one run, nulls dropped."""
        if column not in self.metrics.columns:
            return pd.DataFrame({"step": [], column: []})
        rows = self.metrics[self.metrics["run"] == run][["step", column]]
        rows = rows.assign(**{column: pd.to_numeric(rows[column], errors="coerce")})
        return rows.dropna().sort_values("step")


def _plot_smoothed(ax: Axes, curve: pd.DataFrame, column: str, color: str, label: str) -> None:
    """Raw per-step values faint, their rolling mean bold: trends stay readable under noise."""
    if curve.empty:
        return
    smooth = curve[column].rolling(SMOOTH_WINDOW, min_periods=1).mean()
    ax.plot(curve["step"], curve[column], color=color, alpha=0.25, linewidth=1)
    ax.plot(curve["step"], smooth, color=color, linewidth=2, label=label)


def _no_data(ax: Axes, what: str, y: float = 0.5) -> None:
    ax.text(0.5, y, f"no {what} logged", ha="center", va="center", transform=ax.transAxes)


def _finish(ax: Axes, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def plot_accuracy(data: FigureData) -> Figure:
    """Figure 1: validation accuracy vs step, one panel per benchmark, collapse marked."""
    ncols = min(len(data.benchmarks), 3)
    nrows = math.ceil(len(data.benchmarks) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False, layout="constrained"
    )
    for ax, bench in zip(axes.flat, data.benchmarks, strict=False):
        for run in data.runs:
            curve = data.accuracy(run, bench)
            color = data.color(run)
            ax.plot(
                curve["step"],
                curve["accuracy"],
                marker="o",
                markersize=4,
                color=color,
                label=data.labels[run],
            )
            step = data.collapse_step(run)
            if step is None:
                continue
            ax.axvline(step, color=color, linestyle=":", linewidth=1.5)
            at = curve[curve["step"] == step]
            ax.plot(at["step"], at["accuracy"], marker="x", markersize=11, mew=2.5, color=color)
        title = f"{bench} (picks Best)" if bench == data.select_on else bench
        _finish(ax, "training step", "accuracy", title, legend=False)
    for ax in axes.flat[len(data.benchmarks) :]:
        ax.set_visible(False)
    marker = Line2D([], [], color="gray", linestyle=":", marker="x", mew=2, label="collapse")
    axes.flat[0].legend(handles=[*axes.flat[0].get_legend_handles_labels()[0], marker], loc="best")
    fig.suptitle(f"Validation accuracy during training (collapse detected on {data.select_on})")
    return fig


def _entropy_panels(data: FigureData) -> list[tuple[str, list[str]]]:
    by_method = {
        method: [run for run, s in data.runs.items() if s["method"] == method]
        for method in ("srt", "mgrpo")
    }
    if by_method["srt"] and by_method["mgrpo"]:
        return [("SRT", by_method["srt"]), ("M-GRPO", by_method["mgrpo"])]
    return [("All runs", list(data.runs))]


def plot_entropy(data: FigureData) -> Figure:
    """Figure 2: policy entropy vs step, SRT runs left and M-GRPO runs right."""
    panels = _entropy_panels(data)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(6 * len(panels), 4.5),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax, (title, runs) in zip(axes.flat, panels, strict=True):
        for run in runs:
            curve = data.metric(run, "entropy_policy")
            _plot_smoothed(ax, curve, "entropy_policy", data.color(run), data.labels[run])
        if not ax.lines:
            _no_data(ax, "policy entropy")
        _finish(ax, "training step", "policy entropy", title)
    fig.suptitle(f"Policy entropy (rolling mean over {SMOOTH_WINDOW} steps; raw values faint)")
    return fig


def plot_reward_accuracy(data: FigureData) -> Figure:
    """Figure 4: training reward (left) and validation accuracy (right) per run."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for run in data.runs:
        color, label = data.color(run), data.labels[run]
        _plot_smoothed(left, data.metric(run, "reward_mean"), "reward_mean", color, label)
        curve = data.accuracy(run, data.select_on)
        right.plot(
            curve["step"], curve["accuracy"], marker="o", markersize=4, color=color, label=label
        )
    if not left.lines:
        _no_data(left, "training reward")
    _finish(left, "training step", "mean reward", f"Training reward ({SMOOTH_WINDOW}-step mean)")
    _finish(right, "training step", "accuracy", f"Validation accuracy ({data.select_on})")
    fig.suptitle("Training reward and validation accuracy")
    return fig


def collapse_example(data: FigureData) -> str:
    """The run Figure 5 shows: like the paper's, a collapsing baseline if there is one.

    Largest drop among collapsed SRT runs, else among all collapsed runs, else among SRT runs.
    """
    frame = data.collapse
    collapsed = frame["collapsed"].astype(bool)
    srt = frame["run"].map(lambda r: data.runs[r]["method"] == "srt")
    for candidates in (frame[collapsed & srt], frame[collapsed], frame[srt], frame):
        if not candidates.empty:
            return str(
                candidates.sort_values("drop", ascending=False, kind="stable")["run"].iloc[0]
            )
    raise ValueError("collapse table is empty: no run to show")


def plot_collapse(data: FigureData) -> Figure:
    """Figure 5: reward, pseudo-label accuracy and validation accuracy of the collapsing run."""
    run = collapse_example(data)
    verdict, step = data.verdict(run), data.collapse_step(run)
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    _plot_smoothed(ax, data.metric(run, "reward_mean"), "reward_mean", "C0", "training reward")
    curve = data.metric(run, "label_accuracy")
    _plot_smoothed(ax, curve, "label_accuracy", "C1", "pseudo-label accuracy (vs hidden truth)")
    if not ax.lines:
        _no_data(ax, "training reward or label accuracy", y=0.06)
    val = data.accuracy(run, data.select_on)
    ax.plot(
        val["step"],
        val["accuracy"],
        marker="o",
        color="C2",
        linewidth=2,
        label=f"validation accuracy ({data.select_on})",
    )
    ax.axvline(
        verdict["best_step"],
        color="gray",
        linestyle=":",
        label=f"best (step {verdict['best_step']})",
    )
    if step is None:
        title = f"{data.labels[run]} ({run}): no collapse detected"
    else:
        ax.axvline(step, color="red", linestyle="--", linewidth=2, label=f"collapse (step {step})")
        title = f"{data.labels[run]} ({run}): collapse at step {step}"
    ax.set_ylim(0, 1.02)
    _finish(ax, "training step", "fraction", f"{title}, drop {100 * verdict['drop']:.1f} points")
    return fig


PLOTS: dict[str, Callable[[FigureData], Figure]] = {
    "fig1_accuracy": plot_accuracy,
    "fig2_entropy": plot_entropy,
    "fig4_reward_accuracy": plot_reward_accuracy,
    "fig5_collapse": plot_collapse,
}


def write_figures(data: FigureData, out_dir: str | Path) -> list[Path]:
    """Draw every figure in :data:`mgrpo.report.FIGURES` to ``out_dir/<name>.png``, atomically."""
    written = []
    for name in FIGURES:
        path = Path(out_dir) / f"{name}.png"
        with plt.rc_context(STYLE):
            fig = PLOTS[name](data)
            try:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, format="png", dpi=DPI)
            finally:
                plt.close(fig)
        written.append(path)
    return written
