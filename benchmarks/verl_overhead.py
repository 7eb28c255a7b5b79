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
4. the momentum rollouts come from a second, sequential generation call (one vLLM engine holds
   one set of weights): a **model** of vLLM's memory-bound decode (weights + KV cache read per
   decode step), not a measurement.

The parameter count is exact: Qwen3-4B-Base's architecture is instantiated on the meta device
from its config values (hidden 2560, MLP 9728, 36 layers, 32/8 query/KV heads of 128, vocab
151936, tied embeddings) and counted.
"""

from __future__ import annotations

import argparse
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


def generation_model(settings: dict[str, Any]) -> dict[str, Any]:
    """Decode time of one GRPO generation call vs M-GRPO's two, memory-bound model.

    Per decode step a vLLM replica reads its bf16 weights once and the KV cache of every live
    sequence. Worst case for the split: every sequence decodes to the maximum length, so each
    call lasts max_new_tokens steps and the mean context is prompt + max_new_tokens / 2.
    """
    c = QWEN3_4B_BASE
    weights = 2 * settings["parameters"]  # bf16
    kv_per_token = c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 2 * 2
    context = settings["prompt_tokens"] + settings["max_new_tokens"] / 2
    per_replica = settings["prompts"] * settings["group"] / GPUS

    def step_bytes(sequences: float) -> float:
        return weights + sequences * context * kv_per_token

    n = settings["group"] // 4
    m = settings["group"] - n
    grpo = step_bytes(per_replica)
    mgrpo = step_bytes(per_replica * m / settings["group"]) + step_bytes(
        per_replica * n / settings["group"]
    )
    return {
        "kv_bytes_per_token": kv_per_token,
        "sequences_per_replica": per_replica,
        "grpo_bytes_per_decode_step": grpo,
        "mgrpo_bytes_per_decode_step_both_calls": mgrpo,
        "generation_time_ratio_worst_case": mgrpo / grpo,
        "generation_time_ratio_one_long_sequence": 2.0,  # weights dominate: two calls ~ 2x
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", type=int, default=16, help="shrink one rank's shard by this")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
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
    result["generation"] = generation_model(
        {
            "parameters": parameters,
            "prompts": 8,
            "group": 32,
            "prompt_tokens": 200,
            "max_new_tokens": 3072,
        }
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
