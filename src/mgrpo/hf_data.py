"""Problem files from Hugging Face datasets, in the project schema (see :mod:`mgrpo.data`).

``spec["format"]`` names the source dataset's layout and thereby the problem kind:

- ``math`` (default; MATH, MATH-500, AIME, ...): any dataset with a question column and either an
  answer column or a worked solution ending in ``\\boxed{}``; fields are configurable.
- ``gpqa`` (``Idavidrein/gpqa``): the correct answer is always its first field, so the four
  options are shuffled per problem with ``shuffle_seed`` (seeded by the problem's id, so
  ``limit`` or row order never change a problem's shuffle).
- ``mmlu_pro`` (``TIGER-Lab/MMLU-Pro``): up to ten options and the correct letter.
- ``mbpp`` (``google-research-datasets/mbpp``, configs ``full`` and ``sanitized``): a task and
  the ``assert`` tests the function must pass (shown in the prompt, as customary).
- ``livecodebench`` (``lighteval/code_generation_lite`` and other copies of
  ``livecodebench/code_generation_lite``): stdin/stdout problems and LeetCode-style functional
  problems; private tests may be base64+zlib+pickle encoded and are decoded without running
  anything (a pickle may only contain plain strings and lists).

``path`` may also be a loader such as ``parquet`` or ``json`` with ``data_files``: a local copy
in the hub dataset's own columns works everywhere a hub id does (that is how the tests run
offline). Hub failures become :class:`DatasetUnavailable` naming the dataset and what to do.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import random
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from mgrpo.algorithm.answers import last_boxed
from mgrpo.data import LETTERS
from mgrpo.io import write_parquet
from mgrpo.progress import progress

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Think step by step, then finish your response with 'The answer is (X)', where X is the "
    "letter of the correct option."
)
CODE_INSTRUCTION = "Write your complete solution in Python, in one ```python code block."
FORMAT_KINDS = {
    "math": "math",
    "gpqa": "multiple_choice",
    "mmlu_pro": "multiple_choice",
    "mbpp": "code",
    "livecodebench": "code",
}


class DatasetUnavailable(RuntimeError):
    """A dataset could not be loaded; the message names it and says what to do."""


def load_hf_problems(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the problem schema (``id``, ``question``, ``answer`` and the kind's columns).

    ``spec`` keys: path, name (config), split, revision, data_files, format, instruction
    (replaces the format's default), limit; for ``format: math`` also question_field,
    answer_field (or ``solution_field``: the answer is the solution's last ``\\boxed{}``) and
    id_field; for ``gpqa`` shuffle_seed.
    """
    fmt = spec.get("format", "math")
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of {sorted(CONVERTERS)}")
    dataset = _load(spec)
    where = f"dataset {spec['path']!r} split {spec['split']!r}"
    needed = [spec.get(k) for k in FIELD_KEYS] if fmt == "math" else FORMAT_COLUMNS[fmt]
    for column in filter(None, needed):
        if column not in dataset.column_names:
            raise ValueError(
                f"{where}: no column {column!r} (format {fmt}); has {dataset.column_names}"
            )
    convert = CONVERTERS[fmt]
    count = len(dataset) if spec.get("limit") is None else min(spec["limit"], len(dataset))
    items = progress(islice(dataset, count), total=count, desc=where, unit="row")
    rows = []
    for i, item in enumerate(items):
        try:
            rows.append(convert(spec, i, item))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: row {i}: {err}") from None
    return rows


def write_hf_problems(spec: Mapping[str, Any], out: str | Path) -> int:
    """Convert and write a problem parquet; returns the number of problems."""
    import pandas as pd

    rows = load_hf_problems(spec)
    if not rows:
        raise ValueError(f"dataset {spec['path']!r} split {spec['split']!r}: no rows")
    write_parquet(out, pd.DataFrame(rows))
    return len(rows)


# ----------------------------------------------------------------------------- loading
def _load(spec: Mapping[str, Any]) -> Any:
    from datasets import load_dataset

    path, name, split = spec["path"], spec.get("name"), spec["split"]
    try:
        dataset = load_dataset(
            path,
            name,
            split=split,
            data_files=spec.get("data_files"),
            revision=spec.get("revision"),
        )
    except Exception as err:
        raise DatasetUnavailable(_explain(spec, err)) from err
    revision = _resolved_revision(dataset)
    log.info(
        "dataset %s (config %s, split %s): %d rows, revision %s%s",
        path,
        name,
        split,
        len(dataset),
        revision or "unknown",
        "" if spec.get("revision") else " (not pinned: set hf.revision to pin it)",
    )
    return dataset


