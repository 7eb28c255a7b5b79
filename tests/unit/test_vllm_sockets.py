"""vLLM's sockets go to a directory of the job's own, which goes with the job."""

import json
import os
import subprocess
import sys
from pathlib import Path

from mgrpo.vllm_sockets import ENV_VAR

# A job: takes the directory, binds a socket in it from a child process (as vLLM's engine
# process would), and reports what it saw before it exits.
JOB = f"""
import json, os, socket, subprocess, sys
from mgrpo.vllm_sockets import private_rpc_directory
directory = private_rpc_directory()
child = (
    "import os, socket; s = socket.socket(socket.AF_UNIX); "
    "s.bind(os.path.join(os.environ[{ENV_VAR!r}], 'engine'))"
)
subprocess.run([sys.executable, "-c", child], check=True)
base = os.environ[{ENV_VAR!r}]
print(json.dumps({{"directory": directory and str(directory), "inside": sorted(os.listdir(base))}}))
"""


def run_job(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", JOB], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_a_jobs_sockets_live_in_its_own_directory_removed_at_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["TMPDIR"] = str(tmp_path)
    seen = run_job(env)
    directory = Path(seen["directory"])
    assert directory.parent == tmp_path
    assert seen["inside"] == ["engine"]  # the child process bound its socket there
    assert not directory.exists()  # gone with the job, socket and all
    assert list(tmp_path.iterdir()) == []


def test_a_users_own_setting_is_kept(tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    env = {**os.environ, ENV_VAR: str(own), "TMPDIR": str(tmp_path)}
    seen = run_job(env)
    assert seen == {"directory": None, "inside": ["engine"]}  # bound in the user's directory
    assert [p.name for p in own.iterdir()] == ["engine"]  # which stays, as the user set it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
