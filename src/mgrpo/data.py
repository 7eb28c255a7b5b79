"""Problem files: the one schema every split, engine and evaluator reads.

A problem file is parquet with columns ``id`` (unique string), ``question`` (the user message,
which asks for the answer in ``\\boxed{}``) and ``answer`` (ground truth, may be null). For the RL
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

    def __len__(self) -> int:
        return len(self.ids)


def read_problems(path: str | Path) -> ProblemSet:
    """Load and validate a problem file; errors name the file, the column and the row."""
    import pandas as pd

    from mgrpo.algorithm.answers import normalize_answer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"problem file not found: {path}")
    frame = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; have {list(frame.columns)}")
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
    return ProblemSet(
        ids=[str(i) for i in frame["id"]],
        questions=[str(q) for q in frame["question"]],
        answers=answers,
    )
