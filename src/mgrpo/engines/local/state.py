"""Trainer state on disk: the checkpoint layout shared by both engines.

::

    step{N}/
      policy/             Hugging Face directory of pi_q (what evaluation loads)
      momentum/           Hugging Face directory of pi_k (methods with momentum rollouts)
      trainer_state.pt    engine-specific: optimizer, LR schedule, RNG states, data cursor
      checkpoint.json     run, step, engine, settings fingerprint (written last)

A directory is written under a temporary name and renamed into place, so a ``step{N}`` that
exists is complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgrpo.io import atomic_path, write_json

MANIFEST = "checkpoint.json"


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
    manifest: dict[str, Any],
) -> None:
    """Write a complete checkpoint directory atomically."""
    with atomic_path(path, directory=True) as tmp:
        policy.save_pretrained(tmp / "policy", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "policy")
        if momentum is not None:
            momentum.save_pretrained(tmp / "momentum", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "momentum")
        payload = {**asdict(state), "cursor": asdict(state.cursor)}
        torch.save(payload, tmp / "trainer_state.pt")
        write_json(tmp / MANIFEST, {**manifest, "step": state.step, "engine": "local"})


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's manifest, or None if ``path`` is not a (complete) checkpoint."""
    file = Path(path) / MANIFEST
    if not file.exists():
        return None
    return json.loads(file.read_text())


def load_trainer_state(path: str | Path) -> TrainerState:
    payload = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    payload["cursor"] = DataCursor(**payload["cursor"])
    return TrainerState(**payload)
