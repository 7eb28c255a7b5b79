"""The verl engine: M-GRPO at paper scale (FSDP2 actor + vLLM rollouts on one GPU node).

Recipe style: a Hydra config composing verl's ``ppo_trainer`` (``config/mgrpo_trainer.yaml``),
a small main (:mod:`.main`), a ``BaseTaskRunner`` subclass (:mod:`.task_runner`), a v0
``RayPPOTrainer`` subclass whose ``fit()`` runs M-GRPO steps (:mod:`.trainer`) and a worker
subclass holding the momentum policy (:mod:`.worker`). The run settings reach verl through one
table (:mod:`.keys`); the algorithm is :mod:`mgrpo.algorithm`, called per prompt
(:mod:`.scoring`). See docs/verl-engine.md.

Importing this package does not import verl: :func:`unavailable` tells whether it could run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

INSTALL_HINT = "pip install 'verl[vllm]==0.9.1' (or use the conda environment envs/train.yaml)"


def unavailable() -> str | None:
    """Why this machine cannot run a verl training job (None if it can)."""
    if importlib.util.find_spec("verl") is None:
        return f"verl is not installed: {INSTALL_HINT}"
    if importlib.util.find_spec("vllm") is None:
        return f"vLLM is not installed (verl's rollout engine): {INSTALL_HINT}"
    return None


def train_chunk(settings: Mapping[str, Any], start: int, end: int, paths: Any) -> None:
    """Train steps ``start+1 .. end`` of a run (see :func:`.launch.train_chunk`)."""
    from mgrpo.engines.verl.launch import train_chunk as launch

    launch(settings, start, end, paths)
