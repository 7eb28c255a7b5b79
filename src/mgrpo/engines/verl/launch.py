"""One chunk of a run on the verl engine: the engine contract of :mod:`mgrpo.engines`.

``mgrpo train`` dispatches here for ``engine: verl``; :func:`train_chunk`:

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

import importlib.util
import os
import shutil
from pathlib import Path

import verl  # noqa: F401  (the engine registry reads a missing verl as "not installed")

from mgrpo.engines import ChunkPaths
from mgrpo.engines.verl import cpu
from mgrpo.engines.verl.config import SETTINGS_FILE, chunk_config
from mgrpo.engines.verl.states import find_state, records_dir, state_dir, states_dir
from mgrpo.io import atomic_path
from mgrpo.progress import mark
from mgrpo.run_layout import (
    MOMENTUM_DIR,
    POLICY_DIR,
    CheckpointManifest,
    require_manifest,
    write_manifest,
)
from mgrpo.settings import RunSettings
from mgrpo.step_records import ChunkRecords
from mgrpo.vllm_sockets import private_rpc_directory

ENGINE = "verl"
STATE_SUBDIR = "verl"  # the engine's resume state inside a run-layout checkpoint


def unavailable_reason(settings: RunSettings) -> str | None:
    """The engine contract: why this machine cannot train ``settings`` (None if it can)."""
    if cpu.on_cpu(settings):
        return cpu.unavailable_reason()
    if importlib.util.find_spec("vllm") is None:
        return "vLLM (verl's rollout engine) is not installed"
    import torch

    if torch.cuda.device_count() < settings["gpus"]:
        return f"gpus: {settings['gpus']} set, torch sees {torch.cuda.device_count()} CUDA devices"
    return None


def init_state(checkpoint: str | Path, identity: str, start: int) -> Path:
    """The verl state inside the checkpoint a chunk starts from, after checking it is that."""
    checkpoint = Path(checkpoint)
    require_manifest(checkpoint, identity, engine=ENGINE, step=start)
    state = state_dir(checkpoint / STATE_SUBDIR, start)
    if not state.is_dir():
        raise FileNotFoundError(f"{state}: the checkpoint has no verl state to resume from")
    return state


def train_chunk(settings: RunSettings, start: int, end: int, paths: ChunkPaths) -> None:
    """Train steps ``start+1 .. end`` of a run and write the chunk's outputs (last: checkpoint).

    ``paths.resume`` is the chunk's work directory: a rerun of a killed job resumes there.
    """
    if not 0 <= start < end:
        raise ValueError(f"chunk must satisfy 0 <= start < end, got {start} -> {end}")
    identity = settings.fingerprint
    work = Path(paths.resume)
    work.mkdir(parents=True, exist_ok=True)
    (work / SETTINGS_FILE).write_text(settings.to_json())
    states = states_dir(work)
    train_file = work / "train.parquet"
    first = None if start == 0 else init_state(paths.init, identity, start)

    done = find_state(states, identity, start, end)
    if done is None or done[1] != end:
        from mgrpo.engines.verl.data import write_verl_dataset
        from mgrpo.engines.verl.task_runner import run
        from mgrpo.lm import load_tokenizer
        from mgrpo.tracking import extra_trackers

        tokenizer = load_tokenizer(paths.base_model)
        write_verl_dataset(
            paths.train_data,
            tokenizer,
            settings["max_prompt_tokens"],
            train_file,
            method=settings.method,
        )
        config = chunk_config(
            settings,
            base_model=paths.base_model,
            train_file=train_file,
            start=start,
            end=end,
            work_dir=work,
            init_state=first,
            tensorboard=paths.tensorboard,
            trackers=extra_trackers(),
        )
        mark("chunk start")
        private_rpc_directory()  # before Ray: its local workers and vLLM inherit it
        if cpu.on_cpu(settings):
            cpu.clean_shared_memory_at_exit()
        run(config)
        mark("trainer done")
        done = find_state(states, identity, start, end)
        if done is None or done[1] != end:
            raise RuntimeError(f"{work}: the trainer returned without a state at step {end}")
    assemble_chunk(settings, end, done[0], paths)
    shutil.rmtree(work, ignore_errors=True)
    mark("checkpoint assembled")


def assemble_chunk(settings: RunSettings, end: int, state: Path, paths: ChunkPaths) -> None:
    """Write the run layout of a finished chunk from its final verl state."""
    records = ChunkRecords(records_dir(paths.resume))
    records.restore(end)
    records.write_outputs(paths.metrics, paths.rollouts)
    with atomic_path(paths.checkpoint, directory=True) as tmp:
        export_hf(state / "actor", tmp / POLICY_DIR)
        if settings.method.uses_momentum:
            export_hf(state / "momentum", tmp / MOMENTUM_DIR)
        link_tree(state, state_dir(tmp / STATE_SUBDIR, end))
        manifest = CheckpointManifest(
            run=settings.name,
            step=end,
            engine=ENGINE,
            identity=settings.fingerprint,
            method=settings.method.label,
        )
        write_manifest(tmp, manifest)


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
