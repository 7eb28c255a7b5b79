"""The paper's Tables 1-3 beside ours: published numbers, differences, missing runs."""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from support import REPO

from mgrpo.config import ConfigError, load_config, validate_config
from mgrpo.report import PAPER_NUMBERS
from mgrpo.report.cli import add_report_parser
from mgrpo.report.paper import Printed, load_paper_numbers, parse_printed
from mgrpo.settings import resolve_run_settings

BEST_STEP = 500  # where the synthetic results put every Best checkpoint


def report(*argv: str) -> None:
    parser = argparse.ArgumentParser(prog="mgrpo")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    args.func(args)


def paper_config() -> dict:
    """config/paper.yaml, with every benchmark the paper prints (stubs for those not configured
    yet), so every printed cell has a configured benchmark to compare with."""
    config = load_config(REPO / "config" / "paper.yaml")
    for table in load_paper_numbers().values():
        for bench in table.benchmarks:
            config["benchmarks"].setdefault(bench, {"source": "file", "path": "unused.parquet"})
    return validate_config(config)


def report_json(config: dict) -> str:
    """The report's --config, as rules/common.smk builds it (each run's identity and length)."""
    runs = {}
    for name in config["runs"]:
        settings = resolve_run_settings(config, name)
        runs[name] = {**settings.to_dict(), "steps": settings.steps}
    return json.dumps(
        {"runs": runs, "benchmarks": list(config["benchmarks"]), "report": config["report"]}
    )


def printed_checkpoints(config: dict) -> dict[tuple[str | None, int, str], list[Printed]]:
    """(run, step, benchmark) -> every printing of that checkpoint's accuracy in the paper.

    Every Original row is the one base model (run None): the workflow evaluates it once.
    """
    published = load_paper_numbers()
    values = defaultdict(list)
    for spec in config["report"]["tables"].values():
        if "paper" not in spec:
            continue
        for row in spec["rows"]:
            steps = resolve_run_settings(config, row["run"]).steps
            step = {"base": 0, "best": BEST_STEP, "final": steps}[row["pick"]]
            run = None if row["pick"] == "base" else row["run"]
            for bench, printed in published[spec["paper"]].rows[row["paper_row"]].cells.items():
                if printed.value is not None:
                    values[run, step, bench].append(printed)
    return values


def write_synthetic_results(root: Path, config: dict) -> list[str]:
    """An eval tree whose accuracies the paper would print exactly as it did.

    Each value is the most precise printing plus 0.4 of its last digit: equal to the paper
    after rounding, but not to the printed digits, as real accuracies (e.g. 2/240) are not.
    """
    accuracy = {}
    for key, printings in printed_checkpoints(config).items():
        finest = min(printings, key=lambda p: p.fraction.as_tuple().exponent).fraction
        accuracy[key] = finest + Decimal("0.4").scaleb(finest.as_tuple().exponent)
    runs = {spec["run"] for t in config["report"]["tables"].values() for spec in t["rows"]}
    for run in runs:  # step 0 is the shared base model (Original); Best beats the last step
        steps = resolve_run_settings(config, run).steps
        for bench in config["benchmarks"]:
            if (None, 0, bench) in accuracy:
                accuracy[run, 0, bench] = accuracy[None, 0, bench]
            best = accuracy.get((run, BEST_STEP, bench))
            if best is not None:
                accuracy.setdefault((run, steps, bench), best / 2)
    accuracy = {key: value for key, value in accuracy.items() if key[0] is not None}
    paths = []
    for (run, step, bench), value in sorted(accuracy.items()):
        path = root / "eval" / run / f"step{step}" / f"{bench}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"run": run, "step": step, "benchmark": bench, "accuracy": float(value)}
        path.write_text(json.dumps(record))
        paths.append(str(path))
    return paths


def build_tables(tmp_path: Path, config: dict, evals: list[str]) -> Path:
    out = tmp_path / "tables"
    config_json = report_json(config)
    report("collapse", "--config", config_json, "--evals", *evals, "--metrics",
           "--out", str(out / "collapse.csv"))  # fmt: skip
    report("tables", "--config", config_json, "--evals", *evals,
           "--collapse", str(out / "collapse.csv"), "--out-dir", str(out))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def paper_equal_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    config = paper_config()
    return build_tables(root, config, write_synthetic_results(root, config))


