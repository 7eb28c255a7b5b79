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
    collapse_example,
    plot_accuracy,
    plot_collapse,
    plot_entropy,
)
from mgrpo.report.label_free import LabelFreeRule

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


def figure_data(runs: dict, curves: dict = CURVES) -> FigureData:
    evals = pd.DataFrame(
        [(run, s, b, a) for run in runs for s, a in zip(STEPS, curves[run], strict=True)
         for b in BENCHMARKS],
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


def test_fig5_prefers_collapsed_runs_then_srt_by_drop():
    assert collapse_example(figure_data(RUNS)) == "srt"
    # A collapsed SRT run is shown even when a non-SRT run collapsed harder (as in the paper).
    harder = {**CURVES, "mg": [0.5, 0.9, 0.2, 0.1, 0.1]}
    assert collapse_example(figure_data({"srt": RUNS["srt"], "mg": RUNS["mg"]}, harder)) == "srt"
    assert collapse_example(figure_data({"mg": RUNS["mg"], "srt16": RUNS["srt16"]}, harder)) == "mg"
    stable = figure_data({"mg": RUNS["mg"], "srt16": RUNS["srt16"]})
    assert collapse_example(stable) == "srt16"
    fig = plot_collapse(stable)
    assert "no collapse detected" in fig.axes[0].get_title()
    plt.close(fig)
    fig = plot_collapse(figure_data(RUNS))
    assert "collapse at step 20" in fig.axes[0].get_title()
    assert fig.axes[0].get_ylim() == (0, 1.02)
    plt.close(fig)
