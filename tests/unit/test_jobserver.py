"""The warm job server (mgrpo.jobserver): a job forked from it writes what it writes in its own
process, its output and exit status reach Snakemake's side, a cancelled job dies, and a job the
server cannot serve as a fresh process runs in its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import eval_spec, run_settings

from mgrpo import jobserver

SRC = Path(__file__).resolve().parents[2] / "src"
MGRPO = [sys.executable, "-m", "mgrpo"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[jobserver.Handle]:
    log = tmp_path_factory.mktemp("job_server") / "job_server.log"
    before = os.environ.get(jobserver.ENV_VAR)
    handle = jobserver.start(log)
    socket_path = os.environ.pop(jobserver.ENV_VAR)  # only the commands below use it
    assert socket_path == str(handle.socket) and before is None
    yield handle
    handle.stop()


def job_env(server: jobserver.Handle | None, **extra: str) -> dict[str, str]:
    """A workflow job's environment (Snakemake sets the thread counts), on ``server`` or not."""
    env = {k: v for k, v in os.environ.items() if k != jobserver.ENV_VAR}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if server is not None:
        env[jobserver.ENV_VAR] = str(server.socket)
    return {**env, **extra}


def server_lines(server: jobserver.Handle, after: int = 0) -> list[str]:
    """The server's log lines after the first ``after``, once it has finished preloading."""
    deadline = time.monotonic() + 120
    while "ready on" not in server.log.read_text():
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    return server.log.read_text().splitlines()[after:]


def train_command(toy_dir: Path, out: Path, steps: int) -> list[str]:
    settings = run_settings(method="mgrpo", iqr=True, rollouts=4, resume_every=100)
    return [
        *MGRPO, "train", "--settings", settings.to_json(),
        "--base-model", str(toy_dir / "model"),
        "--train-data", str(toy_dir / "data" / "train.parquet"),
        "--start", "0", "--end", str(steps), "--init", str(toy_dir / "model"),
        "--checkpoint", str(out / "checkpoint"), "--metrics", str(out / "metrics.jsonl"),
        "--rollouts", str(out / "rollouts.parquet"), "--resume-dir", str(out / "resume"),
    ]  # fmt: skip


def eval_command(toy_dir: Path, out: Path) -> list[str]:
    spec = eval_spec({"source": "toy", "split": "test", "max_new_tokens": 16})
    return [
        *MGRPO, "eval", "--spec", json.dumps(spec), "--model", str(toy_dir / "model"),
        "--problems", str(toy_dir / "data" / "test.parquet"), "--out", str(out / "eval.json"),
        "--records", str(out / "samples.parquet"), "--run", "base", "--step", "0",
        "--benchmark", "test",
    ]  # fmt: skip


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def without_timings(text: str) -> list[dict]:
    return [
        {
            k: v
            for k, v in json.loads(line).items()
            if not any(t in k for t in ("seconds", "_time", "per_second"))
        }
        for line in text.splitlines()
    ]


def test_jobs_on_the_server_write_what_they_write_alone(
    server: jobserver.Handle, toy_dir: Path, tmp_path: Path
) -> None:
    """Bit for bit: a fork must not share the server's random state, thread count or logging."""
    seen = len(server_lines(server))
    outputs = {}
    for where, env in (("alone", job_env(None)), ("server", job_env(server))):
        out = tmp_path / where
        for command in (train_command(toy_dir, out, steps=3), eval_command(toy_dir, out)):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            assert "accuracy" in done.stderr or "steps 1-3" in done.stderr  # its log, here
        outputs[where] = files(out)
    lines = server_lines(server, seen)
    assert [line.split(": ", 1)[1] for line in lines if "mgrpo" in line] == [
        "mgrpo train",
        "mgrpo eval",
    ]
    assert sum(" exit 0 " in line for line in lines) == 2
    alone, served = outputs["alone"], outputs["server"]
    assert alone.keys() == served.keys()
    for name in alone:
        if name in ("metrics.jsonl", "eval.json"):
            text = [alone[name].decode(), served[name].decode()]
            if name == "eval.json":
                text = [json.dumps(json.loads(t)) for t in text]
            assert without_timings(text[0]) == without_timings(text[1]), name
        else:
            assert alone[name] == served[name], name


