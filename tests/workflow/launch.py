"""Start Snakemake the way a user does, and read what a dry run plans.

Snakemake is started through the venv's own ``snakemake`` script, with a ``PATH`` that lacks
the venv and whose ``python`` fails (see :func:`user_path`): a rule that ran whatever
``python`` comes first on ``PATH`` would fail here, as it fails on a fresh machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from standins import install_wrong_python, path_without
from support import REPO

VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"


def user_path(tmp: Path) -> str:
    """PATH of a fresh shell: no venv on it, and a ``python`` that fails if a rule uses it."""
    install_wrong_python(tmp)
    return f"{tmp}:{path_without(VENV_BIN)}"


def run(
    cwd: Path, *args: str, path: str, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """``.venv/bin/snakemake ARGS`` in ``cwd`` with ``PATH=path``."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = path
    proc = subprocess.run(
        [str(SNAKEMAKE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def parse_plan(output: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            outputs = re.search(r"^\s+output: (.*)$", block, re.M)
            jobs.append((head.group(1), outputs.group(1).split(", ") if outputs else []))
    return jobs


def rules_of(jobs: list[tuple[str, list[str]]]) -> Counter:
    return Counter(rule for rule, _ in jobs)


def fresh_checkout(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored ones)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        src, dst = REPO / name, dest / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree, not yet committed
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(src.readlink())
        else:
            shutil.copy2(src, dst)
    return dest
