"""``mgrpo report collapse|tables|figures``: the workflow's report rules, one line each.

``collapse`` runs both detectors (labelled and label-free) once and writes collapse.csv;
``tables`` and ``figures`` read that file back instead of recomputing, so every output marks
the same best, collapse and warning steps. pandas and matplotlib load inside the commands:
``mgrpo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mgrpo.report import PAPER_NUMBERS

if TYPE_CHECKING:
    import pandas as pd

    from mgrpo.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """The slice of the workflow config the report needs (``--config``, built by the rules)."""

    runs: dict[str, RunSettings]
    benchmarks: list[str]
    report: dict[str, Any]

    @property
    def select_on(self) -> str:
        """The benchmark that picks each run's best checkpoint; null means the first one."""
        return self.report.get("select_on") or self.benchmarks[0]

    @property
    def margin(self) -> float:
        return float(self.report.get("collapse_margin", 0.05))

    @functools.cached_property
    def label_free(self) -> Any:
        """The label-free detector's rule (:class:`mgrpo.report.label_free.LabelFreeRule`),
        built once: ``from_json`` builds it to validate it, the commands reuse it."""
        from mgrpo.report.label_free import LabelFreeRule

        return LabelFreeRule.from_report(self.report)

    @classmethod
    def from_json(cls, text: str) -> ReportConfig:
        """Parse and sanity-check ``--config``; errors become argparse usage errors."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
        if not isinstance(raw, dict) or not {"runs", "benchmarks"} <= raw.keys():
            raise argparse.ArgumentTypeError("expected an object with 'runs' and 'benchmarks'")
        from mgrpo.config import ConfigError
        from mgrpo.settings import RunSettings

        try:
            runs = {
                name: RunSettings.from_dict(
                    {k: v for k, v in values.items() if k != "steps"}, steps=values.get("steps")
                )
                for name, values in raw["runs"].items()
            }
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        config = cls(runs, list(raw["benchmarks"]), dict(raw.get("report") or {}))
        if not config.runs or not config.benchmarks:
            raise argparse.ArgumentTypeError("need at least one run and one benchmark")
        if config.select_on not in config.benchmarks:
            raise argparse.ArgumentTypeError(
                f"report.select_on {config.select_on!r} is not one of {config.benchmarks}"
            )
        try:
            config.label_free  # noqa: B018 - validates report.label_free
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return config


def _load_collapse(path: str, config: ReportConfig) -> pd.DataFrame:
    """collapse.csv, checked to describe these runs on this select_on benchmark."""
    from mgrpo.report.collapse import read_collapse

    frame = read_collapse(path)
    stale = sorted(set(frame["benchmark"]) - {config.select_on})
    missing = sorted(set(config.runs) - set(frame["run"]))
    extra = sorted(set(frame["run"]) - set(config.runs))
    if stale or missing or extra:
        raise ValueError(
            f"{path} does not match the config (benchmarks {stale} instead of "
            f"{config.select_on!r}; runs missing: {missing}; runs not configured: {extra}): "
            "rerun `mgrpo report collapse`"
        )
    return frame


def cmd_collapse(args: argparse.Namespace) -> None:
    import pandas as pd

    from mgrpo.io import write_text
    from mgrpo.report.collapse import collapse_table
    from mgrpo.report.results import load_evals, load_metrics

    config: ReportConfig = args.config
    frame = collapse_table(
        load_evals(args.evals),
        load_metrics(args.metrics),
        config.runs,
        config.select_on,
        config.margin,
        config.label_free,
    )
    write_text(args.out, frame.to_csv(index=False))
    for row in frame.itertuples(index=False):
        if row.final_step is pd.NA:
            log.info("%s (%s): no evaluations on %s yet", row.run, row.method, row.benchmark)
            continue
        log.info(
            "%s (%s): best %.4f at step %d, final %.4f at step %d, collapse step %s; "
            "label-free warning step %s (%s), choice step %d (%.4f)",
            row.run,
            row.method,
            row.best_accuracy,
            row.best_step,
            row.final_accuracy,
            row.final_step,
            row.collapse_step,
            row.warning_step,
            row.warning_signal,
            row.choice_step,
            row.choice_accuracy,
        )


def cmd_tables(args: argparse.Namespace) -> None:
    from mgrpo.report.paper import load_paper_numbers
    from mgrpo.report.results import load_evals, run_labels
    from mgrpo.report.tables import write_label_free_tables, write_tables

    config: ReportConfig = args.config
    evals = load_evals(args.evals)
    collapse = _load_collapse(args.collapse, config)
    paths = write_tables(
        config.report,
        evals,
        collapse,
        run_labels(config.runs),
        config.benchmarks,
        config.select_on,
        args.out_dir,
        runs=config.runs,
        published=load_paper_numbers(args.paper),
    )
    paths += write_label_free_tables(
        evals, collapse, config.runs, config.label_free, config.select_on, args.out_dir
    )
    log.info("wrote %s", ", ".join(map(str, paths)))


def cmd_figures(args: argparse.Namespace) -> None:
    from mgrpo.report.figures import FigureData, write_figures
    from mgrpo.report.label_free_figures import write_label_free_figures
    from mgrpo.report.results import load_evals, load_metrics, run_labels

    config: ReportConfig = args.config
    data = FigureData(
        evals=load_evals(args.evals),
        metrics=load_metrics(args.metrics),
        collapse=_load_collapse(args.collapse, config),
        runs=config.runs,
        labels=run_labels(config.runs),
        benchmarks=config.benchmarks,
        select_on=config.select_on,
        figures=config.report.get("figures") or {},
    )
    paths = write_figures(data, args.out_dir)
    paths += write_label_free_figures(data, config.label_free, args.out_dir)
    log.info("wrote %s", ", ".join(map(str, paths)))


def add_report_parser(subparsers: Any) -> None:
    """Register ``report`` and its three subcommands on the top-level ``mgrpo`` subparsers."""
    report = subparsers.add_parser("report", help="collapse detection, tables and figures")
    sub = report.add_subparsers(dest="report_command", required=True)
    config_help = "runs, benchmarks and report settings (JSON)"
    evals_help = "evaluation summary JSONs (runs without any get empty cells and a note)"

    p = sub.add_parser(
        "collapse", help="best, final and collapse step of every run, and the label-free warning"
    )
    p.add_argument("--config", type=ReportConfig.from_json, required=True, help=config_help)
    p.add_argument("--evals", nargs="*", required=True, help=evals_help)
    p.add_argument("--metrics", nargs="*", required=True, help="training metrics (JSON lines)")
    p.add_argument("--out", required=True, help="collapse table (CSV)")
    p.set_defaults(func=cmd_collapse)

    p = sub.add_parser(
        "tables", help="paper-layout tables (Markdown, CSV, LaTeX), label-free and seed tables"
    )
    p.add_argument("--config", type=ReportConfig.from_json, required=True, help=config_help)
    p.add_argument("--evals", nargs="*", required=True, help=evals_help)
    p.add_argument("--collapse", required=True, help="collapse table written by `collapse`")
    p.add_argument("--paper", default=str(PAPER_NUMBERS), help="the paper's printed numbers (CSV)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("figures", help="figures 1, 2, 4, 5 and the label-free ones as PNG")
    p.add_argument("--config", type=ReportConfig.from_json, required=True, help=config_help)
    p.add_argument("--evals", nargs="*", required=True, help=evals_help)
    p.add_argument("--metrics", nargs="*", required=True, help="training metrics (JSON lines)")
    p.add_argument("--collapse", required=True, help="collapse table written by `collapse`")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_figures)
