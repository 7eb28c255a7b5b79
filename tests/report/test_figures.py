"""Figures: valid PNGs end to end, and the right content for collapsed and stable runs."""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from support import run_settings

from mgrpo.report import FIGURES, LABEL_FREE_FIGURES
from mgrpo.report.cli import add_report_parser
from mgrpo.report.collapse import collapse_table
from mgrpo.report.figures import (
    FigureData,
    plot_accuracy,
    plot_collapse,
    plot_entropy,
    plot_reward_accuracy,
)
from mgrpo.report.label_free import LabelFreeRule
from mgrpo.report.label_free_figures import example_run, plot_runs, plot_signals

BENCHMARKS = ["math", "aime", "gpqa"]
STEPS = [0, 10, 20, 30, 40]
# Validation accuracy per run on every benchmark: srt collapses after step 10, srt16 dips a
# little (no collapse), mg rises.
CURVES = {
    "srt": [0.5, 0.8, 0.6, 0.5, 0.3],
    "srt16": [0.5, 0.7, 0.68, 0.69, 0.67],
    "mg": [0.5, 0.6, 0.65, 0.7, 0.72],
}


RUNS = {
    "srt": run_settings("srt", method="srt", rollouts=8),
    "srt16": run_settings("srt16", method="srt", rollouts=16),
    "mg": run_settings("mg", method="mgrpo", rollouts=16),
}


def write_inputs(root: Path, runs: dict, null_metrics: bool = False) -> tuple[list, list]:
    """Eval JSONs and two metrics chunks per run; every 3rd value null, or all of them."""
    evals, metrics = [], []
    for run in runs:
        for step, acc in zip(STEPS, CURVES[run], strict=True):
            for bench in BENCHMARKS:
                path = root / f"eval/{run}/step{step}/{bench}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"run": run, "step": step, "benchmark": bench,
                                            "accuracy": acc}))  # fmt: skip
                evals.append(str(path))
        for end in (20, 40):
            lines = []
            for step in range(end - 19, end + 1):
                value = None if null_metrics or step % 3 == 0 else 1 - step / 50
                lines.append(json.dumps({"run": run, "step": step, "method": "SRT",
                    "reward_mean": value, "label_accuracy": value, "entropy_policy": value,
                    "entropy_momentum": None}))  # fmt: skip
            path = root / f"runs/{run}/metrics/to_step{end}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
            metrics.append(str(path))
    return evals, metrics


def report(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="mgrpo")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    args.func(args)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def run_figures(tmp_path: Path, runs: dict, null_metrics: bool = False) -> Path:
    evals, metrics = write_inputs(tmp_path, runs, null_metrics)
    config = json.dumps({"runs": {n: s.to_dict() for n, s in runs.items()},
                         "benchmarks": BENCHMARKS,
                         "report": {"select_on": "math", "collapse_margin": 0.05}})  # fmt: skip
    csv = str(tmp_path / "collapse.csv")
    report("collapse", "--config", config, "--evals", *evals, "--metrics", *metrics, "--out", csv)
    out = tmp_path / "figures"
    report("figures", "--config", config, "--evals", *evals, "--metrics", *metrics,
           "--collapse", csv, "--out-dir", str(out))  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("runs", "null_metrics"),
    [(RUNS, False), ({"srt16": RUNS["srt16"], "mg": RUNS["mg"]}, True)],
    ids=["collapse", "no-collapse-null-metrics"],
)
def test_every_figure_is_a_readable_png(tmp_path, runs, null_metrics):
    out = run_figures(tmp_path, runs, null_metrics)
    names = (*FIGURES, *LABEL_FREE_FIGURES)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f}.png" for f in names)
    for name in names:
        width, height = png_size(out / f"{name}.png")
        assert 600 <= width <= 3000, name
        assert 400 <= height <= 2000, name
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def figure_data(
    runs: dict, curves: dict = CURVES, figures: dict | None = None, evaluated: set | None = None
) -> FigureData:
    """Figure inputs for ``runs``; only the ``evaluated`` ones (default: all) have results."""
    done = set(runs) if evaluated is None else evaluated
    evals = pd.DataFrame(
        [(run, s, b, a) for run in runs if run in done
         for s, a in zip(STEPS, curves[run], strict=True) for b in BENCHMARKS],
        columns=["run", "step", "benchmark", "accuracy"],
    )  # fmt: skip
    metrics = pd.DataFrame(
        [(run, s, 0.5, None) for run in runs for s in range(1, 41)],
        columns=["run", "step", "reward_mean", "entropy_policy"],
    )
    rule = LabelFreeRule.from_report({})
    return FigureData(
        evals=evals,
        metrics=metrics,
        collapse=collapse_table(evals, metrics, runs, "math", 0.05, rule),
        runs=runs,
        labels={run: run.upper() for run in runs},
        benchmarks=BENCHMARKS,
        select_on="math",
        figures=figures or {},
    )


