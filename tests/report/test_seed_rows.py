"""Tables and figures over seeds: a row (or curve) over an arm's seeds shows their mean ± sd."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from support import REPO, TINY_TOY, TINY_TRAINING, run_settings

from mgrpo.config import ConfigError, load_config, validate_config
from mgrpo.report.cli import add_report_parser
from mgrpo.report.collapse import collapse_table
from mgrpo.report.figures import FigureData, plot_accuracy, plot_collapse
from mgrpo.report.label_free import LabelFreeRule
from mgrpo.report.seeds import seed_groups

STEPS = [0, 10, 20, 30]
# Accuracy on "test" per run; every seed peaks at its own step, so an arm's Best averages the
# seeds' own best checkpoints (0.9, 0.8, 0.7), not one step's accuracies.
CURVES = {
    "a1": [0.5, 0.9, 0.6, 0.4],
    "a2": [0.5, 0.6, 0.8, 0.7],
    "a3": [0.5, 0.6, 0.6, 0.7],
    "b": [0.5, 0.55, 0.6, 0.65],
}
ARM = ["a1", "a2", "a3"]


def config(**report) -> dict:
    return validate_config(
        {
            **TINY_TOY,
            "training": {**TINY_TRAINING, "steps": 30, "chunk_steps": 10},
            "runs": {
                "a1": {"method": "srt", "seed": 1},
                "a2": {"method": "srt", "seed": 2},
                "a3": {"method": "srt", "seed": 3},
                "b": {"method": "mgrpo", "iqr": False, "seed": 1},
            },
            "benchmarks": {"test": {"source": "toy", "split": "test"}},
            "report": report,
        }
    )


TABLES = {
    "main": {
        "title": "over seeds",
        "rows": [
            {"run": "a1", "pick": "base", "label": "Original"},
            {"runs": ARM, "pick": "best_and_final", "label": "SRT"},
            {"run": "b", "pick": "final"},
        ],
    }
}


def report(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="mgrpo")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    args.func(args)


def build(tmp_path: Path, curves: dict = CURVES) -> Path:
    from mgrpo.settings import resolve_run_settings

    cfg = config(tables=TABLES)
    evals = []
    for run, values in curves.items():
        for step, accuracy in zip(STEPS, values, strict=False):
            path = tmp_path / f"eval/{run}/step{step}/test.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"run": run, "step": step, "benchmark": "test", "accuracy": accuracy}
            path.write_text(json.dumps(record))
            evals.append(str(path))
    runs = {}
    for name in cfg["runs"]:
        settings = resolve_run_settings(cfg, name)
        runs[name] = {**settings.to_dict(), "steps": settings.steps}
    text = json.dumps({"runs": runs, "benchmarks": ["test"], "report": cfg["report"]})
    out = tmp_path / "tables"
    report("collapse", "--config", text, "--evals", *evals, "--metrics",
           "--out", str(out / "collapse.csv"))  # fmt: skip
    report("tables", "--config", text, "--evals", *evals,
           "--collapse", str(out / "collapse.csv"), "--out-dir", str(out))  # fmt: skip
    return out


def test_an_arm_row_averages_each_seeds_own_checkpoint(tmp_path):
    out = build(tmp_path)
    frame = pd.read_csv(out / "main.csv")
    assert frame["label"].tolist() == ["Original", "SRT_Best", "SRT_Final", "M-GRPO_Final"]
    best, final = frame.iloc[1], frame.iloc[2]
    assert best["run"] == "a1 a2 a3" and best["steps"] == "10 20 30"
    assert best["test"] == pytest.approx(statistics.fmean([0.9, 0.8, 0.7]))
    assert best["test_sd"] == pytest.approx(statistics.stdev([0.9, 0.8, 0.7]))  # sample sd
    assert final["test"] == pytest.approx(statistics.fmean([0.4, 0.7, 0.7]))
    assert final["test_sd"] == pytest.approx(statistics.stdev([0.4, 0.7, 0.7]))
    assert best["test_n"] == final["test_n"] == 3
    single = frame.iloc[3]  # a one-run row: its own value, no sd
    assert single["run"] == "b" and single["step"] == 30 and single["test"] == 0.65
    assert pd.isna(single["test_sd"])
    markdown = (out / "main.md").read_text()
    assert "| SRT_Best | `a1` `a2` `a3` | 10/20/30 | 80.00 ± 10.00% |" in markdown
    assert "| SRT_Final | `a1` `a2` `a3` | 30 | 60.00 ± 17.32% |" in markdown
    assert "| M-GRPO_Final | `b` | 30 | 65.00% |" in markdown
    assert "mean ± sample standard deviation over its seeds" in markdown
    assert r"80.00 $\pm$ 10.00\%" in (out / "main.tex").read_text()


def test_an_arm_row_in_progress_averages_the_evaluated_seeds_and_says_so(tmp_path):
    curves = {**CURVES, "a3": CURVES["a3"][:3]}  # a3 not evaluated at its last step yet
    out = build(tmp_path, curves)
    frame = pd.read_csv(out / "main.csv")
    final = frame.iloc[2]
    assert final["steps"] == "30 30 -"
    assert final["test"] == pytest.approx(statistics.fmean([0.4, 0.7]))
    assert final["test_n"] == 2
    markdown = (out / "main.md").read_text()
    assert "SRT_Final: test is the mean over the 2 of 3 seeds evaluated so far." in markdown
    assert "`a3`: evaluated up to step 20 of 30 (in progress)" in markdown


@pytest.mark.parametrize(
    ("runs", "message"),
    [(["a1", "b"], "differ in more than their seed"), (["a1", "a1"], "listed twice")],
)
def test_an_arm_row_must_name_the_seeds_of_one_arm(runs, message):
    tables = {"t": {"title": "t", "rows": [{"runs": runs, "pick": "final"}]}}
    with pytest.raises(ConfigError, match=message):
        config(tables=tables)
    with pytest.raises(ConfigError, match="unknown run 'zz'"):
        config(tables={"t": {"title": "t", "rows": [{"runs": ["a1", "zz"], "pick": "final"}]}})


def test_the_embedded_default_shows_every_arm_over_three_seeds():
    default = load_config(REPO / "config" / "config.yaml")
    from mgrpo.settings import resolve_run_settings

    runs = {name: resolve_run_settings(default, name) for name in default["runs"]}
    arms = {label: len(members) for label, members in seed_groups(runs).items()}
    assert {"SRT", "M-GRPO", "M-GRPO+IQR"} <= set(arms)
    assert min(arms.values()) >= 3
    for spec in default["report"]["tables"].values():
        for row in spec["rows"]:
            assert row["pick"] == "base" or len(row.get("runs", [])) >= 3, row


def figure_data() -> FigureData:
    runs = {
        name: run_settings(name, method="srt", seed=seed)
        if name != "b"
        else run_settings(name, method="mgrpo", iqr=False, seed=seed)
        for name, seed in (("a1", 1), ("a2", 2), ("a3", 3), ("b", 1))
    }
    evals = pd.DataFrame(
        [(run, s, "test", a) for run in runs for s, a in zip(STEPS, CURVES[run], strict=True)],
        columns=["run", "step", "benchmark", "accuracy"],
    )
    metrics = pd.DataFrame(
        [(run, s, 0.5 + i / 10, None) for i, run in enumerate(runs) for s in range(1, 31)],
        columns=["run", "step", "reward_mean", "entropy_policy"],
    )
    return FigureData(
        evals=evals,
        metrics=metrics,
        collapse=collapse_table(evals, metrics, runs, "test", 0.05, LabelFreeRule.from_report({})),
        runs=runs,
        labels={run: run.upper() for run in runs},
        benchmarks=["test"],
        select_on="test",
    )


def test_fig1_draws_an_arm_as_the_mean_over_its_seeds_with_an_sd_band():
    fig = plot_accuracy(figure_data())
    ax = fig.axes[0]
    labelled = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert set(labelled) == {"SRT (3 seeds)", "B"}
    mean = labelled["SRT (3 seeds)"]
    expected = [statistics.fmean(CURVES[r][i] for r in ARM) for i in range(len(STEPS))]
    assert list(mean.get_xdata()) == STEPS
    assert list(mean.get_ydata()) == pytest.approx(expected)
    assert len(ax.collections) == 1  # one band, for the arm only
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    sd = [statistics.stdev(CURVES[r][i] for r in ARM) for i in range(len(STEPS))]
    for m, d in zip(expected, sd, strict=True):  # mean ± sample sd at every step
        assert min(abs(band - (m + d))) < 1e-9 and min(abs(band - (m - d))) < 1e-9
    seeds = [line for line in ax.lines if line.get_label() in {"_a1", "_a2", "_a3"}]
    assert len(seeds) == 3  # each seed faint beneath the mean
    plt.close(fig)


def test_fig5_one_panel_per_arm():
    data = FigureData(**{**figure_data().__dict__, "figures": {"fig5_collapse": {"runs": ARM}}})
    fig = plot_collapse(data)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 1
    collapsed = data.collapse.set_index("run").loc[ARM, "collapse_step"].notna().sum()
    assert titles[0].startswith(f"SRT (3 seeds): collapse in {collapsed} of 3"), titles
    plt.close(fig)
