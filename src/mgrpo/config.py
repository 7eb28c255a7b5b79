"""Workflow configuration: loading and validation against ``config/schema.yaml``.

A run's settings are resolved from a validated config by :mod:`mgrpo.settings`. Imported by the
Snakefile, so it must stay cheap: no torch, no transformers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def schema_validator(schema: Mapping[str, Any]) -> Any:
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
    validator = schema_validator(load_schema(schema_path))
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        raise ConfigError(f"config key '{_key_path(err.absolute_path)}': {err.message}")
    from mgrpo.settings import resolve_run_settings

    for name in cfg["runs"]:
        resolve_run_settings(cfg, name)  # cross-key checks per run
    select_on = cfg["report"]["select_on"]
    if select_on is not None and select_on not in cfg["benchmarks"]:
        raise ConfigError(
            f"config key 'report.select_on': {select_on!r} is not a benchmark "
            f"({sorted(cfg['benchmarks'])})"
        )
    _check_report(cfg)
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
        _check_benchmark_kind(bench, spec)
    if cfg["data"]["source"] == "hf":
        _check_hf_fields("data.hf", cfg["data"]["hf"])
    return cfg


def _check_report(cfg: Mapping[str, Any]) -> None:
    """Every run a table or figure names exists; paper rows exist in the published numbers; the
    label-free baseline lies after one full smoothing window."""
    from mgrpo.report.paper import load_paper_numbers

    def check_run(run: str, key: str) -> None:
        if run not in cfg["runs"]:
            raise ConfigError(f"config key '{key}': unknown run {run!r}")

    label_free = cfg["report"]["label_free"]
    if label_free["baseline_step"] < label_free["window"]:
        raise ConfigError(
            f"config key 'report.label_free.baseline_step': {label_free['baseline_step']} is "
            f"earlier than one full smoothing window (window={label_free['window']})"
        )
    published = None
    for table, spec in cfg["report"]["tables"].items():
        where = f"report.tables.{table}"
        if "paper" in spec:
            published = published or load_paper_numbers()
            if spec["paper"] not in published:
                raise ConfigError(
                    f"config key '{where}.paper': the paper has no {spec['paper']!r} "
                    f"({sorted(published)})"
                )
        for i, row in enumerate(spec["rows"]):
            if "runs" in row:
                for j, run in enumerate(row["runs"]):
                    check_run(run, f"{where}.rows.{i}.runs.{j}")
                _check_arm(cfg, row["runs"], f"{where}.rows.{i}.runs")
            else:
                check_run(row["run"], f"{where}.rows.{i}.run")
            if "paper_row" not in row:
                continue
            if "paper" not in spec:
                raise ConfigError(f"config key '{where}.rows.{i}.paper_row': needs {where}.paper")
            if row["pick"] == "best_and_final":
                raise ConfigError(
                    f"config key '{where}.rows.{i}.paper_row': a best_and_final row is two rows; "
                    "split it into a best and a final row"
                )
            printed = published[spec["paper"]].rows
            if row["paper_row"] not in printed:
                raise ConfigError(
                    f"config key '{where}.rows.{i}.paper_row': {spec['paper']} has rows "
                    f"1-{max(printed)}, not {row['paper_row']}"
                )
    for figure, spec in cfg["report"]["figures"].items():
        for i, run in enumerate(spec.get("runs", [])):
            check_run(run, f"report.figures.{figure}.runs.{i}")
        for p, panel in enumerate(spec.get("panels", [])):
            for i, run in enumerate(panel["runs"]):
                check_run(run, f"report.figures.{figure}.panels.{p}.runs.{i}")


def _check_arm(cfg: Mapping[str, Any], runs: list[str], key: str) -> None:
    """The runs of a table row averaged over seeds: distinct runs differing only in ``seed``."""
    from mgrpo.report.seeds import seed_groups
    from mgrpo.settings import resolve_run_settings

    if len(set(runs)) != len(runs):
        raise ConfigError(f"config key '{key}': a run is listed twice")
    settings = {run: resolve_run_settings(cfg, run) for run in runs}
    if len(seed_groups(settings)) != 1:
        raise ConfigError(
            f"config key '{key}': {runs} differ in more than their seed, so they are not the "
            "seeds of one arm"
        )
    seeds = [s["seed"] for s in settings.values()]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key '{key}': two runs have the same seed {seeds}")


def _check_benchmark_kind(bench: str, spec: Mapping[str, Any]) -> None:
    from mgrpo.hf_data import FORMAT_KINDS

    where = f"benchmarks.{bench}"
    kind = spec["kind"]
    if spec["source"] == "toy" and kind != "math":
        raise ConfigError(f"config key '{where}.kind': toy splits are math problems, not {kind!r}")
    if spec["source"] == "hf":
        fmt = spec["hf"]["format"]
        if FORMAT_KINDS[fmt] != kind:
            raise ConfigError(
                f"config key '{where}.kind': {kind!r} does not fit hf.format {fmt!r} "
                f"(which makes {FORMAT_KINDS[fmt]!r} problems)"
            )
        _check_hf_fields(f"{where}.hf", spec["hf"])
    if spec["lm_eval"] and kind == "code":
        raise ConfigError(
            f"config key '{where}.lm_eval': code benchmarks run in the project's sandbox "
            "(lm-eval's code tasks fetch their executor from the hub)"
        )


def _check_hf_fields(where: str, hf: Mapping[str, Any]) -> None:
    if hf["format"] != "math":
        return
    if not hf.get("question_field"):
        raise ConfigError(f"config key '{where}.question_field': required for format 'math'")
    if not hf.get("answer_field") and not hf.get("solution_field"):
        raise ConfigError(
            f"config key '{where}.answer_field': format 'math' needs answer_field or solution_field"
        )


def load_config(path: str | Path) -> dict:
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def model_key(model: str) -> str:
    """File-system-safe name of a base model: ``Qwen/Qwen3-4B-Base`` -> ``Qwen--Qwen3-4B-Base``."""
    return model.replace("/", "--")
