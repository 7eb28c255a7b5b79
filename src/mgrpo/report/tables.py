"""Paper-layout tables (Tables 1-3): one row per checkpoint, one column per benchmark.

Rows name a run and which of its checkpoints to show. ``best`` is the step the collapse
detector chose on the ``select_on`` benchmark (read from collapse.csv, never picked by hand),
so a Best row means the same thing in every table and every rerun.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mgrpo.io import write_text
from mgrpo.report import DEFAULT_TABLE, TABLE_FORMATS, table_names
from mgrpo.report.label_free import LabelFreeRule, label_free_markdown, label_free_table
from mgrpo.report.seeds import seed_markdown, seed_table

PICKS = ("base", "best", "final", "best_and_final")


@dataclass(frozen=True)
class TableRow:
    """One checkpoint shown in a table."""

    label: str
    run: str
    step: int


def default_spec(run_names: Sequence[str]) -> dict[str, Any]:
    """The table written when none is configured: the base model, then every run best and final."""
    rows = [{"run": run_names[0], "pick": "base"}]
    rows += [{"run": run, "pick": "best_and_final"} for run in run_names]
    return {"title": "All runs: best and final checkpoints", "rows": rows}


def expand_rows(
    rows: Sequence[Mapping[str, Any]], collapse: pd.DataFrame, labels: Mapping[str, str]
) -> list[TableRow]:
    """Turn row specs into concrete (label, run, step) checkpoints using the detector's steps."""
    verdicts = collapse.set_index("run")
    out = []
    for row in rows:
        run, pick = row["run"], row["pick"]
        if pick not in PICKS:
            raise ValueError(
                f"table row for run {run!r}: unknown pick {pick!r}; use one of {PICKS}"
            )
        if run not in verdicts.index:
            raise ValueError(f"table row: run {run!r} is not in the collapse table")
        name = labels.get(run, run)
        if pick == "base":
            out.append(TableRow(row.get("label", "Original"), run, 0))
        if pick in ("best", "best_and_final"):
            best = int(verdicts.at[run, "best_step"])
            out.append(TableRow(row.get("label", f"{name}_Best"), run, best))
        if pick in ("final", "best_and_final"):
            final = int(verdicts.at[run, "final_step"])
            out.append(TableRow(row.get("label", f"{name}_Final"), run, final))
    return out


def build_table(
    rows: Sequence[TableRow], evals: pd.DataFrame, benchmarks: Sequence[str]
) -> pd.DataFrame:
    """Columns: label, run, step, then each benchmark's accuracy (a fraction)."""
    accuracy = evals.set_index(["run", "step", "benchmark"])["accuracy"]
    records = []
    for row in rows:
        record: dict[str, Any] = {"label": row.label, "run": row.run, "step": row.step}
        for bench in benchmarks:
            key = (row.run, row.step, bench)
            if key not in accuracy.index:
                raise ValueError(
                    f"row {row.label!r}: no evaluation of run {row.run!r} at step {row.step} "
                    f"on benchmark {bench!r}"
                )
            record[bench] = float(accuracy.loc[key])
        records.append(record)
    return pd.DataFrame.from_records(records, columns=["label", "run", "step", *benchmarks])


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _note(select_on: str) -> str:
    return (
        f"Best rows are picked automatically on {select_on} by the collapse detector "
        "(highest validation accuracy, earliest step on ties), not by hand."
    )


def to_markdown(table: pd.DataFrame, title: str, benchmarks: Sequence[str], select_on: str) -> str:
    """GitHub Markdown, accuracies as percentages with two decimals like the paper."""

    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", r"\|") for v in values) + " |"

    lines = [f"# {title}", "", _note(f"`{select_on}`"), ""]
    lines.append(cells(["Model", "Step", *benchmarks]))
    lines.append("|" + "|".join([":--", "--:", *["--:"] * len(benchmarks)]) + "|")
    for record in table.to_dict("records"):
        values = [_percent(record[b]) for b in benchmarks]
        lines.append(cells([record["label"], str(record["step"]), *values]))
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    """Machine-readable: raw fractions, full precision, plus the run each row comes from."""
    return table.to_csv(index=False)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters (labels like ``SRT_Best`` contain ``_``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: pd.DataFrame, title: str, benchmarks: Sequence[str], select_on: str) -> str:
    """A booktabs ``tabular`` to ``\\input`` into a paper; title and note as comments."""
    header = ["Model", "Step", *(latex_escape(b) for b in benchmarks)]
    lines = [
        f"% {title}",
        f"% {_note(select_on)}",
        r"\begin{tabular}{l" + "r" * (len(benchmarks) + 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for record in table.to_dict("records"):
        values = [_percent(record[b]).replace("%", r"\%") for b in benchmarks]
        lines.append(
            " & ".join([latex_escape(record["label"]), str(record["step"]), *values]) + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(
    report_cfg: Mapping[str, Any],
    evals: pd.DataFrame,
    collapse: pd.DataFrame,
    labels: Mapping[str, str],
    benchmarks: Sequence[str],
    select_on: str,
    out_dir: str | Path,
) -> list[Path]:
    """Write every configured table (or the default one) as .md, .csv and .tex, atomically.

    ``labels`` maps each run to its display label, in config order (the default table's order).
    """
    specs = dict(report_cfg.get("tables") or {}) or {DEFAULT_TABLE: default_spec(list(labels))}
    written = []
    for name in table_names(dict(report_cfg)):
        spec = specs[name]
        table = build_table(expand_rows(spec["rows"], collapse, labels), evals, benchmarks)
        texts = {
            "md": to_markdown(table, spec["title"], benchmarks, select_on),
            "csv": to_csv(table),
            "tex": to_latex(table, spec["title"], benchmarks, select_on),
        }
        for fmt in TABLE_FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            write_text(path, texts[fmt])
            written.append(path)
    return written


def write_label_free_tables(
    evals: pd.DataFrame,
    collapse: pd.DataFrame,
    runs: Mapping[str, Mapping[str, Any]],
    rule: LabelFreeRule,
    select_on: str,
    out_dir: str | Path,
) -> list[Path]:
    """:data:`~mgrpo.report.LABEL_FREE_TABLES`: ``label_free.{md,csv}`` (per run, both
    detectors) and ``seeds.{md,csv}`` (per arm, mean ± sd over seeds)."""
    per_run = label_free_table(collapse)
    base = evals[(evals["benchmark"] == select_on) & (evals["step"] == 0)]
    base_accuracy = dict(zip(base["run"], base["accuracy"].astype(float), strict=True))
    missing = sorted(set(runs) - set(base_accuracy))
    if missing:
        raise ValueError(f"no step-0 evaluation on {select_on!r} of run(s) {missing}")
    arms = seed_table(collapse, runs, base_accuracy)
    texts = {
        "label_free.md": label_free_markdown(per_run, rule, select_on),
        "label_free.csv": per_run.to_csv(index=False),
        "seeds.md": seed_markdown(arms, select_on),
        "seeds.csv": arms.to_csv(index=False),
    }
    written = []
    for name, text in texts.items():
        path = Path(out_dir) / name
        write_text(path, text)
        written.append(path)
    return written