def test_results_equal_to_the_paper_differ_by_exactly_zero_in_every_cell(paper_equal_tables):
    published = load_paper_numbers()
    compared = 0
    for name, paper in (("table1", "Table 1"), ("table2", "Table 2"), ("table3", "Table 3")):
        frame = pd.read_csv(paper_equal_tables / f"{name}.csv")
        printed_rows = published[paper].rows
        assert frame["paper_row"].tolist() == list(printed_rows)  # every printed row, in order
        assert frame["label"].tolist() == [row.label for row in printed_rows.values()]
        for record in frame.to_dict("records"):
            for bench, printed in printed_rows[record["paper_row"]].cells.items():
                if printed.value is None:
                    assert pd.isna(record[f"{bench}_paper"]), (name, record["label"], bench)
                    continue
                assert record[f"{bench}_paper"] == float(printed.fraction)
                assert record[f"{bench}_diff"] == 0.0, (name, record["label"], bench)
                half_digit = float(Decimal(5).scaleb(printed.fraction.as_tuple().exponent - 1))
                assert abs(record[bench] - float(printed.fraction)) <= half_digit
                compared += 1
    printed_cells = sum(
        printed.value is not None
        for table in published.values()
        for row in table.rows.values()
        for printed in row.cells.values()
    )
    assert compared == printed_cells == 7 * 5 + 5 * 6 - 1 + 5 * 7


def test_markdown_and_latex_show_ours_paper_and_difference(paper_equal_tables):
    md = (paper_equal_tables / "table2.md").read_text()
    assert "| Model | Run | Step | math500 | paper | Δ | aime24 | paper | Δ |" in md
    row = next(line for line in md.splitlines() if line.startswith("| SRT_Best "))
    assert row.startswith("| SRT_Best | `srt_t1.1_g64` | 500 | 79.20% | 79.20% | 0.00 |")
    # Two rows labelled SRT_Final, as printed, and the notes that say so.
    assert sum(line.startswith("| SRT_Final |") for line in md.splitlines()) == 2
    assert "second of two rows printed with the label SRT_Final" in md
    assert "livecodebench: printed as a backslash: no value" in md
    assert "Δ = ours − paper in percentage points" in md
    t1 = (paper_equal_tables / "table1.md").read_text()
    assert "| 0.833% | 0.000 |" in t1  # .00833 keeps its printed precision
    assert "printed as .00833" in t1
    tex = (paper_equal_tables / "table3.tex").read_text()
    assert r"\multicolumn{3}{c}{mmlu\_pro}" in tex
    assert r"ours & paper & $\Delta$" in tex
    assert r"M-GRPO+IQR.G256 & 1000 & 79.50\% & 79.50\% & 0.00 &" in tex


@pytest.mark.parametrize(
    ("printed", "ours", "difference"),
    [
        ("79.75%", 0.8, "0.25"),  # ours minus paper
        ("79.75%", 0.79749, "0.00"),  # rounds to the printed 79.75
        ("79.75%", 0.79744, "-0.01"),
        ("0.792", 0.7515, "-4.0"),  # a 3-decimal fraction: tenths of a point
        (".00833", 1 / 120, "0.000"),
        (".00833", 0.01, "0.167"),
        ("0.83%", 1 / 120, "0.00"),
    ],
)
def test_difference_is_in_points_at_the_printed_precision(printed, ours, difference):
    assert parse_printed(printed).difference(ours) == Decimal(difference)
    assert str(parse_printed(printed).difference(ours)) == difference


@pytest.mark.parametrize("text", ["61.5", "79,75%", "1.5", "n/a", "-0.1"])
def test_unprintable_values_are_refused(text):
    with pytest.raises(ValueError, match="not a printed accuracy"):
        parse_printed(text)


def test_published_numbers_are_the_papers_tables_as_printed():
    tables = load_paper_numbers()
    assert [(n, len(t.rows), t.benchmarks) for n, t in tables.items()] == [
        ("Table 1", 7, ["math500", "aime24", "aime25", "gpqa_diamond", "gpqa"]),
        ("Table 2", 5, ["math500", "aime24", "aime25", "gpqa_diamond", "gpqa", "livecodebench"]),
        ("Table 3", 5, ["math500", "aime24", "aime25", "gpqa_diamond", "gpqa", "mmlu_pro",
                        "mbpp"]),
    ]  # fmt: skip
    t2 = tables["Table 2"].rows
    assert [r.label for r in t2.values()] == [
        "Original", "SRT_Best", "SRT_Final", "SRT_Final", "M-GRPO+IQR_Final"
    ]  # fmt: skip
    assert t2[5].cells["livecodebench"].text == "\\"
    assert tables["Table 1"].rows[1].cells["aime24"].text == ".00833"
    # Cells the paper prints twice agree once rounded alike: Table 2's SRT_Best is Table 1's
    # SRT-T1.1-G64, Table 2's M-GRPO+IQR_Final is Table 3's G32 row.
    for (a, ra), (b, rb) in [(("Table 1", 6), ("Table 2", 2)), (("Table 2", 5), ("Table 3", 4))]:
        for bench, cell in tables[a].rows[ra].cells.items():
            other = tables[b].rows[rb].cells.get(bench)
            if cell.value is not None and other is not None and other.value is not None:
                assert other.difference(float(cell.fraction)) == 0, (a, b, bench)


