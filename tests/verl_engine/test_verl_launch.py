"""The verl engine's chunk around the trainer: checks before it, the run layout after it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from support import run_settings

from mgrpo.engines import ChunkPaths, load_engine
from mgrpo.engines.verl import launch
from mgrpo.engines.verl.states import STATE_MARKER, state_dir
from mgrpo.run_layout import CheckpointManifest, read_manifest, write_manifest
from mgrpo.step_records import ChunkRecords

SETTINGS = {"method": "mgrpo", "iqr": True, "engine": "verl", "device": "cuda", "gpus": 1}


def fake_state(model_dir: Path, states: Path, settings, step: int, start: int, end: int) -> Path:
    """A finished chunk's state as the trainer leaves it (world size 1, unsharded tensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    state = state_dir(states, step)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for part, shift in [("actor", 1.0), ("momentum", 0.5)]:
        directory = state / part
        (directory / "huggingface").mkdir(parents=True)
        weights = {k: v + shift for k, v in model.state_dict().items()}
        torch.save(weights, directory / "model_world_size_1_rank_0.pt")
        (directory / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 1}')
        model.config.save_pretrained(directory / "huggingface")
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(directory / "huggingface")
    torch.save({}, state / "data.pt")
    marker = {"identity": settings.fingerprint, "run": "run", "step": step}
    (state / STATE_MARKER).write_text(json.dumps({**marker, "start": start, "end": end}))
    return state


def paths_in(root: Path, model_dir: Path, init: Path | None = None) -> ChunkPaths:
    return ChunkPaths(
        base_model=model_dir,
        train_data=root / "train.parquet",
        init=init or model_dir,
        checkpoint=root / "checkpoints" / "step2",
        metrics=root / "metrics.jsonl",
        rollouts=root / "rollouts.parquet",
        resume=root / "resume",
    )


def records_until(directory: Path, settings, end: int) -> None:
    """What the trainer persisted: one metrics line and 8 rollout records per step."""
    from mgrpo.run_layout import METRICS_FIELDS, ROLLOUT_COLUMNS

    records = ChunkRecords(directory)
    for step in range(1, end + 1):
        line = {k: 0.0 for k in METRICS_FIELDS} | {"run": "run", "method": "M", "step": step}
        rows = [
            {k: None for k in ROLLOUT_COLUMNS}
            | {
                "run": "run",
                "method": "M",
                "step": step,
                "prompt_id": "p",
                "rollout": i,
                "source": "policy",
                "response": "r",
                "entropy": 1.0,
                "kept": True,
                "trained": True,
            }
            for i in range(8)
        ]
        records.add(line, rows)
        records.persist(step)


def test_a_finished_chunk_becomes_the_run_layout(toy_dir, tmp_path):
    settings = run_settings(**SETTINGS)
    paths = paths_in(tmp_path, toy_dir / "model")
    state = fake_state(toy_dir / "model", paths.resume / "verl", settings, 2, 0, 2)
    (paths.resume / "settings.json").write_text(settings.to_json())
    records_until(paths.resume / "records", settings, 2)
    # A complete final state in the work directory (a job killed while assembling): the rerun
    # assembles without training again (no Ray, no GPU here).
    launch.train_chunk(settings, 0, 2, paths)

    checkpoint = paths.checkpoint
    manifest = read_manifest(checkpoint)
    assert manifest == CheckpointManifest(
        run="run", step=2, engine="verl", identity=settings.fingerprint, method="M-GRPO+IQR"
    )
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "checkpoint.json",
        "momentum",
        "policy",
        "verl",
    ]
    from mgrpo.lm import load_model

    base = load_model(toy_dir / "model", torch.device("cpu")).state_dict()
    for part, shift in [("policy", 1.0), ("momentum", 0.5)]:
        model = load_model(checkpoint / part, torch.device("cpu"))
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, base[key] + shift, rtol=1e-2, atol=1e-2)
    assert (state_dir(checkpoint / "verl", 2) / STATE_MARKER).exists()
    assert len(pd.read_parquet(paths.rollouts)) == 16
    assert [json.loads(x)["step"] for x in paths.metrics.read_text().splitlines()] == [1, 2]
    assert not paths.resume.exists()  # the work directory is gone once the outputs exist
    assert not state.exists()


