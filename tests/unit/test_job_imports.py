"""What each kind of workflow job imports: a job pays for its imports every time it starts.

Every test runs real ``mgrpo`` commands in a fresh interpreter and reads ``sys.modules`` when
the command has finished, so an import added anywhere on the command's path (at module level
or inside a function) is seen. Timings are in ``benchmarks/job_startup.py``, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import eval_spec, run_settings

# Packages no data, report or copy-eval job needs (they read and write files and draw).
MODEL_PACKAGES = ("torch", "transformers")
# Packages transformers imports for functions this project never calls (mgrpo.lean_imports).
UNUSED_BY_MODEL_JOBS = ("sklearn", "scipy")


def loaded_by(argv: list[str], cwd: Path, watched: tuple[str, ...]) -> list[str]:
    """Run ``mgrpo argv`` in a fresh interpreter; the ``watched`` packages it had loaded."""
    code = (
        "import json, sys\n"
        "from mgrpo.cli import main\n"
        f"main({argv!r})\n"
        f"print(json.dumps(sorted(p for p in {watched!r} if p in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_data_and_report_jobs_load_no_model_library(toy_dir: Path, tmp_path: Path) -> None:
    from mgrpo.config import validate_config

    config = validate_config(
        {
            "runs": {"srt": {"method": "srt"}},
            "benchmarks": {"test": {"source": "toy", "split": "test"}},
        }
    )
    settings = run_settings("srt")
    report_config = json.dumps(
        {
            "runs": {"srt": {**settings.to_dict(), "steps": settings.steps}},
            "benchmarks": ["test"],
            "report": config["report"],
        }
    )
    (tmp_path / "base.json").write_text(
        json.dumps({"run": "base", "step": 0, "benchmark": "test", "accuracy": 0.5})
    )
    (tmp_path / "base.samples.parquet").write_bytes(
        (toy_dir / "data" / "test.parquet").read_bytes()
    )
    collapse = str(tmp_path / "collapse.csv")
    jobs = {
        "toy-data": [
            "toy-data",
            "--spec",
            json.dumps(config["data"]["toy"]),
            f"--out=test={tmp_path / 'test.parquet'}",
        ],
        "copy-eval": [
            *("copy-eval", "--src", str(tmp_path / "base.json")),
            *("--src-records", str(tmp_path / "base.samples.parquet")),
            *("--out", str(tmp_path / "step0.json"), "--records", str(tmp_path / "s.parquet")),
            *("--run", "srt", "--tensorboard", str(tmp_path / "tensorboard")),
        ],
        "report collapse": [
            *("report", "collapse", "--config", report_config, "--evals"),
            *("--metrics", "--out", collapse),
        ],
        "report tables": [
            *("report", "tables", "--config", report_config, "--evals"),
            *("--collapse", collapse, "--out-dir", str(tmp_path / "tables")),
        ],
        "report figures": [
            *("report", "figures", "--config", report_config, "--evals", "--metrics"),
            *("--collapse", collapse, "--out-dir", str(tmp_path / "figures")),
        ],
    }
    for name, argv in jobs.items():
        assert loaded_by(argv, tmp_path, MODEL_PACKAGES) == [], name
    assert (tmp_path / "figures").is_dir() and (tmp_path / "step0.json").exists()


def train_job(toy_dir: Path, out: Path) -> list[str]:
    """A one-step training chunk of the tiny toy model, writing under ``out``."""
    settings = run_settings("run", steps=1, chunk_steps=1)
    return [
        *("train", "--settings", settings.to_json(), "--base-model", str(toy_dir / "model")),
        *("--train-data", str(toy_dir / "data" / "train.parquet"), "--start=0", "--end=1"),
        *("--init", str(toy_dir / "model"), "--checkpoint", str(out / "step1")),
        *("--metrics", str(out / "m.jsonl"), "--rollouts", str(out / "r.parquet")),
        *("--resume-dir", str(out / "resume"), "--tensorboard", str(out / "tensorboard")),
    ]


def eval_job(toy_dir: Path, model: Path, out: Path) -> list[str]:
    """An evaluation of ``model`` on the tiny toy's test split, writing under ``out``."""
    spec = json.dumps(
        eval_spec({"source": "toy", "split": "test", "max_new_tokens": 8}, backend="local")
    )
    return [
        *("eval", "--spec", spec, "--model", str(model)),
        *("--problems", str(toy_dir / "data" / "test.parquet")),
        *("--out", str(out / "e.json"), "--records", str(out / "e.parquet")),
        *("--run", "run", "--step", "1", "--benchmark", "test"),
        *("--tensorboard", str(out / "tensorboard")),
    ]


