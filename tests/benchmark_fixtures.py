"""Hand-written problems in the columns of each paper benchmark's hub dataset (no real items).

``write_fixture(name, path)`` writes JSON lines that ``hf.path: json`` + ``hf.data_files`` read
exactly as the hub dataset would be read; ``FIXTURE_SPECS[name]`` is the ``hf`` config section.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path
from typing import Any


def encoded_tests(cases: list[dict[str, str]]) -> str:
    """LiveCodeBench's private-test encoding: base64(zlib(pickle(JSON string)))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


ROWS: dict[str, list[dict[str, Any]]] = {
    "aime": [
        {"ID": "fx-aime-1", "Problem": "What is 6 times 7?", "Solution": "...", "Answer": 42},
        {"ID": "fx-aime-2", "Problem": "What is half of 1?", "Solution": "...", "Answer": "1/2"},
        {"ID": "fx-aime-3", "Problem": "What is 3 squared?", "Solution": "...", "Answer": 9},
    ],
    "gpqa": [
        {
            "Record ID": f"fx-gpqa-{i}",
            "Question": question,
            "Correct Answer": correct,
            "Incorrect Answer 1": wrong[0],
            "Incorrect Answer 2": wrong[1],
            "Incorrect Answer 3": wrong[2],
            "Explanation": "written for the tests",
            "Subdomain": "fixtures",
            "High-level domain": "fixtures",
        }
        for i, (question, correct, wrong) in enumerate(
            [
                (
                    "Which colour do you get by mixing blue and yellow?",
                    "Green",
                    ["Red", "Purple", "Orange"],
                ),
                ("How many legs does a spider have?", "Eight", ["Six", "Four", "Ten"]),
                ("Which planet is closest to the Sun?", "Mercury", ["Venus", "Mars", "Earth"]),
            ]
        )
    ],
    "mmlu_pro": [
        {
            "question_id": 100 + i,
            "question": question,
            "options": options,
            "answer": "ABCDEFGHIJ"[index],
            "answer_index": index,
            "cot_content": "",
            "category": "fixtures",
            "src": "written for the tests",
        }
        for i, (question, options, index) in enumerate(
            [
                ("What is 2 + 2?", ["3", "4", "5", "6", "7"], 1),
                ("Which is a prime number?", ["4", "6", "8", "9", "10", "11"], 5),
            ]
        )
    ],
    "mbpp": [
        {
            "task_id": 9001,
            "text": "Write a function add_two that returns the sum of two numbers.",
            "code": "def add_two(a, b):\n    return a + b",
            "test_list": ["assert add_two(1, 2) == 3", "assert add_two(-1, 1) == 0"],
            "test_setup_code": "",
            "challenge_test_list": [],
        },
        {
            "task_id": 9002,
            "text": "Write a function root that returns the integer square root of n.",
            "code": "import math\ndef root(n):\n    return math.isqrt(n)",
            "test_list": ["assert root(16) == 4", "assert root(17) == 4"],
            "test_setup_code": "import math",
            "challenge_test_list": [],
        },
    ],
    "livecodebench": [
        {
            "question_title": "Sum of two",
            "question_content": "Read two integers A and B and print A + B.",
            "platform": "atcoder",
            "question_id": "fx-lcb-stdin",
            "contest_id": "fx",
            "contest_date": "2024-01-01T00:00:00",
            "starter_code": "",
            "difficulty": "easy",
            "public_test_cases": json.dumps(
                [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
            ),
            "private_test_cases": encoded_tests(
                [{"input": "10 -4\n", "output": "6\n", "testtype": "stdin"}]
            ),
            "metadata": "{}",
        },
        {
            "question_title": "Largest",
            "question_content": "Given a list nums, return its largest element.",
            "platform": "leetcode",
            "question_id": "fx-lcb-functional",
            "contest_id": "fx",
            "contest_date": "2024-01-02T00:00:00",
            "starter_code": (
                "class Solution:\n    def largest(self, nums: List[int]) -> int:\n        "
            ),
            "difficulty": "easy",
            "public_test_cases": json.dumps(
                [{"input": "[3, 9, 2]", "output": "9", "testtype": "functional"}]
            ),
            "private_test_cases": json.dumps(
                [{"input": "[-5, -2]", "output": "-2", "testtype": "functional"}]
            ),
            "metadata": json.dumps({"func_name": "largest"}),
        },
    ],
}

FIXTURE_SPECS: dict[str, dict[str, Any]] = {
    "aime": {
        "split": "train",
        "format": "math",
        "question_field": "Problem",
        "answer_field": "Answer",
        "id_field": "ID",
    },
    "gpqa": {"split": "train", "format": "gpqa", "shuffle_seed": 0},
    "mmlu_pro": {"split": "train", "format": "mmlu_pro"},
    "mbpp": {"split": "train", "format": "mbpp"},
    "livecodebench": {"split": "train", "format": "livecodebench"},
}
KINDS = {
    "aime": "math",
    "gpqa": "multiple_choice",
    "mmlu_pro": "multiple_choice",
    "mbpp": "code",
    "livecodebench": "code",
}


def write_fixture(name: str, path: Path) -> dict[str, Any]:
    """Write the fixture rows of ``name`` as JSON lines; returns its ``hf`` config section."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS[name]))
    return {"path": "json", "data_files": str(path), **FIXTURE_SPECS[name]}
