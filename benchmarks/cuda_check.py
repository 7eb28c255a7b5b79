"""The local engine on one CUDA GPU: a correctness smoke check and step-time / EMA timings.

    python benchmarks/cuda_check.py --out cuda_check.json

CPU tests cover the engine's logic; this script checks what only a GPU exercises (bf16 autocast,
a CUDA sampling generator, device placement of every tensor) and measures what the cost
estimates in docs/ rely on. It needs torch with CUDA and transformers; nothing is downloaded.

1. ``correctness``: the embedded default's toy task on CUDA. A run trained as 2 chunks x 2 steps
   against 1 chunk x 4 steps (GPU kernels are not all deterministic, so the difference is
   reported, not asserted), the saved momentum against the EMA recurrence applied to the saved
   policies (chunks of one step), and evaluation: one seed repeats, two seeds differ.
2. ``step_time``: SRT vs M-GRPO+IQR steps at equal G on a randomly initialised Qwen3 of
   ``--hidden``/``--layers`` (toy tokenizer), ``--new-tokens`` per response, interleaved, median.
3. ``ema``: the fp32 foreach EMA (mgrpo.algorithm.ema) over Qwen3-4B-Base's parameter shapes,
   whole and as one of 8 FSDP shards, and a bf16 device-to-device copy of the whole model (a
   lower bound for pushing weights into an inference engine on the same GPU).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from mgrpo.config import load_config  # noqa: E402
from mgrpo.settings import resolve_run_settings  # noqa: E402

# Qwen3-4B-Base (config.json on the hub): hidden 2560, MLP 9728, 36 layers, 32 query heads and
# 8 KV heads of dim 128, vocabulary 151936, tied embeddings.
DEVICE = "cuda"
QWEN3_4B = {
    "hidden": 2560,
    "mlp": 9728,
    "layers": 36,
    "q": 32 * 128,
    "kv": 8 * 128,
    "vocab": 151936,
}


def qwen3_4b_shapes() -> list[tuple[int, ...]]:
    h, m, q, kv = QWEN3_4B["hidden"], QWEN3_4B["mlp"], QWEN3_4B["q"], QWEN3_4B["kv"]
    layer = [(q, h), (kv, h), (kv, h), (h, q), (m, h), (m, h), (h, m), (h,), (h,), (128,), (128,)]
    return [(QWEN3_4B["vocab"], h)] + layer * QWEN3_4B["layers"] + [(h,)]


def build_toy(config: dict, work: Path) -> tuple[Path, dict[str, Path]]:
    from mgrpo.toy.build import build_toy_model, write_toy_splits

    splits = {s: work / f"{s}.parquet" for s in config["data"]["toy"]["splits"]}
    write_toy_splits(config["data"]["toy"], splits)
    build_toy_model(config["toy_model"], splits["sft"], work / "model")
    return work / "model", splits


def run_chunks(settings, model: Path, train: Path, out: Path, bounds: list[int]) -> Path:
    from mgrpo.engines import ChunkPaths
    from mgrpo.engines.local.trainer import train_chunk

    init = model
    for start, end in itertools.pairwise(bounds):
        ckpt = out / f"step{end}"
        paths = ChunkPaths(
            base_model=model,
            train_data=train,
            init=init,
            checkpoint=ckpt,
            metrics=out / f"metrics{end}.jsonl",
            rollouts=out / f"rollouts{end}.parquet",
            resume=out / f"resume{end}",
        )
        train_chunk(settings, start, end, paths)
        init = ckpt
    return init


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def correctness(config: dict, work: Path) -> dict[str, Any]:
    from mgrpo.evaluation.runner import evaluate_model
    from mgrpo.io import read_jsonl

    model, splits = build_toy(config, work)
    base = resolve_run_settings(config, "mgrpo_iqr").replace(device=DEVICE)
    settings = base.replace(chunk_steps=2)
    one = run_chunks(base.replace(chunk_steps=4), model, splits["train"], work / "one", [0, 4])
    two = run_chunks(settings, model, splits["train"], work / "two", [0, 2, 4])
    m_one = read_jsonl(work / "one/metrics4.jsonl")
    m_two = read_jsonl(work / "two/metrics2.jsonl") + read_jsonl(work / "two/metrics4.jsonl")
    result: dict[str, Any] = {
        "finite_losses": all(torch.isfinite(torch.tensor(m["loss"])).item() for m in m_one + m_two),
        "chunked_vs_whole_policy_max_abs_diff": max_weight_diff(one / "policy", two / "policy"),
        "chunked_vs_whole_momentum_max_abs_diff": max_weight_diff(
            one / "momentum", two / "momentum"
        ),
        "chunked_vs_whole_reward_means": [
            [m["reward_mean"] for m in m_one],
            [m["reward_mean"] for m in m_two],
        ],
    }

    # Momentum = EMA recurrence over the policies actually produced (fp64 reference).
    from safetensors.torch import load_file

    steps = run_chunks(
        base.replace(chunk_steps=1), model, splits["train"], work / "ema", [0, 1, 2, 3]
    )
    m = base.method.momentum
    ref = {k: v.double() for k, v in load_file(model / "model.safetensors").items()}
    for k in (1, 2, 3):
        policy = load_file(work / f"ema/step{k}/policy/model.safetensors")
        ref = {n: m * ref[n] + (1 - m) * policy[n].double() for n in ref}
    saved = load_file(steps / "momentum/model.safetensors")
    result["momentum_vs_ema_recurrence_max_abs_diff"] = max(
        float((saved[n].double() - ref[n]).abs().max()) for n in ref
    )

    spec = {**config["benchmarks"]["test"], **config["evaluation"], "device": DEVICE, "limit": 100}
    spec["backend"] = "local"  # the local sampler on CUDA, even where vLLM is installed
    a, _ = evaluate_model(two / "policy", splits["test"], {**spec, "seed": 0})
    b, _ = evaluate_model(two / "policy", splits["test"], {**spec, "seed": 0})
    c, _ = evaluate_model(two / "policy", splits["test"], {**spec, "seed": 1})
    result["eval_accuracy_seed0_twice_seed1"] = [a["accuracy"], b["accuracy"], c["accuracy"]]
    result["eval_seconds"] = a["seconds"]
    return result


def step_time(config: dict, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from mgrpo.engines.local.trainer import LocalTrainer
    from mgrpo.lm import load_tokenizer

    toy = work / "model"
    if not toy.exists():
        build_toy(config, work)
    tokenizer = load_tokenizer(toy)
    heads = args.hidden // 128
    cfg = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 4),
        head_dim=128,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    big = work / "big"
    Qwen3ForCausalLM(cfg).save_pretrained(big)
    tokenizer.save_pretrained(big)
    params = sum(p.numel() for p in Qwen3ForCausalLM(cfg).parameters())

    shared = resolve_run_settings(config, "srt").replace(
        device=DEVICE, max_new_tokens=args.new_tokens, micro_batch_size=64
    )
    arms = {"srt": shared, "mgrpo_iqr": shared.replace(method="mgrpo", iqr=True)}
    trainers = {}
    for name, settings in arms.items():
        trainers[name] = LocalTrainer(settings, big, work / "train.parquet")
        trainers[name].start_fresh()
    times: dict[str, list[dict[str, float]]] = {n: [] for n in arms}
    for i in range(args.warmup + args.steps):
        for name, trainer in trainers.items():
            synchronize()
            metrics, _ = trainer.step()
            synchronize()
            if i >= args.warmup:
                times[name].append(
                    {k: metrics[k] for k in ("step_time", "sample_time", "response_length")}
                )
    median = {n: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for n, ts in times.items()}
    return {
        "parameters": params,
        "rollouts_per_prompt": shared.method.group_size,
        "prompts_per_step": shared["prompts_per_step"],
        "max_new_tokens": args.new_tokens,
        "median": median,
        "mgrpo_over_srt_step_time": median["mgrpo_iqr"]["step_time"] / median["srt"]["step_time"],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None,
    }


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int = 10) -> float:
    fn()
    synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize()
    return (time.perf_counter() - t0) / repeats


def ema(scale: int, shard_count: int = 8) -> dict[str, Any]:
    from mgrpo.algorithm.ema import ema_update_

    shapes = qwen3_4b_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    result: dict[str, Any] = {"qwen3_4b_parameters": numel}
    for label, divisor in (("whole_model", 1), (f"one_of_{shard_count}_shards", shard_count)):
        # FSDP shards are flat slices of each tensor: model them as 1-D pieces of 1/divisor.
        sizes = [max(1, torch.Size(s).numel() // (divisor * scale)) for s in shapes]
        momentum = [torch.randn(n, device=DEVICE) for n in sizes]
        policy = [torch.randn(n, device=DEVICE) for n in sizes]
        seconds = timed(
            lambda momentum=momentum, policy=policy: ema_update_(momentum, policy, 0.99)
        )
        result[label] = {
            "fp32_bytes": 4 * sum(sizes),
            "ema_seconds": seconds,
            "ema_gb_per_s_moved": 3 * 4 * sum(sizes) / seconds / 1e9,
        }
        del momentum, policy
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    weights = [
        torch.randn(torch.Size(s).numel() // scale, device=DEVICE, dtype=torch.bfloat16)
        for s in shapes
    ]
    target = [torch.empty_like(w) for w in weights]
    copy_s = timed(lambda: torch._foreach_copy_(target, weights))
    result["bf16_whole_model_copy_seconds"] = copy_s
    result["bf16_whole_model_bytes"] = 2 * numel // scale
    result["scale_divisor"] = scale
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--out", default="cuda_check.json")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--parts", default="correctness,step_time,ema")
    parser.add_argument("--device", default="cuda", help="cpu: a quick trial of the script itself")
    parser.add_argument("--ema-scale", type=int, default=1, help="shrink the EMA models (trials)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda_check: torch sees no CUDA device")
    config = load_config(args.config)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE,
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = {
            "correctness": lambda: correctness(config, work),
            "step_time": lambda: step_time(config, work, args),
            "ema": lambda: ema(args.ema_scale),
        }
        for name in args.parts.split(","):
            t0 = time.perf_counter()
            try:
                report[name] = parts[name]()
            except Exception:  # report every part, even after one fails
                report[name] = {"error": traceback.format_exc()}
            report[name]["seconds"] = round(time.perf_counter() - t0, 1)
            Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
            print(json.dumps({name: report[name]}, indent=2, default=str), flush=True)


if __name__ == "__main__":
    main()