def test_fig1_one_panel_per_benchmark_and_collapse_marked():
    fig = plot_accuracy(figure_data(RUNS))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["math (picks Best)", "aime", "gpqa"]
    markers = [line for line in panels[0].lines if line.get_marker() == "x"]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in markers] == [([20], [0.6])]
    plt.close(fig)


def test_fig2_splits_srt_and_mgrpo_or_falls_back_to_one_panel():
    fig = plot_entropy(figure_data(RUNS))
    assert [ax.get_title() for ax in fig.axes] == ["SRT", "M-GRPO"]
    plt.close(fig)
    fig = plot_entropy(figure_data({"srt": RUNS["srt"], "srt16": RUNS["srt16"]}))
    assert [ax.get_title() for ax in fig.axes] == ["All runs"]
    assert "no policy entropy logged" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)


def test_fig2_panels_as_configured():
    panels = {"panels": [{"title": "Left", "runs": ["srt16"]}, {"title": "Right", "runs": ["mg"]}]}
    fig = plot_entropy(figure_data(RUNS, figures={"fig2_entropy": panels}))
    assert [ax.get_title() for ax in fig.axes] == ["Left", "Right"]
    plt.close(fig)


def curve_labels(ax) -> list[str]:
    return [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]


def test_figures_draw_the_configured_runs_not_whatever_is_in_results():
    # srt16 is evaluated but not configured for Fig. 4/5; srt is configured but has no results.
    figures = {"fig4_reward_accuracy": {"runs": ["mg", "srt"]}, "fig5_collapse": {"runs": ["srt"]}}
    data = figure_data(RUNS, figures=figures, evaluated={"srt16", "mg"})
    fig = plot_reward_accuracy(data)
    assert curve_labels(fig.axes[1]) == ["MG", "SRT (not evaluated yet)"]
    plt.close(fig)
    fig = plot_collapse(data)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "SRT (srt): not evaluated yet"
    ]
    assert "no evaluations yet" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    fig = plot_accuracy(figure_data(RUNS, figures={"fig1_accuracy": {"runs": ["mg"]}}))
    assert curve_labels(fig.axes[0]) == ["MG"]
    plt.close(fig)


def test_fig5_one_panel_per_configured_run_with_collapse_marked():
    fig = plot_collapse(figure_data(RUNS, figures={"fig5_collapse": {"runs": ["srt", "mg"]}}))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[0].startswith("SRT (srt): collapse at step 20")
    assert titles[1].startswith("MG (mg): no collapse detected")
    assert fig.axes[0].get_ylim() == (0, 1.02)
    plt.close(fig)


def test_default_runs_fig4_mgrpo_fig5_label_free_baselines():
    intuitor = run_settings("intu", method="intuitor", rollouts=8)
    data = figure_data({**RUNS, "intu": intuitor}, {**CURVES, "intu": CURVES["srt"]})
    assert data.runs_for("fig1_accuracy") == ["srt", "srt16", "mg", "intu"]
    assert data.runs_for("fig4_reward_accuracy") == ["mg"]
    assert data.runs_for("fig5_collapse") == ["srt", "srt16", "intu"]
    only_srt = figure_data({"srt": RUNS["srt"]})
    assert only_srt.runs_for("fig4_reward_accuracy") == ["srt"]  # no M-GRPO run: every run


def test_fig2_draws_the_policy_entropy_of_each_run():
    """The plotted points are each run's ``entropy_policy`` (never ``entropy_momentum``)."""
    data = figure_data(RUNS)
    steps = list(range(1, 41))
    policy = {run: [0.1 * i + s / 100 for s in steps] for i, run in enumerate(RUNS)}
    metrics = pd.DataFrame(
        [(run, s, policy[run][s - 1], 5.0 + s) for run in RUNS for s in steps],
        columns=["run", "step", "entropy_policy", "entropy_momentum"],
    )
    fig = plot_entropy(FigureData(**{**data.__dict__, "metrics": metrics}))
    drawn = {
        ax.get_title(): {line.get_label(): list(line.get_ydata()) for line in ax.lines}
        for ax in fig.axes
    }
    plt.close(fig)
    panels = {"SRT": ["srt", "srt16"], "M-GRPO": ["mg"]}
    assert drawn.keys() == panels.keys()
    for title, runs in panels.items():
        curves = drawn[title]
        raw = [y for label, y in curves.items() if label.startswith("_")]
        assert sorted(raw) == sorted(policy[run] for run in runs)
        for run in runs:
            smooth = pd.Series(policy[run]).rolling(10, min_periods=1).mean().tolist()
            assert curves[data.labels[run]] == pytest.approx(smooth)


