"""Entry point, recipe style: one chunk by hand, with extra Hydra overrides.

    python -m mgrpo.engines.verl.main mgrpo.settings_file=WORK/settings.json KEY=VALUE ...

The config is composed as ``mgrpo train`` composes it (:func:`mgrpo.engines.verl.config.
chunk_overrides`: fixed keys, the settings table, the run's ``verl_overrides``) from the run
settings in ``mgrpo.settings_file`` (``mgrpo train`` writes that file into the chunk's work
directory); the command line's overrides come last, so they win. The chunk's own keys
(``mgrpo.work_dir``, ``mgrpo.start_step``, ``mgrpo.end_step``, paths, ...) are given there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

SETTINGS_KEY = "mgrpo.settings_file"


def main(argv: Sequence[str] | None = None) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mgrpo.engines.verl.config import chunk_overrides, compose, validate
    from mgrpo.engines.verl.task_runner import run
    from mgrpo.settings import RunSettings

    overrides = list(sys.argv[1:] if argv is None else argv)
    parsed = OverridesParser.create().parse_overrides(overrides)  # Hydra's quoting rules
    files = [o.value() for o in parsed if o.key_or_group == SETTINGS_KEY]
    if not files:
        raise SystemExit(
            f"usage: python -m mgrpo.engines.verl.main {SETTINGS_KEY}=PATH [KEY=VALUE ...]"
        )
    settings = RunSettings.from_json(Path(files[-1]).read_text())
    config = compose(chunk_overrides(settings) + overrides)
    validate(config)
    run(config)


if __name__ == "__main__":
    main()
