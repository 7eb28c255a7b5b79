"""Paper-layout tables (Tables 1-3): one row per checkpoint, one column per benchmark.

Rows name a run and which of its checkpoints to show. ``best`` is the step the collapse
detector chose on the ``select_on`` benchmark (read from collapse.csv, never picked by hand),
so a Best row means the same thing in every table and every rerun. A row may instead name the
seeds of one arm (``runs``: runs that differ only in ``seed``): its cells are then the mean ±
sample sd over those runs, each at its own pick (each seed's own Best step, its Final step).

A table with ``paper: Table N`` also carries, per cell, the number the paper printed and the
difference to ours (see :mod:`mgrpo.report.paper`). Missing results never fail a table: a run,
checkpoint or benchmark not in ``results/`` (yet) leaves its cells empty, and a note says why.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mgrpo.io import write_text
from mgrpo.report import DEFAULT_TABLE, TABLE_FORMATS, markdown_row, table_names
from mgrpo.report.label_free import (
    LabelFreeRule,
    is_finished,
    label_free_markdown,
    label_free_table,
)
from mgrpo.report.paper import PaperTable, Printed, paper_table
from mgrpo.report.seeds import seed_markdown, seed_table

if TYPE_CHECKING:
    from mgrpo.settings import RunSettings

PICKS = ("base", "best", "final", "best_and_final")


@dataclass(frozen=True)
class TableRow:
    """One checkpoint shown in a table; ``step`` None = not evaluated (yet), ``run`` None = a
    printed row of the paper that no configured run stands for, unless ``seeds`` is set: then
    the row is an arm's, and ``seeds`` holds each seed's (run, step) whose cells it averages."""

    label: str
    run: str | None
    step: int | None
    paper_row: int | None = None
    seeds: tuple[tuple[str, int | None], ...] = ()

    @property
    def checkpoints(self) -> tuple[tuple[str | None, int | None], ...]:
        """The (run, step) checkpoints whose accuracy the row's cells show (or average)."""
        return self.seeds or ((self.run, self.step),)


@dataclass(frozen=True)
class Cell:
    ours: float | None  # an arm's row: the mean over its evaluated seeds
    printed: Printed | None = None  # what the paper printed here (paper tables only)
    sd: float | None = None  # an arm's row: sample sd over its seeds (None with one seed)
    n: int = 1  # an arm's row: how many seeds the mean is over

    @property
    def difference(self) -> Decimal | None:
        if self.ours is None or self.printed is None:
            return None
        return self.printed.difference(self.ours)


@dataclass
class Table:
    """A built table: rows, their cells by benchmark, and the notes it must carry."""

    title: str
    benchmarks: list[str]
    rows: list[TableRow]
    cells: list[dict[str, Cell]]
    paper: str | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        _add_note(self.notes, text)


def default_spec(run_names: Sequence[str]) -> dict[str, Any]:
    """The table written when none is configured: the base model, then every run best and final."""
    rows = [{"run": run_names[0], "pick": "base"}]
    rows += [{"run": run, "pick": "best_and_final"} for run in run_names]
    return {"title": "All runs: best and final checkpoints", "rows": rows}


