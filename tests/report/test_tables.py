"""Loading results and writing the paper-layout tables from small synthetic evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
from support import run_settings

from mgrpo.report.cli import add_report_parser
from mgrpo.report.results import load_evals, load_metrics, run_labels
from mgrpo.settings import RunSettings

BENCHMARKS = ["math", "aime"]
# run -> step -> (math, aime). srt ties its best at 10 and 20 (earliest wins) and collapses.
CURVES = {
    "srt": {0: (0.5, 0.10), 10: (0.7, 0.20), 20: (0.7, 0.25), 30: (0.4, 0.05)},
    "mg": {0: (0.5, 0.10), 10: (0.6, 0.15), 20: (0.65, 0.2), 30: (0.66, 0.3)},
}


def settings(name: str, method: str, rollouts: int = 8) -> RunSettings:
    return run_settings(name, method=method, rollouts=rollouts)


RUNS = {"srt": settings("srt", "srt"), "mg": settings("mg", "mgrpo")}


def write_evals(root: Path, curves: dict = CURVES) -> list[str]:
    paths = []
    for run, curve in curves.items():
        for step, accuracies in curve.items():
            for bench, acc in zip(BENCHMARKS, accuracies, strict=True):
                path = root / "eval" / run / f"step{step}" / f"{bench}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                record = {"run": run, "step": step, "benchmark": bench, "accuracy": acc,
                          "majority_accuracy": acc, "problems": 10, "samples": 10,
                          "sampling": {"temperature": 0.6, "seed": 0}}  # fmt: skip
                path.write_text(json.dumps(record))
                paths.append(str(path))
    return paths


def write_metrics(root: Path, runs: dict = RUNS) -> list[str]:
    """Flat label-free signals (no warning) for steps 1-30 of every run, one chunk file each."""
    paths = []
    for run in runs:
        path = root / "runs" / run / "metrics" / "to_step30.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"run": run, "step": step, "majority_ratio": 0.6,
                             "vote_agreement": 0.5}) for step in range(1, 31)]  # fmt: skip
        path.write_text("\n".join(lines) + "\n")
        paths.append(str(path))
    return paths


def config(tables: dict | None = None, select_on: str | None = None) -> str:
    report = {"select_on": select_on, "collapse_margin": 0.05, "tables": tables or {}}
    runs = {name: s.to_dict() for name, s in RUNS.items()}
    return json.dumps({"runs": runs, "benchmarks": BENCHMARKS, "report": report})


def report(*argv: str) -> None:
    """Run ``mgrpo report ...`` through this package's parser only."""
    parser = argparse.ArgumentParser(prog="mgrpo")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *argv])
    args.func(args)


def make_tables(tmp_path: Path, tables: dict | None = None) -> Path:
    evals = write_evals(tmp_path)
    out = tmp_path / "tables"
    report("collapse", "--config", config(tables), "--evals", *evals, "--metrics",
           *write_metrics(tmp_path), "--out", str(out / "collapse.csv"))  # fmt: skip
    report("tables", "--config", config(tables), "--evals", *evals,
           "--collapse", str(out / "collapse.csv"), "--out-dir", str(out))  # fmt: skip
    return out


