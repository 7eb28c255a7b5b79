"""Problem files: the one schema every split, engine and evaluator reads.

A problem file is parquet with columns ``id`` (unique string), ``question`` (the complete user
message: the problem and how to answer it) and ``answer`` (ground truth, may be null). For the
RL train split the answer is *hidden*: trainers read it only to log label accuracy and for the
GT-GRPO oracle, never for SRT/M-GRPO rewards.

Evaluation problems come in one of three *kinds*, one per way of grading:

- ``math``: ``answer`` is the final answer, compared with the response's last ``\\boxed{}``.
- ``multiple_choice``: ``options`` (list of strings, in the order the question lists them as
  (A), (B), ...) and ``answer``, the correct option's letter.
- ``code``: ``tests``, a JSON object ``{"mode", "cases", "entry_point", "setup"}`` that the code
  grader runs the response's program against (see :data:`TEST_MODES`); ``answer`` is null.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = ("id", "question", "answer")
KINDS = ("math", "multiple_choice", "code")
KIND_COLUMNS = {"math": (), "multiple_choice": ("options",), "code": ("tests",)}
LETTERS = string.ascii_uppercase
# How a code problem's test cases run the program:
#   assert      cases are Python statements (MBPP's `assert f(x) == y`), run after the program
#   stdin       cases are {"input", "output"}: the program reads stdin, its stdout must match
#   functional  cases are {"input", "output"} of JSON lines: `Solution().<entry_point>(*args)`
#               (or the function `<entry_point>`) must return the JSON value in `output`
TEST_MODES = ("assert", "stdin", "functional")


@dataclass(frozen=True)
class ProblemSet:
    ids: list[str]
    questions: list[str]
    answers: list[str | None]  # normalised ground truth, None if unknown
    kind: str = "math"
    options: list[list[str]] | None = None  # multiple_choice: option texts per problem
    tests: list[dict[str, Any]] | None = None  # code: the parsed `tests` object per problem

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, count: int | None) -> ProblemSet:
        """The first ``count`` problems (all of them for None)."""
        if count is None or count >= len(self):
            return self
        return ProblemSet(
            ids=self.ids[:count],
            questions=self.questions[:count],
            answers=self.answers[:count],
            kind=self.kind,
            options=None if self.options is None else self.options[:count],
            tests=None if self.tests is None else self.tests[:count],
        )


def read_problems(path: str | Path, kind: str = "math") -> ProblemSet:
    """Load and validate a problem file of ``kind``; errors name the file, column and row."""
    import pandas as pd

    from mgrpo.algorithm.answers import normalize_answer

    if kind not in KINDS:
        raise ValueError(f"unknown problem kind {kind!r}; expected one of {KINDS}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"problem file not found: {path}")
    frame = pd.read_parquet(path)
    needed = (*REQUIRED_COLUMNS, *KIND_COLUMNS[kind])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing} for {kind} problems; have {list(frame.columns)}"
        )
    if len(frame) == 0:
        raise ValueError(f"{path}: no problems")
    for column in ("id", "question"):
        bad = frame.index[frame[column].isna() | (frame[column].astype(str).str.strip() == "")]
        if len(bad):
            raise ValueError(f"{path}: row {int(bad[0])}: empty {column!r}")
    dupes = frame["id"][frame["id"].duplicated()]
    if len(dupes):
        raise ValueError(f"{path}: duplicate id {dupes.iloc[0]!r}")
    answers = [None if pd.isna(a) else normalize_answer(str(a)) for a in frame["answer"]]
    options = tests = None
    if kind == "multiple_choice":
        options = [_options(path, row, value) for row, value in enumerate(frame["options"])]
        for row, (letter, opts) in enumerate(zip(answers, options, strict=True)):
            valid = LETTERS[: len(opts)]
            if letter is None or letter not in valid:
                raise ValueError(
                    f"{path}: row {row}: answer {letter!r} is not an option letter ({valid[0]}-"
                    f"{valid[-1]} for {len(opts)} options)"
                )
    elif kind == "code":
        tests = [_tests(path, row, value) for row, value in enumerate(frame["tests"])]
    return ProblemSet(
        ids=[str(i) for i in frame["id"]],
        questions=[str(q) for q in frame["question"]],
        answers=answers,
        kind=kind,
        options=options,
        tests=tests,
    )


def _options(path: Path, row: int, value: Any) -> list[str]:
    if value is None or isinstance(value, str) or not hasattr(value, "__len__"):
        raise ValueError(f"{path}: row {row}: 'options' must be a list of strings, got {value!r}")
    opts = [str(o) for o in value]
    if not 2 <= len(opts) <= len(LETTERS):
        raise ValueError(f"{path}: row {row}: 'options' has {len(opts)} entries (2-26 allowed)")
    if any(not o.strip() for o in opts):
        raise ValueError(f"{path}: row {row}: empty entry in 'options'")
    return opts


def _tests(path: Path, row: int, value: Any) -> dict[str, Any]:
    where = f"{path}: row {row}: 'tests'"
    try:
        tests = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err.msg})") from None
    if not isinstance(tests, dict):
        raise ValueError(f"{where} must be a JSON object with 'mode' and 'cases'")
    mode, cases = tests.get("mode"), tests.get("cases")
    if mode not in TEST_MODES:
        raise ValueError(f"{where}: mode {mode!r} is not one of {TEST_MODES}")
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{where}: 'cases' must be a non-empty list")
    for i, case in enumerate(cases):
        ok = (
            isinstance(case, str)
            if mode == "assert"
            else isinstance(case, dict)
            and isinstance(case.get("input"), str)
            and isinstance(case.get("output"), str)
        )
        if not ok:
            shape = "a Python statement" if mode == "assert" else '{"input": str, "output": str}'
            raise ValueError(f"{where}: case {i} must be {shape} for mode {mode!r}")
    if mode == "functional" and not tests.get("entry_point"):
        raise ValueError(f"{where}: mode 'functional' needs an 'entry_point'")
    if not isinstance(tests.get("setup", ""), str):
        raise ValueError(f"{where}: 'setup' must be a string of Python code")
    return {"setup": "", "entry_point": None, **tests}
