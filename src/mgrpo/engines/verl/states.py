"""The verl engine's resume states on disk (no verl import: read by the launcher too).

::

    <work_dir>/verl/global_step_{N}/
        actor/               verl's FSDP shards: model, optimizer, extra (LR schedule, RNG)
        momentum/            pi_k's fp32 shards, same format (+ fsdp_config.json, huggingface/)
        data.pt              the data loader's state
        mgrpo_state.json     run identity, chunk bounds, step; written last
"""

from __future__ import annotations

import json
from pathlib import Path

STATE_MARKER = "mgrpo_state.json"


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
