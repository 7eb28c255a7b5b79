"""Training engines: the registry ``mgrpo train`` dispatches through, and the engine contract.

An engine is a module, named in :data:`ENGINES`, that provides::

    def unavailable_reason(settings: RunSettings) -> str | None:
        '''None if this engine can train ``settings`` on this machine, else what is missing
        (e.g. "no CUDA device"). Cheap: no model loading.'''

    def train_chunk(settings: RunSettings, start: int, end: int, paths: ChunkPaths) -> None:
        '''Train steps start+1 .. end of the run and write the chunk's outputs in the run
        layout (mgrpo.run_layout): metrics and rollouts through write_chunk_records, then the
        checkpoint at paths.checkpoint, its manifest last. start == 0 starts from the base
        model; otherwise resume from paths.init (refusing a checkpoint whose manifest identity
        is not settings.fingerprint). The LR horizon is settings["schedule_steps"], never end.
        Unless paths.tensorboard is None, each step's metrics line also goes, as the step
        ends, to the run's TensorBoard curves under the tags of
        mgrpo.tracking.tracked_metrics (the local engine: mgrpo.tracking.TrainingCurves).'''

An engine module may import its heavy dependencies at the top: a ``ModuleNotFoundError`` while
importing it counts as "not installed" and becomes a refusal that names the config key and what
to install. This package itself stays cheap (no torch): the workflow and ``mgrpo --help`` use it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from mgrpo.config import ConfigError

if TYPE_CHECKING:
    from mgrpo.settings import RunSettings


@dataclass(frozen=True)
class Engine:
    module: str  # implements the contract above
    needs: str  # what it needs and how to install it, for the refusal message


ENGINES: dict[str, Engine] = {
    "local": Engine(
        "mgrpo.engines.local.trainer",
        "torch and transformers (installed with mgrpo); CPU or one CUDA GPU",
    ),
    "verl": Engine(
        "mgrpo.engines.verl.launch",
        "verl 0.9.1 with vLLM on a CUDA machine: pip install 'mgrpo[verl,vllm]' "
        "(or use the conda env envs/train.yaml)",
    ),
}


@dataclass
class ChunkPaths:
    """Where a training chunk reads from and writes to (the train rule's inputs and outputs)."""

    base_model: Path  # the base model: step 0's policy and momentum, and the KL reference
    train_data: Path  # RL prompts (problem parquet)
    init: Path  # the base model (start == 0) or the checkpoint at `start`
    checkpoint: Path  # checkpoint written at `end`
    metrics: Path  # JSON lines, one per step of this chunk
    rollouts: Path  # parquet, one row per rollout of this chunk
    resume: Path  # intra-chunk resume state, outside the declared outputs
    # The run's TensorBoard directory (mgrpo.tracking), or None: no curves. Engines write each
    # step's metrics there as the step ends, named by mgrpo.tracking.tracked_metrics.
    tensorboard: Path | None = None


def load_engine(settings: RunSettings, where: str) -> ModuleType:
    """The engine module that trains ``settings`` here, or a :class:`ConfigError`.

    ``where`` names the config key that chose the engine, e.g. ``config key 'training.engine'``.
    """
    name = settings["engine"]
    if name not in ENGINES:
        raise ConfigError(f"{where}: unknown engine {name!r} ({sorted(ENGINES)})")
    engine = ENGINES[name]
    try:
        module = importlib.import_module(engine.module)
    except ModuleNotFoundError as err:
        reason: str | None = f"{err} (not installed)"
    else:
        reason = module.unavailable_reason(settings)
    if reason is not None:
        raise ConfigError(f"{where}: {name!r} needs {engine.needs}; on this machine: {reason}")
    return module
