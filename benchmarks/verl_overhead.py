"""M-GRPO's extra cost per step over plain GRPO at equal G on the verl engine (Qwen3-4B-Base).

    python benchmarks/verl_overhead.py                      # CPU: 1/16 of one rank's shard
    python benchmarks/verl_overhead.py --device cuda --scale 1 --json out.json   # one GPU

What M-GRPO adds to a verl GRPO step at the same G, and how each part is obtained here:

1. the EMA of pi_k on every rank's fp32 shard (``MomentumShards.ema_``): **measured** on
   ``--device`` over one rank's shard of Qwen3-4B-Base (8 GPUs), ``--scale`` times smaller;
2. the momentum push: swap pi_k into the actor shards and back (**measured** like the EMA),
   plus one more of verl's weight syncs per step: byte counts computed from the model config,
   time extrapolated from link/memory bandwidth (vLLM's fixed sleep/wake cost is not measurable
   without vLLM; the first GPU run logs it as ``timing_s/update_weights_momentum``);
3. the entropy pass: none. verl's old-log-prob pass, which GRPO runs on all G rollouts anyway,
   returns the entropies;
4. generation, by rollout scheme (``training.rollout_scheme``): ``sequential`` generates the N
   momentum rollouts in a second call after the M policy rollouts (one set of weights per
   replica at a time), ``split`` gives pi_k N/G of the replicas and generates both in one call.
   A **model** of vLLM's latency-bound decode, not a measurement (below, ``step_time_model``).

``--table`` prints the README's GPU-hour table from the same model, for the default scheme.

The parameter count is exact: Qwen3-4B-Base's architecture is instantiated on the meta device
from its config values (hidden 2560, MLP 9728, 36 layers, 32/8 query/KV heads of 128, vocab
151936, tied embeddings) and counted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from mgrpo.engines.verl.momentum import MomentumShards  # noqa: E402

QWEN3_4B_BASE = {  # config.json of Qwen/Qwen3-4B-Base
    "hidden_size": 2560,
    "intermediate_size": 9728,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}
GPUS = 8
HBM_TB_S = {"H100 SXM": 3.35, "H200": 4.8}  # peak HBM bandwidth
NVLINK_GB_S = 350.0  # achievable all-gather bus bandwidth on 8x H100/H200 NVLink4 (per GPU)
EFFICIENCY = 0.7  # fraction of peak HBM bandwidth a streaming kernel reaches


def parameter_shapes() -> list[tuple[int, ...]]:
    """Every parameter tensor of Qwen3-4B-Base (tied head counted once), from its config."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    config = Qwen3Config(**QWEN3_4B_BASE)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [tuple(p.shape) for p in model.parameters()]


