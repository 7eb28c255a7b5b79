"""Workflow configuration: validation against ``config/schema.yaml`` and run resolution.

Imported by the Snakefile, so it must stay cheap: no torch, no transformers.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
# The run length is not part of a run's identity: raising it appends chunks, it does not
# change the ones already trained (the LR horizon is `schedule_steps`).
NOT_IDENTITY = ("steps",)


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator that also fills in ``default`` values while validating."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    cls = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    return cls(schema)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: Mapping[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Validate ``config``, fill in defaults and check cross-key rules; returns a new dict."""
    cfg = copy.deepcopy(dict(config))
    validator = _validator(load_schema(schema_path))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config key '{_key_path(err.absolute_path)}': {err.message}")
    for name in cfg["runs"]:
        resolve_run(cfg, name)  # cross-key checks per run
    select_on = cfg["report"]["select_on"]
    if select_on is not None and select_on not in cfg["benchmarks"]:
        raise ConfigError(
            f"config key 'report.select_on': {select_on!r} is not a benchmark "
            f"({sorted(cfg['benchmarks'])})"
        )
    label_free = cfg["report"]["label_free"]
    if label_free["baseline_step"] < label_free["window"]:
        raise ConfigError(
            f"config key 'report.label_free.baseline_step': {label_free['baseline_step']} is "
            f"earlier than one full smoothing window (window={label_free['window']})"
        )
    for table, spec in cfg["report"]["tables"].items():
        for i, row in enumerate(spec["rows"]):
            if row["run"] not in cfg["runs"]:
                raise ConfigError(
                    f"config key 'report.tables.{table}.rows.{i}.run': unknown run {row['run']!r}"
                )
    needed_for = {"toy": "split", "file": "path", "hf": "hf"}
    data_needs = {"toy": None, "file": "train_path", "hf": "hf"}[cfg["data"]["source"]]
    if data_needs is not None and data_needs not in cfg["data"]:
        raise ConfigError(
            f"config key 'data.{data_needs}': required for source {cfg['data']['source']!r}"
        )
    for bench, spec in cfg["benchmarks"].items():
        needed = needed_for[spec["source"]]
        if needed not in spec:
            raise ConfigError(
                f"config key 'benchmarks.{bench}.{needed}': required for source {spec['source']!r}"
            )
        if spec["source"] == "toy" and spec["split"] not in cfg["data"]["toy"]["splits"]:
            raise ConfigError(
                f"config key 'benchmarks.{bench}.split': no toy split {spec['split']!r}"
            )
    return cfg


def load_config(path: str | Path) -> dict:
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def resolve_run(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A run's full settings: ``training`` overlaid with ``runs[name]``, plus its name.

    Raises :class:`ConfigError` for settings that are individually valid but not together.
    """
    if name not in config["runs"]:
        raise ConfigError(f"config key 'runs.{name}': no such run ({sorted(config['runs'])})")
    settings = {**config["training"], **config["runs"][name], "run": name}
    where = f"runs.{name}"
    if settings["steps"] % settings["chunk_steps"]:
        raise ConfigError(
            f"config key '{where}.chunk_steps': {settings['chunk_steps']} does not divide "
            f"steps={settings['steps']}"
        )
    horizon = settings["schedule_steps"]
    if (
        horizon is not None
        and settings["steps"] > horizon
        and settings["lr_schedule"] != "constant"
    ):
        raise ConfigError(
            f"config key '{where}.steps': {settings['steps']} exceeds schedule_steps={horizon}, "
            f"after which the {settings['lr_schedule']} schedule has decayed to its floor"
        )
    from mgrpo.algorithm.methods import method_from_settings

    try:
        method_from_settings(settings)
    except ValueError as err:
        key, _, message = str(err).partition(": ")
        raise ConfigError(f"config key '{where}.{key}': {message}") from None
    return settings


def run_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that define what a run's checkpoints contain (everything but its length)."""
    identity = {k: v for k, v in settings.items() if k not in NOT_IDENTITY}
    if identity.get("schedule_steps") is None:
        identity["schedule_steps"] = settings["steps"]
    return identity


def model_key(model: str) -> str:
    """File-system-safe name of a base model: ``Qwen/Qwen3-4B-Base`` -> ``Qwen--Qwen3-4B-Base``."""
    return model.replace("/", "--")


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Short stable hash of a settings mapping (canonical JSON)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_steps(settings: Mapping[str, Any]) -> list[int]:
    """Chunk ends of a run: ``chunk_steps, 2*chunk_steps, ..., steps``."""
    return list(range(settings["chunk_steps"], settings["steps"] + 1, settings["chunk_steps"]))
