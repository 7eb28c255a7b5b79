"""TensorBoard curves (mgrpo.tracking): tags, each step exactly once, evaluations; progress."""

from __future__ import annotations

import io
import logging
import re
import time
from pathlib import Path

import pytest
from support import as_float32, raw_scalar_counts, tensorboard_scalars
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mgrpo.progress import progress, progress_factory
from mgrpo.run_layout import METRICS_FIELDS
from mgrpo.tracking import (
    EVAL_EVENTS,
    NOT_TRACKED,
    TRAIN_EVENTS,
    TrainingCurves,
    eval_events_path,
    prune_after,
    tensorboard_root,
    tracked_metrics,
    train_tag,
    write_eval_scalars,
)


def metrics_line(step: int, **values: float | None) -> dict:
    line = dict.fromkeys(METRICS_FIELDS, 0.5)
    return {**line, "run": "r", "method": "SRT", "step": step, **values}


# ------------------------------------------------------------------------------ names
def test_every_numeric_metric_has_one_readable_tag() -> None:
    tracked = tracked_metrics(metrics_line(3))
    names = [name for name in METRICS_FIELDS if name not in NOT_TRACKED]
    assert sorted(tracked) == sorted(train_tag(name) for name in names)
    assert len(set(tracked)) == len(names)
    assert train_tag("reward_mean") == "train/reward_mean"
    assert train_tag("label_accuracy") == "train/label_accuracy"
    assert train_tag("grad_norm") == "optim/grad_norm"
    assert train_tag("step_time") == "timing/step_time"
    with pytest.raises(KeyError):
        train_tag("step")


def test_null_metrics_are_left_out_and_a_bad_line_is_refused() -> None:
    tracked = tracked_metrics(metrics_line(1, entropy_momentum=None, trained_rollouts=6))
    assert "train/entropy_momentum" not in tracked
    assert tracked["train/trained_rollouts"] == 6.0
    with pytest.raises(ValueError, match="missing \\['lr'\\]"):
        tracked_metrics({k: v for k, v in metrics_line(1).items() if k != "lr"})


def test_logging_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert tensorboard_root(None) is None
    assert tensorboard_root(tmp_path) == tmp_path
    monkeypatch.setenv("MGRPO_TENSORBOARD", "0")
    assert tensorboard_root(tmp_path) is None


# ----------------------------------------------------------------- exactly once
def write_steps(curves: TrainingCurves, steps: range, scale: float, skip: dict | None = None):
    for step in steps:
        data = {"train/a": scale * step, "train/b": scale * step + 0.5}
        for tag in (skip or {}).get(step, ()):
            del data[tag]
        curves.log(data, step)


def test_a_restart_replaces_the_killed_attempts_steps(tmp_path: Path) -> None:
    """Killed after step 10, resumed from step 6: steps 7-10 are redone, each shown once.

    After the resume, train/b is not logged at steps 7 and 8 (a null metric): only a purge of
    everything after step 6 removes the killed attempt's values there.
    """
    root = tmp_path / "tb"
    killed = TrainingCurves(root, first_step=1)
    write_steps(killed, range(1, 11), scale=1.0)  # flushed per step; the process then dies
    live = EventAccumulator(str(root / TRAIN_EVENTS), size_guidance={"scalars": 0})
    live.Reload()  # a TensorBoard that was watching during the kill
    assert [e.step for e in live.Scalars("train/a")] == list(range(1, 11))

    with TrainingCurves(root, first_step=7) as resumed:
        write_steps(resumed, range(7, 13), scale=10.0, skip={7: ["train/b"], 8: ["train/b"]})
    killed.finish()

    expected_a = [(s, float(s)) for s in range(1, 7)] + [(s, 10.0 * s) for s in range(7, 13)]
    expected_b = [(s, s + 0.5) for s in range(1, 7)] + [(s, 10.0 * s + 0.5) for s in range(9, 13)]
    fresh = tensorboard_scalars(root / TRAIN_EVENTS)  # a TensorBoard started afterwards
    assert fresh == {"train/a": expected_a, "train/b": expected_b}
    live.Reload()
    assert [(e.step, e.value) for e in live.Scalars("train/a")] == expected_a
    assert [(e.step, e.value) for e in live.Scalars("train/b")] == expected_b
    # The files themselves hold each point once (what TensorBoard's Rust data server reads).
    assert set(raw_scalar_counts(root).values()) == {1}