def _step(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def _picks(
    run: str,
    pick: str,
    verdicts: pd.DataFrame,
    runs: Mapping[str, RunSettings] | None,
    notes: list[str],
) -> dict[str, int | None]:
    """The steps of ``run`` that ``pick`` shows: {"base"|"best"|"final": step or None}."""
    best, last = _step(verdicts.at[run, "best_step"]), _step(verdicts.at[run, "final_step"])
    steps = runs[run].steps if runs else None
    if pick in ("best", "best_and_final", "final"):
        if last is None:
            _add_note(notes, f"`{run}`: no evaluations in results/ yet, its cells are empty.")
        elif steps is not None and last < steps:
            _add_note(
                notes,
                f"`{run}`: evaluated up to step {last} of {steps} (in progress): its Best "
                "row is the best so far and its Final row is empty.",
            )
    out: dict[str, int | None] = {}
    if pick == "base":
        out["base"] = 0
    if pick in ("best", "best_and_final"):
        out["best"] = best if last else None  # the base model is not a trained checkpoint
    if pick in ("final", "best_and_final"):
        out["final"] = last if is_finished(last, steps) else None
    return out


def expand_rows(
    rows: Sequence[Mapping[str, Any]],
    collapse: pd.DataFrame,
    labels: Mapping[str, str],
    runs: Mapping[str, RunSettings] | None = None,
    notes: list[str] | None = None,
    paper: PaperTable | None = None,
) -> list[TableRow]:
    """Turn row specs into (label, run, step) checkpoints using the detector's steps.

    ``runs`` (settings with their ``steps``) tells a finished run from one in progress: an
    unfinished run's Final row stays empty and its Best row is the best so far, said in ``notes``.
    A spec with ``runs`` (an arm's seeds) becomes one row per pick whose ``seeds`` hold every
    seed's own step.
    """
    verdicts = collapse.set_index("run")
    notes = [] if notes is None else notes
    out = []
    for row in rows:
        members = list(row["runs"]) if "runs" in row else [row["run"]]
        pick = row["pick"]
        if pick not in PICKS:
            raise ValueError(
                f"table row for run {members[0]!r}: unknown pick {pick!r}; use one of {PICKS}"
            )
        for run in members:
            if run not in verdicts.index:
                raise ValueError(f"table row: run {run!r} is not in the collapse table")
        paper_row = row.get("paper_row")
        printed = paper.rows[paper_row].label if paper and paper_row in paper.rows else None
        chosen = [_picks(run, pick, verdicts, runs, notes) for run in members]
        if "runs" in row:
            name = row.get("label") or " / ".join(labels.get(r, r) for r in members)
        else:
            name = labels.get(members[0], members[0])
        defaults = {"base": "Original", "best": f"{name}_Best", "final": f"{name}_Final"}
        for kind in ("base", "best", "final"):
            if kind not in chosen[0]:
                continue
            if "runs" in row and kind != "base":  # every seed starts from the same base model
                label = row["label"] if "label" in row and pick != "best_and_final" else None
                label = label or printed or defaults[kind]
                seeds = tuple(
                    (run, picks[kind]) for run, picks in zip(members, chosen, strict=True)
                )
                out.append(TableRow(label, None, None, paper_row, seeds))
            else:
                label = row.get("label", printed or defaults[kind])
                out.append(TableRow(label, members[0], chosen[0][kind], paper_row))
    return out


def _add_note(notes: list[str], text: str) -> None:
    """Append ``text`` unless the table says it already (one note per run, not per row)."""
    if text not in notes:
        notes.append(text)


def build_table(
    title: str,
    rows: Sequence[TableRow],
    evals: pd.DataFrame,
    benchmarks: Sequence[str],
    paper: PaperTable | None = None,
    notes: Sequence[str] = (),
) -> Table:
    """Cells of every row: our accuracy (a fraction) and, for a paper table, the printed value.

    A paper table keeps the printed layout: the paper's benchmarks in printed order, and its
    printed rows that no configured row stands for appended with our cells empty.
    """
    columns = list(benchmarks)
    rows = list(rows)
    if paper is not None:
        columns = list(paper.benchmarks)
        used = {row.paper_row for row in rows}
        for number, printed in paper.rows.items():
            if number not in used:
                rows.append(TableRow(printed.label, None, None, number))
    table = Table(title, columns, rows, [], paper.name if paper else None, list(notes))
    accuracy = evals.set_index(["run", "step", "benchmark"])["accuracy"]
    for bench in columns:
        if bench not in benchmarks:
            table.note(f"{bench} is not a configured benchmark: the paper's values only.")
    for row in rows:
        printed_row = paper.rows.get(row.paper_row) if paper and row.paper_row else None
        if paper and row.paper_row is not None and printed_row is None:
            raise ValueError(f"row {row.label!r}: {paper.name} has no printed row {row.paper_row}")
        if row.run is None and not row.seeds and printed_row is not None:
            table.note(f"{paper.name} row {row.paper_row} ({row.label}): no run configured.")
        cells, missing = {}, {}
        for bench in columns:
            values = []
            for run, step in row.checkpoints:
                key = (run, step, bench)
                if step is None or bench not in benchmarks:
                    continue
                if key in accuracy.index:
                    values.append(float(accuracy.loc[key]))
                else:
                    missing.setdefault((run, step), []).append(bench)
            printed = printed_row.cells.get(bench) if printed_row else None
            if row.seeds:
                cells[bench] = _seed_cell(values, printed)
            else:
                cells[bench] = Cell(values[0] if values else None, printed)
            if row.seeds and values and len(values) < len(row.seeds):
                table.note(
                    f"{row.label}: {bench} is the mean over the {len(values)} of "
                    f"{len(row.seeds)} seeds evaluated so far."
                )
        table.cells.append(cells)
        for (run, step), benches in missing.items():
            table.note(f"`{run}` step {step}: not evaluated on {', '.join(benches)} yet.")
        if printed_row is not None:
            where = f"{paper.name} row {printed_row.number} ({printed_row.label})"
            for text in printed_row.notes:
                table.note(f"Paper, {where}: {text}.")
            for bench, text in printed_row.cell_notes.items():
                table.note(f"Paper, {where}, {bench}: {text}.")
    return table


def _seed_cell(values: Sequence[float], printed: Printed | None) -> Cell:
    """An arm's cell: mean and sample sd over its seeds' accuracies (empty without any)."""
    if not values:
        return Cell(None, printed, None, 0)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Cell(statistics.fmean(values), printed, sd, len(values))


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _mean_sd(cell: Cell, percent: str = "%", pm: str = "±") -> str:
    """``ours`` as a percentage; with ``± sd`` (points) for an arm's cell over several seeds."""
    text = _percent(cell.ours).replace("%", percent)
    if cell.ours is None or cell.sd is None:
        return text
    return f"{100 * cell.ours:.2f} {pm} {100 * cell.sd:.2f}{percent}"


def _difference(cell: Cell) -> str:
    diff = cell.difference
    if diff is None:
        return ""
    text = f"{diff:.{cell.printed.point_decimals}f}"
    return text if diff == 0 else f"{diff:+.{cell.printed.point_decimals}f}"


def _header_notes(table: Table, select_on: str) -> list[str]:
    notes = [
        f"Best rows are picked automatically on {select_on} by the collapse detector "
        "(highest validation accuracy, earliest step on ties), not by hand."
    ]
    if table.paper:
        notes.append(
            f"Per benchmark: ours, the paper's value ({table.paper}, as printed) and "
            "Δ = ours − paper in percentage points, ours rounded to the precision the paper "
            "printed (so equal results give 0)."
        )
    return notes


def _values(
    table: Table, cells: Mapping[str, Cell], percent: str = "%", pm: str = "±"
) -> list[str]:
    values = []
    for bench in table.benchmarks:
        cell = cells[bench]
        values.append(_mean_sd(cell, percent, pm))
        if table.paper:
            printed = cell.printed.display() if cell.printed else ""
            values += [printed.replace("%", percent), _difference(cell)]
    return values


def _run_step(row: TableRow) -> tuple[str, str]:
    """The Run and Step cells: an arm's row lists every seed's run and step (``-`` = none)."""
    if not row.seeds:
        return row.run or "", "" if row.step is None else str(row.step)
    steps = ["-" if step is None else str(step) for _, step in row.seeds]
    shown = steps[0] if len(set(steps)) == 1 else "/".join(steps)
    return " ".join(run for run, _ in row.seeds), "" if shown == "-" else shown


def _seed_notes(table: Table) -> list[str]:
    if not any(row.seeds for row in table.rows):
        return []
    return [
        "A row over several runs (the seeds of one arm) shows the mean ± sample standard "
        "deviation over its seeds, in points, each seed at its own step (Step lists them)."
    ]


def to_markdown(table: Table, select_on: str) -> str:
    """GitHub Markdown, accuracies as percentages with two decimals like the paper; the Run
    column says which of our runs each (paper-labelled) row shows."""

    per_bench = [[b, "paper", "Δ"] if table.paper else [b] for b in table.benchmarks]
    header = ["Model", "Run", "Step", *(h for group in per_bench for h in group)]
    lines = [f"# {table.title}", ""]
    lines.append(markdown_row(header))
    lines.append("|" + "|".join([":--", ":--", *["--:"] * (len(header) - 2)]) + "|")
    for row, row_cells in zip(table.rows, table.cells, strict=True):
        run, step = _run_step(row)
        run = " ".join(f"`{r}`" for r in run.split()) if run else ""
        lines.append(markdown_row([row.label, run, step, *_values(table, row_cells)]))
    lines.append("")
    notes = _header_notes(table, f"`{select_on}`") + _seed_notes(table) + table.notes
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Machine-readable: raw fractions at full precision, the run and step of each row, and for
    a paper table ``{bench}_paper`` (the printed value as a fraction) and ``{bench}_diff``.

    A table with arm rows (seeds) also has ``steps`` and, per benchmark, ``{bench}_sd`` and
    ``{bench}_n``; an arm row's ``run`` lists its runs (space-separated), ``step`` is empty and
    ``steps`` lists each seed's step (``-`` = none), ``{bench}`` is the mean over seeds."""
    arms = any(row.seeds for row in table.rows)
    records = []
    for row, row_cells in zip(table.rows, table.cells, strict=True):
        run, steps = _run_step(row)
        record: dict[str, Any] = {"label": row.label, "run": run or None, "step": row.step}
        if arms:
            record["steps"] = " ".join("-" if s is None else str(s) for _, s in row.seeds) or steps
        if table.paper:
            record["paper_row"] = row.paper_row
        for bench in table.benchmarks:
            cell = row_cells[bench]
            record[bench] = cell.ours
            if arms:
                record[f"{bench}_sd"] = cell.sd
                record[f"{bench}_n"] = cell.n if cell.ours is not None else 0
            if table.paper:
                fraction = cell.printed.fraction if cell.printed else None
                diff = cell.difference
                record[f"{bench}_paper"] = None if fraction is None else float(fraction)
                record[f"{bench}_diff"] = None if diff is None else float(diff.scaleb(-2))
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    for column in ("step", "paper_row"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame.to_csv(index=False)


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


def to_latex(table: Table, select_on: str) -> str:
    """A booktabs ``tabular`` to ``\\input`` into a paper; title and notes as comments."""
    width = 3 if table.paper else 1
    lines = [f"% {table.title}"]
    notes = _header_notes(table, select_on) + _seed_notes(table) + table.notes
    lines += [f"% {note}" for note in notes]
    lines += [r"\begin{tabular}{l" + "r" * (len(table.benchmarks) * width + 1) + "}", r"\toprule"]
    if table.paper:
        groups = [rf"\multicolumn{{3}}{{c}}{{{latex_escape(b)}}}" for b in table.benchmarks]
        lines.append(" & ".join(["Model", "Step", *groups]) + r" \\")
        rules = [f"\\cmidrule(lr){{{3 + 3 * i}-{5 + 3 * i}}}" for i in range(len(groups))]
        lines.append("".join(rules))
        lines.append(" & ".join(["", "", *["ours & paper & $\\Delta$"] * len(groups)]) + r" \\")
    else:
        header = ["Model", "Step", *(latex_escape(b) for b in table.benchmarks)]
        lines.append(" & ".join(header) + r" \\")
    lines.append(r"\midrule")
    for row, row_cells in zip(table.rows, table.cells, strict=True):
        step = _run_step(row)[1]
        values = _values(table, row_cells, percent=r"\%", pm=r"$\pm$")
        lines.append(" & ".join([latex_escape(row.label), step, *values]) + r" \\")
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
    runs: Mapping[str, RunSettings] | None = None,
    published: Mapping[str, PaperTable] | None = None,
) -> list[Path]:
    """Write every configured table (or the default one) as .md, .csv and .tex, atomically.

    ``labels`` maps each run to its display label, in config order (the default table's order).
    ``published`` holds the paper's printed tables, needed by tables that set ``paper``.
    """
    specs = dict(report_cfg.get("tables") or {}) or {DEFAULT_TABLE: default_spec(list(labels))}
    written = []
    for name in table_names(dict(report_cfg)):
        spec = specs[name]
        paper = None
        if spec.get("paper"):
            if published is None:
                raise ValueError(f"table {name!r} compares with {spec['paper']!r}: no paper data")
            paper = paper_table(published, spec["paper"])
        notes: list[str] = []
        rows = expand_rows(spec["rows"], collapse, labels, runs, notes, paper)
        if spec.get("note"):
            notes.append(spec["note"])
        table = build_table(spec["title"], rows, evals, benchmarks, paper, notes)
        texts = {
            "md": to_markdown(table, select_on),
            "csv": to_csv(table),
            "tex": to_latex(table, select_on),
        }
        for fmt in TABLE_FORMATS:
            path = Path(out_dir) / f"{name}.{fmt}"
            write_text(path, texts[fmt])
            written.append(path)
    return written


def write_label_free_tables(
    evals: pd.DataFrame,
    collapse: pd.DataFrame,
    runs: Mapping[str, RunSettings],
    rule: LabelFreeRule,
    select_on: str,
    out_dir: str | Path,
) -> list[Path]:
    """:data:`~mgrpo.report.LABEL_FREE_TABLES`: ``label_free.{md,csv}`` (per run, both
    detectors) and ``seeds.{md,csv}`` (per arm, mean ± sd over seeds). Both score and average
    finished runs only (evaluated up to their ``steps``); the others are marked."""
    per_run = label_free_table(collapse, {run: settings.steps for run, settings in runs.items()})
    finished = per_run.loc[per_run["finished"], "run"].tolist()
    base = evals[(evals["benchmark"] == select_on) & (evals["step"] == 0)]
    base_accuracy = dict(zip(base["run"], base["accuracy"].astype(float), strict=True))
    missing = sorted(set(finished) - set(base_accuracy))
    if missing:
        raise ValueError(f"no step-0 evaluation on {select_on!r} of run(s) {missing}")
    arms = seed_table(collapse, runs, base_accuracy, finished)
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
