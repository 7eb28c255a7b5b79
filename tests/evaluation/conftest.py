"""Fixtures of the sandbox tests: what this machine allows, and a parent that must stay unharmed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import LIMITS, SECRET_NAME, leftover_jails

from mgrpo.evaluation.sandbox import run_program
from mgrpo.evaluation.sandbox_cgroup import layout


@pytest.fixture(scope="session")
def isolation() -> dict:
    result = run_program("x = 1", {"mode": "assert", "cases": ["assert x == 1"]}, LIMITS)
    assert result.status == "passed", result
    return result.isolation


@pytest.fixture
def needs_namespaces(isolation: dict) -> None:
    if not isolation.get("namespaces") or not isolation.get("read_only_fs"):
        pytest.skip(f"this machine does not allow new namespaces here: {isolation}")


@pytest.fixture
def needs_cgroup() -> None:
    """The machine lets this process make child cgroups (asked of the machine, not the sandbox)."""
    found, why = layout()
    if found is None:
        pytest.skip(f"this machine gives the sandbox no cgroup: {why}")


@pytest.fixture
def unharmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A secret in this process's environment and a file of its own; both intact afterwards."""
    secret = "s3cret-" + os.urandom(8).hex()
    monkeypatch.setenv(SECRET_NAME, secret)
    own = tmp_path / "own.txt"
    own.write_text("mine")
    cwd = os.getcwd()
    yield tmp_path
    assert os.environ[SECRET_NAME] == secret and own.read_text() == "mine"
    assert os.getcwd() == cwd
    assert leftover_jails() == []
