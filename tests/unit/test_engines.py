"""Engine dispatch: one registry, and an engine that cannot run here is refused by name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support import REPO, run_settings

from mgrpo import engines
from mgrpo.cli import main
from mgrpo.config import ConfigError, load_schema
from mgrpo.engines import ENGINES, ChunkPaths, Engine, load_engine


def train_argv(settings_json: str, out: Path) -> list[str]:
    return [
        "train", "--settings", settings_json, "--base-model", str(out / "base"),
        "--train-data", str(out / "train.parquet"), "--start", "0", "--end", "2",
        "--init", str(out / "base"), "--checkpoint", str(out / "step2"),
        "--metrics", str(out / "metrics.jsonl"), "--rollouts", str(out / "rollouts.parquet"),
        "--resume-dir", str(out / "resume"),
    ]  # fmt: skip


def test_every_engine_the_schema_allows_is_registered() -> None:
    allowed = load_schema()["$defs"]["run_settings"]["properties"]["engine"]["enum"]
    assert sorted(ENGINES) == sorted(allowed)


def test_train_dispatches_through_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mgrpo train` hands the engine the validated settings and the chunk's paths."""
    (tmp_path / "fake_engine.py").write_text(
        textwrap.dedent(
            """
            calls = []

            def unavailable_reason(settings):
                return None

            def train_chunk(settings, start, end, paths):
                calls.append((settings, start, end, paths))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ENGINES, "local", Engine("fake_engine", "nothing"))
    settings = run_settings(method="mgrpo")
    main(train_argv(settings.to_json(), tmp_path))
    import fake_engine

    [(got, start, end, paths)] = fake_engine.calls
    assert got == settings and got.method == settings.method
    assert (start, end) == (0, 2)
    assert isinstance(paths, ChunkPaths)
    assert (paths.base_model, paths.checkpoint) == (tmp_path / "base", tmp_path / "step2")


def test_train_refuses_verl_here_naming_the_key_and_what_to_install(tmp_path: Path) -> None:
    """No GPU here: the verl engine must stop before any work, with an actionable message."""
    settings = run_settings("srt", engine="verl")
    with pytest.raises(SystemExit) as exit_info:
        main(train_argv(settings.to_json(), tmp_path))
    message = str(exit_info.value)
    assert message.startswith(
        "mgrpo train: config key 'training.engine' (or 'runs.srt.engine'): 'verl' needs "
        "verl 0.9.1 with vLLM on a CUDA machine: pip install 'mgrpo[verl,vllm]'"
    ), message
    assert "on this machine: " in message
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_settings_json_is_a_usage_error_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    values = run_settings().to_json().replace('"lr": 0.001', '"lr": -1')
    with pytest.raises(SystemExit):
        main(train_argv(values, tmp_path))
    assert "run 'run' settings key 'lr'" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_local_engine_refuses_a_cuda_device_it_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"^here: 'local' needs .*no CUDA device"):
        load_engine(run_settings(device="cuda"), "here")
    assert load_engine(run_settings(device="cpu"), "here").train_chunk


def test_missing_engine_module_is_unavailable_not_a_crash(monkeypatch) -> None:
    monkeypatch.setitem(ENGINES, "local", Engine("mgrpo_no_such_module.main", "a thing"))
    with pytest.raises(ConfigError, match=r"'local' needs a thing; .*mgrpo_no_such_module"):
        engines.load_engine(run_settings(), "config key 'training.engine'")


def validate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mgrpo", "validate", *args], capture_output=True, text=True
    )


def test_validate_checks_engines_only_when_asked() -> None:
    # Planning the paper's DAG (engine: verl) must work on a machine without verl...
    paper = str(REPO / "config" / "paper.yaml")
    assert validate(paper).returncode == 0
    # ...while a training machine can ask whether it can run the config's runs.
    refused = validate(paper, "--check-engines")
    assert refused.returncode != 0
    assert f"{paper}: config key 'training.engine': 'verl' needs verl 0.9.1" in refused.stderr
    local = validate(str(REPO / "config" / "config.yaml"), "--check-engines")
    assert local.returncode == 0, local.stderr