def test_exit_status_and_output_reach_the_job(server: jobserver.Handle, tmp_path: Path) -> None:
    seen = len(server_lines(server))
    done = subprocess.run(
        [*MGRPO, "eval", "--model", "m"], env=job_env(server), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "the following arguments are required: --spec" in done.stderr
    assert any(re.search(r"job \d+: exit 2 ", line) for line in server_lines(server, seen))


def job_pid(server: jobserver.Handle, seen: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in server_lines(server, seen):
            if found := re.match(r"job (\d+): mgrpo train", line):
                return int(found[1])
        time.sleep(0.05)
    raise AssertionError("the server never started the job")


def gone(pid: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_cancelled_job_dies(
    server: jobserver.Handle, toy_dir: Path, tmp_path: Path, signum: int
) -> None:
    """Snakemake cancels a job by signalling its process (SIGTERM, or SIGKILL when that fails):
    the forked job must not train on unseen."""
    seen = len(server_lines(server))
    client = subprocess.Popen(
        train_command(toy_dir, tmp_path, steps=10_000), env=job_env(server),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    job = job_pid(server, seen)
    client.send_signal(signum)
    # SIGTERM: passed on, the job's status returned (as a shell reports a signal); SIGKILL: the
    # client dies at once and the job notices it has gone.
    assert client.wait(timeout=60) == (128 + signum if signum == signal.SIGTERM else -signum)
    assert gone(job), f"job {job} still runs after its client got signal {signum}"


def test_a_job_the_server_cannot_serve_runs_in_its_own_process(
    server: jobserver.Handle, toy_dir: Path, tmp_path: Path
) -> None:
    """Read at import time: the preloaded libraries saw the server's value, not the job's."""
    seen = len(server_lines(server))
    env = job_env(server, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    done = subprocess.run(eval_command(toy_dir, tmp_path), env=env, capture_output=True)
    assert done.returncode == 0
    unthreaded = {k: v for k, v in job_env(server).items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(eval_command(toy_dir, tmp_path / "b"), env=unthreaded)
    assert done.returncode == 0
    lines = server_lines(server, seen)
    assert lines == [
        "runs in its own process (environment differs in PYTORCH_NO_CUDA_MEMORY_CACHING): ['eval']",
        "runs in its own process (no OMP_NUM_THREADS (a fresh torch would use every core)): "
        "['eval']",
    ]


def test_a_request_larger_than_the_socket_buffer_arrives_whole(server: jobserver.Handle) -> None:
    """A big environment (here 3 x 100 kB) reaches the server in several reads."""
    seen = len(server_lines(server))
    big = {f"MGRPO_TEST_BIG_{i}": "x" * 100_000 for i in range(3)}
    done = subprocess.run(
        [*MGRPO, "eval", "--help"], env=job_env(server, **big), capture_output=True, text=True
    )
    assert done.returncode == 0 and "usage: mgrpo eval" in done.stdout, done.stderr
    assert any(re.search(r"job \d+: exit 0 ", line) for line in server_lines(server, seen))


def test_a_broken_request_costs_the_server_nothing(server: jobserver.Handle) -> None:
    """Garbage, a request without its descriptors, a client gone before the answer: the
    server goes on serving."""
    import array
    import socket

    server_lines(server)
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]).tobytes())]
    for message, ancillary in ((b"{not json\n", rights), (b'{"argv": ["eval"]}\n', [])):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(server.socket))
            conn.sendmsg([message], ancillary)
            assert conn.recv(100) == b""  # closed, no answer
    seen = len(server_lines(server))
    done = subprocess.run([*MGRPO, "eval", "--help"], env=job_env(server), capture_output=True)
    assert done.returncode == 0
    assert any(re.search(r"job \d+: exit 0 ", line) for line in server_lines(server, seen))


def test_a_job_with_a_closed_stdin_runs_in_its_own_process(server: jobserver.Handle) -> None:
    """Its descriptors cannot all be handed over: it must not fail for that."""
    seen = len(server_lines(server))
    done = subprocess.run(
        [*MGRPO, "eval", "--help"],
        env=job_env(server),
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(0),
    )
    assert done.returncode == 0 and "usage: mgrpo eval" in done.stdout, done.stderr
    assert server_lines(server, seen) == []


def test_without_a_server_a_job_runs_in_its_own_process(tmp_path: Path) -> None:
    env = job_env(None, **{jobserver.ENV_VAR: str(tmp_path / "no-such-socket")})
    done = subprocess.run([*MGRPO, "eval", "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "usage: mgrpo eval" in done.stdout


def test_the_server_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A workflow killed without its onerror hook must not leave a server behind."""
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(SRC)!r})\n"
        "from mgrpo import jobserver\n"
        f"handle = jobserver.start({str(tmp_path / 'log')!r})\n"
        "print(handle.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert gone(server_pid), "the job server outlived the workflow that started it"
