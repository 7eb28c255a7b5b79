"""Every grading kind through the workflow's own rules: hub-format fixtures -> hf_problems ->
eval_base_model / eval_checkpoint / eval_step0 -> report, on the tiny toy model (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from benchmark_fixtures import write_fixture
from support import TINY_TOY, TINY_TRAINING
from test_workflow import snakemake, write_config

from mgrpo.evaluation.grading import REASONS

BENCHMARKS = {  # benchmark -> (fixture, kind, samples, through lm-eval)
    "aime_fx": ("aime", "math", 2, True),
    "gpqa_fx": ("gpqa", "multiple_choice", 2, True),
    "lcb_fx": ("livecodebench", "code", 1, False),
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("kinds")
    benchmarks = {
        name: {
            "source": "hf",
            "kind": kind,
            "hf": write_fixture(fixture, workdir / "fixtures" / f"{fixture}.jsonl"),
            "samples": samples,
            "max_new_tokens": 12,
            "lm_eval": lm_eval,
        }
        for name, (fixture, kind, samples, lm_eval) in BENCHMARKS.items()
    }
    config = {
        **TINY_TOY,
        "training": {**TINY_TRAINING, "steps": 1, "chunk_steps": 1},
        "runs": {"srt": {"method": "srt"}},
        "benchmarks": benchmarks,
        "evaluation": {"device": "cpu", "sandbox": {"case_timeout_s": 2, "total_timeout_s": 5}},
        "report": {"select_on": "aime_fx"},
    }
    write_config(workdir, config)
    snakemake(workdir)
    return workdir


@pytest.mark.slow
@pytest.mark.parametrize("bench", list(BENCHMARKS))
def test_each_kind_is_evaluated_through_the_rules(evaluated: Path, bench: str) -> None:
    _, kind, samples, lm_eval = BENCHMARKS[bench]
    problems = pd.read_parquet(evaluated / f"results/data/hf/benchmark-{bench}.parquet")
    for where in ("base/toy", "srt/step0", "srt/step1"):
        summary = json.loads((evaluated / f"results/eval/{where}/{bench}.json").read_text())
        records = pd.read_parquet(evaluated / f"results/eval/{where}/{bench}.samples.parquet")
        assert summary["kind"] == kind and summary["backend"]["name"] == "local"
        assert summary["samples"] == len(records) == len(problems) * samples
        assert set(records["verdict"]) <= set(REASONS)
        assert set(records["problem_id"]) == set(problems["id"])
        assert 0.0 <= summary["accuracy"] <= 1.0
        assert ("lm_eval" in summary) == lm_eval
        assert ("pass_at_k" in summary) == (kind == "code")
    step0 = json.loads((evaluated / f"results/eval/srt/step0/{bench}.json").read_text())
    assert (
        step0["accuracy"]
        == json.loads((evaluated / f"results/eval/base/toy/{bench}.json").read_text())["accuracy"]
    )


@pytest.mark.slow
def test_the_report_reads_every_kind(evaluated: Path) -> None:
    table = (evaluated / "results/tables/runs.md").read_text()
    for bench in BENCHMARKS:
        assert bench in table
    config = yaml.safe_load((evaluated / "config.yaml").read_text())
    assert set(config["benchmarks"]) == set(BENCHMARKS)
