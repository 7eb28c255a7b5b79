"""Where a CPU paper-path run's time went: each phase of each chunk, and M-GRPO's step over SRT's
under each rollout scheme (mgrpo_iqr: split, mgrpo_iqr_sequential: sequential).

    .venv-verl-cpu/bin/snakemake --cores 2 --configfile config/verl-cpu.yaml   # the run
    .venv-verl-cpu/bin/python benchmarks/verl_cpu_phases.py [RESULTS]          # default results/
    .venv-verl-cpu/bin/python benchmarks/verl_cpu_phases.py --train DIR [--steps 6]

``--train DIR`` first trains the three runs of ``config/verl-cpu.yaml`` (SRT, M-GRPO+IQR under
the split scheme, M-GRPO+IQR under the sequential scheme) for ``--steps`` steps in one chunk
each, one after the other in one workflow run in DIR, without evaluation, kill or scheme check,
then reports on DIR/results: the measurement behind docs/verl-engine.md's tables.

Reads only what the run wrote: each chunk's log (the ``[mgrpo] <time> <event>`` marks of the
launcher, the task runner and the worker), each chunk's Snakemake benchmark file (the job's wall
time) and the runs' TensorBoard curves (verl's ``timing_s/*`` of every step). A chunk's first
step includes one-off costs (the first forward pass of the actor builds its kernels); the
"later steps" columns are the steady state. These are CPU figures on the run's machine: they
show where a step's time goes on this path, not what a GPU would take.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

MARK = re.compile(r"\[mgrpo\] (\d+\.\d+) (.+?)\s*$")
FIRST_STEP = re.compile(r"step:(\d+) - ")

# (label, TensorBoard tag) of the per-step phases, in the order a step runs them
STEP_PHASES = (
    ("push pi_q into every replica (sequential)", "timing_s/update_weights_policy"),
    ("push pi_q and pi_k, one per replica (split)", "timing_s/update_weights_split"),
    ("generate M (policy)", "timing_s/gen_policy/agent_loop/generate_sequences/max"),
    ("push pi_k into every replica (sequential)", "timing_s/update_weights_momentum"),
    ("generate N (momentum)", "timing_s/gen_momentum/agent_loop/generate_sequences/max"),
    ("all generation, pushes between included (wall)", "timing/sample_time"),
    ("log-prob pass (G rows)", "timing_s/old_log_prob"),
    ("reference + update", "timing_s/update_actor"),
    ("EMA", "timing_s/momentum_ema"),
    ("checkpoint", "timing_s/save_checkpoint"),
    ("whole step", "timing/step_time"),
)


def chunk_phases(log: Path, wall: float | None) -> dict[str, float]:
    """Seconds of a chunk's start-up phases, from its log's marks."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if found := MARK.search(line):
            marks.setdefault(found.group(2), float(found.group(1)))
    phases = {
        "Ray + task runner start": marks["task runner up"] - marks["chunk start"],
        "FSDP actor + reference built": marks["actor and reference built"]
        - marks["task runner up"],
        "vLLM replica + agent loop start": marks["workers up"] - marks["actor and reference built"],
        "steps": marks["trainer done"] - marks["workers up"],
        "export + assembly": marks["checkpoint assembled"] - marks["trainer done"],
    }
    if wall is not None:
        phases["job wall (imports, data, all)"] = wall
    return phases


def first_step(log: Path) -> int:
    """The first step a chunk's (last) job trained: verl's console line ``step:N - ...``."""
    found = FIRST_STEP.search(log.read_text(errors="replace"))
    return int(found.group(1)) if found else -1


def job_wall(tsv: Path) -> float | None:
    if not tsv.exists():
        return None
    header, values = tsv.read_text().splitlines()[:2]
    return float(dict(zip(header.split("\t"), values.split("\t"), strict=False))["s"])


def step_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    from support import tensorboard_scalars

    curves = tensorboard_scalars(run_dir / "tensorboard" / "train")
    return {tag: dict(points) for tag, points in curves.items()}


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def train(directory: Path, steps: int) -> Path:
    """The three runs of config/verl-cpu.yaml, one chunk of ``steps`` each, trained in
    ``directory`` by the workflow (training jobs only); returns its results/."""
    import subprocess

    import yaml

    config = yaml.safe_load((REPO / "config" / "verl-cpu.yaml").read_text())
    config["training"].update(steps=steps, chunk_steps=steps, schedule_steps=steps)
    for run in config["runs"].values():
        run.pop("verl_overrides", None)  # the scheme check is an audit, not part of a step
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run(
        [
            str(Path(sys.executable).with_name("snakemake")),
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(directory),
            "--configfile", str(directory / "config.yaml"), "--cores", "2",
            "--until", "train_chunk",
        ],
        check=True,
    )  # fmt: skip
    return directory / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--train", type=Path, metavar="DIR", help="train the runs first, in DIR")
    parser.add_argument("--steps", type=int, default=6, help="steps per run with --train")
    args = parser.parse_args()
    results: Path = train(args.train, args.steps) if args.train else args.results
    runs = sorted(p.name for p in (results / "runs").iterdir() if p.is_dir())
    step_times: dict[str, list[float]] = {}
    for run in runs:
        curves = step_curves(results / "runs" / run)
        logs = sorted((results / "logs" / "runs" / run).glob("train_to_step*.log"))
        ends = sorted(int(p.stem.removeprefix("train_to_step")) for p in logs)
        firsts = {first_step(log) for log in logs}  # a resumed chunk's first is its resume's
        print(f"\n## {run}\n\n| chunk phase | " + " | ".join(f"to step {e}" for e in ends) + " |")
        print("|---|" + "---|" * len(ends))
        per_chunk = [
            chunk_phases(
                results / "logs" / "runs" / run / f"train_to_step{e}.log",
                job_wall(results / "benchmarks" / "runs" / run / f"train_to_step{e}.tsv"),
            )
            for e in ends
        ]
        for phase in per_chunk[0]:
            cells = " | ".join(f"{c.get(phase, float('nan')):.1f}" for c in per_chunk)
            print(f"| {phase} | {cells} |")
        print("\n| step phase (s) | first step of a chunk | later steps |\n|---|---|---|")
        for label, tag in STEP_PHASES:
            values = curves.get(tag)
            if not values:
                continue
            first = [v for s, v in values.items() if s in firsts]
            later = [v for s, v in values.items() if s not in firsts]
            print(f"| {label} | {mean(first):.3f} | {mean(later):.3f} |")
        steps = curves.get("timing/step_time", {})
        step_times[run] = [v for s, v in steps.items() if s not in firsts]
    if "srt" in step_times:
        print("\n| run | scheme | later steps (s) | / SRT |\n|---|---|---|---|")
        srt = mean(step_times["srt"])
        for run, times in step_times.items():
            scheme = "sequential" if run.endswith("sequential") or run == "srt" else "split"
            print(f"| {run} | {scheme} | {mean(times):.2f} | {mean(times) / srt:.2f} |")


if __name__ == "__main__":
    main()
