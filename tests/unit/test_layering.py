"""Module boundaries: code shared by engines, evaluation and the toy lives outside any engine."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "mgrpo.evaluation.runner",
        "mgrpo.evaluation.backends",
        "mgrpo.toy.warmstart",
        "mgrpo.toy.build",
        "mgrpo.lm",
        "mgrpo.step_records",
        "mgrpo.tracking",
        "mgrpo.progress",
    ],
)
def test_shared_code_imports_no_engine(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "engines = sorted(m for m in sys.modules if m.startswith('mgrpo.engines'))\n"
        "assert not engines, engines"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