def test_the_resume_state_is_linked_not_copied(toy_dir, tmp_path):
    settings = run_settings(**SETTINGS)
    paths = paths_in(tmp_path, toy_dir / "model")
    state = fake_state(toy_dir / "model", tmp_path / "states", settings, 2, 0, 2)
    records_until(paths.resume / "records", settings, 2)
    launch.assemble_chunk(settings, 2, state, paths)
    source = state / "momentum" / "model_world_size_1_rank_0.pt"
    target = state_dir(paths.checkpoint / "verl", 2) / "momentum" / source.name
    assert os.path.samefile(source, target)


def test_srt_checkpoints_have_no_momentum(toy_dir, tmp_path):
    settings = run_settings(**{**SETTINGS, "method": "srt"})
    paths = paths_in(tmp_path, toy_dir / "model")
    state = fake_state(toy_dir / "model", tmp_path / "states", settings, 2, 0, 2)
    records_until(paths.resume / "records", settings, 2)
    launch.assemble_chunk(settings, 2, state, paths)
    assert not (paths.checkpoint / "momentum").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("none", "not a complete checkpoint"),
        ("engine", "written by the 'local' engine"),
        ("identity", "a changed run must restart from step 0"),
        ("step", "checkpoint is at step 3, not 2"),
        ("state", "no verl state to resume from"),
    ],
)
def test_a_chunk_refuses_a_checkpoint_that_is_not_its_predecessor(tmp_path, change, message):
    settings = run_settings(**SETTINGS)
    checkpoint = tmp_path / "step2"
    state_dir(checkpoint / "verl", 2).mkdir(parents=True)
    manifest = {
        "run": "run",
        "step": 3 if change == "step" else 2,
        "engine": "local" if change == "engine" else "verl",
        "identity": "other" if change == "identity" else settings.fingerprint,
        "method": "M-GRPO+IQR",
    }
    if change != "none":
        write_manifest(checkpoint, CheckpointManifest(**manifest))
    if change == "state":
        (checkpoint / "verl" / "global_step_2").rmdir()
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        launch.init_state(checkpoint, settings.fingerprint, 2)


def test_this_machine_cannot_run_verl_and_says_why():
    settings = run_settings(**SETTINGS)
    reason = launch.unavailable_reason(settings)
    assert reason is not None and "vLLM" in reason
    with pytest.raises(Exception, match=r"'verl' needs verl 0\.9\.1"):
        load_engine(settings, "config key 'training.engine'")


def test_a_bad_training_row_fails_before_the_trainer_starts(toy_dir, tmp_path, monkeypatch):
    """GT-GRPO on verl: a row without an answer is named (file, row, column) before Ray starts,
    as on the local engine; verl's reward function would fail only after step 1's rollouts."""
    from mgrpo.engines.verl import task_runner

    def refuse(config):
        raise AssertionError("the verl trainer started before the bad row was reported")

    monkeypatch.setattr(task_runner, "run", refuse)
    paths = paths_in(tmp_path, toy_dir / "model")
    frame = pd.read_parquet(toy_dir / "data" / "train.parquet")
    frame["answer"] = frame["answer"].astype(object)
    frame.loc[9, "answer"] = None
    frame.to_parquet(paths.train_data, index=False)
    settings = run_settings(engine="verl", gpus=1, method="gt_grpo")
    expected = f"{paths.train_data}: row 9, column 'answer': empty, but GT-GRPO training needs"
    with pytest.raises(ValueError, match=re.escape(expected)):
        launch.train_chunk(settings, 0, 2, paths)
    assert not paths.checkpoint.exists()
