"""The label-free collapse warning: synthetic signal curves with known change points, flat and
noisy-flat curves that must not warn, the checkpoint choice, and the scoring tables."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from mgrpo.algorithm.signals import LABEL_FREE_SIGNALS
from mgrpo.config import ConfigError, load_schema, validate_config
from mgrpo.report.label_free import (
    LABEL_FREE_COLUMNS,
    LabelFreeRule,
    choose_checkpoint,
    detect_warning,
    label_free_markdown,
    label_free_table,
    score,
    smoothed_signals,
)
from mgrpo.report.seeds import seed_groups, seed_markdown, seed_table

RULE = LabelFreeRule(
    window=10, baseline_step=20, thresholds={"majority_ratio": 0.3, "vote_agreement": -0.3}
)
CHECKPOINTS = list(range(0, 101, 10))


def metrics(**signals: list[float]) -> pd.DataFrame:
    """Step metrics 1..n from per-signal value lists (None = not logged that step)."""
    n = len(next(iter(signals.values())))
    return pd.DataFrame({"step": range(1, n + 1), **signals})


def step_change(before: float, after: float, at: int, n: int = 100) -> list[float]:
    """``before`` for steps 1..at-1, ``after`` from step ``at`` on."""
    return [before if step < at else after for step in range(1, n + 1)]


# --------------------------------------------------------------------------- smoothing


def test_trailing_mean_and_relative_change_by_hand():
    rule = LabelFreeRule(window=3, baseline_step=3, thresholds={"majority_ratio": 0.5})
    curves = smoothed_signals(metrics(majority_ratio=[1.0, 2.0, 3.0, 4.0, 8.0]), rule)
    assert curves["majority_ratio"].tolist()[2:] == [2.0, 3.0, 5.0]  # means of 1-3, 2-4, 3-5
    assert curves["majority_ratio"].iloc[:2].isna().all()  # no full window yet
    # baseline = the smoothed value at step 3 (2.0): changes 0, +0.5, +1.5
    assert curves["majority_ratio_change"].tolist()[2:] == pytest.approx([0.0, 0.5, 1.5])


def test_smoothing_uses_only_the_past():
    # a spike at step 50 cannot move the smoothed value at step 49 (no centred window)
    values = step_change(0.6, 0.6, 1)
    values[49] = 1.0
    curves = smoothed_signals(metrics(majority_ratio=values), RULE)
    smooth = dict(zip(curves["step"], curves["majority_ratio"], strict=True))
    assert smooth[49] == pytest.approx(0.6)
    assert smooth[50] == pytest.approx(0.64)


def test_unsorted_metrics_are_sorted_and_duplicates_refused():
    frame = metrics(majority_ratio=[0.1, 0.2, 0.3]).iloc[::-1]
    rule = LabelFreeRule(window=2, baseline_step=2, thresholds={"majority_ratio": 0.3})
    assert smoothed_signals(frame, rule)["majority_ratio"].tolist()[1:] == pytest.approx(
        [0.15, 0.25]
    )
    with pytest.raises(ValueError, match="twice"):
        smoothed_signals(pd.concat([frame, frame]), rule)


# --------------------------------------------------------------------------- known change points


def test_rise_warns_when_the_trailing_mean_crosses_the_threshold():
    # 0.6 until step 60, then 0.95: mean at step t = 0.6 + 0.35 (t - 60) / 10 reaches
    # 0.6 * 1.3 = 0.78 once t - 60 >= 5.14 -> step 66 (0.775 at step 65)
    warning = detect_warning(metrics(majority_ratio=step_change(0.6, 0.95, 61)), CHECKPOINTS, RULE)
    assert (warning.step, warning.signal) == (66, "majority_ratio")
    assert warning.choice_step == 50  # last checkpoint at or before 66 - 10


def test_fall_warns_with_a_negative_threshold():
    # 0.5 until step 60, then 0.15: mean 0.5 - 0.35 (t - 60) / 10 <= 0.35 once t - 60 >= 4.29
    # -> step 65 (0.36 at step 64)
    flat = step_change(0.6, 0.6, 1)
    warning = detect_warning(
        metrics(majority_ratio=flat, vote_agreement=step_change(0.5, 0.15, 61)), CHECKPOINTS, RULE
    )
    assert (warning.step, warning.signal) == (65, "vote_agreement")
    assert warning.choice_step == 50


def test_a_rise_of_a_fall_signal_does_not_warn():
    # vote agreement rising (pi_q and pi_k converging) is not drift
    flat = step_change(0.6, 0.6, 1)
    warning = detect_warning(
        metrics(majority_ratio=flat, vote_agreement=step_change(0.4, 0.9, 61)), CHECKPOINTS, RULE
    )
    assert warning.step is None


@pytest.mark.parametrize(("before", "after", "threshold"), [(0.5, 1.0, 0.5), (1.0, 0.0, -0.5)])
def test_a_change_of_exactly_the_threshold_warns(before, after, threshold):
    # window 2, baseline = mean of steps 1-2 = before; at step 3 the mean is halfway to after,
    # a change of exactly +-50 % (exact in binary floating point): "at least", not "more than"
    rule = LabelFreeRule(window=2, baseline_step=2, thresholds={"majority_ratio": threshold})
    frame = metrics(majority_ratio=[before, before, after, after, after])
    assert smoothed_signals(frame, rule)["majority_ratio_change"].tolist()[2] == threshold
    assert detect_warning(frame, [0, 5], rule).step == 3


def test_first_signal_to_cross_wins():
    warning = detect_warning(
        metrics(
            majority_ratio=step_change(0.6, 0.95, 71), vote_agreement=step_change(0.5, 0.15, 61)
        ),
        CHECKPOINTS,
        RULE,
    )
    assert (warning.step, warning.signal) == (65, "vote_agreement")


@pytest.mark.parametrize("level", [0.3, 0.6, 0.95])
def test_flat_curves_never_warn(level):
    flat = step_change(level, level, 1)
    warning = detect_warning(metrics(majority_ratio=flat, vote_agreement=flat), CHECKPOINTS, RULE)
    assert warning.step is None and warning.signal is None
    assert warning.choice_step == 100  # no warning: keep the final checkpoint


SHIPPED = LabelFreeRule.from_report({})  # the schema's defaults: what every config runs


@pytest.mark.parametrize("level", [0.3, 0.6, 0.95])
def test_flat_curves_never_warn_with_the_shipped_rule(level):
    flat = step_change(level, level, 1)
    signals = {name: flat for name in LABEL_FREE_SIGNALS}
    assert detect_warning(metrics(**signals), CHECKPOINTS, SHIPPED).step is None


@pytest.mark.parametrize("seed", range(20))
def test_noisy_flat_curves_never_warn_with_the_shipped_rule(seed):
    # Per-step noise as in the development runs (8 prompts a step): entropy sd 0.009 around
    # 0.088, majority ratio sd 0.075 around 0.62, vote agreement binomial(8, 0.45) / 8 (sd 0.18).
    rng = random.Random(seed)
    signals = {
        "entropy_policy": [rng.gauss(0.088, 0.009) for _ in range(100)],
        "majority_ratio": [min(1.0, rng.gauss(0.62, 0.075)) for _ in range(100)],
        "vote_agreement": [sum(rng.random() < 0.45 for _ in range(8)) / 8 for _ in range(100)],
    }
    assert detect_warning(metrics(**signals), CHECKPOINTS, SHIPPED).step is None


def test_shipped_rule_catches_a_policy_running_away_from_its_anchor():
    # vote agreement 0.45 -> 0.1 from step 51 (pi_q's vote leaves pi_k's): the trailing mean
    # over 20 steps, 0.45 - 0.35 (t - 50) / 20, reaches 0.45 * 0.6 = 0.27 once t - 50 >= 10.3
    # -> step 61 (0.275 at step 60)
    entropy = step_change(0.088, 0.088, 1)
    agree = step_change(0.45, 0.1, 51)
    warning = detect_warning(
        metrics(entropy_policy=entropy, vote_agreement=agree), CHECKPOINTS, SHIPPED
    )
    assert (warning.step, warning.signal) == (61, "vote_agreement")
    assert warning.choice_step == 40  # last checkpoint at or before 61 - 20


def test_a_change_before_the_baseline_moves_the_baseline_instead():
    # early learning (steps 1-10) is absorbed in the reference: flat after it, no warning
    warning = detect_warning(metrics(majority_ratio=step_change(0.4, 0.9, 11)), CHECKPOINTS, RULE)
    assert warning.step is None


def test_steps_before_the_baseline_never_warn():
    # 1.0 for steps 1-15, then 0.5: at step 10 the trailing mean (1.0) is 33 % above the
    # baseline (the mean over steps 11-20, 0.75), but the reference is not set yet; after
    # step 20 the ratio only falls
    warning = detect_warning(metrics(majority_ratio=step_change(1.0, 0.5, 16)), CHECKPOINTS, RULE)
    assert warning.step is None


def test_signals_a_run_does_not_log_are_skipped():
    # single-policy methods log no vote agreement: the rule still reads the majority ratio
    missing = [None] * 100
    warning = detect_warning(
        metrics(majority_ratio=step_change(0.6, 0.95, 61), vote_agreement=missing),
        CHECKPOINTS,
        RULE,
    )
    assert (warning.step, warning.signal) == (66, "majority_ratio")
    only_ratio = metrics(majority_ratio=step_change(0.6, 0.95, 61))
    assert detect_warning(only_ratio, CHECKPOINTS, RULE).step == 66


# --------------------------------------------------------------------------- checkpoint choice


@pytest.mark.parametrize(
    ("warning", "expected"),
    [(None, 100), (66, 50), (60, 50), (61, 50), (70, 60), (15, 0), (5, 0)],
)
def test_choose_checkpoint(warning, expected):
    assert choose_checkpoint(CHECKPOINTS, warning, 10) == expected


def test_choose_checkpoint_needs_checkpoints():
    with pytest.raises(ValueError, match="no checkpoints"):
        choose_checkpoint([], None, 10)


# --------------------------------------------------------------------------- rule settings


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window"),
        ({"window": 10, "baseline_step": 5}, "baseline_step"),
        ({"thresholds": {}}, "at least one"),
        ({"thresholds": {"label_accuracy": -0.1}}, "not a label-free signal"),
        ({"thresholds": {"majority_ratio": 0.0}}, "non-zero"),
    ],
)
def test_bad_rules_are_refused(kwargs, message):
    spec = {"window": 10, "baseline_step": 20, "thresholds": {"majority_ratio": 0.3}, **kwargs}
    with pytest.raises(ValueError, match=message):
        LabelFreeRule(**spec)


def test_rule_from_report_fills_schema_defaults():
    defaults = LabelFreeRule.from_report({})
    assert LabelFreeRule.from_report({"label_free": {"window": 5}}).window == 5
    assert (
        LabelFreeRule.from_report({"label_free": {"window": 5}}).thresholds == defaults.thresholds
    )
    with pytest.raises(ValueError, match="unknown key"):
        LabelFreeRule.from_report({"label_free": {"widow": 5}})


def test_schema_lists_exactly_the_label_free_signals():
    props = load_schema()["properties"]["report"]["properties"]["label_free"]["properties"]
    assert props["thresholds"]["propertyNames"]["enum"] == list(LABEL_FREE_SIGNALS)


@pytest.mark.parametrize(
    ("label_free", "key"),
    [
        ({"window": 10, "baseline_step": 5}, "report.label_free.baseline_step"),
        ({"thresholds": {"label_accuracy": -0.2}}, "report.label_free.thresholds"),
        ({"thresholds": {"majority_ratio": 0}}, "report.label_free.thresholds.majority_ratio"),
    ],
)
def test_config_errors_name_the_key(label_free, key):
    raw = {
        "runs": {"a": {}},
        "benchmarks": {"t": {"source": "toy", "split": "test"}},
        "report": {"label_free": label_free},
    }
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        validate_config(raw)


# --------------------------------------------------------------------------- scoring


def collapse_rows() -> pd.DataFrame:
    """Hand-built collapse table: a hit, a late hit, two false alarms, a miss, a quiet run."""
    rows = [
        # run, collapsed, collapse step, warning step, best, final, choice (step, accuracy)
        ("hit", True, 50, 42, (20, 0.85), 0.60, (30, 0.80)),
        ("late", True, 40, 55, (30, 0.84), 0.50, (40, 0.70)),
        ("false_alarm", False, None, 30, (60, 0.82), 0.81, (20, 0.79)),
        ("false_alarm2", False, None, 70, (40, 0.80), 0.78, (50, 0.80)),
        ("miss", True, 60, None, (20, 0.86), 0.55, (100, 0.55)),
        ("stable", False, None, None, (90, 0.83), 0.83, (100, 0.83)),
    ]
    records = [
        {
            "run": run,
            "method": "SRT",
            "benchmark": "test",
            "best_step": best[0],
            "best_accuracy": best[1],
            "final_step": 100,
            "final_accuracy": final,
            "drop": best[1] - final,
            "collapse_step": collapse,
            "collapsed": collapsed,
            "warning_step": warning,
            "warning_signal": None if warning is None else "majority_ratio",
            "choice_step": choice[0],
            "choice_accuracy": choice[1],
        }
        for run, collapsed, collapse, warning, best, final, choice in rows
    ]
    frame = pd.DataFrame.from_records(records)
    for column in ("collapse_step", "warning_step"):
        frame[column] = frame[column].astype("Int64")
    return frame


def test_label_free_table_lead_is_collapse_minus_warning():
    table = label_free_table(collapse_rows())
    assert tuple(table.columns) == LABEL_FREE_COLUMNS
    lead = dict(zip(table["run"], table["lead"], strict=True))
    assert (lead["hit"], lead["late"]) == (8, -15)
    assert all(pd.isna(lead[r]) for r in ("false_alarm", "false_alarm2", "miss", "stable"))


def test_score_precision_recall_and_lead_by_hand():
    got = score(label_free_table(collapse_rows()))
    # warned: hit, late, both false alarms -> 2 of 4 collapsed; collapsed: hit, late, miss ->
    # 2 of 3 warned
    assert (got.runs, got.collapsed, got.warned, got.true_positives) == (6, 3, 4, 2)
    assert got.precision == pytest.approx(2 / 4)
    assert got.recall == pytest.approx(2 / 3)
    assert got.median_lead == pytest.approx((8 - 15) / 2)
    assert got.early == 1
    assert got.best_accuracy == pytest.approx((0.85 + 0.84 + 0.82 + 0.80 + 0.86 + 0.83) / 6)
    assert got.final_accuracy == pytest.approx((0.60 + 0.50 + 0.81 + 0.78 + 0.55 + 0.83) / 6)
    assert got.choice_accuracy == pytest.approx((0.80 + 0.70 + 0.79 + 0.80 + 0.55 + 0.83) / 6)


def test_median_lead_is_the_median_of_the_warned_collapses():
    # three hits with leads +10, +2 and -30 (median 2, mean -6); the false alarm has no lead
    rows = collapse_rows().iloc[[0, 0, 0, 2]].reset_index(drop=True)
    rows["run"] = ["a", "b", "c", "false_alarm"]
    rows["warning_step"] = pd.array([40, 48, 80, 30], dtype="Int64")
    got = score(label_free_table(rows))
    assert got.median_lead == 2.0
    assert got.early == 2


def test_score_without_warnings_or_collapses_is_undefined_not_zero():
    quiet = collapse_rows()
    quiet = quiet[quiet["run"] == "stable"]
    got = score(label_free_table(quiet))
    assert (got.precision, got.recall, got.median_lead) == (None, None, None)
    with pytest.raises(ValueError, match="no finished runs"):
        score(label_free_table(quiet.iloc[:0]))


def test_only_finished_runs_are_scored():
    rows = collapse_rows()
    # "hit" is still training (evaluated up to step 100 of 200): its verdicts so far are shown
    # but not scored; "miss" has no evaluation yet
    rows.loc[rows["run"] == "miss", ["best_step", "final_step"]] = None
    steps = dict.fromkeys(rows["run"], 100) | {"hit": 200}
    table = label_free_table(rows, steps)
    assert dict(zip(table["run"], table["finished"], strict=True)) == {
        "hit": False, "late": True, "false_alarm": True, "false_alarm2": True, "miss": False,
        "stable": True,
    }  # fmt: skip
    got = score(table)
    assert (got.runs, got.collapsed, got.warned, got.true_positives) == (4, 1, 3, 1)
    text = label_free_markdown(table, RULE, "test")
    assert "- runs scored: 4 (finished)" in text
    assert "not finished in results/ yet (2): `hit`, `miss`" in text
    assert "| hit | SRT | in progress | 50 | 42 | majority_ratio | +8 | 85.0 (20) |  |" in text
    assert "| miss | SRT | not evaluated |" in text


def test_label_free_markdown_states_the_scores():
    text = label_free_markdown(label_free_table(collapse_rows()), RULE, "test")
    assert "precision: 50.0 % (2/4 warnings were collapses)" in text
    assert "base rate: 50.0 % of runs collapsed" in text
    assert "recall: 66.7 % (2/3 collapses were warned)" in text
    assert "median lead over warned collapses: -4 steps" in text  # -3.5 rounds half to even
    assert (
        "| hit | SRT | yes | 50 | 42 | majority_ratio | +8 | 85.0 (20) | 60.0 | 80.0 (30) |" in text
    )
    assert "| miss | SRT | yes | 60 | none |  | none | 86.0 (20) | 55.0 | 55.0 (100) |" in text


# --------------------------------------------------------------------------- seeds


def arm_settings(method: str, lr: float, seed: int, **extra) -> dict:
    return {"method": method, "rollouts": 8, "lr": lr, "seed": seed, "iqr": None, **extra}


SEED_RUNS = {
    "srt_s1": arm_settings("srt", 1e-4, 1),
    "srt_s2": arm_settings("srt", 1e-4, 2),
    "mg_s1": arm_settings("mgrpo", 1e-4, 1, iqr=True, iqr_scope="vote"),
    "mg_s2": arm_settings("mgrpo", 1e-4, 2, iqr=True, iqr_scope="vote"),
    "srt_hi_s1": arm_settings("srt", 1.5e-4, 1),
}


def test_seed_groups_one_arm_per_setting_but_seed():
    groups = seed_groups(SEED_RUNS)
    # ordered by lr, then method (SRT before M-GRPO)
    assert list(groups.items()) == [
        ("SRT, lr=1.0e-04", ["srt_s1", "srt_s2"]),
        ("M-GRPO+IQR(vote), lr=1.0e-04", ["mg_s1", "mg_s2"]),
        ("SRT, lr=1.5e-04", ["srt_hi_s1"]),
    ]
    reordered = dict(reversed(list(SEED_RUNS.items())))
    assert list(seed_groups(reordered)) == list(groups)
    # without a varying setting the label is the method's alone
    assert list(seed_groups({k: SEED_RUNS[k] for k in ("srt_s1", "srt_s2")})) == ["SRT"]


def test_seed_table_mean_and_sample_sd_by_hand():
    frame = pd.DataFrame(
        [
            # run, best step, best, final, collapsed, warning step, choice accuracy
            ("srt_s1", 10, 0.80, 0.50, True, 30, 0.70),
            ("srt_s2", 30, 0.90, 0.70, True, None, 0.70),
            ("mg_s1", 20, 0.85, 0.85, False, None, 0.85),
            ("mg_s2", 20, 0.85, 0.75, True, 60, 0.80),
            ("srt_hi_s1", 10, 0.82, 0.10, True, 20, 0.76),
        ],
        columns=["run", "best_step", "best_accuracy", "final_accuracy", "collapsed",
                 "warning_step", "choice_accuracy"],
    )  # fmt: skip
    frame["drop"] = frame["best_accuracy"] - frame["final_accuracy"]
    frame["warning_step"] = frame["warning_step"].astype("Int64")
    table = seed_table(frame, SEED_RUNS, dict.fromkeys(SEED_RUNS, 0.76)).set_index("arm")
    srt = table.loc["SRT, lr=1.0e-04"]
    assert (srt["runs"], srt["seeds"], srt["collapsed"], srt["warned"]) == (2, "1 2", 2, 1)
    assert srt["best_mean"] == pytest.approx(0.85)
    assert srt["best_sd"] == pytest.approx(0.0707107, abs=1e-6)  # sample sd of 0.8, 0.9
    assert srt["final_mean"] == pytest.approx(0.60)
    assert srt["drop_mean"] == pytest.approx(0.25)
    assert srt["drop_sd"] == pytest.approx(0.0707107, abs=1e-6)  # drops 0.3 and 0.2
    assert srt["best_step_mean"] == 20
    assert srt["choice_sd"] == pytest.approx(0.0)
    lone = table.loc["SRT, lr=1.5e-04"]
    assert lone["runs"] == 1 and pd.isna(lone["best_sd"])
    text = seed_markdown(table.reset_index(), "test")
    assert "| SRT, lr=1.0e-04 | 1 2 | 76.0 | 85.0 ± 7.1 | 20 | 60.0 ± 14.1 |" in text
    assert "| SRT, lr=1.5e-04 | 1 | 76.0 | 82.0 | 10 | 10.0 | 72.0 | 1/1 | 1/1 | 76.0 |" in text
