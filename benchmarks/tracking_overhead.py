"""Cost of the live TensorBoard curves per training step, next to the step itself.

    python benchmarks/tracking_overhead.py                 # the embedded default's M-GRPO+IQR arm
    python benchmarks/tracking_overhead.py --steps 30 --json results/benchmarks/tracking.json

Goal (issue #11): logging every metric of every step (written and flushed to disk as the step
ends) costs no measurable step time. Each step of the local engine on the default config is
timed, and separately the `TrainingCurves.log_metrics` call that follows it; the script reports
both medians and their ratio. It also times what a chunk pays once when it starts: pruning a
run's curves (here a paper-length run of --history steps, half of which are pruned).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from step_time import emit, toy_inputs  # noqa: E402

from mgrpo.config import load_config  # noqa: E402
from mgrpo.settings import resolve_run_settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--run", default="mgrpo_iqr", help="run of the config to train")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps")
    parser.add_argument("--history", type=int, default=500, help="steps already on the curves")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from mgrpo.engines.local.trainer import LocalTrainer
    from mgrpo.tracking import TrainingCurves, prune_after, tracked_metrics

    config = load_config(args.config)
    settings = resolve_run_settings(config, args.run)
    with tempfile.TemporaryDirectory() as tmp:
        model, train = toy_inputs(config, Path(tmp))
        trainer = LocalTrainer(settings, model, train)
        trainer.start_fresh()
        root = Path(tmp) / "tensorboard"
        step_seconds, log_seconds, line = [], [], {}
        with TrainingCurves(root, first_step=1) as curves:
            for i in range(args.warmup + args.steps):
                t0 = time.perf_counter()
                line, _ = trainer.step()
                t1 = time.perf_counter()
                curves.log_metrics(line)
                t2 = time.perf_counter()
                if i >= args.warmup:
                    step_seconds.append(t1 - t0)
                    log_seconds.append(t2 - t1)

        # What a chunk pays when it starts: a run with `history` steps on its curves resumes
        # from the middle, so half of them are pruned.
        history = Path(tmp) / "history"
        with TrainingCurves(history, first_step=1) as curves:
            for step in range(1, args.history + 1):
                curves.log(tracked_metrics({**line, "step": step}), step)
        t0 = time.perf_counter()
        prune_after(history, args.history // 2)
        chunk_start = time.perf_counter() - t0

    step, log = statistics.median(step_seconds), statistics.median(log_seconds)
    result = {
        "run": args.run,
        "scalars_per_step": len(tracked_metrics(line)),
        "median_step_seconds": step,
        "median_log_seconds": log,
        "log_over_step": log / step,
        "chunk_start_prune_seconds": chunk_start,
        "chunk_start_history_steps": args.history,
        "timed_steps": args.steps,
    }
    emit(result, args.json)


if __name__ == "__main__":
    main()