def test_fig4_and_fig5_draw_reward_label_accuracy_and_validation_accuracy():
    """Each curve is drawn from the column its legend names (raw points of per-step metrics)."""
    data = figure_data(RUNS)
    steps = list(range(1, 41))
    metrics = pd.DataFrame(
        [(run, s, 0.01 * s, 0.5 - 0.01 * s, 0.9) for run in RUNS for s in steps],
        columns=["run", "step", "reward_mean", "label_accuracy", "policy_accuracy"],
    )
    data = FigureData(**{**data.__dict__, "metrics": metrics})
    reward = [0.01 * s for s in steps]
    label = [0.5 - 0.01 * s for s in steps]

    fig = plot_reward_accuracy(data)
    left, right = fig.axes
    shown = data.runs_for("fig4_reward_accuracy")
    raw = [list(line.get_ydata()) for line in left.lines if line.get_label().startswith("_")]
    assert raw == [reward] * len(shown)
    for run in shown:
        drawn = next(line for line in right.lines if line.get_label() == data.labels[run])
        assert list(drawn.get_ydata()) == CURVES[run]  # accuracy on select_on, step by step
    plt.close(fig)

    fig = plot_collapse(data)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(data.runs_for("fig5_collapse"))
    for ax, run in zip(panels, data.runs_for("fig5_collapse"), strict=True):
        curves = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
        raw = sorted(y for name, y in curves.items() if name.startswith("_") and len(y) == 40)
        assert raw == sorted([reward, label])
        assert curves["validation accuracy (math)"] == CURVES[run]


# --------------------------------------------------------------------------- label-free figures


def label_free_data(evaluated: set | None = None) -> tuple[FigureData, LabelFreeRule]:
    """srt collapses (step 20) and its majority ratio jumps at step 21; mg stays flat."""
    runs = {"srt": RUNS["srt"], "mg": RUNS["mg"]}
    done = set(runs) if evaluated is None else evaluated
    evals = pd.DataFrame(
        [(run, s, "math", a) for run in runs if run in done
         for s, a in zip(STEPS, CURVES[run], strict=True)],
        columns=["run", "step", "benchmark", "accuracy"],
    )  # fmt: skip
    metrics = pd.DataFrame(
        [(run, s, 0.95 if run == "srt" and s > 20 else 0.6) for run in runs for s in range(1, 41)],
        columns=["run", "step", "majority_ratio"],
    )
    rule = LabelFreeRule(window=5, baseline_step=10, thresholds={"majority_ratio": 0.3})
    data = FigureData(
        evals=evals,
        metrics=metrics,
        collapse=collapse_table(evals, metrics, runs, "math", 0.05, rule),
        runs=runs,
        labels={run: run.upper() for run in runs},
        benchmarks=["math"],
        select_on="math",
    )
    return data, rule


def vertical_lines(ax, color: str) -> list[float]:
    return [
        line.get_xdata()[0]
        for line in ax.lines
        if line.get_color() == color
        and len(line.get_xdata()) == 2  # axvline: two points
        and len(set(line.get_xdata())) == 1
    ]


def test_label_free_signals_marks_both_detectors_steps_on_the_warned_collapse():
    data, rule = label_free_data()
    assert example_run(data) == "srt"
    fig = plot_signals(data, rule)
    top, ratio = fig.axes[0], fig.axes[1]
    # mean over 5 steps crosses 0.6 * 1.3 = 0.78 at step 23 (0.6 + 0.35 * 3 / 5 = 0.81)
    for ax in (top, ratio):
        assert vertical_lines(ax, "red") == [20] and vertical_lines(ax, "darkorange") == [23]
    threshold = [line for line in ratio.lines if line.get_linestyle() == ":"]
    assert [line.get_ydata()[0] for line in threshold] == [pytest.approx(0.78)]
    marked = {line.get_label(): list(line.get_xdata()) for line in top.lines}
    assert marked["Best"] == [10] and marked["label-free"] == [10]  # last checkpoint <= 23 - 5
    plt.close(fig)


def test_label_free_figures_draw_a_partial_results_tree():
    data, rule = label_free_data(evaluated={"mg"})  # srt trained but not evaluated yet
    assert example_run(data) == "srt"  # still the warned run
    fig = plot_signals(data, rule)
    assert "srt (not evaluated yet)" in fig.get_suptitle()
    assert "no evaluations yet" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)
    fig = plot_runs(data, rule)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["srt (not evaluated yet)", "mg"]
    plt.close(fig)
