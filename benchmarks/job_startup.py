"""Fixed cost of a workflow job: ``mgrpo <command> --help`` and a minimal job of every rule.

    python benchmarks/job_startup.py                       # 3 repeats each, minimum reported
    python benchmarks/job_startup.py --repeats 5 --json results/benchmarks/job_startup.json

Goal (issue #19): at most 1.5 s of fixed cost per job on 2 cores. Each rule's command runs as
the workflow runs it (``python -m mgrpo ...`` in a fresh interpreter) on inputs so small that
the work itself is a few hundredths of a second (a 1-layer toy model, one training step of 8
rollouts, 8 evaluation problems), so its wall time is its fixed cost: interpreter start,
imports, loading. Each command is timed ``--repeats`` times and the minimum kept (the machine
may be shared). Then every command runs once more under ``python -X importtime`` and the
benchmark lists which heavy packages it loaded and where its import time went (self time
summed per top-level package, so the list does not depend on which module imported first).
Last, the commands a local workflow hands to its job server (``mgrpo.jobserver``: train and
eval) are timed again as forks of a server that has done their imports once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

GOAL_SECONDS = 1.5
# Packages a job should load only if it needs them (reported per job as loaded or not).
WATCHED = ("torch", "transformers", "torch._dynamo", "sklearn", "pandas", "matplotlib")

# Inputs a few times smaller than the tests' tiny toy: the job's work is negligible.
TINY = {
    "data": {
        "toy": {
            "seed": 0,
            "splits": {"sft": 64, "train": 16, "test": 8, "hard": 8},
            "levels": {"sft": [1], "train": [1], "test": [1], "hard": [3]},
        }
    },
    "toy_model": {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "sft_steps": 2,
        "sft_batch_size": 8,
        "threads": 1,
    },
    "training": {
        "rollouts": 4,
        "prompts_per_step": 2,
        "max_new_tokens": 8,
        "steps": 1,
        "chunk_steps": 1,
        "answer_equivalence": "exact",
    },
    "runs": {"srt": {"method": "srt"}, "mgrpo": {"method": "mgrpo"}},
    "benchmarks": {"test": {"source": "toy", "split": "test", "max_new_tokens": 8}},
}


def rule_commands(work: Path) -> dict[str, list[str]]:
    """One command line per workflow rule, as the rules write them (rules/*.smk)."""
    from mgrpo.config import validate_config
    from mgrpo.settings import resolve_run_settings

    config = validate_config(json.loads(json.dumps(TINY)))
    runs = {name: resolve_run_settings(config, name) for name in config["runs"]}
    data, model = work / "data", work / "model"
    splits = config["data"]["toy"]["splits"]
    spec = json.dumps({**config["benchmarks"]["test"], **config["evaluation"]}, sort_keys=True)
    report = json.dumps(
        {
            "runs": {n: {**s.to_dict(), "steps": s.steps} for n, s in runs.items()},
            "benchmarks": list(config["benchmarks"]),
            "report": config["report"],
        },
        sort_keys=True,
    )
    evals = [str(work / f"eval/{n}/step{s}/test.json") for n in runs for s in (0, 1)]
    metrics = [str(work / f"runs/{n}/metrics/to_step1.jsonl") for n in runs]
    tables = work / "tables"
    # In dependency order: each command's inputs are earlier commands' outputs.
    commands = {
        "toy-data": [
            "toy-data",
            "--spec",
            json.dumps(config["data"]["toy"], sort_keys=True),
            *(f"--out={s}={data / s}.parquet" for s in splits),
        ],
        "toy-model": [
            "toy-model",
            "--spec",
            json.dumps(config["toy_model"], sort_keys=True),
            "--sft",
            str(data / "sft.parquet"),
            "--out",
            str(model),
        ],
    }
    for name, settings in runs.items():
        out = work / f"runs/{name}"
        commands[f"train ({name})"] = [
            "train",
            "--settings",
            settings.to_json(),
            "--base-model",
            str(model),
            "--train-data",
            str(data / "train.parquet"),
            "--start=0",
            "--end=1",
            "--init",
            str(model),
            "--checkpoint",
            str(out / "checkpoints/step1"),
            "--metrics",
            str(out / "metrics/to_step1.jsonl"),
            "--rollouts",
            str(out / "rollouts/to_step1.parquet"),
            "--resume-dir",
            str(out / "resume/to_step1"),
            "--tensorboard",
            str(out / "tensorboard"),
        ]
    base = work / "eval/base/toy"
    commands["eval (base model)"] = [
        "eval",
        *("--spec", spec, "--model", str(model), "--problems", str(data / "test.parquet")),
        *("--out", str(base / "test.json"), "--records", str(base / "test.samples.parquet")),
        *("--run", "base", "--step", "0", "--benchmark", "test"),
    ]
    for name in runs:
        step1, step0 = work / f"eval/{name}/step1", work / f"eval/{name}/step0"
        commands[f"eval ({name} step 1)"] = [
            "eval",
            *("--spec", spec, "--model", str(work / f"runs/{name}/checkpoints/step1/policy")),
            *("--problems", str(data / "test.parquet"), "--out", str(step1 / "test.json")),
            *("--records", str(step1 / "test.samples.parquet"), "--run", name),
            *("--step", "1", "--benchmark", "test"),
            *("--tensorboard", str(work / f"runs/{name}/tensorboard")),
        ]
        commands[f"copy-eval ({name})"] = [
            "copy-eval",
            *("--src", str(base / "test.json"), "--src-records"),
            str(base / "test.samples.parquet"),
            *("--out", str(step0 / "test.json"), "--records", str(step0 / "test.samples.parquet")),
            *("--run", name, "--tensorboard", str(work / f"runs/{name}/tensorboard")),
        ]
    commands["report collapse"] = [
        *("report", "collapse", "--config", report, "--evals", *evals),
        *("--metrics", *metrics, "--out", str(tables / "collapse.csv")),
    ]
    commands["report tables"] = [
        *("report", "tables", "--config", report, "--evals", *evals),
        *("--collapse", str(tables / "collapse.csv"), "--out-dir", str(tables)),
    ]
    commands["report figures"] = [
        *("report", "figures", "--config", report, "--evals", *evals, "--metrics", *metrics),
        *("--collapse", str(tables / "collapse.csv"), "--out-dir", str(work / "figures")),
    ]
    return commands


HELP_COMMANDS = {
    "--help": ["--help"],
    **{
        f"{c} --help": [*c.split(), "--help"]
        for c in (
            "validate",
            "toy-data",
            "hf-data",
            "toy-model",
            "train",
            "eval",
            "copy-eval",
            "report collapse",
            "report tables",
            "report figures",
        )
    },
}


def job_environment() -> dict[str, str]:
    """What a workflow job sees (rules/common.smk): the checkout's src first, no hub access."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MGRPO_TENSORBOARD="1")
    return env


def run(
    argv: list[str], cwd: Path, *, importtime: bool = False, env: dict[str, str] | None = None
) -> tuple[float, str]:
    """Run ``python -m mgrpo argv``; its wall time and stderr. A failing job is an error."""
    flags = ["-X", "importtime"] if importtime else []
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *flags, "-m", "mgrpo", *argv],
        cwd=cwd,
        env=env or job_environment(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"mgrpo {' '.join(argv[:2])} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stderr


def import_profile(stderr: str, top: int) -> dict[str, object]:
    """``-X importtime`` output: watched packages loaded, and self time per top-level package."""
    loaded, per_package = set(), defaultdict(int)
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, _cumulative, name = line[len("import time:") :].split("|")
        name = name.strip()
        loaded.add(name)
        per_package[name.split(".")[0]] += int(self_us)
    slowest = sorted(per_package.items(), key=lambda kv: -kv[1])[:top]
    return {
        "loaded": {package: package in loaded for package in WATCHED},
        "modules": len(loaded),
        "import_seconds": round(sum(per_package.values()) / 1e6, 3),
        "slowest_packages": {name: round(us / 1e6, 3) for name, us in slowest},
    }


def on_job_server(commands: dict[str, list[str]], work: Path, repeats: int) -> dict[str, float]:
    """The warm commands again, forked from a job server as a local workflow runs them
    (mgrpo.jobserver; the rules' jobs inherit the server's environment and directory, and
    Snakemake sets their thread counts)."""
    from mgrpo import jobserver

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(job_environment())
    os.chdir(work)
    server = jobserver.start(work / "job_server.log")
    try:
        env = {**os.environ, **dict.fromkeys(jobserver.THREAD_ENV, "1")}
        run(["eval", "--help"], work, env=env)  # waits for the server to finish importing
        timed = {}
        for name, argv in commands.items():
            if argv[0] in jobserver.WARM_COMMANDS:
                timed[name] = round(min(run(argv, work, env=env)[0] for _ in range(repeats)), 3)
                print(f"{name} on the job server: {timed[name]:.2f} s", flush=True)
        served = (work / "job_server.log").read_text().count(" exit 0 ")
        if served != 1 + repeats * len(timed):
            raise RuntimeError(f"the job server ran {served} jobs: see {work}/job_server.log")
        return timed
    finally:
        server.stop()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per command (min)")
    parser.add_argument("--top", type=int, default=8, help="slowest packages listed per job")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    result: dict[str, dict] = {"help": {}, "jobs": {}}
    with tempfile.TemporaryDirectory(prefix="mgrpo-startup-") as tmp:
        work = Path(tmp)
        for name, argv in HELP_COMMANDS.items():
            result["help"][name] = round(min(run(argv, work)[0] for _ in range(args.repeats)), 3)
            print(f"mgrpo {name}: {result['help'][name]:.2f} s", flush=True)
        for name, argv in rule_commands(work).items():
            seconds = min(run(argv, work)[0] for _ in range(args.repeats))
            profile = import_profile(run(argv, work, importtime=True)[1], args.top)
            result["jobs"][name] = {"seconds": round(seconds, 3), **profile}
            heavy = [p for p, on in profile["loaded"].items() if on]
            print(
                f"{name}: {seconds:.2f} s (imports {profile['import_seconds']:.2f} s under "
                f"-X importtime; loads {', '.join(heavy) or 'none of ' + ', '.join(WATCHED)})",
                flush=True,
            )
            print(
                "    slowest: "
                + ", ".join(f"{p} {s:.2f}" for p, s in profile["slowest_packages"].items()),
                flush=True,
            )
        result["job_server"] = on_job_server(rule_commands(work), work, args.repeats)
    worst = max(job["seconds"] for job in result["jobs"].values())
    # What a local workflow's job costs: warm commands on the job server, the others alone.
    in_workflow = {
        name: result["job_server"].get(name, job["seconds"]) for name, job in result["jobs"].items()
    }
    over = {name: seconds for name, seconds in in_workflow.items() if seconds > GOAL_SECONDS}
    result.update(
        goal_seconds=GOAL_SECONDS,
        slowest_job_seconds=worst,
        workflow_job_seconds=in_workflow,
        repeats=args.repeats,
    )
    print(f"slowest job {worst:.2f} s in its own process (goal {GOAL_SECONDS} s)")
    print(
        "over the goal in a local workflow (job server on): "
        + (", ".join(f"{name} {seconds:.2f} s" for name, seconds in over.items()) or "none")
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
