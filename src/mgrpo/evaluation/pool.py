"""A process pool in which every call has a deadline; a worker that overruns it is killed.

math-verify bounds its own work with ``signal.alarm``, which only works in a main thread and
cannot interrupt long C-level arithmetic (``9^{9^{9^{9}}}``). Here each call runs in the main
thread of a worker process and the parent enforces the deadline: an overrunning worker is
SIGKILLed and replaced, its call reported as a timeout, and the job goes on. A worker that dies
(segfault, out of memory) is replaced the same way. ``concurrent.futures`` cannot do this: it
has no way to kill one stuck worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass(frozen=True)
class Outcome:
    status: str  # "ok" | "timeout" | "error"
    value: Any = None
    detail: str | None = None


def _serve(conn: Connection, fn: Callable[..., Any], memory_mb: int | None) -> None:
    if memory_mb:
        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send("ready")  # deadlines start after start-up, which can take a second or two
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        if args is None:
            return
        try:
            reply = ("ok", fn(*args), None)
        except BaseException as err:
            reply = ("error", None, f"{type(err).__name__}: {err}"[:500])
        conn.send(reply)


STARTUP_S = 120.0


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[..., Any], memory_mb: int | None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, fn, memory_mb), daemon=True)
        self.process.start()
        child.close()
        self.ready = False

    def wait_ready(self) -> None:
        if not self.ready:
            if not self.conn.poll(STARTUP_S):
                raise RuntimeError(f"grader worker did not start within {STARTUP_S:g} s")
            try:
                self.conn.recv()
            except EOFError:
                raise RuntimeError(
                    f"grader worker exited at start-up (exit {self.process.exitcode})"
                ) from None
            self.ready = True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.join()
        self.conn.close()


class BoundedPool:
    """``workers`` processes running ``fn``; each call may take at most ``timeout_s`` seconds.

    ``fn`` must be importable (a module-level function). Use as a context manager.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        workers: int,
        timeout_s: float,
        memory_mb: int | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        if workers < 1 or timeout_s <= 0:
            raise ValueError("BoundedPool needs workers >= 1 and timeout_s > 0")
        self._ctx = multiprocessing.get_context("forkserver")
        if preload:
            self._ctx.set_forkserver_preload(list(preload))
        self._fn, self._memory_mb, self.timeout_s = fn, memory_mb, timeout_s
        self._workers = [self._spawn() for _ in range(workers)]
        self.replaced = 0  # workers killed or died and replaced, over the pool's life

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self._fn, self._memory_mb)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        self.replaced += 1
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def map(self, calls: Sequence[tuple[Any, ...]]) -> list[Outcome]:
        """One :class:`Outcome` per call, in order."""
        results: list[Outcome | None] = [None] * len(calls)
        pending = deque(enumerate(calls))
        busy: dict[_Worker, tuple[int, float]] = {}
        while pending or busy:
            for worker in list(self._workers):
                if worker in busy or not pending:
                    continue
                index, args = pending.popleft()
                try:
                    worker.wait_ready()
                    worker.conn.send(args)
                except (BrokenPipeError, OSError):  # died while idle: replace and retry
                    self._replace(worker)
                    pending.appendleft((index, args))
                    continue
                busy[worker] = (index, time.monotonic() + self.timeout_s)
            if not busy:
                continue
            next_deadline = min(deadline for _, deadline in busy.values())
            ready = wait([w.conn for w in busy], timeout=max(0.0, next_deadline - time.monotonic()))
            for worker in [w for w in busy if w.conn in ready]:
                index, _ = busy.pop(worker)
                try:
                    status, value, detail = worker.conn.recv()
                    results[index] = Outcome(status, value, detail)
                except (EOFError, OSError):
                    code = worker.process.exitcode
                    results[index] = Outcome("error", None, f"grader worker died (exit {code})")
                    self._replace(worker)
            now = time.monotonic()
            for worker, (index, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[worker]
                    results[index] = Outcome("timeout", None, f"over {self.timeout_s:g} s")
                    self._replace(worker)
        return [r for r in results if r is not None]

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(BrokenPipeError, OSError):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def __enter__(self) -> BoundedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
