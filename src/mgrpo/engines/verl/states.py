"""The verl engine's chunk work directory on disk (no verl import: read by the launcher too).

::

    <work_dir>/settings.json       the run settings (mgrpo train writes it)
    <work_dir>/records/            step metrics and rollout records so far (ChunkRecords)
    <work_dir>/verl/global_step_{N}/   resume states (verl's trainer.default_local_dir)
        actor/               verl's FSDP shards: model, optimizer, extra (LR schedule, RNG)
        momentum/            pi_k's fp32 shards, same format (+ fsdp_config.json, huggingface/)
        data.pt              the data loader's state
        mgrpo_state.json     run identity, chunk bounds, step; written last
"""

from __future__ import annotations

import json
from pathlib import Path

STATE_MARKER = "mgrpo_state.json"


def states_dir(work_dir: str | Path) -> Path:
    """Where a chunk's resume states go: verl's ``trainer.default_local_dir``."""
    return Path(work_dir) / "verl"


def records_dir(work_dir: str | Path) -> Path:
    """Where a chunk's step records go until the chunk ends."""
    return Path(work_dir) / "records"


def state_dir(states: str | Path, step: int) -> Path:
    return Path(states) / f"global_step_{step}"


def find_state(states: str | Path, identity: str, start: int, end: int) -> tuple[Path, int] | None:
    """The newest complete state of the chunk ``start -> end`` of the run ``identity``."""
    best = None
    for state in Path(states).glob("global_step_*"):
        marker = state / STATE_MARKER
        if not marker.exists():
            continue
        meta = json.loads(marker.read_text())
        if (meta["identity"], meta["start"], meta["end"]) != (identity, start, end):
            continue
        if start < meta["step"] <= end and (best is None or meta["step"] > best[1]):
            best = (state, meta["step"])
    return best