def test_default_table_rows_use_detector_best_final_and_step0(tmp_path):
    out = make_tables(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [
        "collapse.csv", "label_free.csv", "label_free.md", "runs.csv", "runs.md", "runs.tex",
        "seeds.csv", "seeds.md",
    ]  # fmt: skip
    lines = (out / "runs.csv").read_text().splitlines()
    assert lines == [
        "label,run,step,math,aime",
        "Original,srt,0,0.5,0.1",
        "SRT_Best,srt,10,0.7,0.2",  # tie with step 20: the earliest
        "SRT_Final,srt,30,0.4,0.05",
        "M-GRPO+IQR_Best,mg,30,0.66,0.3",
        "M-GRPO+IQR_Final,mg,30,0.66,0.3",
    ]


def test_markdown_layout(tmp_path):
    text = (make_tables(tmp_path) / "runs.md").read_text()
    assert text.startswith("# All runs: best and final checkpoints\n")
    assert "picked automatically on `math` by the collapse detector" in text
    assert "| Model | Run | Step | math | aime |" in text
    assert "| Original | `srt` | 0 | 50.00% | 10.00% |" in text
    assert "| SRT_Best | `srt` | 10 | 70.00% | 20.00% |" in text
    assert "| SRT_Final | `srt` | 30 | 40.00% | 5.00% |" in text
    assert "paper" not in text  # no paper comparison unless the table names a paper table


def test_latex_is_booktabs_and_escaped(tmp_path):
    text = (make_tables(tmp_path) / "runs.tex").read_text()
    for command in (r"\begin{tabular}{lrrr}", r"\toprule", r"\midrule", r"\bottomrule"):
        assert command in text
    assert r"SRT\_Best & 10 & 70.00\% & 20.00\% \\" in text
    assert "_" not in text.replace(r"\_", "")  # no unescaped underscore left
    assert r"M-GRPO+IQR\_Final & 30 & 66.00\% & 30.00\% \\" in text


def test_configured_table_labels_and_picks(tmp_path):
    tables = {
        "table2": {
            "title": "Main results",
            "rows": [
                {"run": "mg", "pick": "base"},
                {"run": "srt", "pick": "best", "label": "SRT-T1.1 & best"},
                {"run": "srt", "pick": "final"},
                {"run": "mg", "pick": "final", "label": "Ours"},
            ],
        }
    }
    out = make_tables(tmp_path, tables)
    assert not (out / "runs.md").exists()
    assert (out / "table2.csv").read_text().splitlines()[1:] == [
        "Original,mg,0,0.5,0.1",
        "SRT-T1.1 & best,srt,10,0.7,0.2",
        "SRT_Final,srt,30,0.4,0.05",
        "Ours,mg,30,0.66,0.3",
    ]
    assert (out / "table2.md").read_text().startswith("# Main results\n")
    assert r"SRT-T1.1 \& best & 10" in (out / "table2.tex").read_text()


def test_a_missing_evaluation_leaves_its_cell_empty_with_a_note(tmp_path):
    evals = write_evals(tmp_path)
    out = tmp_path / "tables"
    report("collapse", "--config", config(), "--evals", *evals, "--metrics",
           *write_metrics(tmp_path), "--out", str(out / "c.csv"))  # fmt: skip
    kept = [p for p in evals if not p.endswith("srt/step30/aime.json")]
    report("tables", "--config", config(), "--evals", *kept,
           "--collapse", str(out / "c.csv"), "--out-dir", str(out))  # fmt: skip
    assert "SRT_Final,srt,30,0.4," in (out / "runs.csv").read_text().splitlines()
    text = (out / "runs.md").read_text()
    assert "| SRT_Final | `srt` | 30 | 40.00% |  |" in text
    assert "- `srt` step 30: not evaluated on aime yet." in text


def test_a_run_without_evaluations_gets_empty_rows_not_an_error(tmp_path):
    evals = [p for p in write_evals(tmp_path) if "/mg/" not in p]
    metrics = [p for p in write_metrics(tmp_path) if "/mg/" not in p]
    out = tmp_path / "tables"
    report("collapse", "--config", config(), "--evals", *evals, "--metrics", *metrics,
           "--out", str(out / "c.csv"))  # fmt: skip
    report("tables", "--config", config(), "--evals", *evals,
           "--collapse", str(out / "c.csv"), "--out-dir", str(out))  # fmt: skip
    lines = (out / "runs.csv").read_text().splitlines()
    assert lines[-2:] == ["M-GRPO+IQR_Best,mg,,,", "M-GRPO+IQR_Final,mg,,,"]
    assert "`mg`: no evaluations in results/ yet" in (out / "runs.md").read_text()
    # the label-free and seed tables score and average the finished run only, and say so
    label_free = (out / "label_free.md").read_text()
    assert "- runs scored: 1 (finished)" in label_free
    assert "not finished in results/ yet (1): `mg`" in label_free
    assert "| mg | M-GRPO+IQR | not evaluated | none | none |  | none |  |  |  |" in label_free
    seeds = (out / "seeds.md").read_text()
    assert "| M-GRPO+IQR | none (1 not finished) |  |  |  |  |  |  |  |  |" in seeds
    assert "| SRT | 0 | 50.0 | 70.0 | 10 | 40.0 | 30.0 | 1/1 | 0/1 | 40.0 |" in seeds


def test_an_empty_results_tree_still_writes_the_label_free_tables(tmp_path):
    out = tmp_path / "tables"
    report("collapse", "--config", config(), "--evals", "--metrics", "--out", str(out / "c.csv"))
    report("tables", "--config", config(), "--evals", "--collapse", str(out / "c.csv"),
           "--out-dir", str(out))  # fmt: skip
    assert "- no finished runs to score yet" in (out / "label_free.md").read_text()
    assert "Only finished runs are averaged: 2 run(s)" in (out / "seeds.md").read_text()


def test_tables_refuse_a_collapse_table_for_another_benchmark(tmp_path):
    evals = write_evals(tmp_path)
    csv = tmp_path / "collapse.csv"
    report("collapse", "--config", config(select_on="aime"), "--evals", *evals, "--metrics",
           *write_metrics(tmp_path), "--out", str(csv))  # fmt: skip
    with pytest.raises(ValueError, match="rerun `mgrpo report collapse`"):
        report("tables", "--config", config(), "--evals", *evals, "--collapse", str(csv),
               "--out-dir", str(tmp_path))  # fmt: skip


def test_bad_config_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        report("collapse", "--config", "{not json", "--evals", "x.json", "--metrics", "m.jsonl",
               "--out", "c.csv")  # fmt: skip
    assert "not valid JSON" in capsys.readouterr().err


def test_load_evals_flattens_and_sorts(tmp_path):
    frame = load_evals(reversed(write_evals(tmp_path)))
    assert len(frame) == 16
    assert frame[["run", "step", "benchmark"]].iloc[0].tolist() == ["mg", 0, "aime"]
    assert frame["sampling_temperature"].eq(0.6).all()
    assert {"accuracy", "majority_accuracy", "problems", "samples", "path"} <= set(frame.columns)


def test_load_evals_duplicate_names_both_files(tmp_path):
    paths = write_evals(tmp_path)
    copy = tmp_path / "copy.json"
    copy.write_text(Path(paths[0]).read_text())
    with pytest.raises(ValueError, match="duplicate") as err:
        load_evals([*paths, str(copy)])
    assert paths[0] in str(err.value)
    assert str(copy) in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"run": "a", "step": 0, "benchmark": "b"}', "missing key"),
        ('{"run": "a", "step": "3", "benchmark": "b", "accuracy": 0.5}', "'step'"),
        ('{"run": "a", "step": 1, "benchmark": "b", "accuracy": 1.5}', "'accuracy'"),
    ],
)
def test_load_evals_bad_file_names_it(tmp_path, text, message):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_evals([bad])
    assert str(bad) in str(err.value)


