"""Live curves of a run: training metrics and evaluation results as TensorBoard scalars.

Every engine and evaluation writes them into the run's TensorBoard directory::

    results/runs/{run}/tensorboard/
        train/events.out.tfevents.*                       one file per training process: every
                                                          metric of every step, flushed as the
                                                          step ends
        eval/events.out.tfevents.step{N:09d}.{benchmark}  one file per evaluation (step 0 = the
                                                          base model)

``tensorboard --logdir results/runs`` then shows every run's ``train`` and ``eval`` curves.

Names. A training metric ``name`` of :data:`mgrpo.run_layout.METRICS_FIELDS` is the tag
:func:`train_tag` (``train/reward_mean``, ``optim/grad_norm``, ``timing/step_time``); a number
``key`` of an evaluation summary on benchmark ``b`` is ``eval/b/key``. The mapping is defined
here only: the local engine logs :func:`tracked_metrics` itself, the verl engine hands the same
dict to verl's own tracking (``trainer.logger``: console, tensorboard, wandb, mlflow).

Each step exactly once. A training process that starts at step ``s`` (a new chunk, or one
resumed after a kill) first removes every scalar after ``s`` from the run's event files
(:func:`prune_after`: the killed attempt's steps are about to be redone, and evaluations after
``s`` belong to checkpoints that are being replaced), then opens its writer with
``purge_step = s + 1`` so that a TensorBoard already showing the killed attempt drops those
points too. An evaluation writes one file under a fixed name, atomically, so evaluating a step
again replaces its points; the names sort by step, the order every reader reads them in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from numbers import Real
from pathlib import Path
from typing import Any

from mgrpo.io import atomic_path
from mgrpo.run_layout import METRICS_FIELDS, check_metrics_line

TRAIN_EVENTS = "train"
EVAL_EVENTS = "eval"
# The workflow's `logging.tensorboard: false` reaches jobs as MGRPO_TENSORBOARD=0 and its
# `logging.trackers` as MGRPO_TRACKERS=wandb,mlflow (environment variables, not rule
# parameters: changing them reruns nothing).
SWITCH = "MGRPO_TENSORBOARD"
TRACKERS = "MGRPO_TRACKERS"
# Event files are recognised by this infix; temporary files must not carry it.
EVENT_INFIX = "tfevents"

# Metrics that are not curves (labels and the x axis).
NOT_TRACKED = ("run", "method", "step")
# The TensorBoard section of a training metric; every other metric is under "train".
TAG_GROUPS = {
    **dict.fromkeys(("lr", "loss", "pg_loss", "kl", "clip_frac", "grad_norm"), "optim"),
    **dict.fromkeys(("step_time", "sample_time"), "timing"),
}
# Evaluation summary numbers that describe the job, not the model.
EVAL_NOT_TRACKED = (
    "step",
    "problems",
    "samples_per_problem",
    "samples",
    "seconds",
    "generation_seconds",
    "grading_seconds",
    "samples_per_second",
)


def train_tag(name: str) -> str:
    """The tag of metrics field ``name``, e.g. ``reward_mean`` -> ``train/reward_mean``."""
    if name not in METRICS_FIELDS or name in NOT_TRACKED:
        raise KeyError(f"{name!r} is not a tracked metrics field of mgrpo.run_layout")
    return f"{TAG_GROUPS.get(name, 'train')}/{name}"


def _is_number(value: Any) -> bool:
    return isinstance(value, Real)


def tracked_metrics(line: Mapping[str, Any]) -> dict[str, float]:
    """A metrics line (the fields of ``METRICS_FIELDS``) as ``{tag: value}`` for a tracker.

    The x axis is ``line["step"]``. Null fields (nothing measured that step) and text are left
    out. Raises ValueError, like the metrics writer, if ``line`` is not a complete metrics line.
    """
    check_metrics_line(line)
    return {
        train_tag(name): float(value)
        for name, value in line.items()
        if name not in NOT_TRACKED and _is_number(value)
    }


def eval_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation summary (``results/eval/{run}/step{N}/{bench}.json``) as ``{tag: value}``."""
    bench = summary["benchmark"]
    return {
        f"eval/{bench}/{key}": float(value)
        for key, value in summary.items()
        if key not in EVAL_NOT_TRACKED and _is_number(value)
    }


def tensorboard_root(path: str | Path | None) -> Path | None:
    """The run's TensorBoard directory, or None when logging is off (no path, or the switch)."""
    if path is None or os.environ.get(SWITCH, "1").strip().lower() in ("0", "false", "no"):
        return None
    return Path(path)


def extra_trackers() -> list[str]:
    """Tracking backends besides TensorBoard for engines that have them (verl's ``Tracking``)."""
    return [name.strip() for name in os.environ.get(TRACKERS, "").split(",") if name.strip()]


