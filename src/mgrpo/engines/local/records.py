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

from mgrpo.io import write_json
from mgrpo.run_layout import read_manifest
from mgrpo.step_records import ChunkRecords


class ChunkRecorder(ChunkRecords):
    """The local engine's records plus its resume states (``latest.json`` points to the newest)."""

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

    def checkpoint(
        self, step: int, save: Callable[[Path], None], identity: str, start: int, end: int
    ) -> None:
        """Persist a resume state at ``step``; the pointer is updated only once it is complete."""
        state = f"state-step{step}"
        save(self.dir / state)
        self.persist(step)
        write_json(
            self.dir / "latest.json",
            {"state": state, "step": step, "identity": identity, "start": start, "end": end},
        )
        for old in self.dir.glob("state-step*"):
            if old.name != state:
                shutil.rmtree(old, ignore_errors=True)
