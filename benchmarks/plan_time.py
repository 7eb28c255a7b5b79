"""Time to plan the paper's DAG, as a cluster user starts it from the repository root:

    snakemake -n --profile slurm --configfile config/paper.yaml

    .venv/bin/python benchmarks/plan_time.py                # 3 repeats, median
    .venv/bin/python benchmarks/plan_time.py --repeat 5 --json results/benchmarks/plan_time.json

Goal (issue #6): at most 15 s on 2 cores. Wall time depends on what else the machine runs, so
the CPU time (user + system) is reported too. The orchestrator plans once per start, and every
SLURM job re-parses the workflow, so parsing must stay cheap. The profile deploys conda
environments, and even a dry run asks conda about them: without a conda on PATH this script
uses the tests' stand-in (tests/workflow/standins.py) and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
COMMAND = ["-n", "--profile", "slurm", "--configfile", "config/paper.yaml"]


def conda_path(tmp: Path) -> tuple[str, str]:
    """PATH for the dry run and which conda it uses (the stand-in if there is no conda)."""
    if shutil.which("conda"):
        return os.environ["PATH"], shutil.which("conda") or "conda"
    sys.path.insert(0, str(REPO / "tests" / "workflow"))
    from standins import install_standins

    install_standins(tmp / "bin", tmp / "state", REPO / "envs")
    (tmp / "bin" / "python").unlink()  # keep only what stands in for missing tools
    (tmp / "bin" / "python3").unlink()
    return f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", "stand-in (no conda on PATH)"


def plan_once(path: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system: what a busy machine cannot inflate) and jobs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [str(SNAKEMAKE), *COMMAND, "--quiet", "rules"],
        cwd=REPO,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(COMMAND)} failed:\n{proc.stdout}\n{proc.stderr}")
    total = re.search(r"^total\s+(\d+)$", proc.stdout + proc.stderr, re.M)
    return seconds, cpu, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, conda = conda_path(Path(tmp))
        runs = [plan_once(path) for _ in range(args.repeat)]
    seconds, cpu = [s for s, _, _ in runs], [c for _, c, _ in runs]
    result = {
        "command": "snakemake " + " ".join(COMMAND),
        "jobs": runs[0][2],
        "seconds_median": round(statistics.median(seconds), 2),
        "seconds": [round(s, 2) for s in seconds],
        "cpu_seconds_median": round(statistics.median(cpu), 2),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "conda": conda,
        "goal_seconds": 15,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
