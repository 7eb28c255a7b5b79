"""The one seam between the M-GRPO step and the rollout engine (vLLM behind verl's agent loop).

Everything the trainer asks of vLLM goes through :class:`Rollouts`: generate a batch, and load
either the policy's or the momentum policy's weights into the engine. One vLLM engine per GPU
serves both models; their weights are swapped in with verl's own weight sync (colocated, naive
backend), which wakes the engine and resets its prefix cache, so no KV entry computed under one
model is reused under the other.
"""

from __future__ import annotations

from typing import Any


def wait(result: Any) -> Any:
    """``ray.get`` for what a non-blocking worker-group call returned (plain values pass)."""
    import ray

    refs = result if isinstance(result, list) else [result]
    if refs and all(isinstance(r, ray.ObjectRef) for r in refs):
        return ray.get(result)
    return result


class Rollouts:
    """Generation and weight loading for one trainer (its worker group and rollout managers)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def generate(self, gen_batch: Any, timing: dict[str, float], name: str) -> Any:
        """Sample one response per row of ``gen_batch``; the engine sleeps afterwards."""
        from verl.protocol import pad_dataproto_to_divisor, unpad_dataproto

        t = self.trainer
        divisor = t.config.actor_rollout_ref.rollout.agent.num_workers
        padded, pad = pad_dataproto_to_divisor(gen_batch, divisor)
        output = t.async_rollout_manager.generate_sequences(padded)
        t.checkpoint_manager.sleep_replicas()
        output = unpad_dataproto(output, pad_size=pad)
        for key, seconds in output.meta_info.pop("timing", {}).items():
            timing[f"{name}/{key}"] = seconds
        return output

    def load_policy(self, step: int) -> None:
        """Push pi_q into the engine (verl's own weight sync)."""
        self.trainer.checkpoint_manager.update_weights(step)

    def load_momentum(self, step: int) -> None:
        """Push pi_k into the engine (the worker swaps it into the actor for the push)."""
        wait(self.trainer.actor_rollout_wg.update_weights_momentum(global_steps=step))
