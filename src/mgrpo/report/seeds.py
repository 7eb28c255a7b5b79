"""Seed-aggregated results: runs that differ only in ``seed`` form one arm, reported as mean ± sd.

A single toy run is one draw of data order and sampling noise; differences between arms mean
something only next to the spread between seeds of the same arm.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mgrpo.algorithm.methods import IQR_SCOPES, METHOD_REWARDS, method_from_settings
from mgrpo.report import markdown_row
from mgrpo.report.label_free import pd_isna

if TYPE_CHECKING:
    import pandas as pd

# Settings that never define an arm: the seed varies within it, the name is per run, and the
# length of a run is the same question asked for longer.
NOT_ARM = ("seed", "run")
# Shown through the method label (SRT+IQR(vote) ...) rather than as key=value.
IN_METHOD_LABEL = ("method", "iqr", "iqr_scope")

SEED_COLUMNS = (
    "arm",
    "runs",  # finished runs, averaged below
    "pending",  # runs of the arm not finished in results/ yet
    "seeds",
    "base_accuracy",
    "best_mean",
    "best_sd",
    "best_step_mean",
    "final_mean",
    "final_sd",
    "drop_mean",
    "drop_sd",
    "collapsed",
    "warned",
    "choice_mean",
    "choice_sd",
)


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        return f"{value:.1e}"
    return str(value)


def _order(value: Any) -> tuple:
    """Sort key of a setting's value: numbers ascending first, anything else by its text."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return (0, value, "") if number else (1, 0, str(value))


def seed_groups(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Arm label -> its runs. Runs sharing every setting but the seed are one arm.

    The label is the method's (``SRT+IQR``) plus every other setting in which arms differ,
    e.g. ``M-GRPO, lr=1.5e-04``. Arms are ordered by those settings (numbers ascending), then
    by method (SRT, M-GRPO, Intuitor, GT-GRPO; no filter, IQR, IQR on the vote only); runs
    keep their given order within an arm.
    """
    arms: dict[tuple, list[str]] = {}
    for run, settings in runs.items():
        key = tuple(sorted((k, repr(v)) for k, v in settings.items() if k not in NOT_ARM))
        arms.setdefault(key, []).append(run)
    values: dict[str, set[str]] = {}
    for key in arms:
        for k, v in key:
            values.setdefault(k, set()).add(v)
    shared = {k for k, v in values.items() if len(v) == 1 and all(k in dict(a) for a in arms)}
    varying = sorted(set(values) - shared - set(IN_METHOD_LABEL))

    def rank(group: list[str]) -> tuple:
        first = runs[group[0]]
        method = method_from_settings(dict(first))
        scope = 0 if method.iqr_k is None else 1 + IQR_SCOPES.index(method.iqr_scope)
        return (
            tuple(_order(first.get(k)) for k in varying),
            list(METHOD_REWARDS).index(method.name),
            scope,
        )

    groups: dict[str, list[str]] = {}
    for group in sorted(arms.values(), key=rank):
        first = runs[group[0]]
        label = method_from_settings(dict(first)).label
        extra = [f"{k}={_format_value(first.get(k))}" for k in varying]
        name = ", ".join([label, *extra])
        if name in groups:  # only if two arms differ in a method-label key alone
            raise ValueError(f"two arms would both be called {name!r}")
        groups[name] = group
    return groups


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def seed_table(
    collapse: pd.DataFrame,
    runs: Mapping[str, Mapping[str, Any]],
    base_accuracy: Mapping[str, float],
    finished: Collection[str] | None = None,
) -> pd.DataFrame:
    """One row per arm: mean and sample standard deviation over its seeds (SEED_COLUMNS).

    ``collapse`` is the collapse table (with its label-free columns); ``base_accuracy`` maps
    each finished run to its step-0 accuracy on the select_on benchmark. Only ``finished`` runs
    (default: all) are averaged; ``pending`` counts an arm's others (a partial ``results/``),
    and an arm with no finished run keeps its row with empty numbers.
    """
    import pandas as pd

    verdicts = collapse.set_index("run")
    done = set(runs if finished is None else finished)
    records = []
    for arm, group in seed_groups(runs).items():
        members = [run for run in group if run in done]
        record: dict[str, Any] = {
            "arm": arm,
            "runs": len(members),
            "pending": len(group) - len(members),
            "seeds": " ".join(str(runs[run].get("seed")) for run in members),
        }
        if members:
            rows = verdicts.loc[members]
            best, best_sd = _mean_sd(rows["best_accuracy"].astype(float).tolist())
            final, final_sd = _mean_sd(rows["final_accuracy"].astype(float).tolist())
            drop, drop_sd = _mean_sd(rows["drop"].astype(float).tolist())
            choice, choice_sd = _mean_sd(rows["choice_accuracy"].astype(float).tolist())
            record |= {
                "base_accuracy": statistics.fmean(float(base_accuracy[r]) for r in members),
                "best_mean": best,
                "best_sd": best_sd,
                "best_step_mean": statistics.fmean(rows["best_step"].astype(float)),
                "final_mean": final,
                "final_sd": final_sd,
                "drop_mean": drop,
                "drop_sd": drop_sd,
                "collapsed": int(rows["collapsed"].astype(bool).sum()),
                "warned": int(rows["warning_step"].notna().sum()),
                "choice_mean": choice,
                "choice_sd": choice_sd,
            }
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(SEED_COLUMNS))
    for column in ("collapsed", "warned"):  # counts, empty for an arm with no finished run
        frame[column] = frame[column].astype("Int64")
    return frame


def _pm(mean: float, sd: float | None) -> str:
    if pd_isna(mean):
        return ""
    if pd_isna(sd):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def seed_markdown(table: pd.DataFrame, select_on: str) -> str:
    """The seed table as Markdown: accuracies in percent, mean ± sample sd over seeds."""
    lines = [
        "# Arms over seeds: mean ± standard deviation",
        "",
        f"Accuracy on `{select_on}` in percent; sd is the sample standard deviation over the "
        "arm's seeds (none with one seed). Best needs validation labels; Final and the "
        "label-free choice do not. Collapsed: the labelled detector; warned: the label-free one.",
    ]
    pending = int(table["pending"].sum())
    if pending:
        lines.append(
            f"Only finished runs are averaged: {pending} run(s) are not finished in results/ "
            "yet (Seeds says how many per arm)."
        )
    lines += [
        "",
        "| Arm | Seeds | Base | Best | Best step | Final | Drop | Collapsed | Warned "
        "| Label-free choice |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in table.to_dict("records"):
        seeds = str(r["seeds"]) if r["runs"] else "none"
        if r["pending"]:
            seeds += f" ({r['pending']} not finished)"
        done = r["runs"] > 0
        cells = [
            r["arm"],
            seeds,
            f"{100 * r['base_accuracy']:.1f}" if done else "",
            _pm(r["best_mean"], r["best_sd"]),
            f"{r['best_step_mean']:.0f}" if done else "",
            _pm(r["final_mean"], r["final_sd"]),
            _pm(r["drop_mean"], r["drop_sd"]),
            f"{r['collapsed']}/{r['runs']}" if done else "",
            f"{r['warned']}/{r['runs']}" if done else "",
            _pm(r["choice_mean"], r["choice_sd"]),
        ]
        lines.append(markdown_row(cells))
    return "\n".join(lines) + "\n"
