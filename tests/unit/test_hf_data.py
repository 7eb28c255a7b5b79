"""Benchmark data prep: every paper benchmark's layout, offline and gated errors, unsafe pickles."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib
from pathlib import Path

import pytest
from benchmark_fixtures import KINDS, ROWS, write_fixture

from mgrpo.cli import main
from mgrpo.config import ConfigError, validate_config
from mgrpo.data import read_problems
from mgrpo.hf_data import DatasetUnavailable, decode_test_cases, write_hf_problems


def convert(name: str, tmp_path: Path, **overrides):
    spec = {**write_fixture(name, tmp_path / f"{name}.jsonl"), **overrides}
    out = tmp_path / f"{name}-{len(overrides)}.parquet"
    write_hf_problems(spec, out)
    return read_problems(out, KINDS[name])


def test_gpqa_options_are_shuffled_deterministically_and_the_letter_follows(tmp_path: Path) -> None:
    problems = convert("gpqa", tmp_path)
    for row, options, letter, question in zip(
        ROWS["gpqa"], problems.options, problems.answers, problems.questions, strict=True
    ):
        correct = row["Correct Answer"]
        wrong = [row[f"Incorrect Answer {k}"] for k in (1, 2, 3)]
        assert sorted(options) == sorted([correct, *wrong])
        assert options["ABCD".index(letter)] == correct
        assert f"({letter}) {correct}" in question and "The answer is (X)" in question
    assert problems.answers != ["A"] * 3  # not left in the dataset's order
    again = convert("gpqa", tmp_path, limit=1)
    assert again.options == problems.options[:1]  # a problem's shuffle ignores limit and order
    other = convert("gpqa", tmp_path, shuffle_seed=7, limit=3)
    assert other.options != problems.options


def test_mmlu_pro_keeps_options_and_letter(tmp_path: Path) -> None:
    problems = convert("mmlu_pro", tmp_path)
    assert problems.ids == ["100", "101"]
    assert problems.answers == ["B", "F"]
    assert problems.options[1][5] == "11"
    assert "(F) 11" in problems.questions[1]


def test_mbpp_becomes_assert_tests_with_setup(tmp_path: Path) -> None:
    problems = convert("mbpp", tmp_path)
    first, second = problems.tests
    assert first == {
        "mode": "assert",
        "cases": ["assert add_two(1, 2) == 3", "assert add_two(-1, 1) == 0"],
        "setup": "",
        "entry_point": None,
    }
    assert second["setup"] == "import math"
    assert "assert root(16) == 4" in problems.questions[1]  # the tests name the function
    assert "```python" in problems.questions[0] and problems.answers == [None, None]


def test_livecodebench_stdin_and_functional_with_encoded_private_tests(tmp_path: Path) -> None:
    problems = convert("livecodebench", tmp_path)
    stdin, functional = problems.tests
    assert stdin["mode"] == "stdin"
    assert stdin["cases"] == [
        {"input": "1 2\n", "output": "3\n"},
        {"input": "10 -4\n", "output": "6\n"},
    ]
    assert functional["mode"] == "functional" and functional["entry_point"] == "largest"
    assert [c["output"] for c in functional["cases"]] == ["9", "-2"]
    assert "def largest(self" in problems.questions[1]
    assert "standard input" in problems.questions[0]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mgrpo-pickle-ran",))


def test_encoded_tests_may_not_run_code() -> None:
    raw = base64.b64encode(zlib.compress(pickle.dumps(_Payload()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        decode_test_cases(raw)
    assert not Path("/tmp/mgrpo-pickle-ran").exists()


def test_offline_error_names_the_dataset_and_what_to_do(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE=1: this is what a compute node without internet sees.
    spec = {"path": "HuggingFaceH4/MATH-500", "split": "test", "format": "math",
            "question_field": "problem", "answer_field": "answer"}  # fmt: skip
    with pytest.raises(DatasetUnavailable) as err:
        write_hf_problems(spec, tmp_path / "o.parquet")
    message = str(err.value)
    assert "'HuggingFaceH4/MATH-500'" in message
    assert "no network or offline mode" in message and "hf.data_files" in message
    assert not (tmp_path / "o.parquet").exists()


def test_gated_error_names_the_dataset_and_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def gated(path, *args, **kwargs):
        raise DatasetNotFoundError(
            f"Dataset '{path}' is a gated dataset on the Hub. "
            "You must be authenticated to access it."
        )

    monkeypatch.setattr(datasets, "load_dataset", gated)
    spec = {"path": "Idavidrein/gpqa", "name": "gpqa_diamond", "split": "train", "format": "gpqa"}
    with pytest.raises(SystemExit) as err:
        main(["hf-data", "--spec", json.dumps(spec), "--out", str(tmp_path / "o.parquet")])
    message = str(err.value)
    assert message.startswith("mgrpo hf-data: dataset 'Idavidrein/gpqa' (config 'gpqa_diamond')")
    assert "HF_TOKEN" in message and "https://huggingface.co/datasets/Idavidrein/gpqa" in message


@pytest.mark.parametrize(
    ("benchmark", "key"),
    [
        ({"source": "hf", "kind": "math", "hf": {"path": "x", "split": "t", "format": "gpqa"}},
         "benchmarks.b.kind"),
        ({"source": "hf", "kind": "code", "lm_eval": True,
          "hf": {"path": "x", "split": "t", "format": "mbpp"}}, "benchmarks.b.lm_eval"),
        ({"source": "hf", "hf": {"path": "x", "split": "t", "answer_field": "a"}},
         "benchmarks.b.hf.question_field"),
        ({"source": "toy", "split": "test", "kind": "multiple_choice"}, "benchmarks.b.kind"),
    ],
)  # fmt: skip
def test_benchmark_kind_errors_name_the_key(benchmark: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        validate_config({"runs": {"r": {}}, "benchmarks": {"b": benchmark}})