def test_training_and_evaluation_jobs_skip_what_transformers_imports_unused(
    toy_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    watched = (*MODEL_PACKAGES, *UNUSED_BY_MODEL_JOBS)
    train = train_job(toy_dir, out)
    assert loaded_by(train, tmp_path, watched) == ["torch", "transformers"]
    evaluate = eval_job(toy_dir, out / "step1" / "policy", tmp_path)
    assert loaded_by(evaluate, tmp_path, watched) == ["torch", "transformers"]


# Libraries whose modules, imported on first use, cost a job start 0.8 s in all (transformers'
# lazy modeling and processing modules, TensorBoard's writer, math-verify, jsonschema, pyarrow).
PRELOADED_PACKAGES = ("transformers", "tensorboard", "math_verify", "jsonschema", "pyarrow")


def test_served_jobs_find_the_libraries_they_use_already_imported(
    toy_dir: Path, tmp_path: Path
) -> None:
    """The job server's preload imports what training and evaluation jobs import on first use,
    or every served job pays for it again. Catches a module the preload misses (a model
    family's own module excepted: which one depends on the checkpoint)."""
    out = tmp_path / "run"
    code = (
        "import json, sys\n"
        "from mgrpo.jobserver import preload\n"
        "preload()\n"
        "from mgrpo.cli import main\n"
        "before = set(sys.modules)\n"
        f"main({train_job(toy_dir, out)!r})\n"
        f"main({eval_job(toy_dir, out / 'step1' / 'policy', tmp_path)!r})\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "transformers.models.qwen3.modeling_qwen3" in imported  # the jobs did load a model
    missed = [
        name
        for name in imported
        if name.split(".")[0] in PRELOADED_PACKAGES and not name.startswith("transformers.models.")
    ]
    assert missed == []


def test_deferred_functions_are_the_real_ones_when_called() -> None:
    """transformers keeps working where it would use the deferred imports, and a later import
    of the deferred modules is the real module, not the stand-in."""
    code = (
        "import sys\n"
        "from mgrpo.lean_imports import import_transformers_models\n"
        "import_transformers_models()\n"
        "from transformers.generation import candidate_generator\n"
        "from transformers.loss import loss_for_object_detection as detection\n"
        "assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules\n"
        "_, tpr, _ = candidate_generator.roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])\n"
        "assert [round(x, 2) for x in tpr] == [0.0, 0.5, 0.5, 1.0, 1.0], tpr\n"
        "rows, cols = detection.linear_sum_assignment([[4, 1], [2, 0]])\n"
        "assert list(cols) == [1, 0], cols\n"
        "import sklearn.metrics, scipy.optimize\n"
        "assert sklearn.metrics.roc_curve.__module__.startswith('sklearn'), 'stand-in left'\n"
        "assert hasattr(scipy.optimize, 'minimize'), 'stand-in left'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("already", ["sklearn.metrics", "scipy.optimize"])
def test_a_module_imported_before_is_left_alone(already: str) -> None:
    code = (
        f"import sys, {already}\n"
        f"real = sys.modules[{already!r}]\n"
        "from mgrpo.lean_imports import import_transformers_models\n"
        "import_transformers_models()\n"
        f"assert sys.modules[{already!r}] is real\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize(("chosen", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_warm_start_job_waits_passively_unless_told_otherwise(
    tmp_path: Path, chosen: str | None, expected: str
) -> None:
    """OpenMP reads OMP_WAIT_POLICY when torch loads it: the toy-model job must have set it by
    then (mgrpo.cli.OPENMP_WAIT_POLICY), and must leave a policy the user chose alone."""
    from support import TINY_TOY

    from mgrpo.config import validate_config

    config = validate_config(
        {**TINY_TOY, "runs": {"r": {}}, "benchmarks": {"t": {"source": "toy", "split": "test"}}}
    )
    config["toy_model"]["sft_steps"] = 2
    toy_data = [
        *("toy-data", "--spec", json.dumps(config["data"]["toy"])),
        f"--out=sft={tmp_path / 'sft.parquet'}",
    ]
    toy_model = [
        *("toy-model", "--spec", json.dumps(config["toy_model"])),
        *("--sft", str(tmp_path / "sft.parquet"), "--out", str(tmp_path / "model")),
    ]
    # Records the policy at the moment torch is first imported.
    code = (
        "import importlib.abc, os, sys\n"
        "seen = []\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torch' and not seen:\n"
        "            seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from mgrpo.cli import main\n"
        f"main({toy_data!r})\n"
        f"main({toy_model!r})\n"
        "print(seen[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if chosen is not None:
        env["OMP_WAIT_POLICY"] = chosen
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == expected
    assert (tmp_path / "model" / "config.json").exists()
