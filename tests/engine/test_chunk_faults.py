"""Faults a training chunk must survive: stale resume states, divergence, bad data, full disks.

Each test breaks one thing the way a cluster does (a killed job, a full disk, a bad row) and
checks that nothing on disk can be mistaken for a good result afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from support import chunk, eval_spec, run_settings

from mgrpo.engines import ChunkPaths
from mgrpo.engines.local import trainer as trainer_module
from mgrpo.engines.local.trainer import LocalTrainer, TrainingDiverged, train_chunk
from mgrpo.io import read_jsonl
from mgrpo.settings import RunSettings

pytestmark = pytest.mark.slow
TIMING_KEYS = {"step_time", "sample_time"}


class Killed(RuntimeError):
    """Stands in for a job killed by the scheduler."""


@contextlib.contextmanager
def before_step(call: int, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` just before this process's ``call``-th training step (1-based)."""
    real_step = LocalTrainer.step
    calls = {"n": 0}

    def step(self: LocalTrainer) -> Any:
        calls["n"] += 1
        if calls["n"] == call:
            action()
        return real_step(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalTrainer, "step", step)
        yield


def kill() -> None:
    raise Killed("killed by the scheduler")


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (and the set of directories), by relative path."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        hashes[name] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def same_result(a: ChunkPaths, b: ChunkPaths) -> None:
    """Two chunk outputs are the same training: weights, metrics (minus timings), rollouts."""
    for part in ("policy", "momentum"):
        if (a.checkpoint / part).exists() or (b.checkpoint / part).exists():
            wa = load_file(a.checkpoint / part / "model.safetensors")
            wb = load_file(b.checkpoint / part / "model.safetensors")
            assert wa.keys() == wb.keys()
            assert all(torch.equal(wa[k], wb[k]) for k in wa), part
    assert [
        {k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_jsonl(a.metrics)
    ] == [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in read_jsonl(b.metrics)]
    pd.testing.assert_frame_equal(pd.read_parquet(a.rollouts), pd.read_parquet(b.rollouts))


def rerun_is_clean(toy_dir: Path, settings: RunSettings, out: Path, end: int) -> None:
    """Rerunning chunk 0 -> end in ``out`` gives what a run that never failed gives."""
    rerun = chunk(toy_dir, settings, out, 0, end, toy_dir / "model")
    same_result(rerun, chunk(toy_dir, settings, out / "clean", 0, end, toy_dir / "model"))


def leftovers(directory: Path) -> list[str]:
    """Temporary names an interrupted atomic write could leave behind."""
    return sorted(p.name for p in directory.rglob(".*.tmp"))


# ----------------------------------------------------------------------------- resume states
@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"method": "mgrpo"}, {"lr": 2e-3}],
    ids=["seed", "method", "lr"],
)
def test_resume_state_of_other_settings_is_ignored(
    toy_dir: Path, tmp_path: Path, change: dict
) -> None:
    """A killed run of other settings left a resume state where this chunk keeps its own."""
    ours = run_settings(**{"method": "srt", "resume_every": 1, **change})
    theirs = run_settings(method="srt", resume_every=1)
    out = tmp_path / "run"
    first = chunk(toy_dir, ours, out, 0, 2, toy_dir / "model")
    their_first = chunk(toy_dir, theirs, tmp_path / "theirs", 0, 2, toy_dir / "model")
    with pytest.raises(Killed), before_step(2, kill):  # their state at step 3 is in resume4/
        chunk(toy_dir, theirs, out, 2, 4, their_first.checkpoint)
    assert json.loads((out / "resume4" / "latest.json").read_text())["step"] == 3

    resumed = chunk(toy_dir, ours, out, 2, 4, first.checkpoint)
    clean = chunk(toy_dir, ours, tmp_path / "clean", 2, 4, first.checkpoint)
    same_result(resumed, clean)
    assert [m["step"] for m in read_jsonl(resumed.metrics)] == [3, 4]


def test_resume_state_of_other_chunk_bounds_is_ignored(toy_dir: Path, tmp_path: Path) -> None:
    """Same settings, but the state belongs to chunk 2 -> 4: chunk 0 -> 4 must train steps 1-4."""
    settings = run_settings(method="srt", resume_every=1)
    out = tmp_path / "run"
    first = chunk(toy_dir, settings, tmp_path / "first", 0, 2, toy_dir / "model")
    with pytest.raises(Killed), before_step(2, kill):
        chunk(toy_dir, settings, out, 2, 4, first.checkpoint)
    latest = json.loads((out / "resume4" / "latest.json").read_text())
    assert (latest["start"], latest["end"], latest["step"]) == (2, 4, 3)

    whole = chunk(toy_dir, settings, out, 0, 4, toy_dir / "model")
    assert [m["step"] for m in read_jsonl(whole.metrics)] == [1, 2, 3, 4]
    same_result(whole, chunk(toy_dir, settings, tmp_path / "clean", 0, 4, toy_dir / "model"))


