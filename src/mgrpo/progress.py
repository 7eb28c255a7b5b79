"""Progress of long jobs: a live bar on a terminal, one timestamped log line at a time in a file.

Workflow jobs write stderr to a log file (Snakemake's ``log:``, a SLURM output file), where a
carriage-return progress bar turns into one unreadable line. There, :func:`progress` logs a
plain line instead, at most every ``MGRPO_PROGRESS_SECONDS`` seconds (default 10; the
workflow's ``logging.progress_seconds``) and once at the end::

    2026-05-01 12:00:10,123 mgrpo.progress INFO srt steps 1-25: 10/25 step (40%) \
elapsed 00:31, ETA 00:46, 3.10 s/step, reward=0.5, label_acc=0.8

which is what ``tail -f`` on a cluster log wants. On a terminal it is an ordinary tqdm bar.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from tqdm import tqdm

INTERVAL_ENV = "MGRPO_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0
LINE_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%) "
    "elapsed {elapsed}, ETA {remaining}, {rate_fmt}{postfix}"
)
OPEN_ENDED_FORMAT = "{desc}: {n_fmt} {unit} elapsed {elapsed}, {rate_fmt}{postfix}"

log = logging.getLogger("mgrpo.progress")
MARK = "[mgrpo]"  # a phase mark in a job's log: "[mgrpo] <unix time> <event>"


def mark(event: str) -> None:
    """Mark a phase of a job in its log, from any of its processes (Ray forwards the prints of
    its workers): benchmarks/verl_cpu_phases.py reads the marks of a verl chunk."""
    print(f"{MARK} {time.time():.3f} {event}", flush=True)


def interval() -> float:
    """Seconds between progress lines in a log file."""
    raw = os.environ.get(INTERVAL_ENV)
    if raw is None:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: expected a number of seconds") from None
    if value < 0:
        raise ValueError(f"{INTERVAL_ENV}={raw!r}: must not be negative")
    return value


class _LogLines(io.TextIOBase):
    """A file for tqdm that turns each status it prints into one log record.

    Where nothing handles log records (a script that configured no logging), the lines go
    to ``stream`` as they are.
    """

    def __init__(self, logger: logging.Logger, stream: Any):
        self.emit = logger.info if logger.hasHandlers() else self._print
        self.stream = stream
        self.last = ""

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def write(self, text: str) -> int:
        for part in text.replace("\r", "\n").split("\n"):
            line = " ".join(part.split())
            # tqdm prints the final count again when it closes: one line per count is enough.
            count = line.partition(" elapsed ")[0]
            if line and count != self.last:
                self.emit(line)
                self.last = count
        return len(text)

    def isatty(self) -> bool:
        return False


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def progress_factory(label: str, unit: str) -> Callable[..., tqdm]:
    """A tqdm factory for a library that takes one (vLLM's ``use_tqdm``): :func:`progress`
    lines named ``label`` (and the library's own description, e.g. "Processed prompts")."""

    def make(iterable: Iterable[Any] | None = None, *, total=None, desc=None, **_: Any) -> tqdm:
        name = f"{label}: {desc}" if desc else label
        return progress(iterable, total=total, desc=name, unit=unit)

    return make


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str,
    initial: int = 0,
    stream: Any = None,
) -> tqdm:
    """A tqdm progress bar for a terminal, or progress lines for a log file (``stream``'s kind).

    Use it like ``tqdm``: iterate over it, or ``update()`` it by hand; ``set_postfix`` adds
    live numbers (e.g. the reward) to every line.
    """
    stream = sys.stderr if stream is None else stream
    open_ended = total is None and _length(iterable) is None
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(
            iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream,
            dynamic_ncols=True,
        )  # fmt: skip
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=_LogLines(log, stream),
        bar_format=OPEN_ENDED_FORMAT if open_ended else LINE_FORMAT,
        mininterval=interval(),
        miniters=1,
        ascii=True,
    )
