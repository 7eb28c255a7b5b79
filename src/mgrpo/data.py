"""Problem files: the one schema every split, engine and evaluator reads.

A problem file is parquet with columns ``id`` (unique string), ``question`` (the user message,
which asks for the answer in ``\\boxed{}``) and ``answer`` (ground truth, may be null or blank
where nothing needs it; evaluation and GT-GRPO training need it on every row). For the RL
train split the answer is *hidden*: trainers read it only to log label accuracy and for the
GT-GRPO oracle, never for SRT/M-GRPO rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("id", "question", "answer")


@dataclass(frozen=True)
class ProblemSet:
    ids: list[str]
    questions: list[str]
    answers: list[str | None]  # normalised ground truth, None if unknown
    path: Path | None = None  # the file it was read from (named in errors)

    def __len__(self) -> int:
        return len(self.ids)

    def require_answers(self, needed_by: str, count: int | None = None) -> None:
        """Fail, naming file, row and column, if one of the first ``count`` rows has no answer.

        ``needed_by`` says what needs the ground truth (e.g. ``"GT-GRPO training"``).
        """
        for row, answer in enumerate(self.answers[:count]):
            if answer is None:
                raise ValueError(
                    f"{_where(self.path, row, 'answer')}: empty, but {needed_by} needs the "
                    f"ground truth of every problem (id {self.ids[row]!r})"
                )


def _where(path: Path | None, row: int, column: str) -> str:
    """How errors name a cell: file, 0-based data row, column."""
    return f"{path}: row {row}, column {column!r}"


def read_problems(path: str | Path) -> ProblemSet:
    """Load and validate a problem file; errors name the file, the row and the column.

    Blank answers count as unknown (None); use :meth:`ProblemSet.require_answers` where the
    ground truth is needed.
    """
    import pandas as pd

    from mgrpo.algorithm.answers import normalize_answer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"problem file not found: {path}")
    frame = pd.read_parquet(path).reset_index(drop=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; have {list(frame.columns)}")
    if len(frame) == 0:
        raise ValueError(f"{path}: no problems")

    def blank(column: str) -> pd.Series:
        return frame[column].isna() | (frame[column].astype(str).str.strip() == "")

    for column in ("id", "question"):
        bad = blank(column)
        if bad.any():
            raise ValueError(f"{_where(path, int(bad.idxmax()), column)}: empty")
    ids = frame["id"].astype(str)
    first_row = {}
    for row, problem_id in enumerate(ids):
        if problem_id in first_row:
            raise ValueError(
                f"{_where(path, row, 'id')}: duplicate id {problem_id!r} "
                f"(first at row {first_row[problem_id]})"
            )
        first_row[problem_id] = row
    answers = [
        None if unknown else normalize_answer(str(a))
        for a, unknown in zip(frame["answer"], blank("answer"), strict=True)
    ]
    return ProblemSet(
        ids=ids.tolist(),
        questions=[str(q) for q in frame["question"]],
        answers=answers,
        path=path,
    )
