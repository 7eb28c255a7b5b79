"""Shared fixtures: a tiny toy model and data built once per test session, fully offline."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from support import TINY_TOY

# The Hugging Face hub is unreachable here and in CI: make any accidental hub access fail fast.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
if "HF_HOME" not in os.environ:  # an empty cache of this test process's own, removed at exit
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mgrpo-hf-home-")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/{split}.parquet`` and ``model/`` (a warm-started tiny Qwen3) in a session dir."""
    from mgrpo.config import validate_config
    from mgrpo.toy.build import build_toy_model, write_toy_splits

    root = tmp_path_factory.mktemp("toy")
    cfg = validate_config(
        {**TINY_TOY, "runs": {"r": {}}, "benchmarks": {"t": {"source": "toy", "split": "test"}}}
    )
    splits = cfg["data"]["toy"]["splits"]
    write_toy_splits(cfg["data"]["toy"], {s: root / "data" / f"{s}.parquet" for s in splits})
    build_toy_model(cfg["toy_model"], root / "data" / "sft.parquet", root / "model")
    return root
