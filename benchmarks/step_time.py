"""Step time of the local engine on the embedded default, and the M-GRPO / SRT ratio at equal G.

    python benchmarks/step_time.py                 # uses results/models/toy if `make run` built it
    python benchmarks/step_time.py --steps 30 --json results/benchmarks/step_time.json
    python benchmarks/step_time.py --model DIR --train-data FILE   # a toy model built elsewhere

Goals: M-GRPO+IQR costs at most 10 % more per step than SRT at the same G (issue #2); steps per
second of each arm, to compare two versions of the code on one machine (issue #19: run this file
from each checkout, back to back). Both arms train from the same base model with the default
config's shared settings; their steps are interleaved (A B A B ...) so machine load drifts hit
both alike, and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mgrpo.config import load_config  # noqa: E402
from mgrpo.settings import resolve_run_settings  # noqa: E402

ARMS = {
    "srt": {"method": "srt", "iqr": False},
    "mgrpo_iqr": {"method": "mgrpo", "iqr": True},
}


def toy_inputs(
    config: dict, workdir: Path, model: str | None = None, train: str | None = None
) -> tuple[Path, Path]:
    """The toy base model and train split: the ones given, else the workflow's, else built
    here."""
    model = Path(model) if model else REPO / "results/models/toy"
    train = Path(train) if train else REPO / "results/data/train.parquet"
    if model.exists() and train.exists():
        return model, train
    from mgrpo.toy.build import build_toy_model, write_toy_splits

    splits = {s: workdir / f"{s}.parquet" for s in ("sft", "train")}
    write_toy_splits(config["data"]["toy"], splits)
    build_toy_model(config["toy_model"], splits["sft"], workdir / "model")
    return workdir / "model", splits["train"]


def emit(result: dict, json_path: str | None) -> None:
    """Print the figures, and write them to ``json_path`` if given."""
    print(json.dumps(result, indent=2))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--model", help="toy base model directory (default: the workflow's)")
    parser.add_argument("--train-data", help="RL prompts parquet (default: the workflow's)")
    args = parser.parse_args()

    from mgrpo.engines.local.trainer import LocalTrainer

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        model, train = toy_inputs(config, Path(tmp), args.model, args.train_data)
        trainers = {}
        for name, overrides in ARMS.items():
            settings = resolve_run_settings(config, next(iter(config["runs"])))
            trainers[name] = LocalTrainer(settings.replace(**overrides), model, train)
            trainers[name].start_fresh()
        times: dict[str, list[float]] = {name: [] for name in ARMS}
        for i in range(args.warmup + args.steps):
            for name, trainer in trainers.items():
                metrics, _ = trainer.step()
                if i >= args.warmup:
                    times[name].append(metrics["step_time"])

    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "rollouts_per_prompt": trainers["srt"].method.group_size,
        "prompts_per_step": config["training"]["prompts_per_step"],
        "median_step_seconds": median,
        "steps_per_second": {name: 1 / seconds for name, seconds in median.items()},
        "mgrpo_over_srt": median["mgrpo_iqr"] / median["srt"],
        "goal": 1.10,
        "timed_steps": args.steps,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