# ----------------------------------------------------------------------------------- writing
def _event_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob(f"*{EVENT_INFIX}*") if p.is_file())


def _read_records(path: Path) -> list[bytes]:
    """The complete records of an event file (a record cut short by a kill is dropped)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    return list(RawEventFileLoader(str(path)).Load())


def _write_records(path: Path, records: list[bytes]) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    with atomic_path(path, prefix=".partial-") as tmp, open(tmp, "wb") as fh:
        writer = RecordWriter(fh)
        for record in records:
            writer.write(record)


def prune_after(root: str | Path, step: int) -> int:
    """Remove every scalar of a step after ``step`` from the event files under ``root``.

    Other events (file version, session logs) stay; a file left without scalars is deleted;
    a record that a kill cut short goes too. Files are rewritten atomically under their own
    names, so their reading order is kept. Returns the number of scalar events removed.
    """
    from tensorboard.compat.proto.event_pb2 import Event

    removed = 0
    for path in _event_files(Path(root)):
        records = _read_records(path)
        events = [Event.FromString(r) for r in records]
        stale = [e.HasField("summary") and e.step > step for e in events]
        # A record is its data plus 16 bytes of framing (length, and two checksums).
        truncated = path.stat().st_size != sum(len(r) + 16 for r in records)
        if not any(stale) and not truncated:
            continue
        removed += sum(stale)
        kept = [r for r, s in zip(records, stale, strict=True) if not s]
        if any(e.HasField("summary") for e, s in zip(events, stale, strict=True) if not s):
            _write_records(path, kept)
        else:
            path.unlink()
    return removed


def _file_version_event() -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event

    return Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()


def _scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
    return Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()


def eval_events_path(root: str | Path, step: int, benchmark: str) -> Path:
    """The one event file of the evaluation of checkpoint ``step`` on ``benchmark``."""
    return Path(root) / EVAL_EVENTS / f"events.out.{EVENT_INFIX}.step{step:09d}.{benchmark}"


def write_eval_scalars(root: str | Path, summary: Mapping[str, Any]) -> Path:
    """Add an evaluation's numbers to the run's curves at its step (replacing earlier ones)."""
    path = eval_events_path(root, int(summary["step"]), summary["benchmark"])
    now = time.time()
    records = [_file_version_event()] + [
        _scalar_event(tag, value, int(summary["step"]), now)
        for tag, value in eval_scalars(summary).items()
    ]
    _write_records(path, records)
    return path


def _wait_for_a_later_name(directory: Path, patience: float = 5.0) -> None:
    """Let a new writer's file sort after the existing ones in ``directory``.

    Readers read a run's event files in name order, and a writer's file is named by the
    second it opens in (``events.out.tfevents.<seconds>.<host>.<pid>.<n>``): two writers opened
    in the same second (or on a node whose clock is behind) could otherwise be read in the
    wrong order, and the older steps would then replace the newer ones.
    """
    seconds = [p.name.split(".")[3] for p in _event_files(directory) if p.parent == directory]
    newest = max((int(s) for s in seconds if s.isdigit()), default=0)
    deadline = time.monotonic() + patience
    while int(time.time()) <= newest and time.monotonic() < deadline:
        time.sleep(0.05)


class TrainingCurves:
    """The training curves of one training process, written as each step ends.

    ``TrainingCurves(root, first_step)`` prunes the run's events after ``first_step - 1`` (see
    the module docstring) and opens a writer in ``root/train``; ``root=None`` writes nothing.
    :meth:`log` has the signature of a verl tracking backend (``log(data, step)``, ``finish()``),
    so the verl engine can use it in place of verl's own TensorBoard adapter.
    """

    def __init__(self, root: str | Path | None, first_step: int):
        self.writer: Any = None
        if root is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        prune_after(root, first_step - 1)
        directory = Path(root) / TRAIN_EVENTS
        _wait_for_a_later_name(directory)
        self.writer = SummaryWriter(
            str(directory), purge_step=first_step, max_queue=1000, flush_secs=3600
        )

    def log(self, data: Mapping[str, Any], step: int) -> None:
        """Write the numbers of ``{tag: value}`` at ``step`` and flush them to disk."""
        if self.writer is None:
            return
        for tag, value in data.items():
            if _is_number(value):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def log_metrics(self, line: Mapping[str, Any]) -> None:
        """Write one metrics line (see :func:`tracked_metrics`) at its step."""
        if self.writer is not None:
            self.log(tracked_metrics(line), int(line["step"]))

    def finish(self, exit_code: int | None = None) -> None:
        """Flush and close (``exit_code`` as verl's tracking passes it; unused)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TrainingCurves:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()