def test_an_incomplete_checkpoint_is_not_a_starting_point(toy_dir: Path, tmp_path: Path) -> None:
    settings = run_settings(method="srt")
    first = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    (first.checkpoint / "checkpoint.json").unlink()  # e.g. a copy that stopped half way
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        chunk(toy_dir, settings, tmp_path, 2, 4, first.checkpoint)


# ----------------------------------------------------------------------------- divergence
def poison_loss(kind: str) -> Callable[..., Any]:
    """policy_loss whose loss (or whose gradient) turns non-finite once ``armed`` is set."""
    real_loss = trainer_module.policy_loss

    def loss(*args: Any, **kwargs: Any) -> Any:
        out = real_loss(*args, **kwargs)
        if loss.armed:
            if kind == "nan loss":
                out.loss = out.loss * float("nan")
            else:
                factor = float("inf") if kind == "inf gradient" else float("nan")
                out.loss.register_hook(lambda grad: grad * factor)
        return out

    loss.armed = False
    return loss


@pytest.mark.parametrize("kind", ["nan loss", "inf gradient", "nan gradient"])
def test_divergence_names_the_step_and_leaves_good_state_untouched(
    toy_dir: Path, tmp_path: Path, kind: str
) -> None:
    settings = run_settings(**{"method": "mgrpo", "rollouts": 4}, resume_every=1)
    previous = chunk(toy_dir, settings, tmp_path, 0, 2, toy_dir / "model")
    loss = poison_loss(kind)
    snapshot: dict[str, dict[str, str]] = {}

    def diverge() -> None:  # just before step 5: the resume state of step 4 is the last one
        snapshot["checkpoint"] = tree_hashes(previous.checkpoint)
        snapshot["resume"] = tree_hashes(tmp_path / "resume6")
        loss.armed = True

    message = "step 5: loss is nan" if kind == "nan loss" else "step 5: gradient norm is"
    with pytest.MonkeyPatch.context() as patch, before_step(3, diverge):
        patch.setattr(trainer_module, "policy_loss", loss)
        with pytest.raises(TrainingDiverged, match=message):
            chunk(toy_dir, settings, tmp_path, 2, 6, previous.checkpoint)

    assert json.loads((tmp_path / "resume6" / "latest.json").read_text())["step"] == 4
    assert tree_hashes(previous.checkpoint) == snapshot["checkpoint"]
    assert tree_hashes(tmp_path / "resume6") == snapshot["resume"]
    assert not (tmp_path / "step6").exists() and not (tmp_path / "metrics6.jsonl").exists()


# ----------------------------------------------------------------------------- bad problem rows
def bad_file(toy_dir: Path, tmp_path: Path, column: str, row: int, value: Any) -> Path:
    frame = pd.read_parquet(toy_dir / "data" / "train.parquet")
    frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value if column != "id" else frame.loc[value, "id"]
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    return path


@contextlib.contextmanager
def no_training_step() -> Iterator[None]:
    def refuse() -> None:
        raise AssertionError("a training step ran before the bad row was reported")

    with before_step(1, refuse):
        yield


@pytest.mark.parametrize(
    ("method", "column", "row", "value", "problem"),
    [
        ("srt", "question", 5, " ", "empty"),
        ("srt", "id", 7, 3, "duplicate id"),  # row 7 gets the id of row 3
        ("gt_grpo", "answer", 9, None, "empty, but GT-GRPO training needs"),
    ],
    ids=["empty question", "duplicate id", "no answer for GT-GRPO"],
)
def test_bad_training_row_fails_before_any_step_naming_file_row_column(
    toy_dir: Path, tmp_path: Path, method: str, column: str, row: int, value: Any, problem: str
) -> None:
    data = bad_file(toy_dir, tmp_path, column, row, value)
    settings = run_settings(method=method)
    with no_training_step(), pytest.raises(ValueError) as err:
        chunk(toy_dir, settings, tmp_path / "out", 0, 2, toy_dir / "model", data)
    assert str(err.value).startswith(f"{data}: row {row}, column '{column}': {problem}")
    assert not (tmp_path / "out").exists()


def test_missing_answers_are_fine_where_nothing_needs_them(toy_dir: Path, tmp_path: Path) -> None:
    data = bad_file(toy_dir, tmp_path, "answer", 9, None)
    chunk(toy_dir, run_settings(method="srt"), tmp_path / "out", 0, 1, toy_dir / "model", data)


