"""The collapse detector on hand-computed curves, plus the invariants that define it."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import run_settings

from mgrpo.report import FIGURES, TABLE_FORMATS, table_names
from mgrpo.report.collapse import (
    COLLAPSE_COLUMNS,
    Collapse,
    collapse_table,
    detect_collapse,
    read_collapse,
)
from mgrpo.report.label_free import LabelFreeRule

MARGIN = 0.05


def test_monotone_rise_is_not_a_collapse():
    got = detect_collapse([0, 10, 20, 30], [0.5, 0.6, 0.7, 0.8], MARGIN)
    assert got == Collapse(30, 0.8, 30, 0.8, 0.0, None, False)


def test_rise_then_sustained_drop_collapses_at_first_step_of_the_drop():
    got = detect_collapse([0, 10, 20, 30, 40, 50], [0.5, 0.8, 0.78, 0.6, 0.5, 0.4], MARGIN)
    assert (got.best_step, got.final_step, got.collapse_step, got.collapsed) == (10, 50, 30, True)
    assert got.best_accuracy == 0.8
    assert got.final_accuracy == 0.4
    assert got.drop == pytest.approx(0.4)


def test_dip_that_recovers_is_not_a_collapse():
    got = detect_collapse([0, 10, 20, 30, 40], [0.5, 0.8, 0.5, 0.6, 0.79], MARGIN)
    assert got.collapse_step is None
    assert not got.collapsed
    assert got.drop == pytest.approx(0.01)


def test_dip_then_recovery_then_final_drop_collapses_at_the_final_drop():
    got = detect_collapse([0, 10, 20, 30, 40], [0.5, 0.8, 0.5, 0.79, 0.5], MARGIN)
    assert got.collapse_step == 40


def test_drop_within_the_margin_is_not_a_collapse():
    got = detect_collapse([0, 10, 20, 30], [0.5, 0.8, 0.77, 0.76], MARGIN)
    assert got.collapse_step is None
    assert got.drop == pytest.approx(0.04)


def test_a_larger_margin_forgives_a_drop_a_smaller_one_flags():
    steps, acc = [0, 10, 20], [0.5, 0.8, 0.7]
    assert detect_collapse(steps, acc, 0.05).collapse_step == 20
    assert detect_collapse(steps, acc, 0.2).collapse_step is None


def test_ties_pick_the_earliest_best_step():
    got = detect_collapse([0, 10, 20, 30], [0.5, 0.7, 0.7, 0.3], MARGIN)
    assert got.best_step == 10
    assert got.collapse_step == 30


def test_single_point():
    got = detect_collapse([0], [0.42], MARGIN)
    assert got == Collapse(0, 0.42, 0, 0.42, 0.0, None, False)


def test_unsorted_input_is_sorted_by_step():
    got = detect_collapse([30, 0, 20, 10], [0.4, 0.5, 0.6, 0.8], MARGIN)
    assert (got.best_step, got.final_step, got.final_accuracy) == (10, 30, 0.4)
    assert got.collapse_step == 20


@pytest.mark.parametrize(
    ("steps", "accuracies", "margin", "message"),
    [
        ([], [], MARGIN, "empty"),
        ([0, 10], [0.5], MARGIN, "2 steps but 1"),
        ([0, 0], [0.5, 0.6], MARGIN, "duplicate steps"),
        ([0, 10], [0.5, float("nan")], MARGIN, "non-finite"),
        ([0], [0.5], -0.1, "margin"),
    ],
)
def test_bad_input_is_an_error(steps, accuracies, margin, message):
    with pytest.raises(ValueError, match=message):
        detect_collapse(steps, accuracies, margin)


curves = st.dictionaries(
    st.integers(0, 1000), st.floats(0, 1, allow_nan=False), min_size=1, max_size=30
)


@given(curves, st.floats(0, 0.5))
def test_invariants(curve, margin):
    """Best is a maximum; the collapse tail is exactly the maximal suffix below best - margin."""
    got = detect_collapse(list(curve), list(curve.values()), margin)
    steps = sorted(curve)
    threshold = got.best_accuracy - margin
    assert got.best_accuracy == max(curve.values())
    assert got.best_step == min(s for s in steps if curve[s] == got.best_accuracy)
    assert got.final_step == steps[-1]
    if got.collapsed:
        tail = [s for s in steps if s >= got.collapse_step]
        assert got.collapse_step > got.best_step
        assert all(curve[s] < threshold for s in tail)
        assert curve[steps[steps.index(got.collapse_step) - 1]] >= threshold
    else:
        assert curve[steps[-1]] >= threshold


RULE = LabelFreeRule(window=5, baseline_step=5, thresholds={"majority_ratio": 0.3})


def flat_metrics(runs: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [(run, step, 0.6) for run in runs for step in range(1, 21)],
        columns=["run", "step", "majority_ratio"],
    )


def test_collapse_table_one_row_per_run_on_select_on_only():
    evals = pd.DataFrame(
        [
            ("srt", 0, "math", 0.5), ("srt", 10, "math", 0.8), ("srt", 20, "math", 0.3),
            ("srt", 0, "aime", 0.1), ("srt", 10, "aime", 0.0), ("srt", 20, "aime", 0.9),
            ("mg", 0, "math", 0.5), ("mg", 10, "math", 0.6), ("mg", 20, "math", 0.7),
        ],
        columns=["run", "step", "benchmark", "accuracy"],
    )  # fmt: skip
    runs = {"srt": run_settings("srt", method="srt"), "mg": run_settings("mg", method="mgrpo")}
    table = collapse_table(evals, flat_metrics(runs), runs, "math", MARGIN, RULE)
    assert tuple(table.columns) == COLLAPSE_COLUMNS
    assert table["run"].tolist() == ["srt", "mg"]
    assert table["method"].tolist() == ["SRT", "M-GRPO+IQR"]
    assert table["benchmark"].tolist() == ["math", "math"]
    assert table["best_step"].tolist() == [10, 20]
    assert table["collapse_step"].tolist() == [20, pd.NA]
    assert table["collapsed"].tolist() == [True, False]
    # flat signals: no label-free warning, so the label-free choice is the final checkpoint
    assert table["warning_step"].isna().all()
    assert table["choice_step"].tolist() == [20, 20]
    assert table["choice_accuracy"].tolist() == [0.3, 0.7]


def test_collapse_table_keeps_a_run_without_evaluations_as_an_empty_row(tmp_path):
    # A partial results/ (a run not evaluated yet) must not fail the report.
    evals = pd.DataFrame(
        [("srt", 0, "aime", 0.1), ("mg", 0, "math", 0.5), ("mg", 10, "math", 0.6)],
        columns=["run", "step", "benchmark", "accuracy"],
    )
    runs = {"srt": run_settings("srt", method="srt"), "mg": run_settings("mg", method="mgrpo")}
    # srt has trained (its metrics show a warning at step 11) but nothing is evaluated yet
    metrics = pd.DataFrame(
        [("srt", step, 0.6 if step <= 5 else 0.95) for step in range(1, 21)]
        + [("mg", step, 0.6) for step in range(1, 21)],
        columns=["run", "step", "majority_ratio"],
    )
    table = collapse_table(evals, metrics, runs, "math", MARGIN, RULE)
    assert table["run"].tolist() == ["srt", "mg"]
    assert table["best_step"].tolist() == [pd.NA, 10]
    assert table["final_step"].tolist() == [pd.NA, 10]
    assert table["collapsed"].tolist() == [False, False]
    # the label-free warning needs metrics only; its choice needs an evaluated checkpoint
    assert table["warning_step"].tolist() == [8, pd.NA]  # trailing mean of 5 crosses 0.78
    assert table["choice_step"].tolist() == [pd.NA, 10]
    path = tmp_path / "collapse.csv"
    path.write_text(table.to_csv(index=False))
    back = read_collapse(path)
    assert back["best_step"].tolist() == [pd.NA, 10]
    assert back["collapsed"].tolist() == [False, False]
    assert back["warning_step"].tolist() == [8, pd.NA]
    assert back["choice_step"].tolist() == [pd.NA, 10]


def test_collapse_table_label_free_choice_and_its_accuracy():
    # majority ratio jumps at step 11: the 5-step mean crosses +30 % at step 13, so the choice
    # is the last checkpoint at or before step 13 - 5 = 8, and its accuracy is that step's
    evals = pd.DataFrame(
        [("srt", s, "math", a) for s, a in ((0, 0.5), (4, 0.6), (8, 0.7), (12, 0.4), (20, 0.2))],
        columns=["run", "step", "benchmark", "accuracy"],
    )
    metrics = pd.DataFrame(
        [("srt", step, 0.6 if step <= 10 else 0.95) for step in range(1, 21)],
        columns=["run", "step", "majority_ratio"],
    )
    runs = {"srt": run_settings("srt", method="srt")}
    row = collapse_table(evals, metrics, runs, "math", MARGIN, RULE).iloc[0]
    assert (row["warning_step"], row["warning_signal"]) == (13, "majority_ratio")
    assert (row["choice_step"], row["choice_accuracy"]) == (8, 0.7)
    assert (row["best_step"], row["collapse_step"]) == (8, 12)


def test_collapse_table_run_without_metrics_has_no_warning():
    # evaluated but its metrics are not in results/ (yet): no warning, the final checkpoint
    evals = pd.DataFrame(
        [("srt", 0, "math", 0.1), ("srt", 10, "math", 0.4)],
        columns=["run", "step", "benchmark", "accuracy"],
    )
    runs = {"srt": run_settings("srt")}
    table = collapse_table(evals, flat_metrics({"mg": {}}), runs, "math", MARGIN, RULE)
    assert table["warning_step"].tolist() == [pd.NA]
    assert (table["choice_step"].tolist(), table["choice_accuracy"].tolist()) == ([10], [0.4])


def test_table_names_default_and_configured():
    assert table_names({"tables": {}}) == ["runs"]
    assert table_names({}) == ["runs"]
    assert table_names({"tables": {"table1": {}, "table2": {}}}) == ["table1", "table2"]
    for reserved in ("collapse", "label_free", "seeds"):
        with pytest.raises(ValueError, match="reserved"):
            table_names({"tables": {reserved: {}}})
    assert TABLE_FORMATS == ("md", "csv", "tex")
    assert len(FIGURES) == 4
