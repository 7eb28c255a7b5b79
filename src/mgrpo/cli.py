"""``mgrpo`` command line: one subcommand per workflow rule (the rules stay one line long).

Settings arrive as JSON resolved by the workflow (``--settings``), paths as explicit arguments,
so every command is reproducible from its log line alone. Heavy imports happen inside the
subcommands: ``mgrpo --help`` and config validation stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("mgrpo")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def _run_settings(text: str) -> Any:
    from mgrpo.config import ConfigError
    from mgrpo.settings import RunSettings

    try:
        return RunSettings.from_json(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _split_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected SPLIT=PATH, got {text!r}")
    return name, path


def cmd_validate(args: argparse.Namespace) -> None:
    from mgrpo.config import load_config
    from mgrpo.settings import config_key, resolve_run_settings

    config = load_config(args.config)
    for name in config["runs"]:
        settings = resolve_run_settings(config, name)
        if args.check_engines:
            from mgrpo.engines import load_engine

            where = f"{args.config}: config key '{config_key(config, name, 'engine')}'"
            load_engine(settings, where)
        print(
            f"{name}: method={settings['method']} engine={settings['engine']} "
            f"checkpoints={settings.checkpoint_steps}"
        )
    print(f"benchmarks: {', '.join(config['benchmarks'])}")


def cmd_toy_data(args: argparse.Namespace) -> None:
    from mgrpo.toy.build import write_toy_splits

    write_toy_splits(args.spec, dict(args.out))


def cmd_hf_data(args: argparse.Namespace) -> None:
    from mgrpo.hf_data import DatasetUnavailable, write_hf_problems

    try:
        count = write_hf_problems(args.spec, args.out)
    except DatasetUnavailable as err:
        raise SystemExit(f"mgrpo hf-data: {err}") from None
    log.info("%s: %d problems from %s", args.out, count, args.spec["path"])


# The warm start runs torch on `toy_model.threads` (2) threads. OpenMP's default wait policy
# lets a thread that finishes early spin until its partner arrives; on a machine whose cores
# other processes also use, the partner is often descheduled, and a warm-start step took 2-3 s
# instead of 0.25 s (both threads spinning and waiting). Passive waiting sleeps instead: on that
# shared 2-core machine 2 threads then ran as fast as 1 (same weights bit for bit). OpenMP reads
# the variable when torch loads it, so it is set before the first torch import, and only if the
# user has not chosen a policy.
OPENMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def cmd_toy_model(args: argparse.Namespace) -> None:
    if "torch" not in sys.modules:
        os.environ.setdefault(*OPENMP_WAIT_POLICY)
    from mgrpo.toy.build import build_toy_model

    info = build_toy_model(args.spec, args.sft, args.out)
    log.info("toy model: %s", json.dumps(info))


def cmd_train(args: argparse.Namespace) -> None:
    from mgrpo.engines import ChunkPaths, load_engine
    from mgrpo.tracking import tensorboard_root

    settings = args.settings
    # The job cannot tell whether `training` or the run chose the engine: name both.
    where = f"config key 'training.engine' (or 'runs.{settings.name}.engine')"
    engine = load_engine(settings, where)
    paths = ChunkPaths(
        base_model=Path(args.base_model),
        train_data=Path(args.train_data),
        init=Path(args.init),
        checkpoint=Path(args.checkpoint),
        metrics=Path(args.metrics),
        rollouts=Path(args.rollouts),
        resume=Path(args.resume_dir),
        tensorboard=tensorboard_root(args.tensorboard),
    )
    engine.train_chunk(settings, args.start, args.end, paths)


def cmd_eval(args: argparse.Namespace) -> None:
    import pandas as pd

    from mgrpo.evaluation.runner import evaluate_model
    from mgrpo.io import write_json, write_parquet

    label = f"{args.run} step {args.step} {args.benchmark}"
    summary, records = evaluate_model(args.model, args.problems, args.spec, label=label)
    result = {
        "run": args.run,
        "step": args.step,
        "benchmark": args.benchmark,
        "model": str(args.model),
        "problems_file": str(args.problems),
        "settings_fingerprint": args.fingerprint,
        **summary,
    }
    write_parquet(args.records, pd.DataFrame.from_records(records))
    _add_to_curves(args.tensorboard, result)
    write_json(args.out, result)  # last: its existence means the evaluation is complete
    log.info(
        "%s step %s %s: accuracy %.4f (%s backend, %.2f samples/s)",
        args.run,
        args.step,
        args.benchmark,
        result["accuracy"],
        result["backend"]["name"],
        result["samples_per_second"],
    )


def cmd_copy_eval(args: argparse.Namespace) -> None:
    """Re-label the base model's evaluation as step 0 of a run (no recomputation)."""
    import shutil

    from mgrpo.io import atomic_path, write_json

    result = {**json.loads(Path(args.src).read_text()), "run": args.run, "step": 0}
    with atomic_path(args.records) as tmp:
        shutil.copyfile(args.src_records, tmp)
    _add_to_curves(args.tensorboard, result)
    write_json(args.out, result)


