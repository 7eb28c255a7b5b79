"""The verl engine: M-GRPO at paper scale (FSDP2 actor + vLLM rollouts on one GPU node).

Recipe style: a Hydra config composing verl's ``ppo_trainer`` (``config/mgrpo_trainer.yaml``),
a small main (:mod:`.main`), a ``BaseTaskRunner`` subclass (:mod:`.task_runner`), a v0
``RayPPOTrainer`` subclass whose ``fit()`` runs M-GRPO steps (:mod:`.trainer`) and a worker
subclass holding the momentum policy (:mod:`.worker`). The run settings reach verl through one
table (:mod:`.keys`); the algorithm is :mod:`mgrpo.algorithm`, called per prompt
(:mod:`.scoring`). :mod:`.launch` is the engine contract of :mod:`mgrpo.engines` (what
``mgrpo train`` calls). See docs/verl-engine.md.
"""
