"""The M-GRPO algorithm as pure functions: no engine, no I/O.

One module per piece of Algorithm 1 (answers, voting, entropy, filtering, rewards, advantages,
losses, ema), composed per prompt in :mod:`.groups`; methods are configuration (:mod:`.methods`).
Import from the submodules: this package deliberately re-exports nothing, so that the cheap
modules (answers, voting, methods) load without torch, e.g. while Snakemake parses the workflow.
"""
