# Shared state and input functions. Keep this cheap: every SLURM job re-parses it (no torch).
import importlib.util
import json
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir).parent / "src")
sys.path.insert(0, SRC)
from mgrpo import jobserver
from mgrpo.config import model_key, validate_config
from mgrpo.run_layout import read_manifest
from mgrpo.settings import resolve_run_settings
from mgrpo.report import (
    FIGURES,
    LABEL_FREE_FIGURES,
    LABEL_FREE_TABLES,
    PAPER_NUMBERS,
    TABLE_FORMATS,
    table_names,
)

# Every rule runs `python -m mgrpo` from this checkout, in whichever Python environment the
# job uses. `python` is the interpreter running Snakemake (the .venv, whether Snakemake was
# started by make, by .venv/bin/snakemake or from an activated venv), never whichever `python`
# happens to come first on PATH: its directory goes first. Under `--sdm conda` each job's shell
# activates the rule's conda env after that, which puts the env first, so the env's python
# wins. SLURM jobs inherit this environment (sbatch --export=ALL) and re-parse this file.
# PYTHONPATH makes `mgrpo` importable in the conda envs, which do not install the project.
_python_bin = os.path.dirname(sys.executable)
_path = os.environ.get("PATH", "").split(os.pathsep)
os.environ.update(
    PATH=os.pathsep.join([_python_bin, *(p for p in _path if p != _python_bin)]),
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
)

CONFIG = validate_config(config)
# The `logging` section reaches jobs as environment variables, not as parameters of rules:
# switching TensorBoard off or changing the progress cadence reruns nothing.
os.environ.update(
    MGRPO_TENSORBOARD="1" if CONFIG["logging"]["tensorboard"] else "0",
    MGRPO_TRACKERS=",".join(CONFIG["logging"]["trackers"]),
    MGRPO_PROGRESS_SECONDS=str(CONFIG["logging"]["progress_seconds"]),
)
# Each run's RunSettings, resolved once. Engine availability is checked when a training job
# starts (`mgrpo train`), not here: the paper's DAG is planned on login nodes without verl.
RUNS = {name: resolve_run_settings(CONFIG, name) for name in CONFIG["runs"]}
BENCHMARKS = CONFIG["benchmarks"]
TOY_SPLITS = list(CONFIG["data"]["toy"]["splits"])
# Base models by file-system-safe key ("toy" or e.g. "Qwen--Qwen3-4B-Base").
MODEL_KEYS = {model_key(s["model"]): s["model"] for s in RUNS.values()}
# Hugging Face datasets converted to problem files: the RL prompts and hf benchmarks.
HF_DATASETS = {
    f"benchmark-{b}": s["hf"] for b, s in BENCHMARKS.items() if s["source"] == "hf"
}
if CONFIG["data"]["source"] == "hf":
    HF_DATASETS["train"] = CONFIG["data"]["hf"]


wildcard_constraints:
    run="|".join(RUNS),
    bench="|".join(BENCHMARKS),
    split="|".join(TOY_SPLITS),
    model="|".join(MODEL_KEYS),
    dataset="|".join(HF_DATASETS) or "(?!)",
    step=r"[1-9][0-9]*",


# A run's TensorBoard directory (mgrpo.tracking): training and evaluation curves.
RUN_TENSORBOARD = "results/runs/{run}/tensorboard"
# Captions of the HTML report (`snakemake --report`), relative to the rules' directory.
REPORT_CAPTIONS = Path(workflow.basedir) / "report"


def run_model_key(run):
    return model_key(RUNS[run]["model"])


def base_model_path(key):
    """The toy model is built by this workflow; anything else is a directory or hub id."""
    model = MODEL_KEYS[key]
    return "results/models/toy" if model == "toy" else model


def base_model_input(key):
    # ancient(): rebuilding the toy model must not silently retrain every run; delete the
    # run's checkpoints to retrain on a new base model.
    return [ancient(base_model_path(key))] if MODEL_KEYS[key] == "toy" else []


def train_data_path():
    source = CONFIG["data"]["source"]
    if source == "toy":
        return "results/data/train.parquet"
    if source == "hf":
        return "results/data/hf/train.parquet"
    return CONFIG["data"]["train_path"]


