"""The run layout's columns, fields and manifest: one definition, enforced on write."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mgrpo.run_layout import (
    MANIFEST,
    METRICS_FIELDS,
    ROLLOUT_COLUMNS,
    CheckpointManifest,
    check_metrics_line,
    read_manifest,
    rollout_frame,
    write_chunk_records,
    write_manifest,
)


def record(**changes) -> dict:
    row = {
        "run": "r", "method": "SRT", "step": 1, "prompt_id": "p0", "rollout": 0,
        "source": "policy", "response": "\\boxed{3}", "answer": "3", "entropy": 0.5,
        "self_certainty": None, "kept": True, "trained": True, "pseudo_label": "3",
        "reward": 1.0, "advantage": 0.0, "ground_truth": "3", "replica": None,
    }  # fmt: skip
    return {**row, **changes}


def metrics_line(**changes) -> dict:
    return {**dict.fromkeys(METRICS_FIELDS, 0.0), "run": "r", "method": "SRT", "step": 1, **changes}


def test_rollout_frame_types_every_column_and_keeps_nulls(tmp_path: Path) -> None:
    frame = rollout_frame([record(), record(rollout=1, answer=None, reward=None, trained=False)])
    assert list(frame.columns) == list(ROLLOUT_COLUMNS)
    path = tmp_path / "r.parquet"
    frame.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    assert {c: str(t) for c, t in back.dtypes.items()} == {
        name: column.dtype for name, column in ROLLOUT_COLUMNS.items()
    }
    assert back["reward"].isna().tolist() == [False, True]
    assert back["answer"].isna().tolist() == [False, True]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**record(), "extra": 1}, r"unknown \['extra'\]"),
        ({k: v for k, v in record().items() if k != "entropy"}, r"missing \['entropy'\]"),
    ],
)
def test_a_record_outside_the_layout_is_refused(row: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rollout_frame([record(), row])


def test_metrics_lines_must_have_exactly_the_known_fields() -> None:
    check_metrics_line(metrics_line())
    with pytest.raises(ValueError, match=r"step 1 .*unknown \['surprise'\]"):
        check_metrics_line(metrics_line(surprise=1))
    line = metrics_line()
    del line["kl"]
    with pytest.raises(ValueError, match=r"missing \['kl'\]"):
        check_metrics_line(line)


def test_chunk_records_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    metrics, rollouts = tmp_path / "m.jsonl", tmp_path / "r.parquet"
    with pytest.raises(ValueError, match="unknown"):
        write_chunk_records(metrics, [metrics_line(x=1)], rollouts, rollout_frame([record()]))
    wrong = rollout_frame([record()]).drop(columns=["kept"])
    with pytest.raises(ValueError, match="rollout columns"):
        write_chunk_records(metrics, [metrics_line()], rollouts, wrong)
    assert not list(tmp_path.iterdir())
    write_chunk_records(metrics, [metrics_line()], rollouts, rollout_frame([record()]))
    assert json.loads(metrics.read_text()) == metrics_line()
    assert len(pd.read_parquet(rollouts)) == 1


def test_manifest_round_trip_and_incomplete_checkpoints(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) is None  # no manifest: not a (complete) checkpoint
    manifest = CheckpointManifest("r", 4, "local", "0123456789abcdef", "M-GRPO+IQR")
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    (tmp_path / MANIFEST).write_text('{"run": "r"}')
    with pytest.raises(ValueError, match=f"{MANIFEST}: not a checkpoint manifest"):
        read_manifest(tmp_path)