def shard_module(shapes: list[tuple[int, ...]], ranks: int, scale: int, device: str):
    """One rank's FSDP shards (dim-0 split), ``scale`` times smaller, as a module's parameters."""
    module = torch.nn.Module()
    params = torch.nn.ParameterList()
    for shape in shapes:
        rows = max(1, shape[0] // ranks // scale)
        params.append(torch.nn.Parameter(torch.randn(rows, *shape[1:], device=device)))
    module.params = params
    return module


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def swap_round_trip(momentum: MomentumShards, module: torch.nn.Module) -> None:
    with momentum.swapped_into(module):
        pass


# The step-time model behind the README's GPU-hour table. Decoding is latency-bound: a round
# of generation lasts about as long as its longest response, max_new_tokens decode steps whose
# time grows with the sequences each GPU decodes at once (vLLM, a 4B model on an H100; time
# proportional to the parameter count).
DECODE_MS = ((64, 15.0), (128, 20.0), (256, 25.0))  # (sequences per GPU, ms per decode step)
QWEN3_4B = 4.022e9
PEAK_BF16_FLOPS = 989e12  # H100 SXM dense
MFU = 0.4
TOKENS_PER_RESPONSE = 1200  # prompt + response, mean
PUSH_S = 15.0  # one weight sync into every replica: sleep/wake, gather, IPC (an estimate)


def decode_ms(sequences_per_gpu: float, parameters: float) -> float:
    """ms per decode step at this many concurrent sequences per GPU (interpolated)."""
    points = DECODE_MS
    if sequences_per_gpu <= points[0][0]:
        ms = points[0][1]
    elif sequences_per_gpu >= points[-1][0]:
        ms = points[-1][1] * sequences_per_gpu / points[-1][0]
    else:
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= sequences_per_gpu <= x1:
                ms = y0 + (y1 - y0) * (sequences_per_gpu - x0) / (x1 - x0)
                break
    return ms * parameters / QWEN3_4B


def step_time_model(
    *,
    parameters: float,
    group: int,
    momentum: bool,
    scheme: str = "split",
    prompts: int = 8,
    gpus: int = GPUS,
    max_new_tokens: int = 3072,
) -> dict[str, float]:
    """Seconds of one training step on one node, by part (G = ``group`` rollouts per prompt).

    GRPO-like methods (SRT, Intuitor): one generation round over all replicas, one push.
    M-GRPO ``sequential``: two rounds (M rollouts, then N), two pushes into every replica.
    M-GRPO ``split``: one round, pi_q's replicas decoding the M and pi_k's the N rollouts
    (``mgrpo.engines.verl.replicas.momentum_replicas``), one push into every replica plus one
    more all-gather of the fp32 weights (pi_k's) on the NVLink.
    Update: ~2 x parameters x tokens FLOPs for the old-log-prob pass over all G rollouts, ~8 x for
    the reference pass, forward and backward over the trained ones (M-GRPO: at most M).
    """
    from mgrpo.engines.verl.replicas import momentum_replicas

    n = group // 4 if momentum else 0
    m = group - n
    rows = prompts * group
    if not momentum:
        rounds = [rows / gpus]
        pushes, gathers = 1, 0
    elif scheme == "sequential":
        rounds = [prompts * m / gpus, prompts * n / gpus]
        pushes, gathers = 2, 0
    else:
        k = len(momentum_replicas(gpus, m, n))
        rounds = [max(prompts * m / (gpus - k), prompts * n / k)]
        pushes, gathers = 1, 1
    generate = sum(max_new_tokens * decode_ms(r, parameters) / 1000 for r in rounds)
    trained = prompts * m
    tokens = TOKENS_PER_RESPONSE
    flops = parameters * tokens * (2 * rows + 8 * trained)
    update = flops / (gpus * PEAK_BF16_FLOPS * MFU)
    gather = gathers * 4 * parameters * (gpus - 1) / gpus / (NVLINK_GB_S * 1e9)
    push = pushes * PUSH_S + gather
    return {"generate": generate, "update": update, "push": push, "step": generate + update + push}


def scheme_ratios(parameters: float) -> dict[str, Any]:
    """M-GRPO / GRPO step-time ratio at equal G, under both schemes, for the paper's G values."""
    out: dict[str, Any] = {}
    for group in (8, 16, 32, 64, 128, 256):
        grpo = step_time_model(parameters=parameters, group=group, momentum=False)
        row = {"grpo_step_s": round(grpo["step"], 1)}
        for scheme in ("sequential", "split"):
            mgrpo = step_time_model(
                parameters=parameters, group=group, momentum=True, scheme=scheme
            )
            row[f"{scheme}_step_s"] = round(mgrpo["step"], 1)
            row[f"{scheme}_ratio"] = round(mgrpo["step"] / grpo["step"], 3)
        out[f"G={group}"] = row
    return out


# The paper's training runs (Tables 1-3, Figures 1, 2, 4, 5): (label, parameters, G values,
# momentum?, how many runs per G). 1,000 steps each.
PAPER_RUNS = (
    ("SRT, 4B, G = 16 (x3: T = 0.8, 1.1, 1.2), G = 32 (x2: with and without IQR), G = 64",
     QWEN3_4B, (16, 32, 64), False),
    ("SRT, 4B, G = 128", QWEN3_4B, (128,), False),
    ("M-GRPO(+IQR), 4B, G = 8, 16, 32 (x2: with and without IQR)", QWEN3_4B, (8, 16, 32), True),
    ("M-GRPO+IQR, 4B, G = 256", QWEN3_4B, (256,), True),
    ("M-GRPO+IQR, G = 32, Qwen3-1.7B-Base", 1.721e9, (32,), True),
    ("M-GRPO+IQR, G = 32, Qwen3-8B-Base", 8.191e9, (32,), True),
    ("SRT, G = 32, Qwen2.5-3B", 3.086e9, (32,), False),
    ("SRT, G = 32, Qwen2.5-7B", 7.616e9, (32,), False),
    ("Intuitor, G = 32, Qwen2.5-3B", 3.086e9, (32,), False),
)  # fmt: skip
STEPS = 1000


def gpu_hour_table(scheme: str = "split") -> str:
    """The README's table: seconds per step, hours and GPU hours per run of 1,000 steps."""
    lines = ["| runs | s/step | hours per run | GPU h per run |", "|---|--:|--:|--:|"]
    for label, parameters, groups, momentum in PAPER_RUNS:
        steps = [
            step_time_model(parameters=parameters, group=g, momentum=momentum, scheme=scheme)[
                "step"
            ]
            for g in groups
        ]
        low, high = min(steps), max(steps)

        def span(values: tuple[float, float], scale: float) -> str:
            a, b = (round(v * scale) for v in values)
            return f"{a}" if a == b else f"{a}-{b}"

        lines.append(
            f"| {label} | {span((low, high), 1)} | {span((low, high), STEPS / 3600)} "
            f"| {span((low, high), STEPS * GPUS / 3600)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=16, help="shrink one rank's shard by this")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--table", choices=("split", "sequential"), help="print the GPU-hour table and exit"
    )
    args = parser.parse_args()
    if args.table:
        print(gpu_hour_table(args.table))
        return
    torch.set_num_threads(args.threads)

    shapes = parameter_shapes()
    parameters = sum(torch.Size(s).numel() for s in shapes)
    module = shard_module(shapes, GPUS, args.scale, args.device)
    momentum = MomentumShards(module)
    shard_params = sum(p.numel() for p in module.parameters())
    ema_s = timed(lambda: momentum.ema_(module, 0.99), args.device, args.repeats)
    swap_s = timed(lambda: swap_round_trip(momentum, module), args.device, args.repeats)

    # Bytes moved per parameter: EMA = mul_ (read + write m) + add_ (read m, p; write m) = 20 B;
    # swap in and out = 2 x (clone: read + write, copy p <- m, copy m <- clone) = 2 x 24 B.
    ema_bytes, swap_bytes = 20 * shard_params, 48 * shard_params
    full_shard = parameters / GPUS
    result: dict[str, Any] = {
        "device": args.device,
        "qwen3_4b_base_parameters": parameters,
        "fp32_bytes": 4 * parameters,
        "bf16_bytes": 2 * parameters,
        "momentum_fp32_bytes_per_gpu": 4 * parameters / GPUS,
        "measured_shard_parameters": shard_params,
        "ema_seconds": ema_s,
        "ema_gb_per_s": ema_bytes / ema_s / 1e9,
        "swap_round_trip_seconds": swap_s,
        "swap_gb_per_s": swap_bytes / swap_s / 1e9,
        "ema_seconds_full_shard_here": ema_s * full_shard / shard_params,
        "swap_seconds_full_shard_here": swap_s * full_shard / shard_params,
    }
    for gpu, tb_s in HBM_TB_S.items():
        bandwidth = tb_s * 1e12 * EFFICIENCY
        result[f"{gpu}: ema_seconds"] = 20 * full_shard / bandwidth
        result[f"{gpu}: swap_seconds"] = 48 * full_shard / bandwidth
        # verl's naive sync: all-gather the fp32 shards over NVLink, then CUDA-IPC into vLLM
        # (read fp32, write bf16 on the same GPU).
        gather = 4 * parameters * (GPUS - 1) / GPUS / (NVLINK_GB_S * 1e9)
        ipc = 6 * parameters / bandwidth
        result[f"{gpu}: push_seconds_bandwidth_only"] = gather + ipc
    result["step_time_ratio_mgrpo_over_grpo"] = scheme_ratios(parameters)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