def chunk_start(wildcards):
    return int(wildcards.step) - RUNS[wildcards.run]["chunk_steps"]


def init_path(wildcards):
    start = chunk_start(wildcards)
    if start == 0:
        return base_model_path(run_model_key(wildcards.run))
    return f"results/runs/{wildcards.run}/checkpoints/step{start}"


def checkpoint_input(run, step):
    """A checkpoint read by a later chunk or by an evaluation.

    ancient(): copying or touching checkpoints (new modification times) must retrain and
    re-evaluate nothing. But Snakemake then never reruns the reader when the checkpoint itself
    is retrained, even in the same invocation. So a checkpoint is ancient only while its
    manifest says it was trained with the run's current settings; one of other settings is
    about to be retrained, and everything that read it must follow.
    """
    path = f"results/runs/{run}/checkpoints/step{step}"
    try:
        manifest = read_manifest(path)
    except ValueError:  # not a manifest this release writes: retrain
        manifest = None
    if manifest is not None and manifest.identity == RUNS[run].fingerprint:
        return ancient(path)
    return path  # absent, incomplete or of other settings: it will be (re)written first


def train_chunk_inputs(wildcards):
    """Chunk k reads chunk k-1's checkpoint (policy + momentum + trainer state)."""
    inputs = {"data": ancient(train_data_path())}
    key = run_model_key(wildcards.run)
    inputs["base"] = base_model_input(key)
    start = chunk_start(wildcards)
    if start > 0:
        inputs["init"] = checkpoint_input(wildcards.run, start)
    return inputs


def train_gpus(wildcards):
    """GPUs of a training job: the run's `gpus` on verl; one for the local engine on CUDA."""
    settings = RUNS[wildcards.run]
    if settings["engine"] == "verl":
        return settings["gpus"]
    return 1 if settings["device"].startswith("cuda") else 0


def train_threads(wildcards):
    """Cores of a training job: the run's `threads`, per rank on the verl engine's CPU path."""
    settings = RUNS[wildcards.run]
    if settings["engine"] == "verl" and settings["device"] == "cpu":
        return settings["threads"] * settings["gpus"]
    return settings["threads"]


def train_settings(wildcards):
    """Run settings minus the run length: raising `steps` appends chunks, retrains nothing."""
    return RUNS[wildcards.run].to_json()


def run_fingerprint(wildcards):
    return RUNS[wildcards.run].fingerprint


def problems_path(bench):
    spec = BENCHMARKS[bench]
    if spec["source"] == "toy":
        return f"results/data/{spec['split']}.parquet"
    if spec["source"] == "hf":
        return f"results/data/hf/benchmark-{bench}.parquet"
    return spec["path"]


def hf_spec(wildcards):
    return json.dumps(HF_DATASETS[wildcards.dataset], sort_keys=True)


def eval_spec(wildcards):
    return json.dumps(
        {**BENCHMARKS[wildcards.bench], **CONFIG["evaluation"]}, sort_keys=True
    )


def eval_inputs(wildcards):
    return {
        "checkpoint": checkpoint_input(wildcards.run, wildcards.step),
        "problems": ancient(problems_path(wildcards.bench)),
    }


def base_eval_inputs(wildcards):
    return {
        "model": base_model_input(wildcards.model),
        "problems": ancient(problems_path(wildcards.bench)),
    }


def step0_eval_inputs(wildcards):
    key = run_model_key(wildcards.run)
    return {
        "summary": f"results/eval/base/{key}/{wildcards.bench}.json",
        "records": f"results/eval/base/{key}/{wildcards.bench}.samples.parquet",
    }


def eval_files():
    """Every evaluation the config asks for: step 0 and each chunk end, on every benchmark."""
    return [
        f"results/eval/{run}/step{step}/{bench}.json"
        for run, settings in RUNS.items()
        for step in [0, *settings.checkpoint_steps]
        for bench in BENCHMARKS
    ]


def metrics_files():
    return [
        f"results/runs/{run}/metrics/to_step{step}.jsonl"
        for run, settings in RUNS.items()
        for step in settings.checkpoint_steps
    ]