def cmd_job_server(args: argparse.Namespace) -> None:
    from mgrpo.jobserver import serve

    serve(args.socket, run, parent=args.parent)


def _add_to_curves(tensorboard: str | None, result: dict[str, Any]) -> None:
    """An evaluation's numbers join its run's TensorBoard curves at its step."""
    from mgrpo.tracking import tensorboard_root, write_eval_scalars

    root = tensorboard_root(tensorboard)
    if root is not None:
        log.info("TensorBoard: %s", write_eval_scalars(root, result))


def _tensorboard_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tensorboard",
        help="the run's TensorBoard directory (omitted, or MGRPO_TENSORBOARD=0: no curves)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgrpo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate a config file and list its runs")
    p.add_argument("config")
    p.add_argument(
        "--check-engines",
        action="store_true",
        help="also refuse runs whose engine is not installed or not supported on this machine",
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("toy-data", help="generate the toy problem splits")
    p.add_argument("--spec", type=_json, required=True, help="data.toy section (JSON)")
    p.add_argument("--out", type=_split_path, action="append", required=True, metavar="SPLIT=PATH")
    p.set_defaults(func=cmd_toy_data)

    p = sub.add_parser("hf-data", help="convert a Hugging Face dataset into a problem file")
    p.add_argument("--spec", type=_json, required=True, help="hf dataset section (JSON)")
    p.add_argument("--out", required=True, help="problem parquet to write")
    p.set_defaults(func=cmd_hf_data)

    p = sub.add_parser("toy-model", help="build and warm-start the toy base model")
    p.add_argument("--spec", type=_json, required=True, help="toy_model section (JSON)")
    p.add_argument("--sft", required=True, help="warm-start problems (parquet with solutions)")
    p.add_argument("--out", required=True, help="output Hugging Face directory")
    p.set_defaults(func=cmd_toy_model)

    p = sub.add_parser("train", help="train one chunk of a run: steps start+1..end")
    p.add_argument(
        "--settings", type=_run_settings, required=True, help="resolved run settings (JSON)"
    )
    p.add_argument("--base-model", required=True, help="base model (reference policy)")
    p.add_argument("--train-data", required=True, help="RL prompts parquet")
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--end", type=int, required=True)
    p.add_argument("--init", required=True, help="checkpoint at --start (or the base model at 0)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory to write at --end")
    p.add_argument("--metrics", required=True, help="per-step metrics (JSON lines) to write")
    p.add_argument("--rollouts", required=True, help="per-rollout audit records (parquet)")
    p.add_argument("--resume-dir", required=True, help="intra-chunk resume state")
    _tensorboard_argument(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate one model on one benchmark")
    p.add_argument("--spec", type=_json, required=True, help="benchmark + evaluation settings")
    p.add_argument("--model", required=True)
    p.add_argument("--problems", required=True)
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--records", required=True, help="per-sample parquet")
    p.add_argument("--run", required=True)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--fingerprint", default=None, help="settings fingerprint of the run")
    _tensorboard_argument(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("copy-eval", help="reuse the base model's evaluation as a run's step 0")
    p.add_argument("--src", required=True)
    p.add_argument("--src-records", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--records", required=True)
    p.add_argument("--run", required=True)
    _tensorboard_argument(p)
    p.set_defaults(func=cmd_copy_eval)

    p = sub.add_parser(
        "job-server", help="serve a local workflow's jobs from warm forks (the Snakefile starts it)"
    )
    p.add_argument("--socket", required=True, help="Unix socket to listen on")
    p.add_argument("--parent", type=int, help="end when this process ends")
    p.set_defaults(func=cmd_job_server)

    from mgrpo.report.cli import add_report_parser

    add_report_parser(sub)
    return parser


# Library progress bars redraw one line with carriage returns: unreadable in a log file, where
# mgrpo.progress writes plain lines instead.
LIBRARY_PROGRESS_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def main(argv: list[str] | None = None) -> None:
    """``mgrpo ...``: on the workflow's job server when one serves this command, else here."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _library_switches()
    from mgrpo.jobserver import run_on_server  # standard library only: cheap

    code = run_on_server(argv)  # None: no server serves this command here
    if code is not None:
        raise SystemExit(code)
    run(argv)


def _library_switches() -> None:
    if not sys.stderr.isatty():
        for switch in LIBRARY_PROGRESS_SWITCHES:
            os.environ.setdefault(switch, "1")


def run(argv: list[str]) -> None:
    """Run ``mgrpo argv`` in this process."""
    _library_switches()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,  # a job forked by the job server replaces the server's logging
    )
    from mgrpo.config import ConfigError

    try:
        args.func(args)
    except ConfigError as err:
        raise SystemExit(f"mgrpo {args.command}: {err}") from None


if __name__ == "__main__":
    main()
