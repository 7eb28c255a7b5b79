"""Score candidate label-free rules on a finished experiment (how report.label_free was chosen).

    .venv/bin/python scripts/label_free_candidates.py results/experiments/toy-seeds-dev

Reads the experiment's evaluations (for the labelled verdicts) and step metrics, applies
every candidate rule (one watched signal, one relative threshold, one smoothing window) and
prints precision, recall, median lead and the mean accuracy of the label-free choice, plus two
references that read no signal at all: never warn (keep the final checkpoint) and stop at a
fixed step. Run it on the development runs only: the rule it helps choose is scored on others.
On the scored runs, ``--references-only`` prints the two references alone (no candidate rule),
the yardsticks docs/label-free.md sets the shipped rule against.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd

from mgrpo.report.collapse import detect_collapse
from mgrpo.report.label_free import (
    LabelFreeRule,
    choose_checkpoint,
    detect_warning,
    label_free_table,
    score,
)
from mgrpo.report.results import load_evals, load_metrics

# signal -> the direction the mechanism predicts in a collapse (+1 rises, -1 falls)
DIRECTIONS = {
    "majority_ratio": +1,
    "reward_mean": +1,
    "entropy_policy": -1,
    "vote_agreement": -1,
    "answer_rate": -1,
    "response_length": -1,
}
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
WINDOWS = (10, 20)
BASELINE_STEP = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="e.g. results/experiments/toy-seeds-dev")
    parser.add_argument("--select-on", default="test")
    parser.add_argument("--margin", type=float, default=0.05, help="report.collapse_margin")
    parser.add_argument(
        "--references-only",
        action="store_true",
        help="only never-warn and fixed-stop rows (for scored runs: no rule is chosen there)",
    )
    args = parser.parse_args()
    results = args.experiment / "results"
    evals = load_evals(sorted(results.glob("eval/*/step*/*.json")))
    evals = evals[(evals["benchmark"] == args.select_on) & (evals["run"] != "base")]
    metrics = load_metrics(sorted(results.glob("runs/*/metrics/*.jsonl")))
    verdicts = []
    for run, curve in evals.groupby("run"):
        verdict = detect_collapse(curve["step"].tolist(), curve["accuracy"].tolist(), args.margin)
        verdicts.append({"run": run, "method": "", **verdict.__dict__})
    collapse = pd.DataFrame(verdicts)
    collapse["collapse_step"] = collapse["collapse_step"].astype("Int64")

    def table_for(warn: dict[str, tuple[int | None, int]]) -> pd.DataFrame:
        rows = collapse.copy()
        for run, (step, choice) in warn.items():
            accuracy = evals[(evals["run"] == run) & (evals["step"] == choice)]["accuracy"]
            index = rows.index[rows["run"] == run]
            rows.loc[index, ["warning_step", "choice_step", "choice_accuracy"]] = (
                step,
                choice,
                float(accuracy.iloc[0]),
            )
        rows["warning_signal"] = "candidate"
        for column in ("warning_step", "choice_step"):
            rows[column] = rows[column].astype("Int64")
        return label_free_table(rows)

    checkpoints = {
        run: sorted(evals[evals["run"] == run]["step"].astype(int)) for run in collapse["run"]
    }
    lines = []

    def report(name: str, table: pd.DataFrame) -> None:
        s = score(table)
        lines.append(
            {
                "rule": name,
                "warned": s.warned,
                "collapsed": s.collapsed,
                "precision": s.precision,
                "recall": s.recall,
                "median_lead": s.median_lead,
                "early": f"{s.early}/{s.true_positives}",
                "choice": s.choice_accuracy,
                "final": s.final_accuracy,
                "best": s.best_accuracy,
            }
        )

    report("never warn (final)", table_for({r: (None, c[-1]) for r, c in checkpoints.items()}))
    for step in (10, 20, 30, 50):
        fixed = {r: (step, choose_checkpoint(c, step, 0)) for r, c in checkpoints.items()}
        report(f"fixed stop at step {step}", table_for(fixed))
    candidates = itertools.product(DIRECTIONS, THRESHOLDS, WINDOWS)
    for signal, threshold, window in [] if args.references_only else candidates:
        rule = LabelFreeRule(window, BASELINE_STEP, {signal: DIRECTIONS[signal] * threshold})
        warn = {}
        for run, steps in checkpoints.items():
            w = detect_warning(metrics[metrics["run"] == run], steps, rule)
            warn[run] = (w.step, w.choice_step)
        report(f"{signal} {DIRECTIONS[signal] * threshold:+.0%} w{window}", table_for(warn))
    frame = pd.DataFrame(lines)
    with pd.option_context("display.max_rows", None, "display.width", 200):
        frame.to_string(sys.stdout, index=False, float_format=lambda v: f"{v:.3f}")
    print()


if __name__ == "__main__":
    main()