def report_config():
    return json.dumps(
        {
            # The run length too: the report tells a finished run from one in progress.
            "runs": {
                name: {**settings.to_dict(), "steps": settings.steps}
                for name, settings in RUNS.items()
            },
            "benchmarks": list(BENCHMARKS),
            "report": CONFIG["report"],
        },
        sort_keys=True,
    )


def report_table_files():
    paper = [
        f"results/tables/{name}.{ext}"
        for name in table_names(CONFIG["report"])
        for ext in TABLE_FORMATS
    ]
    label_free = [
        f"results/tables/{name}.{ext}"
        for name in LABEL_FREE_TABLES
        for ext in ("md", "csv")
    ]
    return paper + label_free


def report_figure_files():
    return [f"results/figures/{name}.png" for name in (*FIGURES, *LABEL_FREE_FIGURES)]


def report_provenance():
    """What produced the report's tables and figures, for their captions."""
    cwd = Path.cwd()
    files = [Path(f).resolve() for f in workflow.configfiles]
    return {
        "configfiles": [
            str(f.relative_to(cwd)) if f.is_relative_to(cwd) else str(f) for f in files
        ],
        "runs": [
            {
                "name": name,
                "method": settings.method.label,
                "steps": settings.steps,
                "fingerprint": settings.fingerprint,
            }
            for name, settings in RUNS.items()
        ],
    }


def reported(paths):
    """Mark tables and figures for the HTML report (`snakemake --report results/report.html`).

    Each gets the caption workflow/report/<name>.rst if there is one, else the generic
    table.rst or figure.rst; category Tables or Figures; subcategory its name.
    """
    marked = []
    for path in paths:
        name, ext = Path(path).stem, Path(path).suffix.lstrip(".")
        kind = "figure" if Path(path).parent.name == "figures" else "table"
        caption = name if (REPORT_CAPTIONS / f"{name}.rst").exists() else kind
        title = CONFIG["report"]["tables"].get(name, {}).get("title", name)
        flagged = report(
            path,
            caption=f"../workflow/report/{caption}.rst",
            category=f"{kind.capitalize()}s",
            subcategory=name,
            labels={kind: title, "format": ext},
        )
        marked.append(flagged)
    return marked


REPORT_RULES = ("collapse", "tables", "figures")


def report_outputs():
    return (
        ["results/tables/collapse.csv"] + report_table_files() + report_figure_files()
    )


def only_report_requested():
    """True when every target named on the command line is a report rule or report file."""
    targets = workflow.dag_settings.targets
    wanted = {*report_outputs(), *REPORT_RULES}
    return bool(targets) and all(
        os.path.normpath(os.path.relpath(t) if os.path.isabs(t) else t) in wanted
        for t in targets
    )


def report_inputs(files):
    """The default target builds every evaluation, then the report from all of them. Naming
    only tables, figures or report rules as targets (`snakemake results/tables/table2.md`)
    builds them from the files already in results/ and schedules nothing else: absent runs
    get empty cells and a note."""
    if only_report_requested():
        return [f for f in files if os.path.exists(f)]
    return files


def report_evals(wildcards):
    return report_inputs(eval_files())


def report_metrics(wildcards):
    return report_inputs(metrics_files())


def all_outputs():
    # Listing every eval file (not just the tables) makes Snakemake rebuild exactly the
    # evaluations that are missing.
    return eval_files() + report_outputs()


# A local run's training and evaluation jobs fork from one process that imported torch once
# (mgrpo.jobserver: about 3 s less per job on 2 cores, same results). Not on a cluster, not in
# conda envs, not with the verl engine or where vLLM may evaluate: those jobs run as their own
# processes. MGRPO_NO_JOB_SERVER=1 turns it off.
JOB_SERVER_LOG = "results/logs/job_server.log"
JOB_SERVERS = []


def start_job_server():
    if (
        workflow.local_exec
        and not workflow.deployment_settings.deployment_method
        and os.environ.get(jobserver.OFF_VAR) != "1"
        and all(s["engine"] == "local" for s in RUNS.values())
        and importlib.util.find_spec("vllm") is None
    ):
        JOB_SERVERS.append(jobserver.start(JOB_SERVER_LOG))


def stop_job_server():
    while JOB_SERVERS:
        JOB_SERVERS.pop().stop()
