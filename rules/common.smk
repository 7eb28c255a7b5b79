# Shared state and input functions. Keep this cheap: every SLURM job re-parses it (no torch).
import json
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir).parent / "src")
sys.path.insert(0, SRC)
from mgrpo.config import model_key, validate_config
from mgrpo.settings import resolve_run_settings
from mgrpo.report import (
    FIGURES,
    LABEL_FREE_FIGURES,
    LABEL_FREE_TABLES,
    TABLE_FORMATS,
    table_names,
)

# Jobs (local or SLURM, which exports this environment) run `python -m mgrpo` from this
# checkout, whichever Python environment they use: the .venv locally, a conda env per rule on
# a cluster. Prepended, so a user's own PYTHONPATH still applies.
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))
)

CONFIG = validate_config(config)
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


def train_chunk_inputs(wildcards):
    """Chunk k reads chunk k-1's checkpoint (policy + momentum + trainer state)."""
    inputs = {"data": ancient(train_data_path())}
    key = run_model_key(wildcards.run)
    inputs["base"] = base_model_input(key)
    if chunk_start(wildcards) > 0:
        inputs["init"] = ancient(init_path(wildcards))
    return inputs


def train_gpus(wildcards):
    """GPUs of a training job: the run's `gpus` on verl; one for the local engine on CUDA."""
    settings = RUNS[wildcards.run]
    if settings["engine"] == "verl":
        return settings["gpus"]
    return 1 if settings["device"].startswith("cuda") else 0


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
        "checkpoint": ancient(
            f"results/runs/{wildcards.run}/checkpoints/step{wildcards.step}"
        ),
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
            "runs": {name: settings.to_dict() for name, settings in RUNS.items()},
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


def all_outputs():
    # Listing every eval file (not just the tables) makes Snakemake rebuild exactly the
    # evaluations that are missing.
    return (
        eval_files()
        + ["results/tables/collapse.csv"]
        + report_table_files()
        + report_figure_files()
    )
