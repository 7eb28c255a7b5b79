"""The paper's figures (1, 2, 4, 5) as PNGs, drawn from evaluations, metrics and collapse.csv.

Each figure draws the runs ``report.figures`` names for it (defaults: :data:`DEFAULT_RUNS`),
never whichever runs happen to be in ``results/``; a named run with nothing there yet gets
a "no evaluations yet" mark instead of failing the figure. Collapse steps come from
collapse.csv (the detector), never recomputed here, so figures and tables always mark the same
checkpoints. Metrics may hold nulls (a value a step did not log): each curve drops them rather
than drawing a gap as zero.

Runs that differ only in ``seed`` (:func:`mgrpo.report.seeds.seed_groups`) are one arm: a
figure draws an arm of several seeds as its mean over seeds, bold, with a band of ± one sample
sd and each seed's own curve faint beneath it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from mgrpo.report.seeds import seed_groups

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


# Which methods a figure draws when report.figures does not name its runs: Fig. 4 shows the
# paper's method, Fig. 5 the label-free baselines whose collapse it reproduces.
DEFAULT_RUNS: dict[str, tuple[str, ...] | None] = {
    "fig1_accuracy": None,  # every run
    "fig4_reward_accuracy": ("mgrpo",),
    "fig5_collapse": ("srt", "intuitor"),
}


@dataclass(frozen=True)
class FigureData:
    """Everything the figures draw; ``runs`` (name -> settings) and ``labels`` in config order,
    ``figures`` = the config's ``report.figures`` (which runs each figure shows)."""

    evals: pd.DataFrame
    metrics: pd.DataFrame
    collapse: pd.DataFrame
    runs: Mapping[str, RunSettings]
    labels: Mapping[str, str]
    benchmarks: Sequence[str]
    select_on: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    def runs_for(self, figure: str) -> list[str]:
        """The runs ``figure`` draws: as configured, else those of its default methods (if the
        config has any), else every run."""
        configured = (self.figures.get(figure) or {}).get("runs")
        if configured:
            return list(configured)
        methods = DEFAULT_RUNS[figure]
        chosen = [r for r, s in self.runs.items() if methods and s["method"] in methods]
        return chosen or list(self.runs)

    def label(self, run: str) -> str:
        """The run's label in legends, marked while it has no evaluations."""
        return (
            self.labels[run] if self.evaluated(run) else f"{self.labels[run]} (not evaluated yet)"
        )

    def color(self, run: str) -> Any:
        """One colour per run, the same in every figure (distinct for up to 20 runs)."""
        index = list(self.runs).index(run)
        if len(self.runs) <= 10:
            return f"C{index}"
        return plt.get_cmap("tab20")(index % 20)

    def arms(self, runs: Sequence[str]) -> list[tuple[str, list[str]]]:
        """``runs`` as (label, runs) arms, in the order given: runs that differ only in seed
        are one arm, labelled by the method (and what else differs) and its seed count."""
        try:
            groups = seed_groups({run: self.runs[run] for run in runs})
        except ValueError:  # two arms would share a label: draw every run on its own
            groups = {run: [run] for run in runs}
        arms = []
        for label, members in sorted(groups.items(), key=lambda g: list(runs).index(g[1][0])):
            if len(members) == 1:
                arms.append((self.label(members[0]), members))
                continue
            done = sum(self.evaluated(run) for run in members)
            seeds = (
                f"{len(members)} seeds"
                if done == len(members)
                else (f"{done} of {len(members)} seeds evaluated")
            )
            arms.append((f"{label} ({seeds})", members))
        return arms

    def accuracy_band(self, runs: Sequence[str], benchmark: str) -> pd.DataFrame:
        """Per step, over ``runs``: mean, sample sd (0 with one run) and count of accuracy."""
        rows = self.evals[self.evals["run"].isin(runs) & (self.evals["benchmark"] == benchmark)]
        grouped = rows.groupby("step")["accuracy"]
        band = pd.DataFrame(
            {"mean": grouped.mean(), "sd": grouped.std().fillna(0.0), "n": grouped.count()}
        )
        return band.reset_index().sort_values("step")

    def metric_mean(self, runs: Sequence[str], column: str) -> pd.DataFrame:
        """(step, value): one metric's mean over ``runs`` per step, nulls dropped first."""
        curves = [self.metric(run, column) for run in runs]
        curves = [c for c in curves if not c.empty]
        if not curves:
            return pd.DataFrame({"step": [], column: []})
        both = pd.concat(curves)
        return both.groupby("step", as_index=False)[column].mean().sort_values("step")

    def verdict(self, run: str) -> Mapping[str, Any]:
        return self.collapse.set_index("run").loc[run].to_dict()

    def evaluated(self, run: str) -> bool:
        return not pd.isna(self.verdict(run)["final_step"])

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