def _explain(spec: Mapping[str, Any], err: Exception) -> str:
    path = spec["path"]
    what = f"dataset {path!r}" + (f" (config {spec['name']!r})" if spec.get("name") else "")
    text = f"{type(err).__name__}: {err}"
    local = (
        "Or convert a local copy: set hf.path to 'parquet' or 'json' and hf.data_files to the "
        "file(s), with the dataset's own columns."
    )
    if "gated dataset" in text or "GatedRepoError" in text:
        return (
            f"{what} is gated on the Hugging Face hub and this job is not allowed to read it "
            f"({text}). Log in at https://huggingface.co/datasets/{path}, accept its terms, then "
            f"give the job a read token: export HF_TOKEN=hf_... (or run `hf auth login`) on the "
            f"machine that runs the data rule. {local}"
        )
    offline = (
        isinstance(err, ConnectionError)
        or "OfflineModeIsEnabled" in text
        or "Couldn't reach" in text
        or "ConnectError" in text
    )
    if offline:
        return (
            f"cannot download {what} from the Hugging Face hub: no network or offline mode "
            f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) ({text}). Run the data rule where the hub is "
            f"reachable (results/data/hf/*.parquet can be copied to this machine), or pre-download "
            f"it with `hf download --repo-type dataset {path}` and set HF_HOME. {local}"
        )
    if "doesn't exist" in text or "Revision" in text:
        return f"{what} not found on the Hugging Face hub: check hf.path and hf.revision ({text})"
    return f"{what}: {text}"


def _resolved_revision(dataset: Any) -> str | None:
    """The hub commit a dataset was read at (its cache directory is named after it)."""
    for entry in getattr(dataset, "cache_files", None) or []:
        for part in Path(entry.get("filename", "")).parts:
            if re.fullmatch(r"[0-9a-f]{40}", part):
                return part
    return None


# ----------------------------------------------------------------------------- prompts
def choice_question(question: str, options: Sequence[str], instruction: str) -> str:
    """The user message of a multiple-choice problem: question, lettered options, instruction."""
    listed = "\n".join(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options))
    return f"{question.strip()}\n\n{listed}" + (f"\n\n{instruction}" if instruction else "")


def _with_instruction(text: str, instruction: str) -> str:
    return f"{text}\n{instruction}" if instruction else text


# ----------------------------------------------------------------------------- converters
FIELD_KEYS = ("question_field", "answer_field", "solution_field", "id_field")
FORMAT_COLUMNS = {
    "gpqa": ["Question", "Correct Answer", *(f"Incorrect Answer {i}" for i in (1, 2, 3))],
    "mmlu_pro": ["question_id", "question", "options", "answer"],
    "mbpp": ["task_id", "test_list"],
    "livecodebench": ["question_id", "question_content", "public_test_cases"],
}


def _math(spec: Mapping[str, Any], i: int, item: Mapping[str, Any]) -> dict[str, Any]:
    if spec.get("answer_field"):
        answer = item[spec["answer_field"]]
    else:
        answer = last_boxed(str(item[spec["solution_field"]]))
        if answer is None:
            raise ValueError("no \\boxed{} answer in the solution")
    question = str(item[spec["question_field"]]).strip()
    return {
        "id": str(item[spec["id_field"]]) if spec.get("id_field") else f"{spec['split']}-{i:05d}",
        "question": _with_instruction(question, spec.get("instruction", DEFAULT_INSTRUCTION)),
        "answer": None if answer is None else str(answer),
    }


def _clean_gpqa(text: Any) -> str:
    return " ".join(str(text).replace(" [title]", ". ").split())


