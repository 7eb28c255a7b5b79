"""Problem files from Hugging Face datasets (MATH, MATH-500, AIME, ...), in the project schema.

Any dataset with a question column and either an answer column or a worked solution ending in
``\\boxed{}`` can be converted. ``path`` may also be a loader name such as ``parquet`` or
``json`` with ``data_files``, which is how the tests run offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from mgrpo.algorithm.answers import last_boxed
from mgrpo.io import write_parquet
from mgrpo.progress import progress

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def load_hf_problems(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{id, question, answer}`` from a dataset described by ``spec``.

    ``spec`` keys: path, name (config), split, data_files, question_field, answer_field
    (or ``solution_field``: the answer is the solution's last ``\\boxed{}``), id_field,
    instruction (appended to every question), limit.
    """
    from datasets import load_dataset

    dataset = load_dataset(
        spec["path"], spec.get("name"), split=spec["split"], data_files=spec.get("data_files")
    )
    where = f"dataset {spec['path']!r} split {spec['split']!r}"
    for key in ("question_field", "answer_field", "solution_field", "id_field"):
        column = spec.get(key)
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"{where}: no column {column!r} ({key}); has {dataset.column_names}")
    instruction = spec.get("instruction", DEFAULT_INSTRUCTION)
    count = len(dataset) if spec.get("limit") is None else min(spec["limit"], len(dataset))
    rows = []
    items = islice(dataset, count)
    desc = f"{spec['path']} {spec['split']}"
    for i, item in enumerate(progress(items, total=count, desc=desc, unit="row")):
        if spec.get("answer_field"):
            answer = item[spec["answer_field"]]
        else:
            answer = last_boxed(str(item[spec["solution_field"]]))
            if answer is None:
                raise ValueError(f"{where}: row {i}: no \\boxed{{}} answer in the solution")
        question = str(item[spec["question_field"]]).strip()
        rows.append(
            {
                "id": str(item[spec["id_field"]])
                if spec.get("id_field")
                else f"{spec['split']}-{i:05d}",
                "question": f"{question}\n{instruction}" if instruction else question,
                "answer": None if answer is None else str(answer),
            }
        )
    return rows


def write_hf_problems(spec: Mapping[str, Any], out: str | Path) -> int:
    """Convert and write a problem parquet; returns the number of problems."""
    import pandas as pd

    rows = load_hf_problems(spec)
    if not rows:
        raise ValueError(f"dataset {spec['path']!r} split {spec['split']!r}: no rows")
    write_parquet(out, pd.DataFrame(rows, columns=["id", "question", "answer"]))
    return len(rows)
