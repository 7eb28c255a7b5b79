"""Tables and figures of the paper, rebuilt from ``results/`` only.

This module stays stdlib-only: the Snakefile imports it while parsing the workflow to name the
report's output files. Loading, the collapse detector, tables and figures live in submodules.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The numbers printed in the paper's Tables 1-3, one line per cell (see mgrpo.report.paper).
PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.csv")
TABLE_FORMATS = ("md", "csv", "tex")
FIGURES = ("fig1_accuracy", "fig2_entropy", "fig4_reward_accuracy", "fig5_collapse")
DEFAULT_TABLE = "runs"
# Written whatever the config: the label-free warning against the labelled detector (per run)
# and every arm's mean and sd over seeds, each as .md and .csv.
LABEL_FREE_TABLES = ("label_free", "seeds")
LABEL_FREE_FIGURES = ("label_free_signals", "label_free_runs")
# results/tables/collapse.csv is the detectors' output; a configured table must not overwrite
# it or the tables above.
RESERVED_TABLE_NAMES = ("collapse", *LABEL_FREE_TABLES)


def table_names(report_cfg: dict[str, Any]) -> list[str]:
    """Names of the tables to write: the configured ones, else the default table of every run.

    The default keeps a fresh config useful (every run, best and final) without writing rows.
    """
    names = list(report_cfg.get("tables") or {}) or [DEFAULT_TABLE]
    clashes = sorted(set(names) & set(RESERVED_TABLE_NAMES))
    if clashes:
        raise ValueError(
            f"report.tables: table name(s) {clashes} are reserved (collapse.csv and "
            f"{', '.join(f'{t}.md' for t in LABEL_FREE_TABLES)})"
        )
    return names


def markdown_row(cells: Sequence[str]) -> str:
    """One GitHub Markdown table row; a ``|`` inside a cell is escaped."""
    return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"
