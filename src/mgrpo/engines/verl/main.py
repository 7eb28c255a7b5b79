"""Hydra entry point, recipe style: ``python -m mgrpo.engines.verl.main mgrpo.settings_file=...``.

``mgrpo train`` composes the same config (mgrpo_trainer.yaml + the settings table + the chunk's
paths) and calls :func:`mgrpo.engines.verl.task_runner.run` directly; this main is for running
or debugging one chunk by hand with extra Hydra overrides.
"""

from __future__ import annotations

import hydra


@hydra.main(config_path="config", config_name="mgrpo_trainer", version_base=None)
def main(config) -> None:
    from mgrpo.engines.verl.config import validate
    from mgrpo.engines.verl.task_runner import run

    validate(config)
    run(config)


if __name__ == "__main__":
    main()