def test_a_malformed_published_line_names_file_and_line(tmp_path):
    lines = PAPER_NUMBERS.read_text().splitlines()
    lines[3] = lines[3].replace("0.0500", "5 %")
    bad = tmp_path / "numbers.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"{bad}:4: not a printed accuracy"):
        load_paper_numbers(bad)
    lines = PAPER_NUMBERS.read_text().splitlines()
    lines[2] = lines[2].replace("Original", "Base")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"{bad}:3: row 1 of Table 1 is labelled 'Original'"):
        load_paper_numbers(bad)


def test_published_file_is_one_csv_with_the_documented_columns():
    with open(PAPER_NUMBERS, newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["table", "row", "label", "benchmark", "printed", "note"]


# ------------------------------------------------------------------- a partial results/
def test_missing_runs_and_checkpoints_leave_empty_cells_with_notes(tmp_path):
    config = paper_config()
    evals = write_synthetic_results(tmp_path, config)
    # srt_t1.1_g64 never ran; mgrpo_iqr_g16 is still training (evaluated up to step 500).
    kept = [p for p in evals if "/srt_t1.1_g64/" not in p and "/mgrpo_iqr_g16/step1000/" not in p]
    for bench in config["benchmarks"]:
        path = tmp_path / "eval" / "mgrpo_iqr_g16" / "step500" / f"{bench}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run": "mgrpo_iqr_g16", "step": 500, "benchmark": bench,
                                    "accuracy": 0.5}))  # fmt: skip
        kept.append(str(path))
    out = build_tables(tmp_path, config, kept)
    t2 = pd.read_csv(out / "table2.csv")
    best = t2[t2["paper_row"] == 2].iloc[0]
    assert best["run"] == "srt_t1.1_g64" and pd.isna(best["step"]) and pd.isna(best["math500"])
    assert best["math500_paper"] == 0.792 and pd.isna(best["math500_diff"])
    md = (out / "table2.md").read_text()
    assert "`srt_t1.1_g64`: no evaluations in results/ yet" in md
    t3 = pd.read_csv(out / "table3.csv")
    g16 = t3[t3["paper_row"] == 3].iloc[0]
    assert pd.isna(g16["step"]) and pd.isna(g16["math500"])  # Final is step 1000, not 500
    assert (
        "`mgrpo_iqr_g16`: evaluated up to step 500 of 1000 (in progress)"
        in (out / "table3.md").read_text()
    )
    # The other rows are unaffected.
    assert t3[t3["paper_row"] == 4].iloc[0]["math500_diff"] == 0.0


def test_an_empty_results_tree_still_writes_every_table(tmp_path):
    out = build_tables(tmp_path, paper_config(), [])
    for name in ("table1", "table2", "table3", "components"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    assert "no evaluations in results/ yet" in (out / "components.md").read_text()


# --------------------------------------------------------------------------- config checks
@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda t: t["table2"].update(paper="Table 9"), "report.tables.table2.paper"),
        (lambda t: t["table2"]["rows"][1].update(paper_row=6), "report.tables.table2.rows.1"),
        (lambda t: t["components"]["rows"][0].update(paper_row=1), "components.rows.0.paper_row"),
        (lambda t: t["table3"]["rows"][1].update(pick="best_and_final"), "table3.rows.1.paper_row"),
    ],
)
def test_paper_references_are_checked_before_anything_runs(change, key):
    config = load_config(REPO / "config" / "paper.yaml")
    change(config["report"]["tables"])
    with pytest.raises(ConfigError, match=key):
        validate_config(config)


def test_figure_runs_must_exist():
    config = load_config(REPO / "config" / "paper.yaml")
    config["report"]["figures"]["fig5_collapse"]["runs"].append("srt_qwen9")
    with pytest.raises(ConfigError, match=r"report.figures.fig5_collapse.runs.3': unknown run"):
        validate_config(config)
