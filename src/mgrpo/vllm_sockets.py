"""vLLM's inter-process sockets in a directory of the job's own, removed when the job exits.

vLLM names the ZeroMQ sockets between its front end and its engine processes
``$VLLM_RPC_BASE_PATH/<uuid>``, the system's temporary directory by default, and leaves them
there when its processes are ended rather than closed: the end of every verl chunk (Ray's
shutdown) and of every vLLM evaluation: 7 per evaluation of the toy on vLLM-CPU, and 1,888
were in ``/tmp`` after a day of runs. A job that starts vLLM calls
:func:`private_rpc_directory` before vLLM starts; its processes (Ray's local workers and vLLM's
engine processes inherit the environment) then bind their sockets in that directory, which goes
with the job.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

ENV_VAR = "VLLM_RPC_BASE_PATH"  # vLLM's own setting (vllm/envs.py)
DIRECTORY_PREFIX = "mgrpo-vllm-"


def private_rpc_directory() -> Path | None:
    """Point vLLM's sockets at a new directory removed at this process's exit; return it.

    Returns None, changing nothing, where the user has set ``VLLM_RPC_BASE_PATH``. Call it
    before Ray starts: ``atexit`` runs last-registered first, so the directory is removed
    after Ray's own shutdown has ended vLLM's processes.
    """
    if os.environ.get(ENV_VAR):
        return None
    directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX))
    os.environ[ENV_VAR] = str(directory)
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory
