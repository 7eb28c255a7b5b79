"""Fixtures of the workflow tests: a fresh checkout of the repository to run Snakemake in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from launch import fresh_checkout, snakemake, tiny_workflow_config, write_config


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a fresh clone has it; tests run Snakemake from its root as users do.
    Shared: tests must not change it (copy it with :func:`fresh_checkout` to edit files)."""
    return fresh_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny workflow run to completion once; tests copy it before changing anything."""
    workdir = tmp_path_factory.mktemp("workflow") / "done"
    write_config(workdir, tiny_workflow_config())
    snakemake(workdir)
    return workdir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy, symlinks=True)  # copy2 keeps modification times
    return copy
