"""What one training step reports, computed once for both engines.

An engine hands over, per prompt, the pool it scored (:class:`ScoredPool`: the rollouts in pool
order and :func:`mgrpo.algorithm.groups.score_group`'s verdict); :func:`step_metrics` and
:func:`rollout_records` turn the step's pools into its metrics line and its rollout records,
with the columns of :mod:`mgrpo.run_layout`. The records are the scores verbatim,
so they are exactly what the loss used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgrpo.algorithm.answers import Equivalence
from mgrpo.algorithm.groups import GroupScore, score_group
from mgrpo.algorithm.methods import Method
from mgrpo.algorithm.signals import mean_or_none, step_signals
from mgrpo.io import read_jsonl, write_jsonl, write_parquet
from mgrpo.run_layout import rollout_frame, write_chunk_records


@dataclass(frozen=True)
class ScoredPool:
    """One prompt's G rollouts in pool order (M policy, then N momentum) and their scores."""

    prompt_id: str
    group: GroupScore
    is_momentum: Sequence[bool]
    texts: Sequence[str]
    entropies: Sequence[float]
    self_certainties: Sequence[float] | None  # only where the reward is self-certainty
    lengths: Sequence[int]  # response tokens


def score_pool(
    prompt_id: str,
    rows: Sequence[int],
    *,
    answers: Sequence[str | None],
    is_momentum: Sequence[bool],
    entropies: Sequence[float],
    self_certainties: Sequence[float] | None,
    texts: Sequence[str],
    lengths: Sequence[int],
    method: Method,
    truth: str | None,
    equal: Equivalence | None,
) -> ScoredPool:
    """One prompt's pool, picked from the step's per-row lists by its ``rows`` (pool order:
    M policy, then N momentum) and scored by :func:`~mgrpo.algorithm.groups.score_group`."""

    def pick(values: Sequence[Any]) -> list[Any]:
        return [values[r] for r in rows]

    certainties = None if self_certainties is None else pick(self_certainties)
    group = score_group(
        pick(answers),
        pick(is_momentum),
        pick(entropies),
        method,
        self_certainties=certainties,
        truth=truth,
        equal=equal,
    )
    return ScoredPool(
        prompt_id=prompt_id,
        group=group,
        is_momentum=pick(is_momentum),
        texts=pick(texts),
        entropies=pick(entropies),
        self_certainties=certainties,
        lengths=pick(lengths),
    )


def step_metrics(
    run: str,
    method: str,
    step: int,
    pools: Sequence[ScoredPool],
    update: Mapping[str, float],
) -> dict[str, Any]:
    """The step's metrics line (without timings): ``update`` holds lr, losses and grad norm.

    The label-free signals come from :func:`mgrpo.algorithm.signals.step_signals`; the rest
    reads the hidden labels (diagnostics that never feed training) or counts rollouts.
    """
    groups = [p.group for p in pools]
    signals = step_signals(
        groups,
        [p.is_momentum for p in pools],
        [p.entropies for p in pools],
        [p.lengths for p in pools],
    )
    labelled = [g.label_correct for g in groups if g.label_correct is not None]
    correct = [
        p.group.answers[i] is not None and p.group.answers[i] == p.group.truth
        for p in pools
        for i, momentum in enumerate(p.is_momentum)
        if not bool(momentum) and p.group.truth is not None
    ]
    momentum_entropies = [
        e for p in pools for e, m in zip(p.entropies, p.is_momentum, strict=True) if bool(m)
    ]
    return {
        "run": run,
        "method": method,
        "step": step,
        **update,
        **signals,
        "label_accuracy": mean_or_none([float(c) for c in labelled]),
        "label_rate": mean_or_none([float(g.label is not None) for g in groups]),
        "policy_accuracy": mean_or_none([float(c) for c in correct]),
        "entropy_momentum": mean_or_none(momentum_entropies),
        "trained_rollouts": sum(sum(g.trained) for g in groups),
    }


def rollout_records(
    run: str,
    method: str,
    step: int,
    pools: Sequence[ScoredPool],
    replicas: Sequence[Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """One record per rollout, pool by pool: the run layout's rollout columns.

    ``replicas``: per pool, the rank of the vLLM replica that generated each rollout (verl
    engine); null for an engine with one sampler (the local engine).
    """
    records = []
    for k, p in enumerate(pools):
        g = p.group
        for i, momentum in enumerate(p.is_momentum):
            records.append(
                {
                    "run": run,
                    "method": method,
                    "step": step,
                    "prompt_id": p.prompt_id,
                    "rollout": i,
                    "source": "momentum" if bool(momentum) else "policy",
                    "response": p.texts[i],
                    "answer": g.answers[i],
                    "entropy": p.entropies[i],
                    "self_certainty": None if p.self_certainties is None else p.self_certainties[i],
                    "kept": g.kept[i],
                    "trained": g.trained[i],
                    "pseudo_label": g.label,
                    "reward": g.rewards[i],
                    "advantage": g.advantages[i],
                    "ground_truth": g.truth,
                    "replica": None if replicas is None else int(replicas[k][i]),
                }
            )
    return records


def _part_step(path: Path) -> int:
    return int(path.stem.removeprefix("rollouts-to-step"))


class ChunkRecords:
    """A chunk's metrics lines and rollout records, persisted beside its resume states.

    While a chunk runs, what it has produced so far lives in a directory outside the rule's
    declared outputs (Snakemake deletes those when a job dies)::

        metrics.jsonl                 metric lines of the steps up to the last resume state
        rollouts-to-step{k}.parquet   rollout records, one part per resume interval

    :meth:`persist` is called with every resume state, :meth:`restore` when resuming from one,
    and :meth:`write_outputs` writes the declared outputs, atomically, when the chunk is done.
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.metrics: list[dict[str, Any]] = []
        self.pending: list[dict[str, Any]] = []  # records since the last persisted part
        self.parts: list[Path] = []

    def add(self, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.metrics.append(metrics)
        self.pending.extend(records)

    def persist(self, step: int) -> None:
        """Write everything up to ``step`` (call before the resume state's completion marker)."""
        part = self.dir / f"rollouts-to-step{step}.parquet"
        write_parquet(part, rollout_frame(self.pending))
        self.parts.append(part)
        self.pending = []
        write_jsonl(self.dir / "metrics.jsonl", self.metrics)

    def restore(self, step: int) -> None:
        """Reload what the chunk had produced up to resume step ``step``."""
        file = self.dir / "metrics.jsonl"
        lines = read_jsonl(file) if file.exists() else []
        self.metrics = [m for m in lines if m["step"] <= step]
        self.parts = sorted(
            (p for p in self.dir.glob("rollouts-to-step*.parquet") if _part_step(p) <= step),
            key=_part_step,
        )
        self.pending = []

    def write_outputs(self, metrics_path: str | Path, rollouts_path: str | Path) -> None:
        import pandas as pd

        frames = [pd.read_parquet(p) for p in self.parts] + [rollout_frame(self.pending)]
        rollouts = pd.concat(frames, ignore_index=True)
        write_chunk_records(metrics_path, self.metrics, rollouts_path, rollouts)
