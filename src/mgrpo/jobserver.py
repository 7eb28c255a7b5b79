"""Warm job server: a local workflow's training and evaluation jobs, forked from a process that
has already imported torch and transformers.

Every workflow job is a fresh ``python -m mgrpo ...``; on 2 cores importing torch, transformers
and torch._dynamo (which transformers imports at module level) is about 3 s of a job's start
before any work (``benchmarks/job_startup.py``), paid by each of the embedded default's ~70
training and evaluation jobs. When the workflow runs on this machine (Snakemake's local
executor), the Snakefile starts one server per workflow run (:func:`start`); it imports once,
then forks a child per job. Each job is still its own ``mgrpo`` command, its own process, with
its own log file and exit status, and Snakemake schedules it as before:

- the job's ``mgrpo`` (the *client*) sees ``MGRPO_JOB_SERVER`` (the server's socket), sends its
  argument list, working directory, environment and its stdin/stdout/stderr file descriptors,
  and waits; a signal it receives (Snakemake cancelling the job) is passed on to the job;
- the server forks; the child takes the client's descriptors, directory and environment and
  runs the same ``mgrpo`` command as the client would have (:func:`mgrpo.cli.run`); the server
  reports the child's exit status to the client, which exits with it. A child whose client has
  gone (killed) kills itself and its process group.

Same results: the child runs the same code on the same inputs as a fresh process; only the
imports were done before. Anything read at import time must therefore agree, and a job whose
environment differs from the server's in such a variable (:data:`IMPORT_TIME_ENV`) runs in its
own process as before, as does every command but :data:`WARM_COMMANDS`, and every job when no
server answers. ``MGRPO_NO_JOB_SERVER=1`` turns the server off.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "MGRPO_JOB_SERVER"  # the socket the jobs' `mgrpo` hands itself to
OFF_VAR = "MGRPO_NO_JOB_SERVER"  # "1": the workflow starts no server
# Commands that import torch: a warm start pays for them. Data, report and copy jobs import
# no torch and start in well under a second on their own.
WARM_COMMANDS = frozenset({"train", "eval"})
# Environment variables read when the preloaded libraries are imported or initialised (OpenMP
# and BLAS thread pools, allocators, torch, Hugging Face caches and switches, Python itself): a
# job must agree with the server on every one of them, or it runs in its own process.
IMPORT_TIME_ENV = (
    "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "BLIS_", "MALLOC_", "LD_", "PYTHON",
    "TORCH", "PYTORCH_", "CUDA_", "NCCL_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_",
    "XDG_CACHE_HOME",
)  # fmt: skip
# Thread counts, which Snakemake sets per job from its `threads`: the server imports with all of
# them at 1 (no BLAS or OpenMP threads exist when it forks) and each job's child sets torch's
# count from its own OMP_NUM_THREADS, the default a fresh torch would take from it.
THREAD_ENV = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)  # fmt: skip
MAX_MESSAGE = 1 << 20


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in sorted(env.items())
        if k.startswith(IMPORT_TIME_ENV) and k not in THREAD_ENV
    }


# What training and evaluation jobs import on first use (transformers' lazy modules among them):
# 0.5-1 s of each served job otherwise. tests/unit/test_job_imports.py checks that none is missed.
FIRST_USE_MODULES = (
    "jsonschema",  # settings validation
    "math_verify",  # answer equivalence
    "pyarrow.dataset",  # parquet reads
    "pyarrow.parquet",  # parquet writes
    "transformers.modeling_layers",  # every decoder model, and transformers.modeling_utils
    "transformers.processing_utils",  # AutoTokenizer.from_pretrained
    "torch.utils.tensorboard",  # training curves
)


def preload() -> None:
    """Import what training and evaluation jobs import, without running anything: no thread
    may exist when the server forks (OpenMP's pool, in particular, starts at first use)."""
    import pandas  # noqa: F401
    import torch  # noqa: F401

    from mgrpo import lm  # noqa: F401
    from mgrpo.engines.local import trainer  # noqa: F401
    from mgrpo.evaluation import runner  # noqa: F401
    from mgrpo.lean_imports import import_transformers_models

    import_transformers_models()
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache  # noqa: F401

    for module in FIRST_USE_MODULES:
        importlib.import_module(module)


# ------------------------------------------------------------------------------ messages
def _send(conn: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode() + b"\n"
    sent = 0
    if fds:  # the descriptors travel with the first bytes (a signal may cut a send short)
        rights = array.array("i", fds).tobytes()
        sent = conn.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    if sent < len(data):  # nothing more to send must send nothing: the peer may have closed
        conn.sendall(data[sent:])


def _receive(conn: socket.socket, with_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One newline-ended JSON message (None at end of stream) and the descriptors sent with it."""
    chunks, fds = [], []
    while True:
        if with_fds and not fds:
            data, ancdata, _, _ = conn.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(with_fds * 4))
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(array.array("i", payload[: len(payload) - len(payload) % 4]))
        else:
            data = conn.recv(MAX_MESSAGE)
        if not data:
            for fd in fds:
                os.close(fd)
            return None, []
        chunks.append(data)
        if data.endswith(b"\n"):
            return json.loads(b"".join(chunks)), fds


# -------------------------------------------------------------------------------- client
def run_on_server(argv: Sequence[str]) -> int | None:
    """Run ``mgrpo argv`` as a child of the job server; its exit status, or None when it must
    run here (no server, another command, an environment the server cannot serve)."""
    path = os.environ.get(ENV_VAR)
    if not path or not argv or argv[0] not in WARM_COMMANDS:
        return None
    try:  # before the socket exists: it would take a closed descriptor's number
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:  # e.g. a closed stdin: nothing to hand over
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    with conn:
        request = {
            "argv": list(argv),
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "executable": os.path.realpath(sys.executable),
            "path": sys.path,
        }
        _send(conn, request, fds=(0, 1, 2))
        reply, _ = _receive(conn)
        if reply is None or "pid" not in reply:
            return None  # refused (reply["why"]): run here
        job = reply["pid"]

        def forward(signum: int, frame: object) -> None:
            try:
                os.killpg(job, signum)
            except ProcessLookupError:  # not yet its own process group, or already gone
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job, signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, forward)
        while True:
            with contextlib.suppress(InterruptedError):
                status, _ = _receive(conn)
                break
        if status is None:
            print(f"mgrpo: the job server ended before job {job} did", file=sys.stderr)
            return 1
        return int(status["exit"])


# -------------------------------------------------------------------------------- server
@dataclass
class _Job:
    conn: socket.socket
    argv: list[str]
    started: float


def _why_not(request: dict[str, Any], started_with: dict[str, str]) -> str | None:
    """Why this server cannot run the request's job as it would run in its own process."""
    if request["executable"] != os.path.realpath(sys.executable):
        return f"another Python ({request['executable']})"
    if request["path"] != sys.path:
        return "another sys.path"
    if not request["env"].get("OMP_NUM_THREADS", "").isdigit():
        return "no OMP_NUM_THREADS (a fresh torch would use every core)"
    ours, theirs = import_time_env(started_with), import_time_env(request["env"])
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        return f"environment differs in {', '.join(differ)}"
    return None


def _child(
    request: dict[str, Any],
    fds: list[int],
    conn: socket.socket,
    run: Callable,
    inherited: Sequence[Any],
    set_by_imports: dict[str, str],
) -> None:
    """In the forked child: become the client's process, run its command, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for other in inherited:  # the server's listener, wake-up pipe, other jobs' connections
            other.close()
        os.setsid()  # its own process group: the client signals the job and what it started
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV_VAR, None)
        for name, value in set_by_imports.items():  # as the imports set them in a fresh process
            os.environ.setdefault(name, value)
        # A fresh process seeds Python's (and numpy's global) generator from the OS; a fork
        # would share the server's state. (torch's default generator is never used before.)
        random.seed()
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        sys.argv = ["mgrpo", *request["argv"]]
        threading.Thread(target=_die_with_client, args=(conn,), daemon=True).start()
        try:
            run(request["argv"])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if not isinstance(exit_.code, int | None):
                print(exit_.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # reported as a fresh interpreter reports it
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die_with_client(conn: socket.socket) -> None:
    """The client never sends after its request: end of stream means it is gone (killed)."""
    with contextlib.suppress(OSError):
        conn.recv(1)
    os.killpg(0, signal.SIGKILL)


def serve(
    path: str | Path, run: Callable[[Sequence[str]], None], parent: int | None = None
) -> None:
    """Accept jobs on the Unix socket ``path`` until SIGTERM or until ``parent`` exits."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))  # before preloading: jobs that come early wait in the backlog
    listener.listen(64)
    started_with = dict(os.environ)
    preload()
    # Variables the imports set (torch's compile cache directory): a fresh job sets them too.
    set_by_imports = {k: v for k, v in os.environ.items() if k not in started_with}
    if threading.active_count() != 1:
        raise RuntimeError("job server: a thread started while preloading; forking is unsafe")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    # A job's end wakes the loop at once (SIGCHLD writes to this pipe), not at the next poll.
    wake_read, wake_write = socket.socketpair()
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    jobs: dict[int, _Job] = {}
    log = sys.stderr
    print(f"job server {os.getpid()}: ready on {path}", file=log, flush=True)
    while not stop and (parent is None or os.getppid() == parent):
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([listener, wake_read], [], [], 1.0)
            if wake_read in readable:
                wake_read.recv(4096)
            if listener in readable:
                inherited = [listener, wake_read, wake_write, *(j.conn for j in jobs.values())]
                _accept(listener, jobs, run, log, inherited, started_with, set_by_imports)
        _reap(jobs, log)
    signal.set_wakeup_fd(-1)
    listener.close()
    for pid, job in jobs.items():  # the workflow is over: nothing waits for these any more
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        job.conn.close()


def _accept(
    listener: socket.socket,
    jobs: dict[int, _Job],
    run: Callable,
    log: Any,
    inherited: Sequence[Any],
    started_with: dict[str, str],
    set_by_imports: dict[str, str],
) -> None:
    """Take one request: refuse it, or fork its job. A client that has gone (killed while it
    asked) or sent garbage costs only its own request, never the server."""
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        request, fds = _receive(conn, with_fds=3)
        if request is None or len(fds) != 3:
            return
        why = _why_not(request, started_with)
        if why:
            print(f"runs in its own process ({why}): {request['argv'][:1]}", file=log, flush=True)
            _send(conn, {"why": why})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, fds, conn, run, inherited, set_by_imports)
        # A job whose client is already gone notices it too and ends itself: reaped below.
        jobs[pid] = _Job(conn, request["argv"], time.monotonic())
        print(f"job {pid}: mgrpo {' '.join(request['argv'][:1])}", file=log, flush=True)
        _send(conn, {"pid": pid})
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"a request failed: {err!r}", file=log, flush=True)
    finally:
        for fd in fds:
            os.close(fd)
        if not any(job.conn is conn for job in jobs.values()):
            conn.close()


def _reap(jobs: dict[int, _Job], log: Any) -> None:
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = jobs.pop(pid, None)
        if job is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code  # killed by a signal: as a shell reports it
        with contextlib.suppress(OSError):
            _send(job.conn, {"exit": code})
        job.conn.close()
        seconds = time.monotonic() - job.started
        print(f"job {pid}: exit {code} after {seconds:.1f} s", file=log, flush=True)


# ----------------------------------------------------------------------------- lifecycle
@dataclass
class Handle:
    process: subprocess.Popen
    directory: Path  # holds the socket
    log: Path  # the server's log: each job's command, pid and exit status

    @property
    def socket(self) -> Path:
        return self.directory / "socket"

    def stop(self) -> None:
        """End the server (running jobs have finished: Snakemake waits for them)."""
        if os.environ.get(ENV_VAR) == str(self.socket):
            del os.environ[ENV_VAR]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in (self.socket, self.directory):
            with contextlib.suppress(OSError):
                path.unlink() if path.is_socket() else path.rmdir()


def start(log: str | Path) -> Handle:
    """Start a server for this process's jobs: its socket goes into ``MGRPO_JOB_SERVER`` of this
    process's environment, which the jobs it starts inherit; it ends when this process does."""
    directory = Path(tempfile.mkdtemp(prefix="mgrpo-jobs-"))
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != ENV_VAR},
        **dict.fromkeys(THREAD_ENV, "1"),
    }
    with open(log, "a") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mgrpo", "job-server", "--socket", str(directory / "socket"),
             "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    handle = Handle(process, directory, Path(log))
    deadline = time.monotonic() + 10
    while not handle.socket.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.environ[ENV_VAR] = str(handle.socket)
    return handle
