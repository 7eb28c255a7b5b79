"""Problem files, Hugging Face conversion and atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from mgrpo.algorithm.answers import extract_answer
from mgrpo.data import read_problems
from mgrpo.hf_data import write_hf_problems
from mgrpo.io import atomic_path, read_jsonl, write_jsonl


def write(path: Path, **columns) -> Path:
    pd.DataFrame(columns).to_parquet(path, index=False)
    return path


def test_read_problems_normalises_answers(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.parquet", id=["a", "b"], question=["q1", "q2"], answer=["1,000", None]
    )
    problems = read_problems(path)
    assert problems.ids == ["a", "b"] and problems.answers == ["1000", None]


def test_file_answers_and_boxed_rollouts_normalise_into_one_class(tmp_path: Path) -> None:
    # The truth comes from a file (read_problems), the rollout from a box (extract_answer): the
    # two must land in one answer class whichever form each side wrote.
    truths = [
        "\\$5",
        "5\\text{ dollars}",
        "\\frac12",
        "a=3",
        "\\sqrt3",
        "(C)",
        "\\text{yes}",
        "1{,}000",
    ]
    rollouts = ["5 dollars", "\\$5.00", "0.50", "x = 3", "\\sqrt{3}", "\\text{(C)}", "yes", "1000"]
    path = write(
        tmp_path / "p.parquet",
        id=[str(i) for i in range(len(truths))],
        question=["q"] * len(truths),
        answer=truths,
    )
    answers = read_problems(path).answers
    assert answers == ["5", "5", "0.5", "3", "\\sqrt{3}", "C", "yes", "1000"]
    assert answers == [extract_answer(f"so \\boxed{{{r}}}") for r in rollouts]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"id": ["a"], "question": ["q"]}, r"missing column\(s\) \['answer'\]"),
        ({"id": ["a", "a"], "question": ["q", "r"], "answer": ["1", "2"]}, "duplicate id 'a'"),
        (
            {"id": ["a", "b"], "question": ["q", " "], "answer": ["1", "2"]},
            "row 1: empty 'question'",
        ),
    ],
)
def test_bad_problem_files_name_file_and_row(tmp_path: Path, columns: dict, message: str) -> None:
    path = write(tmp_path / "bad.parquet", **columns)
    with pytest.raises(ValueError, match=message) as err:
        read_problems(path)
    assert "bad.parquet" in str(err.value)


def test_missing_problem_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet"):
        read_problems(tmp_path / "nowhere.parquet")


def test_hf_conversion_from_answers_and_from_boxed_solutions(tmp_path: Path) -> None:
    source = write(
        tmp_path / "src.parquet",
        problem=["What is 1+1?", "Half of 1?"],
        solution=["It is \\boxed{2}.", "So \\boxed{\\frac{1}{2}}."],
        answer=["2", "1/2"],
    )
    spec = {
        "path": "parquet",
        "data_files": str(source),
        "split": "train",
        "question_field": "problem",
    }
    out = tmp_path / "out.parquet"
    assert write_hf_problems({**spec, "solution_field": "solution"}, out) == 2
    problems = read_problems(out)
    assert problems.answers == ["2", "0.5"]
    assert (
        problems.questions[0].startswith("What is 1+1?\n") and "\\boxed{}" in problems.questions[0]
    )
    write_hf_problems({**spec, "answer_field": "answer", "limit": 1, "instruction": ""}, out)
    assert read_problems(out).questions == ["What is 1+1?"]


def test_hf_conversion_names_a_missing_column(tmp_path: Path) -> None:
    source = write(tmp_path / "src.parquet", problem=["q"], answer=["1"])
    spec = {"path": "parquet", "data_files": str(source), "split": "train"}
    with pytest.raises(ValueError, match="no column 'question'"):
        write_hf_problems(
            {**spec, "question_field": "question", "answer_field": "answer"}, tmp_path / "o.parquet"
        )


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_directory_replaces_and_is_readable(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    for content in ("first", "second"):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "f").write_text(content)
    assert (target / "f").read_text() == "second"
    assert stat.S_IMODE(target.stat().st_mode) & 0o055  # group/other can read, not owner-only


def test_jsonl_round_trip_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_jsonl(path, [{"a": 1}, {"a": None}])
    assert read_jsonl(path) == [{"a": 1}, {"a": None}]
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2: not valid JSON"):
        read_jsonl(path)