def test_load_metrics_nulls_and_errors_with_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"run": "a", "step": 2, "method": "SRT", "entropy_policy": null, "reward_mean": 0.5}\n'
        "\n"
        '{"run": "a", "step": 1, "method": "SRT", "entropy_policy": 0.3, "reward_mean": null}\n'
    )
    frame = load_metrics([path])
    assert frame["step"].tolist() == [1, 2]
    assert frame["entropy_policy"].isna().tolist() == [False, True]
    assert frame["reward_mean"].isna().tolist() == [True, False]
    path.write_text(path.read_text() + '{"run": "a", "step": \n')
    with pytest.raises(ValueError, match=f"{path}:4: not valid JSON"):
        load_metrics([path])
    path.write_text('{"run": "a", "step": 1}\n{"run": "a", "step": 1}\n')
    with pytest.raises(ValueError, match=f"{path}:1 and {path}:2"):
        load_metrics([path])


def test_run_labels_are_unique_and_paper_style():
    runs = {
        "srt8": settings("srt8", "srt", 8),
        "srt16": settings("srt16", "srt", 16),
        "mg": settings("mg", "mgrpo"),
        "a": settings("a", "intuitor"),
        "b": settings("b", "intuitor"),
    }
    assert run_labels(runs) == {
        "srt8": "SRT.G8",
        "srt16": "SRT.G16",
        "mg": "M-GRPO+IQR",
        "a": "a",
        "b": "b",
    }


def test_best_rows_come_from_collapse_csv_not_a_recomputation(tmp_path):
    """Tables show the step collapse.csv names, so tables and figures can never disagree."""
    evals = write_evals(tmp_path)
    csv = tmp_path / "collapse.csv"
    report("collapse", "--config", config(), "--evals", *evals, "--metrics", "--out", str(csv))
    frame = pd.read_csv(csv)
    assert frame.set_index("run").at["srt", "best_step"] == 10
    frame.loc[frame["run"] == "srt", "best_step"] = 20  # what a different detector would pick
    csv.write_text(frame.to_csv(index=False))
    out = tmp_path / "tables"
    report("tables", "--config", config(), "--evals", *evals, "--collapse", str(csv),
           "--out-dir", str(out))  # fmt: skip
    assert "SRT_Best,srt,20,0.7,0.25" in (out / "runs.csv").read_text().splitlines()
