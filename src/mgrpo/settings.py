"""A run's settings, resolved and validated once: :class:`RunSettings`.

The workflow resolves every run from the config with :func:`resolve_run_settings` (``training``
overlaid with ``runs.<name>``, defaults filled in by the schema), passes it to each training job
as JSON (``mgrpo train --settings``) and reads it back with :meth:`RunSettings.from_json`, which
validates it again. Everything else (the engines, evaluation labels, the report) reads settings
from this object: the method, the run identity and its fingerprint are derived here only.

A run's *identity* is every setting except its length ``steps``, with ``schedule_steps`` (the LR
horizon) filled in from ``steps`` when unset: raising ``steps`` appends chunks, changing anything
else is a different run. The fingerprint of the identity names the run's checkpoints and is the
workflow's rerun trigger.

Imported by the Snakefile, so it must stay cheap: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mgrpo.algorithm.methods import Method, method_from_settings
from mgrpo.config import ConfigError, load_schema, schema_validator

# The run length is not part of a run's identity (see the module docstring).
NOT_IDENTITY = ("steps",)
# The verl engine trains on a node's GPUs (auto, cuda) or takes its CPU path (docs/verl-engine.md).
VERL_DEVICES = ("auto", "cuda", "cpu")


def config_key(config: Mapping[str, Any], name: str, key: str) -> str:
    """Where run ``name``'s ``key`` is set: ``runs.<name>.<key>`` if the run overrides it."""
    return f"runs.{name}.{key}" if key in config["runs"][name] else f"training.{key}"


def _frozen(value: Any) -> Any:
    """Lists become tuples so a settings object cannot be changed through a value."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _thawed(value: Any) -> Any:
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


def _fingerprint(identity: Mapping[str, Any]) -> str:
    """Short stable hash of the identity (canonical JSON; tuples serialise as lists)."""
    blob = json.dumps(dict(identity), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _method(values: Mapping[str, Any], key: Callable[[str], str]) -> Method:
    """The run's :class:`Method`; a cross-key error names ``key(setting)``."""
    try:
        return method_from_settings(dict(values))
    except ValueError as err:
        setting, _, message = str(err).partition(": ")
        raise ConfigError(f"{key(setting)}: {message}") from None


@dataclass(frozen=True, eq=False)
class RunSettings(Mapping[str, Any]):
    """One run's resolved settings: read values as ``settings["lr"]``.

    The mapping is the run's identity (``run`` and every setting but ``steps``), read-only.
    ``steps`` is known where the run was resolved from the config and ``None`` in a training
    job, which is told its chunk bounds instead. Settings compare equal when their identities
    do; the :class:`Method` is derived from them on construction.
    """

    identity: Mapping[str, Any]
    steps: int | None = None
    method: Method = field(init=False, repr=False)

    def __post_init__(self) -> None:
        identity = MappingProxyType({k: _frozen(v) for k, v in self.identity.items()})
        object.__setattr__(self, "identity", identity)
        where = f"run {identity.get('run')!r} settings key"
        object.__setattr__(self, "method", _method(identity, lambda key: f"{where} '{key}'"))

    @property
    def name(self) -> str:
        return self.identity["run"]

    @property
    def fingerprint(self) -> str:
        """Hash of the identity: names the run's checkpoints and triggers reruns."""
        return _fingerprint(self.identity)

    @property
    def checkpoint_steps(self) -> list[int]:
        """Chunk ends of the run: ``chunk_steps, 2 * chunk_steps, ..., steps``."""
        if self.steps is None:
            raise ValueError(f"run {self.name!r}: settings read without the run length `steps`")
        return list(range(self["chunk_steps"], self.steps + 1, self["chunk_steps"]))

    def __getitem__(self, key: str) -> Any:
        return self.identity[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.identity)

    def __len__(self) -> int:
        return len(self.identity)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def to_dict(self) -> dict[str, Any]:
        """The identity as plain JSON-ready values (what :meth:`from_dict` reads back)."""
        return {k: _thawed(v) for k, v in self.identity.items()}

    def to_json(self) -> str:
        """Canonical JSON of the identity: the ``--settings`` of ``mgrpo train``."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], steps: int | None = None) -> RunSettings:
        """Validate a complete identity (as :meth:`to_dict` writes it) against the schema."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"run settings: expected a JSON object, got {type(values).__name__}")
        schema = load_schema()
        known = set(schema["$defs"]["run_settings"]["properties"]) - set(NOT_IDENTITY)
        missing = sorted((known | {"run"}) - set(values))
        if missing:
            raise ConfigError(f"run settings: missing key(s) {missing}")
        unknown = sorted(set(values) - known - {"run"})
        if unknown:
            raise ConfigError(f"run settings: unknown key(s) {unknown}")
        name = values["run"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"run settings key 'run': expected a run name, got {name!r}")
        validator = schema_validator({"$defs": schema["$defs"], "$ref": "#/$defs/run_settings"})
        settings = {k: v for k, v in values.items() if k != "run"}
        errors = sorted(validator.iter_errors(settings), key=lambda e: list(e.absolute_path))
        if errors:
            path = ".".join(str(p) for p in errors[0].absolute_path)
            raise ConfigError(f"run {name!r} settings key '{path}': {errors[0].message}")
        if values["schedule_steps"] is None:
            raise ConfigError(f"run {name!r} settings key 'schedule_steps': must be resolved")
        return cls(values, steps)

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"run settings: not valid JSON ({err})") from None
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> RunSettings:
        """A validated copy with some settings changed (``steps`` is kept)."""
        return RunSettings.from_dict({**self.to_dict(), **changes}, steps=self.steps)


def resolve_run_settings(config: Mapping[str, Any], name: str) -> RunSettings:
    """Run ``name`` of a validated config: ``training`` overlaid with ``runs[name]``.

    Raises :class:`ConfigError`, naming the config key, for settings that are individually
    valid but not together.
    """
    if name not in config["runs"]:
        raise ConfigError(f"config key 'runs.{name}': no such run ({sorted(config['runs'])})")
    values = {**config["training"], **config["runs"][name], "run": name}

    def key(setting: str) -> str:
        return f"config key '{config_key(config, name, setting)}'"

    steps, chunk = values["steps"], values["chunk_steps"]
    if steps % chunk:
        raise ConfigError(f"{key('chunk_steps')}: {chunk} does not divide steps={steps}")
    horizon = values["schedule_steps"]
    if horizon is not None and steps > horizon and values["lr_schedule"] != "constant":
        raise ConfigError(
            f"{key('steps')}: {steps} exceeds schedule_steps={horizon}, "
            f"after which the {values['lr_schedule']} schedule has decayed to its floor"
        )
    _method(values, key)  # cross-key errors name the config key
    if values["engine"] == "verl" and values["device"] not in VERL_DEVICES:
        raise ConfigError(
            f"{key('device')}: {values['device']!r} with engine 'verl'; it takes "
            f"{' | '.join(VERL_DEVICES)} (the GPUs of one node are `gpus`, not a device index)"
        )
    identity = {k: v for k, v in values.items() if k not in NOT_IDENTITY}
    if identity["schedule_steps"] is None:
        identity["schedule_steps"] = steps
    return RunSettings(identity, steps)
