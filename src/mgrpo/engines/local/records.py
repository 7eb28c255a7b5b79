"""The local engine's chunk recorder: metrics and rollout records (columns in
:mod:`mgrpo.run_layout`), with the intra-chunk resume state beside them.

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

from mgrpo.io import read_jsonl, write_json, write_jsonl, write_parquet
from mgrpo.run_layout import read_manifest, rollout_frame, write_chunk_records


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
        rollouts = pd.concat(frames, ignore_index=True)
        write_chunk_records(metrics_path, self.metrics, rollouts_path, rollouts)


def _part_step(path: Path) -> int:
    return int(path.stem.removeprefix("rollouts-to-step"))