def test_a_new_writer_sorts_after_a_file_from_a_clock_ahead(tmp_path: Path) -> None:
    """Readers read files in name order; a writer's file is named by the second it opened."""
    root = tmp_path / "tb"
    with TrainingCurves(root, first_step=1) as first_chunk:
        write_steps(first_chunk, range(1, 3), scale=1.0)
    (old,) = (root / TRAIN_EVENTS).iterdir()
    # The first chunk ran on a node whose clock is a second ahead (or in this same second).
    ahead = f"events.out.tfevents.{int(time.time()) + 1}.other-node.999.0"
    old.rename(old.with_name(ahead))
    with TrainingCurves(root, first_step=3) as second_chunk:
        write_steps(second_chunk, range(3, 5), scale=1.0)
    names = sorted(p.name for p in (root / TRAIN_EVENTS).iterdir())
    assert names[0] == ahead
    assert tensorboard_scalars(root / TRAIN_EVENTS)["train/a"] == [(s, s) for s in range(1, 5)]


def test_pruning_keeps_earlier_steps_and_drops_emptied_files(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    with TrainingCurves(root, first_step=1) as curves:
        write_steps(curves, range(1, 5), scale=1.0)
    for step in (0, 2, 4):
        write_eval_scalars(root, {"benchmark": "test", "step": step, "accuracy": step / 10})
    assert prune_after(root, 2) == 2 * 2 + 1  # train a, b at steps 3, 4; eval at step 4
    assert not eval_events_path(root, 4, "test").exists()
    assert [s for s, _ in tensorboard_scalars(root / TRAIN_EVENTS)["train/a"]] == [1, 2]
    assert prune_after(root, 0) == 2 * 2 + 1
    assert list((root / TRAIN_EVENTS).iterdir()) == []


def test_a_record_cut_short_by_a_kill_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    with TrainingCurves(root, first_step=1) as curves:
        write_steps(curves, range(1, 4), scale=1.0)
    (events,) = (root / TRAIN_EVENTS).iterdir()
    complete = events.read_bytes()
    events.write_bytes(complete + complete[-30:-10])  # killed in the middle of a record
    assert prune_after(root, 3) == 0
    assert events.read_bytes() == complete
    assert [s for s, _ in tensorboard_scalars(root / TRAIN_EVENTS)["train/b"]] == [1, 2, 3]


# ------------------------------------------------------------------------ evaluation
def summary(step: int, bench: str, accuracy: float) -> dict:
    return {
        "run": "r", "step": step, "benchmark": bench, "accuracy": accuracy,
        "majority_accuracy": accuracy / 2, "answer_rate": 1.0, "mean_response_tokens": 9.5,
        "problems": 24, "samples_per_problem": 1, "samples": 24, "seconds": 0.3,
        "sampling": {"temperature": 0.8}, "settings_fingerprint": "abc",
    }  # fmt: skip


def test_evaluations_add_points_and_a_repeat_replaces_them(tmp_path: Path) -> None:
    root = tmp_path / "tb"
    for step in (4, 0, 2):  # evaluations finish in any order
        for bench in ("test", "hard"):
            write_eval_scalars(root, summary(step, bench, 0.1 * step))
    write_eval_scalars(root, summary(2, "test", 0.9))  # evaluated again
    scalars = tensorboard_scalars(root / EVAL_EVENTS)
    assert sorted(scalars) == sorted(
        f"eval/{b}/{k}"
        for b in ("test", "hard")
        for k in ("accuracy", "majority_accuracy", "answer_rate", "mean_response_tokens")
    )
    assert scalars["eval/test/accuracy"] == [(0, 0.0), (2, as_float32(0.9)), (4, as_float32(0.4))]
    expected = [(0, 0.0), (2, as_float32(0.1)), (4, as_float32(0.2))]
    assert scalars["eval/hard/majority_accuracy"] == expected
    assert set(raw_scalar_counts(root).values()) == {1}
    assert not [p for p in (root / EVAL_EVENTS).iterdir() if p.name.startswith(".")]


def test_a_reader_never_sees_a_half_written_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    root, seen = tmp_path / "tb", []
    real_write = RecordWriter.write

    def spy(self, data: bytes) -> None:
        seen.extend(p.name for p in (root / EVAL_EVENTS).iterdir() if "tfevents" in p.name)
        real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", spy)
    write_eval_scalars(root, summary(2, "test", 0.5))
    assert seen == []  # TensorBoard picks up any file named *tfevents*, even a temporary one
    assert eval_events_path(root, 2, "test").exists()


# -------------------------------------------------------------------------- progress
def test_progress_in_a_log_file_is_one_line_per_update_with_rate_and_eta(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MGRPO_PROGRESS_SECONDS", "0")
    log_file = io.StringIO()  # not a terminal, like a Snakemake or SLURM log
    with (
        caplog.at_level(logging.INFO, logger="mgrpo.progress"),
        progress(total=4, desc="srt steps 1-4", unit="step", stream=log_file) as bar,
    ):
        for _ in range(4):
            bar.set_postfix(reward=0.5, refresh=False)
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert log_file.getvalue() == ""
    assert len(lines) == 5  # the start and every step, the last one once
    assert lines[-1].startswith("srt steps 1-4: 4/4 step (100%) elapsed 00:00, ETA 00:00,")
    assert re.search(r"step/s, reward=0.5$", lines[-1])
    assert not any("\r" in line for line in lines)


def test_progress_lines_respect_the_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MGRPO_PROGRESS_SECONDS", "3600")
    with caplog.at_level(logging.INFO, logger="mgrpo.progress"):
        for _ in progress(range(100), desc="warm start", unit="step", stream=io.StringIO()):
            pass
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" elapsed")[0] for line in lines] == [
        "warm start: 0/100 step (0%)",
        "warm start: 100/100 step (100%)",
    ]