def _plot_band(ax: Axes, band: pd.DataFrame, color: str, label: str) -> None:
    """An arm's mean accuracy over its seeds, bold, with a band of ± one sample sd."""
    if band.empty:
        return
    ax.fill_between(
        band["step"], band["mean"] - band["sd"], band["mean"] + band["sd"], color=color, alpha=0.15
    )
    ax.plot(band["step"], band["mean"], marker="o", markersize=5, linewidth=2.5, color=color,
            label=label)  # fmt: skip


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
    arms = data.arms(data.runs_for("fig1_accuracy"))
    for ax, bench in zip(axes.flat, data.benchmarks, strict=False):
        for label, runs in arms:
            color = data.color(runs[0])
            if len(runs) > 1:
                _plot_band(ax, data.accuracy_band(runs, bench), color, label)
            for run in runs:
                curve = data.accuracy(run, bench)
                seed = len(runs) > 1  # an arm's seeds: faint, unlabelled, beneath the mean
                ax.plot(
                    curve["step"],
                    curve["accuracy"],
                    marker="o",
                    markersize=2 if seed else 4,
                    color=color,
                    alpha=0.35 if seed else 1.0,
                    linewidth=1 if seed else 1.5,
                    label=f"_{run}" if seed else label,
                )
                step = data.collapse_step(run)
                if step is None:
                    continue
                if not seed:
                    ax.axvline(step, color=color, linestyle=":", linewidth=1.5)
                at = curve[curve["step"] == step]
                size, mew = (7, 1.5) if seed else (11, 2.5)
                ax.plot(
                    at["step"], at["accuracy"], marker="x", markersize=size, mew=mew, color=color
                )
        title = f"{bench} (picks Best)" if bench == data.select_on else bench
        _finish(ax, "training step", "accuracy", title, legend=False)
    for ax in axes.flat[len(data.benchmarks) :]:
        ax.set_visible(False)
    marker = Line2D([], [], color="gray", linestyle=":", marker="x", mew=2, label="collapse")
    axes.flat[0].legend(handles=[*axes.flat[0].get_legend_handles_labels()[0], marker], loc="best")
    fig.suptitle(f"Validation accuracy during training (collapse detected on {data.select_on})")
    return fig


def _entropy_panels(data: FigureData) -> list[tuple[str, list[str]]]:
    """As configured (``report.figures.fig2_entropy.panels``), else SRT runs | M-GRPO runs."""
    configured = (data.figures.get("fig2_entropy") or {}).get("panels")
    if configured:
        return [(panel["title"], list(panel["runs"])) for panel in configured]
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
        for label, arm in data.arms(runs):
            curve = data.metric_mean(arm, "entropy_policy")
            _plot_smoothed(ax, curve, "entropy_policy", data.color(arm[0]), label)
        if not ax.lines:
            _no_data(ax, "policy entropy")
        _finish(ax, "training step", "policy entropy", title)
    fig.suptitle(
        f"Policy entropy (rolling mean over {SMOOTH_WINDOW} steps; raw values faint; "
        "an arm of several seeds: their mean)"
    )
    return fig