def test_evaluation_row_without_answer_is_named(toy_dir: Path, tmp_path: Path) -> None:
    from mgrpo.cli import main

    data = bad_file(toy_dir, tmp_path, "answer", 4, " ")
    spec = eval_spec({"source": "file", "path": str(data), "max_new_tokens": 4}, device="cpu")
    out = tmp_path / "eval.json"
    argv = ["eval", "--spec", json.dumps(spec), "--model", str(toy_dir / "model"),
            "--problems", str(data), "--out", str(out), "--records", str(tmp_path / "r.parquet"),
            "--run", "r", "--step", "2", "--benchmark", "b"]  # fmt: skip
    with pytest.raises(ValueError, match=f"{data}: row 4, column 'answer': empty, but evaluation"):
        main(argv)
    assert not out.exists()


# ----------------------------------------------------------------------------- full disks
def disk_full(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def access_denied(*args: Any, **kwargs: Any) -> None:
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def save_pretrained_then_fail(
    after: int, fault: Callable[[], None] = disk_full
) -> Callable[..., Any]:
    """save_pretrained that writes ``after`` models completely, then fails part-way through."""
    from transformers import PreTrainedModel

    real = PreTrainedModel.save_pretrained
    calls = {"n": 0}

    def save(self: Any, directory: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / "model.safetensors").write_bytes(b"half a model")
            fault()
        return real(self, directory, *args, **kwargs)

    return save


@pytest.mark.parametrize(
    "fault", ["torch.save", "save_pretrained", "permission denied", "rename refused"]
)
def test_disk_full_or_no_permission_while_writing_the_checkpoint_leaves_none(
    toy_dir: Path, tmp_path: Path, fault: str
) -> None:
    """Also as root, which writes into read-only directories (see the chmod test below)."""
    from transformers import PreTrainedModel

    settings = run_settings(method="mgrpo", rollouts=4, resume_every=1)
    denied = fault in ("permission denied", "rename refused")
    message = "Permission denied" if denied else "No space left on device"
    with pytest.MonkeyPatch.context() as patch:
        if fault == "torch.save":
            patch.setattr(torch, "save", disk_full)
        elif fault == "save_pretrained":  # the policy is written, the momentum policy is not
            patch.setattr(PreTrainedModel, "save_pretrained", save_pretrained_then_fail(1))
        elif fault == "permission denied":
            failing = save_pretrained_then_fail(1, access_denied)
            patch.setattr(PreTrainedModel, "save_pretrained", failing)
        else:  # everything is written, renaming it into place is not allowed
            real_replace = os.replace

            def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                if Path(dst) == tmp_path / "step1":
                    access_denied()
                real_replace(src, dst, *args, **kwargs)

            patch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match=message):
            chunk(toy_dir, settings, tmp_path, 0, 1, toy_dir / "model")
    assert not (tmp_path / "step1").exists()
    assert leftovers(tmp_path) == []
    rerun_is_clean(toy_dir, settings, tmp_path, 1)


def test_disk_full_while_writing_a_resume_state_keeps_the_previous_one(
    toy_dir: Path, tmp_path: Path
) -> None:
    from transformers import PreTrainedModel

    settings = run_settings(method="mgrpo", rollouts=4, resume_every=1)
    with pytest.MonkeyPatch.context() as patch:
        # Each resume state saves pi_q and pi_k: the state of step 2 fails half written.
        patch.setattr(PreTrainedModel, "save_pretrained", save_pretrained_then_fail(3))
        with pytest.raises(OSError, match="No space left on device"):
            chunk(toy_dir, settings, tmp_path, 0, 4, toy_dir / "model")
    resume = tmp_path / "resume4"
    latest = json.loads((resume / "latest.json").read_text())
    assert latest["step"] == 1
    assert sorted(p.name for p in resume.glob("state-step*")) == [latest["state"]]
    assert (resume / latest["state"] / "checkpoint.json").exists()
    assert leftovers(tmp_path) == []
    rerun_is_clean(toy_dir, settings, tmp_path, 4)


def test_unwritable_checkpoint_directory_leaves_no_checkpoint(
    toy_dir: Path, tmp_path: Path
) -> None:
    settings = run_settings(method="srt")
    parent = tmp_path / "checkpoints"
    parent.mkdir()
    parent.chmod(0o555)
    paths = ChunkPaths(
        base_model=toy_dir / "model",
        train_data=toy_dir / "data" / "train.parquet",
        init=toy_dir / "model",
        checkpoint=parent / "step1",
        metrics=tmp_path / "metrics.jsonl",
        rollouts=tmp_path / "rollouts.parquet",
        resume=tmp_path / "resume",
    )
    try:
        try:
            (parent / "probe").touch()
        except PermissionError:
            pass
        else:  # root (with CAP_DAC_OVERRIDE) ignores the mode; the ENOSPC tests still run
            pytest.skip("this user can write into a read-only directory")
        with pytest.raises(PermissionError):
            train_chunk(settings, 0, 1, paths)
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)
