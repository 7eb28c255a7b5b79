"""Stand-ins for SLURM's and conda's commands, so the cluster path runs on a machine without them.

``install_standins(bin_dir, ...)`` writes small executables into ``bin_dir``; put it first on
``PATH``. They behave like the real commands as far as Snakemake and its SLURM executor plugin
use them, and log every call (JSON lines in ``state_dir``):

- ``sbatch`` records its arguments, runs the ``--wrap`` command at once (as SLURM would run the
  job script, with ``SLURM_JOB_ID`` set) and prints the job id (``--parsable``); the first job
  of each rule listed in ``state_dir/fail-once`` times out instead (to test retries);
- ``sacct``/``squeue`` report each recorded job of the queried run as COMPLETED or FAILED;
- ``srun`` records its arguments and runs the command after its options;
- ``scontrol``/``sinfo``/``sacctmgr`` answer the plugin's configuration and account queries;
- ``conda`` creates "environments" whose ``python`` is the project's interpreter (and logs which
  environment ran what), and ``<conda root>/bin/activate`` puts an environment first on PATH;
- ``python``/``python3`` fail loudly: no rule may run whatever ``python`` is first on PATH.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

STANDIN_NAMES = ("sbatch", "sacct", "squeue", "srun", "scontrol", "sinfo", "sacctmgr", "conda")
WRONG_PYTHON_EXIT = 97

_COMMON = """\
#!{python}
import json, os, subprocess, sys
STATE = {state!r}
ACCOUNT = {account!r}
CONDA_ROOT = {conda_root!r}
ENVS = {envs_dir!r}
NAME = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]
with open(os.path.join(STATE, "calls.jsonl"), "a") as fh:
    fh.write(json.dumps({{"command": NAME, "args": ARGS}}) + "\\n")