def plot_reward_accuracy(data: FigureData) -> Figure:
    """Figure 4: training reward (left) and validation accuracy (right) per run."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for label, runs in data.arms(data.runs_for("fig4_reward_accuracy")):
        color = data.color(runs[0])
        _plot_smoothed(left, data.metric_mean(runs, "reward_mean"), "reward_mean", color, label)
        if len(runs) > 1:
            _plot_band(right, data.accuracy_band(runs, data.select_on), color, label)
            continue
        curve = data.accuracy(runs[0], data.select_on)
        right.plot(
            curve["step"], curve["accuracy"], marker="o", markersize=4, color=color, label=label
        )
    if not left.lines:
        _no_data(left, "training reward")
    _finish(left, "training step", "mean reward", f"Training reward ({SMOOTH_WINDOW}-step mean)")
    _finish(right, "training step", "accuracy", f"Validation accuracy ({data.select_on})")
    fig.suptitle("Training reward and validation accuracy")
    return fig


def _collapse_panel(ax: Axes, data: FigureData, run: str) -> None:
    """Reward, pseudo-label and validation accuracy of one run, best and collapse marked."""
    _plot_smoothed(ax, data.metric(run, "reward_mean"), "reward_mean", "C0", "training reward")
    curve = data.metric(run, "label_accuracy")
    _plot_smoothed(ax, curve, "label_accuracy", "C1", "pseudo-label accuracy (vs hidden truth)")
    ax.set_ylim(0, 1.02)
    name = f"{data.labels[run]} ({run})" if data.labels[run] != run else run
    if not data.evaluated(run):
        ax.text(0.5, 0.5, "no evaluations yet", ha="center", va="center", transform=ax.transAxes)
        _finish(ax, "training step", "fraction", f"{name}: not evaluated yet")
        return
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
    verdict, step = data.verdict(run), data.collapse_step(run)
    best = int(verdict["best_step"])
    ax.axvline(best, color="gray", linestyle=":", label=f"best (step {best})")
    if step is None:
        title = f"{name}: no collapse detected"
    else:
        ax.axvline(step, color="red", linestyle="--", linewidth=2, label=f"collapse (step {step})")
        title = f"{name}: collapse at step {step}"
    _finish(ax, "training step", "fraction", f"{title}, drop {100 * verdict['drop']:.1f} points")


def _arm_collapse_panel(ax: Axes, data: FigureData, label: str, runs: Sequence[str]) -> None:
    """One arm's seeds: mean reward, pseudo-label accuracy and validation accuracy (± sd band),
    each seed's collapse step marked."""
    reward = data.metric_mean(runs, "reward_mean")
    _plot_smoothed(ax, reward, "reward_mean", "C0", "training reward (mean over seeds)")
    labels = data.metric_mean(runs, "label_accuracy")
    _plot_smoothed(ax, labels, "label_accuracy", "C1", "pseudo-label accuracy (mean over seeds)")
    ax.set_ylim(0, 1.02)
    done = [run for run in runs if data.evaluated(run)]
    if not done:
        ax.text(0.5, 0.5, "no evaluations yet", ha="center", va="center", transform=ax.transAxes)
        _finish(ax, "training step", "fraction", f"{label}: not evaluated yet")
        return
    band = data.accuracy_band(done, data.select_on)
    _plot_band(ax, band, "C2", f"validation accuracy ({data.select_on}), mean ± sd")
    steps = [data.collapse_step(run) for run in done]
    for i, step in enumerate(s for s in steps if s is not None):
        ax.axvline(step, color="red", linestyle="--", linewidth=1.2,
                   label="collapse (one line per seed)" if i == 0 else None)  # fmt: skip
    drops = [100 * float(data.verdict(run)["drop"]) for run in done]
    sd = f" ± {statistics.stdev(drops):.1f}" if len(drops) > 1 else ""
    collapsed = sum(step is not None for step in steps)
    _finish(
        ax,
        "training step",
        "fraction",
        f"{label}: collapse in {collapsed} of {len(done)}, drop {statistics.fmean(drops):.1f}{sd}"
        " points",
    )


def plot_collapse(data: FigureData) -> Figure:
    """Figure 5: one panel per configured run (the paper: SRT on Qwen2.5-3B and -7B, Intuitor on
    Qwen2.5-3B): training reward rises while pseudo-label and validation accuracy fall."""
    arms = data.arms(data.runs_for("fig5_collapse"))
    ncols = min(len(arms), 3)
    nrows = math.ceil(len(arms) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(8 * ncols, 5 * nrows), squeeze=False, layout="constrained"
    )
    for ax, (label, runs) in zip(axes.flat, arms, strict=False):
        if len(runs) == 1:
            _collapse_panel(ax, data, runs[0])
        else:
            _arm_collapse_panel(ax, data, label, runs)
    for ax in axes.flat[len(arms) :]:
        ax.set_visible(False)
    fig.suptitle("Label-free training: reward, pseudo-label accuracy and validation accuracy")
    return fig


PLOTS: dict[str, Callable[[FigureData], Figure]] = {
    "fig1_accuracy": plot_accuracy,
    "fig2_entropy": plot_entropy,
    "fig4_reward_accuracy": plot_reward_accuracy,
    "fig5_collapse": plot_collapse,
}


def save_figure(draw: Callable[[], Figure], path: Path) -> Path:
    """Draw a figure in the report's style and write it to ``path`` as PNG, atomically."""
    with plt.rc_context(STYLE):
        fig = draw()
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=DPI)
        finally:
            plt.close(fig)
    return path


def write_figures(data: FigureData, out_dir: str | Path) -> list[Path]:
    """Draw every figure in :data:`mgrpo.report.FIGURES` to ``out_dir/<name>.png``, atomically."""
    return [
        save_figure(lambda name=name: PLOTS[name](data), Path(out_dir) / f"{name}.png")
        for name in FIGURES
    ]
