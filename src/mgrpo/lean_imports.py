"""Importing transformers' model classes without what they pull in but a job never uses.

Every training and evaluation job is a fresh process, so what it imports before its first step
is paid once per job (``benchmarks/job_startup.py`` measures it). Loading any causal LM (or
``AutoTokenizer``) imports, at module level, two optional libraries whenever they are
installed, and both are (lm-eval needs scikit-learn, which needs scipy):

- ``transformers.generation.candidate_generator``: ``from sklearn.metrics import roc_curve``
  (with scipy and narwhals behind it, about 1.2-1.6 s of a job's start on 2 cores), used only
  by assisted generation with a confidence threshold;
- ``transformers.loss.loss_utils`` (its object-detection losses):
  ``from scipy.optimize import linear_sum_assignment`` (about 0.7 s), used only by DETR-style
  losses.

This project uses neither. :func:`import_transformers_models` imports those transformers
modules once while ``sklearn.metrics`` and ``scipy.optimize`` are stand-ins whose functions
import the real module on their first call and delegate to it, then removes the stand-ins. The
transformers modules are the real ones, a later ``import sklearn`` (lm-eval) is the real one:
only the unused imports are deferred, and a call still works.

torch._dynamo (about 1.5-2 s) is *not* deferred: transformers uses it at module level in two
places (``masking_utils`` imports ``TransformGetItemToIndex`` from it,
``integrations.sonicmoe`` decorates a function with ``torch._dynamo.allow_in_graph``), and a
stand-in for torch's compiler would change what ``torch.compile`` does later in the process.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any

# Modules transformers imports at module level for functions this project never calls, and the
# names it takes from them.
DEFERRED_IMPORTS: dict[str, tuple[str, ...]] = {
    "sklearn.metrics": ("roc_curve",),
    "scipy.optimize": ("linear_sum_assignment",),
}
# The transformers modules that import them (all imported while every stand-in is in place:
# several of them import scipy.optimize).
IMPORTED_WITH_STAND_INS = (
    "transformers.generation.candidate_generator",
    "transformers.loss.loss_utils",
)


def _deferred(module: str, name: str) -> Callable[..., Any]:
    """A function standing in for ``module.name``: imports the real one when first called."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Imports {module} on first use and calls its {name}."
    return call


def import_transformers_models() -> None:
    """Import :data:`IMPORTED_WITH_STAND_INS` with the imports of :data:`DEFERRED_IMPORTS`
    deferred. Call before transformers' first model or tokenizer class is imported; once they
    are imported, calls do nothing."""
    if all(module in sys.modules for module in IMPORTED_WITH_STAND_INS):
        return
    stand_ins = {}
    for module, names in DEFERRED_IMPORTS.items():
        if module in sys.modules:  # already imported for real: nothing to save
            continue
        stand_in = types.ModuleType(module)
        for name in names:
            setattr(stand_in, name, _deferred(module, name))
        stand_ins[module] = sys.modules[module] = stand_in
    try:
        for module in IMPORTED_WITH_STAND_INS:
            # The import statement's machinery, not importlib.import_module: only the former
            # reports to `python -X importtime`, which benchmarks/job_startup.py reads.
            __import__(module)
    finally:
        for module, stand_in in stand_ins.items():
            if sys.modules.get(module) is stand_in:
                del sys.modules[module]
