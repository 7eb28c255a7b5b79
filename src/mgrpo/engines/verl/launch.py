"""One chunk of a run on the verl engine: what ``mgrpo train`` runs for ``engine: verl``.

1. write the chunk's work directory (``--resume-dir``): the run settings and the prompts as
   verl's RL dataset;
2. check the checkpoint the chunk starts from (its manifest, its identity, its momentum);
3. compose and validate the verl config, run the trainer (Ray, FSDP workers, vLLM) until the
   chunk's last step has a complete state in the work directory; a rerun resumes there;
4. assemble the run layout: metrics and rollout records, then ``checkpoints/step{N}/`` with
   ``policy/`` and ``momentum/`` as Hugging Face directories (verl's model merger), the verl
   state under ``verl/`` (hard links, no copy), and ``checkpoint.json`` last; the directory is
   renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgrpo.algorithm.methods import method_from_settings
from mgrpo.config import fingerprint, run_identity
from mgrpo.engines.verl.config import SETTINGS_FILE, chunk_config
from mgrpo.engines.verl.states import find_state, state_dir
from mgrpo.io import atomic_path, write_json
from mgrpo.step_records import ChunkRecords

log = logging.getLogger(__name__)

ENGINE = "verl"
MANIFEST = "checkpoint.json"
STATE_SUBDIR = "verl"  # the engine's resume state inside a run-layout checkpoint


def identity_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a chunk's checkpoints are keyed by (as the local engine keys them)."""
    return run_identity(dict(settings))


def read_manifest(checkpoint: str | Path) -> dict[str, Any] | None:
    file = Path(checkpoint) / MANIFEST
    return json.loads(file.read_text()) if file.exists() else None


def init_state(checkpoint: str | Path, identity: str, start: int) -> Path:
    """The verl state inside the checkpoint a chunk starts from, after checking it is that."""
    checkpoint = Path(checkpoint)
    manifest = read_manifest(checkpoint)
    if manifest is None:
        raise FileNotFoundError(f"{checkpoint}: not a complete checkpoint (no {MANIFEST})")
    if manifest.get("engine") != ENGINE:
        raise ValueError(
            f"{checkpoint}: written by the {manifest.get('engine')!r} engine; the verl engine "
            "resumes only its own checkpoints"
        )
    if manifest["identity"] != identity:
        raise ValueError(
            f"{checkpoint}: written by run settings {manifest['identity']}, these settings are "
            f"{identity}; a changed run must restart from step 0"
        )
    if manifest["step"] != start:
        raise ValueError(f"{checkpoint}: checkpoint is at step {manifest['step']}, not {start}")
    state = state_dir(checkpoint / STATE_SUBDIR, start)
    if not state.is_dir():
        raise FileNotFoundError(f"{state}: the checkpoint has no verl state to resume from")
    return state


def train_chunk(settings: Mapping[str, Any], start: int, end: int, paths: Any) -> None:
    """Train steps ``start+1 .. end`` of a run and write the chunk's outputs (last: checkpoint).

    ``settings`` are the run's settings plus ``model_path`` (the base model) and ``train_data``
    (the problem file), as ``mgrpo train`` passes them; ``paths`` holds ``init``,
    ``checkpoint``, ``metrics``, ``rollouts`` and ``resume`` (the work directory).
    """
    if not 0 <= start < end:
        raise ValueError(f"chunk must satisfy 0 <= start < end, got {start} -> {end}")
    values = identity_settings(settings)
    identity = fingerprint(values)
    work = Path(paths.resume)
    work.mkdir(parents=True, exist_ok=True)
    write_json(work / SETTINGS_FILE, values)
    states = work / STATE_SUBDIR
    train_file = work / "train.parquet"
    first = None if start == 0 else init_state(paths.init, identity, start)

    done = find_state(states, identity, start, end)
    if done is None or done[1] != end:
        from mgrpo.engines.local.lm import load_tokenizer
        from mgrpo.engines.verl.data import write_verl_dataset
        from mgrpo.engines.verl.task_runner import run

        tokenizer = load_tokenizer(settings["model_path"])
        write_verl_dataset(
            settings["train_data"], tokenizer, settings["max_prompt_tokens"], train_file
        )
        config = chunk_config(
            values,
            base_model=settings["model_path"],
            train_file=train_file,
            start=start,
            end=end,
            work_dir=work,
            init_state=first,
        )
        run(config)
        done = find_state(states, identity, start, end)
        if done is None or done[1] != end:
            raise RuntimeError(f"{work}: the trainer returned without a state at step {end}")
    assemble_chunk(values, identity, start, end, done[0], paths)
    shutil.rmtree(work, ignore_errors=True)


def assemble_chunk(
    settings: Mapping[str, Any], identity: str, start: int, end: int, state: Path, paths: Any
) -> None:
    """Write the run layout of a finished chunk from its final verl state."""
    records = ChunkRecords(Path(paths.resume) / "records")
    records.restore(end)
    records.write_outputs(paths.metrics, paths.rollouts)
    method = method_from_settings(dict(settings))
    with atomic_path(paths.checkpoint, directory=True) as tmp:
        export_hf(state / "actor", tmp / "policy")
        if method.uses_momentum:
            export_hf(state / "momentum", tmp / "momentum")
        link_tree(state, state_dir(tmp / STATE_SUBDIR, end))
        write_json(
            tmp / MANIFEST,
            {
                "run": settings["run"],
                "step": end,
                "engine": ENGINE,
                "identity": identity,
                "method": method.label,
            },
        )


def export_hf(shards: Path, target: Path) -> None:
    """verl's model merger: FSDP shards (``model_world_size_*``) -> a Hugging Face directory."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    config = ModelMergerConfig(
        operation="merge",
        backend="fsdp",
        local_dir=str(shards),
        target_dir=str(target),
        hf_model_config_path=str(shards / "huggingface"),
    )
    FSDPModelMerger(config).merge_and_save()


def link_tree(source: Path, target: Path) -> None:
    """Copy a directory tree as hard links (same file system: instant, no extra disk)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)