def test_progress_without_logging_writes_its_lines_to_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mgrpo.progress

    monkeypatch.setattr(mgrpo.progress, "log", logging.Logger("unconfigured"))  # no handlers
    log_file = io.StringIO()
    for _ in progress(range(2), desc="toy splits", unit="split", stream=log_file):
        pass
    lines = log_file.getvalue().splitlines()
    assert lines[-1].startswith("toy splits: 2/2 split (100%) elapsed")
    assert "\r" not in log_file.getvalue()


def test_a_librarys_progress_bar_becomes_lines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """vLLM's ``use_tqdm`` gets ``progress_factory``; it calls it the way tqdm is called."""
    monkeypatch.setenv("MGRPO_PROGRESS_SECONDS", "0")
    make = progress_factory("srt step 50 math500", "prompt")
    with caplog.at_level(logging.INFO, logger="mgrpo.progress"):
        for _ in make(range(2), desc="Adding requests"):
            pass
        bar = make(total=2, desc="Processed prompts", dynamic_ncols=True, postfix="est. speed")
        bar.update(2)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("srt step 50 math500: Processed prompts: 2/2 prompt (100%)")
    assert any(line.startswith("srt step 50 math500: Adding requests: 2/2") for line in lines)


def test_progress_on_a_terminal_is_a_live_bar(caplog: pytest.LogCaptureFixture) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with caplog.at_level(logging.INFO, logger="mgrpo.progress"):
        for _ in progress(range(3), desc="eval", unit="sample", stream=screen):
            pass
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
    assert not caplog.records