def jobs():
    path = os.path.join(STATE, "jobs.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def option(name):
    for i, arg in enumerate(ARGS):
        if arg == name and i + 1 < len(ARGS):
            return ARGS[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
"""

_BODIES = {
    "sbatch": r"""
job_id = 1000  # claim the next free id atomically: the plugin submits from two threads
os.makedirs(os.path.join(STATE, "ids"), exist_ok=True)
while True:
    try:
        os.close(os.open(os.path.join(STATE, "ids", str(job_id)), os.O_CREAT | os.O_EXCL))
        break
    except FileExistsError:
        job_id += 1
workdir = option("-D") or os.getcwd()
log = (option("--output") or os.path.join(STATE, "slurm-%j.out")).replace("%j", str(job_id))
os.makedirs(os.path.dirname(os.path.join(workdir, log)), exist_ok=True)
rule = (option("--comment") or "").removeprefix("rule_").split("_wildcards_")[0]
fail_once = os.path.join(STATE, "fail-once")  # rules whose first job times out
first = not os.path.exists(os.path.join(STATE, "ids", rule))
if first:
    open(os.path.join(STATE, "ids", rule), "w").close()
if first and os.path.exists(fail_once) and rule in open(fail_once).read().split():
    open(os.path.join(workdir, log), "w").close()
    state = "TIMEOUT"
else:
    env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_JOBID=str(job_id))
    if option("--gpus"):
        env["SLURM_GPUS"] = option("--gpus")
    with open(os.path.join(workdir, log), "w") as out:
        rc = subprocess.call(["/bin/sh", "-c", option("--wrap")], cwd=workdir, env=env,
                             stdout=out, stderr=subprocess.STDOUT)
    state = "COMPLETED" if rc == 0 else "FAILED"
with open(os.path.join(STATE, "jobs.jsonl"), "a") as fh:
    fh.write(json.dumps({"id": job_id, "name": option("--job-name"), "rule": rule,
                         "args": ARGS, "state": state}) + "\n")
print(job_id)
""",
    "sacct": """
name = option("--name")
if name is not None:
    for job in jobs():
        if job["name"] == name:
            print(f"{job['id']}|{job['state']}")
""",
    "squeue": """
for job in jobs():
    if job["name"] == option("--name"):
        print(f"{job['id']}|{job['state']}")
""",
    "srun": """
command = ARGS[next(i for i, arg in enumerate(ARGS) if not arg.startswith("-")):]
os.execvp(command[0], command)
""",
    "scontrol": """
if ARGS[:2] == ["show", "config"]:
    print("MinJobAge               = 300 sec")
    print("MaxArraySize            = 1001")
""",
    "sinfo": """
print("PARTITION AVAIL TIMELIMIT NODES STATE NODELIST")
""",
    "sacctmgr": """
print(ACCOUNT)
""",
    "conda": r"""
if ARGS == ["--version"]:
    print("conda 24.11.3")
elif ARGS[:2] == ["info", "--json"]:
    print(json.dumps({"conda_prefix": CONDA_ROOT, "root_prefix": CONDA_ROOT,
                      "platform": "linux-64", "conda_version": "24.11.3",
                      "envs_dirs": [CONDA_ROOT + "/envs"]}))
elif ARGS[:2] == ["config", "--get"]:
    print(json.dumps({"get": {"channel_priority": "strict"}, "rc_path": "", "success": True}))
elif ARGS[:2] == ["env", "create"]:
    prefix, spec = option("--prefix"), open(option("--file")).read()
    # Which of the workflow's env files this is (Snakemake passes a copy named by its hash).
    names = [f[:-5] for f in sorted(os.listdir(ENVS))
             if f.endswith(".yaml") and open(os.path.join(ENVS, f)).read() == spec]
    os.makedirs(os.path.join(prefix, "bin"))
    python = os.path.join(prefix, "bin", "python")
    with open(python, "w") as fh:
        fh.write("#!/bin/sh\n"
                 f"echo \"{names[0] if names else '?'} $*\" >> {STATE}/conda-python.log\n"
                 f"exec {sys.executable} \"$@\"\n")
    os.chmod(python, 0o755)
elif ARGS[:1] == ["clean"]:
    pass  # Snakemake removes package tarballs after creating an environment
else:
    sys.exit(f"conda stand-in: unsupported call {ARGS}")
""",
}

_ACTIVATE = """\
# conda stand-in: `source activate ENV` puts ENV first on PATH, as conda's activate does.
export CONDA_PREFIX="$1"
export PATH="$1/bin:$PATH"
"""

_WRONG_PYTHON = f"""\
#!/bin/sh
echo "stand-in: a rule ran 'python' from PATH instead of the project's interpreter" >&2
exit {WRONG_PYTHON_EXIT}
"""


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def install_standins(
    bin_dir: Path,
    state_dir: Path,
    envs_dir: Path,
    account: str = "testacct",
    python: str = sys.executable,
) -> None:
    """Write the stand-in commands into ``bin_dir`` (logs in ``state_dir``).

    ``envs_dir`` is the workflow's ``envs/`` (to name each conda env), ``python`` the interpreter
    every stand-in conda env runs (the one with the project's dependencies).
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    conda_root = state_dir / "conda"
    (conda_root / "bin").mkdir(parents=True, exist_ok=True)
    (conda_root / "bin" / "activate").write_text(_ACTIVATE)
    values = {
        "python": python,
        "state": str(state_dir),
        "account": account,
        "conda_root": str(conda_root),
        "envs_dir": str(envs_dir),
    }
    for name in STANDIN_NAMES:
        _write(bin_dir / name, _COMMON.format(**values) + _BODIES[name])
    install_wrong_python(bin_dir)


def install_wrong_python(bin_dir: Path) -> None:
    """``python`` and ``python3`` in ``bin_dir`` that fail: put first on PATH, they catch a rule
    that runs whatever ``python`` is on PATH instead of the project's interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        _write(bin_dir / name, _WRONG_PYTHON)


def submissions(state_dir: Path) -> list[dict]:
    """Every ``sbatch`` call: its ``rule``, ``args`` and the ``state`` sacct reports."""
    path = state_dir / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def calls(state_dir: Path, command: str) -> list[list[str]]:
    """Arguments of every recorded call of ``command``, in order."""
    path = state_dir / "calls.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["args"] for r in records if r["command"] == command]


def path_without(*dirs: str | Path) -> str:
    """The current PATH minus ``dirs`` (e.g. the venv's bin, however the tests were started)."""
    drop = {os.path.realpath(d) for d in dirs}
    keep = [p for p in os.environ["PATH"].split(os.pathsep) if os.path.realpath(p) not in drop]
    return os.pathsep.join(keep)
