"""Config validation: defaults, cross-key rules and the keys errors name."""

from __future__ import annotations

import copy

import pytest
from support import REPO

from mgrpo.config import ConfigError, load_config, model_key, validate_config
from mgrpo.settings import resolve_run_settings

MINIMAL = {"runs": {"a": {}}, "benchmarks": {"t": {"source": "toy", "split": "test"}}}


def test_defaults_are_filled_in() -> None:
    cfg = validate_config(MINIMAL)
    assert cfg["training"]["lr"] == 1e-6  # the paper's learning rate
    assert cfg["training"]["iqr_k"] == 0.75
    assert cfg["training"]["clip_ratio_c"] == 3.0  # verl's dual-clip default
    assert cfg["benchmarks"]["t"]["temperature"] == 0.8
    assert cfg["data"]["toy"]["splits"]["train"] == 2000
    assert cfg["report"]["collapse_margin"] == 0.05


def test_input_is_not_mutated() -> None:
    raw = copy.deepcopy(MINIMAL)
    validate_config(raw)
    assert raw == MINIMAL


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"training": {"lr": -1}}, "training.lr"),
        ({"training": {"method": "ppo"}}, "training.method"),
        ({"training": {"nonsense": 1}}, "training"),
        ({"training": {"clip_ratio_c": 1.0}}, "training.clip_ratio_c"),  # must exceed 1
        ({"runs": {"a": {"clip_ratio_c": None}}}, "runs.a.clip_ratio_c"),  # no off switch
        ({"runs": {"a": {"rollouts": 0}}}, "runs.a.rollouts"),
        ({"runs": {"a": {"steps": 10, "chunk_steps": 3}}}, "runs.a.chunk_steps"),
        ({"training": {"steps": 10, "chunk_steps": 3}}, "training.chunk_steps"),
        ({"training": {"method": "srt", "momentum_rollouts": 2}}, "training.momentum_rollouts"),
        ({"runs": {"a": {"method": "srt", "momentum_rollouts": 2}}}, "runs.a.momentum_rollouts"),
        (
            {"runs": {"a": {"method": "mgrpo", "rollouts": 4, "momentum_rollouts": 4}}},
            "runs.a.momentum_rollouts",
        ),
        (
            {
                "runs": {
                    "a": {
                        "steps": 20,
                        "chunk_steps": 10,
                        "schedule_steps": 10,
                        "lr_schedule": "cosine",
                    }
                }
            },
            "runs.a.steps",
        ),
        ({"runs": {"a": {"iqr": True, "iqr_scope": "train"}}}, "runs.a.iqr_scope"),
        ({"runs": {"a": {"method": "srt", "iqr_scope": "vote"}}}, "runs.a.iqr_scope"),
        ({"runs": {"base": {}}}, "runs"),
        ({"benchmarks": {"t": {"source": "toy"}}}, "benchmarks.t.split"),
        ({"benchmarks": {"t": {"source": "toy", "split": "nope"}}}, "benchmarks.t.split"),
        ({"report": {"select_on": "missing"}}, "report.select_on"),
        ({"data": {"source": "hf"}}, "data.hf"),
    ],
)
def test_errors_name_the_key(patch: dict, key: str) -> None:
    raw = copy.deepcopy(MINIMAL)
    for section, value in patch.items():
        raw[section] = (
            value
            if section in ("runs", "benchmarks", "data")
            else {**raw.get(section, {}), **value}
        )
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        validate_config(raw)


def test_model_key_is_path_safe() -> None:
    assert model_key("Qwen/Qwen3-4B-Base") == "Qwen--Qwen3-4B-Base"
    assert model_key("toy") == "toy"


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "paper.yaml",
        "experiments/toy-sweep.yaml",
        "experiments/toy-seeds.yaml",
        "experiments/toy-seeds-dev.yaml",
    ],
)
def test_shipped_configs_are_valid(name: str) -> None:
    cfg = load_config(REPO / "config" / name)
    for run in cfg["runs"]:
        resolve_run_settings(cfg, run)


def test_load_config_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("runs: {a: {lr: 0}}\nbenchmarks: {t: {source: toy, split: test}}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config key 'runs.a.lr'"):
        load_config(path)


def test_label_free_development_runs_are_the_scored_design_on_other_seeds() -> None:
    # The label-free rule was chosen on toy-seeds-dev and is scored on toy-seeds: the two must
    # differ in the seed alone, and share no seed.
    from mgrpo.report.seeds import seed_groups
    from mgrpo.settings import resolve_run_settings

    dev = load_config(REPO / "config/experiments/toy-seeds-dev.yaml")
    scored = load_config(REPO / "config/experiments/toy-seeds.yaml")
    assert {k: v for k, v in dev.items() if k != "runs"} == {
        k: v for k, v in scored.items() if k != "runs"
    }
    dev_runs = {name: resolve_run_settings(dev, name) for name in dev["runs"]}
    scored_runs = {name: resolve_run_settings(scored, name) for name in scored["runs"]}
    dev_arms, scored_arms = seed_groups(dev_runs), seed_groups(scored_runs)
    assert list(dev_arms) == list(scored_arms)
    assert all(len(runs) >= 3 for runs in scored_arms.values())
    dev_seeds = {s["seed"] for s in dev_runs.values()}
    assert dev_seeds.isdisjoint(s["seed"] for s in scored_runs.values())
    arms = {label.split(",")[0] for label in scored_arms}
    assert arms == {"SRT", "SRT+IQR", "SRT+IQR(vote)", "M-GRPO", "M-GRPO+IQR", "M-GRPO+IQR(vote)"}
