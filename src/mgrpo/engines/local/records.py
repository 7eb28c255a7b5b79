"""A chunk's metrics and rollout records, with the intra-chunk resume state beside them.

While a chunk runs, everything it has produced so far lives in its resume directory (outside the
rule's declared outputs, so Snakemake does not delete it when the job dies)::

    resume/
      latest.json                 pointer to the newest complete state, written last
      state-step{k}/              a checkpoint (see state.py)
      metrics.jsonl               metric lines of steps <= k
      rollouts-to-step{k}.parquet audit records, one part per resume interval

Only when the chunk finishes are the declared outputs written, atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mgrpo.engines.local.state import read_manifest
from mgrpo.io import read_jsonl, write_json, write_jsonl, write_parquet

ROLLOUT_DTYPES = {
    "run": "string",
    "method": "string",
    "step": "int64",
    "prompt_id": "string",
    "rollout": "int64",
    "source": "string",
    "response": "string",
    "answer": "string",
    "entropy": "float64",
    "self_certainty": "Float64",
    "kept": "bool",
    "trained": "bool",
    "pseudo_label": "string",
    "reward": "Float64",
    "advantage": "Float64",
    "ground_truth": "string",
}


def rollout_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Audit records as a typed DataFrame (nullable columns stay nullable in parquet)."""
    frame = pd.DataFrame.from_records(records, columns=list(ROLLOUT_DTYPES))
    return frame.astype(ROLLOUT_DTYPES)


class ChunkRecorder:
    def __init__(self, resume_dir: Path):
        self.dir = Path(resume_dir)
        self.metrics: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # records since the last resume part
        self.parts: list[Path] = []

    def latest_state(self, identity: str, start: int, end: int) -> Path | None:
        """The newest resume state of *this* chunk (same run identity and bounds), if any."""
        pointer = self.dir / "latest.json"
        if not pointer.exists():
            return None
        latest = json.loads(pointer.read_text())
        state = self.dir / latest["state"]
        same_chunk = (latest["identity"], latest["start"], latest["end"]) == (identity, start, end)
        if not same_chunk or read_manifest(state) is None or not start < latest["step"] < end:
            return None
        return state

    def restore(self, step: int) -> None:
        """Reload what the chunk had produced up to resume step ``step``."""
        self.metrics = [m for m in read_jsonl(self.dir / "metrics.jsonl") if m["step"] <= step]
        self.parts = sorted(
            (p for p in self.dir.glob("rollouts-to-step*.parquet") if _part_step(p) <= step),
            key=_part_step,
        )
        self.pending = []

    def add(self, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.metrics.append(metrics)
        self.pending.extend(records)

    def checkpoint(
        self, step: int, save: Callable[[Path], None], identity: str, start: int, end: int
    ) -> None:
        """Persist a resume state at ``step``; the pointer is updated only once it is complete."""
        state = f"state-step{step}"
        save(self.dir / state)
        part = self.dir / f"rollouts-to-step{step}.parquet"
        write_parquet(part, rollout_frame(self.pending))
        self.parts.append(part)
        self.pending = []
        write_jsonl(self.dir / "metrics.jsonl", self.metrics)
        write_json(
            self.dir / "latest.json",
            {"state": state, "step": step, "identity": identity, "start": start, "end": end},
        )
        for old in self.dir.glob("state-step*"):
            if old.name != state:
                shutil.rmtree(old, ignore_errors=True)

    def write_outputs(self, metrics_path: Path, rollouts_path: Path) -> None:
        frames = [pd.read_parquet(p) for p in self.parts] + [rollout_frame(self.pending)]
        write_parquet(rollouts_path, pd.concat(frames, ignore_index=True).astype(ROLLOUT_DTYPES))
        write_jsonl(metrics_path, self.metrics)


def _part_step(path: Path) -> int:
    return int(path.stem.removeprefix("rollouts-to-step"))
