"""The local engine's checkpoints: the shared layout (:mod:`mgrpo.run_layout`) plus its own
resume state, ``trainer_state.pt`` (optimizer, LR schedule, RNG states, data cursor).

A checkpoint is assembled under a temporary name and renamed into place, manifest last, so a
``step{N}`` that exists is complete.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgrpo.io import atomic_path
from mgrpo.run_layout import MOMENTUM_DIR, POLICY_DIR, CheckpointManifest, write_manifest

TRAINER_STATE = "trainer_state.pt"


@dataclass
class DataCursor:
    """Position in the shuffled stream of training prompts (a fresh permutation per epoch)."""

    seed: int
    size: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.size)

    def take(self, n: int) -> list[int]:
        """The next ``n`` prompt indices, crossing into the next epoch if needed."""
        out: list[int] = []
        while len(out) < n:
            order = self._order()
            grab = order[self.position : self.position + n - len(out)]
            out.extend(int(i) for i in grab)
            self.position += len(grab)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return out


@dataclass
class TrainerState:
    step: int
    cursor: DataCursor
    optimizer: dict[str, Any]
    sampler_rng: torch.Tensor
    torch_rng: torch.Tensor
    schedule: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    *,
    policy: Any,
    momentum: Any | None,
    tokenizer: Any,
    state: TrainerState,
    manifest: CheckpointManifest,
) -> None:
    """Write a complete checkpoint directory atomically."""
    if manifest.step != state.step or manifest.engine != "local":
        raise ValueError(f"manifest {manifest} does not describe this local trainer state")
    with atomic_path(path, directory=True) as tmp:
        policy.save_pretrained(tmp / POLICY_DIR, safe_serialization=True)
        tokenizer.save_pretrained(tmp / POLICY_DIR)
        if momentum is not None:
            momentum.save_pretrained(tmp / MOMENTUM_DIR, safe_serialization=True)
            tokenizer.save_pretrained(tmp / MOMENTUM_DIR)
        payload = {**asdict(state), "cursor": asdict(state.cursor)}
        torch.save(payload, tmp / TRAINER_STATE)
        write_manifest(tmp, manifest)


def load_trainer_state(path: str | Path) -> TrainerState:
    payload = torch.load(Path(path) / TRAINER_STATE, weights_only=False)
    payload["cursor"] = DataCursor(**payload["cursor"])
    return TrainerState(**payload)
