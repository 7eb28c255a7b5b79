"""Fixtures of the workflow tests: a fresh checkout of the repository to run Snakemake in."""

from __future__ import annotations

from pathlib import Path

import pytest
from launch import fresh_checkout


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as a fresh clone has it; tests run Snakemake from its root as users do.
    Shared: tests must not change it (copy it with :func:`fresh_checkout` to edit files)."""
    return fresh_checkout(tmp_path_factory.mktemp("checkout"))
