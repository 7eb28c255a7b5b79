"""verl's v0 task runner with the M-GRPO worker and trainer (recipe style).

``BaseTaskRunner`` is subclassed, not ``TaskRunner``: the latter is already a Ray actor class and
cannot be inherited from. :func:`run` wraps the subclass with ``ray.remote`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verl.trainer.main_ppo_v0 import BaseTaskRunner

from mgrpo.progress import mark


class MGRPOTaskRunner(BaseTaskRunner):
    """Builds workers (with pi_k), datasets and the :class:`~.trainer.MGRPOTrainer`; fits."""

    def add_actor_rollout_worker(self, config: Any) -> tuple[Any, Any]:
        import ray

        from mgrpo.engines.verl.worker import MomentumWorker

        _, group_cls = super().add_actor_rollout_worker(config)
        for role in self.role_worker_mapping:
            self.role_worker_mapping[role] = ray.remote(MomentumWorker)
        return MomentumWorker, group_cls

    def run(self, config: Any) -> None:
        from omegaconf import OmegaConf
        from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.dataset.rl_dataset import collate_fn
        from verl.workers.config import HFModelConfig

        from mgrpo.engines.verl.config import validate
        from mgrpo.engines.verl.trainer import MGRPOTrainer
        from mgrpo.settings import RunSettings

        mark("task runner up")
        OmegaConf.resolve(config)
        _, group_cls = self.add_actor_rollout_worker(config)
        self.add_reward_model_resource_pool(config)
        validate(config)
        settings = RunSettings.from_json(Path(config.mgrpo.settings_file).read_text())

        model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        train = create_rl_dataset(config.data.train_files, config.data, tokenizer, processor, True)
        val = create_rl_dataset(config.data.val_files, config.data, tokenizer, processor, False)
        trainer = MGRPOTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=self.init_resource_pool_mgr(config),
            ray_worker_group_cls=group_cls,
            train_dataset=train,
            val_dataset=val,
            collate_fn=collate_fn,
            train_sampler=create_rl_sampler(config.data, train),
            settings=settings,
        )
        trainer.init_workers()
        mark("workers up")  # FSDP actor and reference, vLLM replicas, pi_k
        trainer.fit()


def run(config: Any) -> None:
    """Start Ray (if needed) and fit one chunk in a :class:`MGRPOTaskRunner` actor."""
    import ray
    from verl.trainer.main_ppo import run_ppo

    run_ppo(config, task_runner_class=ray.remote(num_cpus=1)(MGRPOTaskRunner))