def _gpqa(spec: Mapping[str, Any], i: int, item: Mapping[str, Any]) -> dict[str, Any]:
    pid = str(item.get("Record ID") or f"{spec['split']}-{i:05d}")
    correct = _clean_gpqa(item["Correct Answer"])
    options = [correct, *(_clean_gpqa(item[f"Incorrect Answer {k}"]) for k in (1, 2, 3))]
    random.Random(f"{spec.get('shuffle_seed', 0)}:{pid}").shuffle(options)
    instruction = spec.get("instruction", CHOICE_INSTRUCTION)
    return {
        "id": pid,
        "question": choice_question(_clean_gpqa(item["Question"]), options, instruction),
        "answer": LETTERS[options.index(correct)],
        "options": options,
    }


def _mmlu_pro(spec: Mapping[str, Any], i: int, item: Mapping[str, Any]) -> dict[str, Any]:
    options = [str(o) for o in item["options"]]
    answer = str(item["answer"]).strip()
    if answer not in LETTERS[: len(options)]:
        raise ValueError(f"answer {answer!r} is not one of the {len(options)} option letters")
    instruction = spec.get("instruction", CHOICE_INSTRUCTION)
    return {
        "id": str(item["question_id"]),
        "question": choice_question(str(item["question"]), options, instruction),
        "answer": answer,
        "options": options,
    }


def _mbpp(spec: Mapping[str, Any], i: int, item: Mapping[str, Any]) -> dict[str, Any]:
    # `full` has `text` + `test_setup_code`; `sanitized` has `prompt` + `test_imports`.
    task = item.get("text") or item.get("prompt")
    if not task:
        raise ValueError("neither 'text' (config full) nor 'prompt' (config sanitized)")
    cases = [str(t) for t in item["test_list"]]
    setup = item.get("test_setup_code") or "\n".join(item.get("test_imports") or [])
    shown = "\n".join(cases)
    question = f"{str(task).strip()}\nYour code should pass these tests:\n\n{shown}"
    return {
        "id": str(item["task_id"]),
        "question": _with_instruction(question, spec.get("instruction", CODE_INSTRUCTION)),
        "answer": None,
        "tests": json.dumps({"mode": "assert", "cases": cases, "setup": setup}),
    }


class _PlainDataOnly(pickle.Unpickler):
    """Unpickles strings, numbers, lists and dicts; refuses every class or callable."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from test cases")


def decode_test_cases(raw: Any) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON list, or base64(zlib(pickle(JSON))) for private tests."""
    if isinstance(raw, list):
        return raw
    if raw is None or raw == "":
        return []
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    obj = _PlainDataOnly(io.BytesIO(zlib.decompress(base64.b64decode(raw)))).load()
    if isinstance(obj, bytes):
        obj = obj.decode()
    return json.loads(obj) if isinstance(obj, str) else obj


def _livecodebench(spec: Mapping[str, Any], i: int, item: Mapping[str, Any]) -> dict[str, Any]:
    cases = decode_test_cases(item["public_test_cases"])
    cases += decode_test_cases(item.get("private_test_cases"))
    if not cases:
        raise ValueError("no test cases")
    types = {c.get("testtype", "stdin") for c in cases}
    if len(types) != 1:
        raise ValueError(f"mixed test types {sorted(types)}")
    mode = types.pop()
    metadata = item.get("metadata") or "{}"
    metadata = json.loads(metadata) if isinstance(metadata, str) else dict(metadata)
    starter = str(item.get("starter_code") or "").strip()
    tests = {"mode": mode, "cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
    if mode == "functional":
        tests["entry_point"] = metadata.get("func_name")
        if not tests["entry_point"]:
            raise ValueError("functional tests but no func_name in 'metadata'")
        how = (
            "Complete this starter code, keeping its names and signature:\n"
            f"```python\n{starter}\n```"
        )
    elif mode == "stdin":
        how = (
            "Your program reads the input from standard input and writes the answer to standard "
            "output."
        )
    else:
        raise ValueError(f"unknown test type {mode!r}")
    question = f"{str(item['question_content']).strip()}\n\n{how}"
    return {
        "id": str(item["question_id"]),
        "question": _with_instruction(question, spec.get("instruction", CODE_INSTRUCTION)),
        "answer": None,
        "tests": json.dumps(tests),
    }


CONVERTERS: dict[str, Callable[[Mapping[str, Any], int, Mapping[str, Any]], dict[str, Any]]] = {
    "math": _math,
    "gpqa": _gpqa,
    "mmlu_pro": _mmlu_pro,
    "mbpp": _mbpp,
    "livecodebench": _livecodebench,
}
