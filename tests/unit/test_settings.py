"""RunSettings: resolved once, validated, the run identity and its JSON round trip."""

from __future__ import annotations

import json

import pytest
from support import run_settings, tiny_config

from mgrpo.algorithm.methods import method_from_settings
from mgrpo.config import ConfigError, load_schema, validate_config
from mgrpo.settings import RunSettings, resolve_run_settings

MINIMAL = {"runs": {"a": {}}, "benchmarks": {"t": {"source": "toy", "split": "test"}}}


def resolve(training: dict | None = None, run: dict | None = None) -> RunSettings:
    config = validate_config({**MINIMAL, "training": training or {}, "runs": {"a": run or {}}})
    return resolve_run_settings(config, "a")


def test_run_overrides_shared_training_settings() -> None:
    settings = resolve({"lr": 2e-5, "rollouts": 16}, {"rollouts": 8})
    assert (settings["lr"], settings["rollouts"], settings.name) == (2e-5, 8, "a")
    assert settings["run"] == "a"


def test_identity_is_every_setting_but_the_run_length() -> None:
    settings = resolve({"steps": 300, "chunk_steps": 100})
    run_keys = set(load_schema()["$defs"]["run_settings"]["properties"])
    assert set(settings) == run_keys - {"steps"} | {"run"}
    assert settings.steps == 300
    assert settings["schedule_steps"] == 300  # an unset horizon follows the run length
    assert settings.checkpoint_steps == [100, 200, 300]


def test_fingerprint_ignores_steps_only() -> None:
    base = {"steps": 100, "chunk_steps": 50, "schedule_steps": 400}
    a, longer = resolve(base), resolve({**base, "steps": 200})
    assert a.fingerprint == longer.fingerprint and a == longer
    assert resolve({**base, "lr": 3e-6}).fingerprint != a.fingerprint
    assert a.replace(seed=1).fingerprint != a.fingerprint
    # A run of another name is another run, even with equal settings.
    other = resolve_run_settings(tiny_config("b"), "b")
    assert other.fingerprint != resolve_run_settings(tiny_config("a"), "a").fingerprint


def test_json_round_trip_is_exact() -> None:
    settings = run_settings(method="mgrpo", rollouts=8)
    back = RunSettings.from_json(settings.to_json())
    assert back == settings and back.fingerprint == settings.fingerprint
    assert back.to_json() == settings.to_json()
    assert back.method == settings.method == method_from_settings(dict(settings))
    assert back.steps is None  # a training job is told its chunk bounds, not the run length
    with pytest.raises(ValueError, match="without the run length"):
        _ = back.checkpoint_steps
    # The workflow's rerun trigger is this exact text: keys sorted, nothing else in it.
    assert settings.to_json() == json.dumps(settings.to_dict(), sort_keys=True)


def test_settings_are_read_only() -> None:
    settings = run_settings()
    with pytest.raises(TypeError):
        settings.identity["lr"] = 1.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.steps = 8  # type: ignore[misc]
    assert settings["adam_betas"] == (0.9, 0.999)  # lists are frozen too
    assert settings.to_dict()["adam_betas"] == [0.9, 0.999]


def test_method_is_derived_from_the_settings() -> None:
    settings = run_settings(method="mgrpo", rollouts=8)
    assert (settings.method.policy_rollouts, settings.method.momentum_rollouts) == (6, 2)
    assert settings.method.label == "M-GRPO+IQR"
    assert settings.replace(iqr=False).method.label == "M-GRPO"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1.0}, r"run 'run' settings key 'lr'"),
        ({"engine": "megatron"}, r"run 'run' settings key 'engine'"),
        ({"momentum_rollouts": 4}, r"run 'run' settings key 'momentum_rollouts'"),  # N = G
        ({"schedule_steps": None}, r"run 'run' settings key 'schedule_steps'"),
        ({"nonsense": 1}, r"unknown key\(s\) \['nonsense'\]"),
        ({"steps": 4}, r"unknown key\(s\) \['steps'\]"),
        ({"run": ""}, r"settings key 'run'"),
    ],
)
def test_from_json_refuses_bad_settings(change: dict, message: str) -> None:
    values = {**run_settings(method="mgrpo").to_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        RunSettings.from_json(json.dumps(values))


def test_from_json_names_missing_keys_and_bad_json() -> None:
    values = run_settings().to_dict()
    del values["lr"], values["run"]
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['lr', 'run'\]"):
        RunSettings.from_json(json.dumps(values))
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunSettings.from_json("{")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        RunSettings.from_json("[1]")


def test_unknown_run_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"config key 'runs.zz': no such run"):
        resolve_run_settings(validate_config(MINIMAL), "zz")
