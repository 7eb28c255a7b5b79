"""Jail for one generated program: isolate it, run its test requests, send back plain data.

Started by :mod:`mgrpo.evaluation.sandbox` as ``python -I -B sandbox_jail.py`` with a minimal
environment, in an empty working directory and a new session; it reads one JSON payload from
stdin. Standard library only (it must not import the project: the program runs in a child of
this process).

Two processes, so that nothing the program does can change its grade:

- the **supervisor** (this process) sets up the isolation, forks the runner, hands it one request
  at a time, times each request with its own clock and SIGKILLs the runner at the case's time
  limit (a program that turns off its own timers is still stopped), then kills every process the
  program left behind. It relays each reply to the parent as one line prefixed by a per-run nonce.
- the **runner** (the child) drops its privileges, takes its limits, loads the program and
  answers requests with plain data only: a stdin case's captured output, a functional case's
  return value, an assert's operand values, each encoded as tagged JSON. The runner never
  receives an expected output: the parent (:mod:`mgrpo.evaluation.sandbox`) compares. A program
  that patches the runner can make it send anything, but it cannot see what it should send.

Isolation, as far as the machine allows (what was achieved is reported with every run):

1. new network, mount, PID, IPC and UTS namespaces (``unshare``; as an unprivileged user inside a
   new user namespace that maps only the user's own uid);
2. in the new mount namespace: a fresh ``/proc`` that shows only the jail's processes, every
   mount read-only, and a size-limited tmpfs as the (empty) working directory;
3. a cgroup made by the parent for this run alone (``memory`` and ``pids`` bounds for all of the
   program's processes together, shared memory included): the runner joins it first;
4. as root: a uid of its own for this run (``RLIMIT_NPROC`` and signals are not shared with any
   other jail, and nothing of root's is readable);
5. rlimits: CPU seconds, address space, file size, processes, open files, no core dumps;
6. with a PID namespace the runner is its PID 1, so its death kills every process it started;
   without one the supervisor is a child subreaper and kills every descendant it inherits, and
   a seccomp filter lets the program signal only its own runner process (no other pid, no
   ptrace, no pidfds), so it cannot reach the evaluator even as the same user.
"""

import contextlib
import ctypes
import io
import json
import math
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY = 1
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC, MOVE_MOUNT_F_EMPTY_PATH = 1, 0o2000000, 4
# Syscall numbers of the unified table (x86_64, aarch64, ...), Linux >= 5.2 / 5.12.
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36

# LiveCodeBench runs every program after these imports (lcb_runner/evaluation/testing_util.py,
# `import_string`), for stdin and functional problems alike; so do we, for those two modes.
LIVECODEBENCH_PREAMBLE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
    "from random import *\nfrom statistics import *\nfrom itertools import *\n"
    "from functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\n"
    "import datetime\nimport collections\nimport heapq\nimport bisect\nimport copy\nimport math\n"
    "import random\nimport statistics\nimport itertools\nimport functools\nimport operator\n"
    "import io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


# ----------------------------------------------------------------------------- isolation
def _unshare(as_root):
    """New namespaces; returns True if they were created."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if as_root and _libc.unshare(flags) == 0:
        return True
    if _libc.unshare(flags | CLONE_NEWUSER) != 0:
        return False
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    return True


def _mount(source, target, fstype, flags, data):
    _check(
        _libc.mount(
            source and source.encode(),
            target.encode(),
            fstype and fstype.encode(),
            ctypes.c_ulong(flags),
            data and data.encode(),
        ),
        f"mount {target}",
    )


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _read_only_everywhere():
    """Every mount read-only: one recursive mount_setattr, or a remount per mount point."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    done = _libc.syscall(
        SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    if done == 0:
        return True
    ok = True
    with open("/proc/self/mountinfo") as fh:
        mounts = [line.split() for line in fh]
    for fields in mounts:
        target, options = fields[4], fields[5].split(",")
        keep = sum(
            flag for name, flag in (("nosuid", 2), ("nodev", 4), ("noexec", 8)) if name in options
        )
        target = target.encode().decode("unicode_escape")
        if _libc.mount(None, target.encode(), None, MS_REMOUNT | MS_BIND | 1 | keep, None) != 0:
            ok = False
    return ok


def _outermost(paths):
    paths = sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)})
    return [p for i, p in enumerate(paths) if not any(p.startswith(q + "/") for q in paths[:i])]


def _hide_homes(keep):
    """Cover root's and the user's home directories with an empty tmpfs, except ``keep``.

    The Python installation (``keep`` = the import path) may live under a home directory: it
    is cloned before the cover goes on and moved back into place, so the program can import
    the standard library but sees nothing else there (tokens, keys, caches).
    """
    import pwd

    try:
        own_home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # a uid without a passwd entry (containers)
        own_home = "/root"
    homes = _outermost(["/root", own_home])
    for home in homes:
        if home == "/":
            continue
        inside = [p for p in _outermost(keep) if p == home or p.startswith(home + "/")]
        clones = []
        for path in inside:
            fd = _libc.syscall(
                SYS_OPEN_TREE,
                AT_FDCWD,
                path.encode(),
                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE,
            )
            if fd < 0:
                raise OSError(ctypes.get_errno(), f"open_tree {path}")
            clones.append((path, fd))
        _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for path, fd in clones:
            os.makedirs(path, exist_ok=True)
            moved = _libc.syscall(
                SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, path.encode(), MOVE_MOUNT_F_EMPTY_PATH
            )
            _check(moved, f"move_mount {path}")
            os.close(fd)
    return homes


def _private_filesystem(workdir, disk_bytes, keep):
    """Fresh /proc, homes hidden, every mount read-only, a tmpfs working directory.

    Runs in the new mount namespace; returns what was achieved.
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    try:
        hidden = _hide_homes(keep)
    except OSError as err:  # e.g. no open_tree (Linux < 5.2): homes stay visible, read-only
        hidden = [f"failed: {err}"]
    os.makedirs(workdir, exist_ok=True)
    read_only = _read_only_everywhere()
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={disk_bytes},mode=1777")
    return {"read_only_fs": read_only, "hidden": hidden}


def _import_path_through_descriptors():
    """Keep the import path reachable after the uid drop, without namespaces.

    The interpreter may live under a directory the jail's uid cannot enter (``/root`` is 0700):
    every import of a module not yet loaded would fail. Directories opened now, as root, stay
    reachable through ``/proc/self/fd/N`` (the magic link skips the ancestors' permission
    checks; the directory's own permissions still apply).
    """
    for i, entry in enumerate(sys.path):
        try:
            fd = os.open(entry, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            continue
        os.set_inheritable(fd, True)
        sys.path[i] = f"/proc/self/fd/{fd}"
    sys.path_importer_cache.clear()


def _tasks_of(uid):
    """Processes and threads that ``uid`` runs now: RLIMIT_NPROC counts them all."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if int(status.get("Uid", "-1").split()[0]) == uid:
            count += int(status.get("Threads", "1"))
    return count


# seccomp: without a PID namespace the program could signal or trace any process of its uid (as
# an ordinary user: the evaluator's). The filter lets it signal only itself (the runner) and
# refuses tracing and pidfds; any other syscall passes. Numbers per architecture.
_SIGNAL_SYSCALLS = {  # kill, tkill, tgkill, rt_sigqueueinfo, rt_tgsigqueueinfo: arg 0 is a pid
    "x86_64": (62, 200, 234, 129, 297),
    "aarch64": (129, 130, 131, 138, 240),
}
_REFUSED_SYSCALLS = {  # ptrace, process_vm_readv, process_vm_writev, pidfd_send_signal,
    "x86_64": (101, 310, 311, 424, 434, 438),  # pidfd_open, pidfd_getfd
    "aarch64": (117, 270, 271, 424, 434, 438),
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_KILL, _RET_EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]  # fmt: skip


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _signal_filter(machine, own_pid):
    """The BPF program, as (code, jt, jf, k) tuples, of the signal filter for ``machine``."""
    load, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    # (code, jump-if-true target, jump-if-false target, k); targets are labels or None (next)
    lines = [
        (load, None, None, 4),
        (jeq, None, "kill", _AUDIT_ARCH[machine]),
        (load, None, None, 0),
    ]
    if machine == "x86_64":  # x32 syscall numbers (bit 30 set) would bypass the checks below
        lines.append((jge, "deny", None, 0x40000000))
    lines += [(jeq, "deny", None, nr) for nr in _REFUSED_SYSCALLS[machine]]
    lines += [(jeq, "check_pid", None, nr) for nr in _SIGNAL_SYSCALLS[machine]]
    labels = {"check_pid": len(lines) + 1, "deny": len(lines) + 4, "kill": len(lines) + 5}
    lines += [
        (ret, None, None, _RET_ALLOW),  # any other syscall
        (load, None, None, 16),  # check_pid: the low 32 bits of argument 0 (a pid)
        (jeq, None, "deny", own_pid),
        (ret, None, None, _RET_ALLOW),  # the runner itself
        (ret, None, None, _RET_EPERM),  # deny
        (ret, None, None, _RET_KILL),  # kill: a foreign architecture's syscall
    ]

    def offset(at, target):
        return 0 if target is None else labels[target] - at - 1

    return [(code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(lines)]


def _install_signal_filter():
    """Install the signal filter in this process (inherited by every child); True if done."""
    machine = os.uname().machine
    if machine not in _SIGNAL_SYSCALLS:
        return False
    prog = _signal_filter(machine, os.getpid())
    array = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), array)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    return _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def _limit(limits):
    mb = 2**20
    pairs = {
        resource.RLIMIT_CPU: (limits["cpu_s"], limits["cpu_s"] + 1),
        resource.RLIMIT_AS: (limits["memory_mb"] * mb,) * 2,
        resource.RLIMIT_FSIZE: (limits["file_size_mb"] * mb,) * 2,
        resource.RLIMIT_NPROC: (limits["nproc"],) * 2,
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in pairs.items():
        resource.setrlimit(which, value)


def _join_cgroup(procs_files):
    """Move this process into the run's cgroup(s); returns the files written (or an error)."""
    joined = []
    for path in procs_files:
        try:
            _write(path, str(os.getpid()))
            joined.append(path)
        except OSError as err:
            return joined, f"{path}: {err.strerror}"
    return joined, None


# ----------------------------------------------------------------------------- the runner
def encode(value, depth=0):
    """Plain data as tagged JSON; honest container subclasses (Counter, OrderedDict) by content.

    Anything else (a class of the program's) is sent as ``{"opaque": <type name>}``: the parent
    never compares it, so an object whose ``__eq__`` always says yes gains nothing.
    """
    if depth > 100:
        raise ValueError("return value nested more than 100 levels deep")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if abs(value) < 2**53 else {"int": str(value)}
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return encode(int(value), depth)
    if isinstance(value, float):
        return encode(float(value), depth)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes | bytearray):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [encode(value.real), encode(value.imag)]}
    if isinstance(value, list):
        return [encode(v, depth + 1) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"tuple": [encode(v, depth + 1) for v in tuple.__iter__(value)]}
    if isinstance(value, set | frozenset):
        return {"set": [encode(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {
            "dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]
        }
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return encode(value.tolist(), depth)
    return {"opaque": f"{type(value).__module__}.{type(value).__qualname__}"}


def _error(err):
    if isinstance(err, MemoryError):
        return {"error": "MemoryError", "memory": True}
    lines = traceback.format_exception_only(type(err), err)
    return {"error": "".join(lines).strip()[-400:]}


class _LiveCodeBenchStdin:
    """Standard input as LiveCodeBench's harness gives a stdin program (``call_method``).

    As in its ``lcb_runner/evaluation/testing_util.py`` (commit 28fef95, 2025-07): ``read()``
    returns the whole input, ``readline()`` (so ``input()``) the next line *without* its newline
    (past the end it raises ``StopIteration``), ``readlines()`` the lines without newlines;
    ``buffer.read()`` the input's bytes and ``buffer.readline()`` its *first* line; iteration and
    anything else a ``StringIO`` of the input. ``builtins.open`` returns the input, but the
    preamble's ``from io import *`` has already bound ``open`` in the program's globals to the
    real one, so ``open(0).read()`` reads the process's own (empty) standard input there, and here.
    """

    def __init__(self, text):
        self._text = text
        self._io = io.StringIO(text)
        self._lines = iter(text.split("\n"))
        self.buffer = _LiveCodeBenchStdinBuffer(text)

    def read(self, *args):
        return self._text

    def readline(self, *args):
        return next(self._lines)

    def readlines(self, *args):
        return self._text.split("\n")

    def __iter__(self):
        return iter(self._io)

    def __getattr__(self, name):
        return getattr(self._io, name)


class _LiveCodeBenchStdinBuffer:
    def __init__(self, text):
        self._data = text.encode()

    def read(self, *args):
        return self._data

    def readline(self, *args):
        return self._data.split(b"\n")[0] + b"\n"


def _wrapped_in_a_function(program):
    """LiveCodeBench's shape for a stdin program: imports at the top, the rest in a function.

    So the program's top-level names are that function's locals (a ``global`` statement in a
    nested function does not reach them, as there); called once per test case.
    """
    import ast

    tree = ast.parse(program)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'":
        tree.body[-1:] = last.body  # the main guard's body runs, as there
    imports = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
    body = [s for s in tree.body if not isinstance(s, ast.Import | ast.ImportFrom)]
    function = ast.FunctionDef(
        name="wrapped_function",
        args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=body or [ast.Pass()],
        decorator_list=[],
        returns=None,
        type_comment=None,
    )
    module = ast.Module(body=[*imports, function], type_ignores=[])
    return ast.fix_missing_locations(module)


class _Runner:
    def __init__(self, mode, program, setup, entry_point):
        self.mode, self.program, self.setup, self.entry = mode, program, setup, entry_point
        self.namespace = {}
        self.target = None
        self.code = None

    def load(self):
        preamble = LIVECODEBENCH_PREAMBLE if self.mode in ("stdin", "functional") else ""
        try:
            if self.mode == "stdin":
                code = compile(_wrapped_in_a_function(self.program), "<solution>", "exec")
            else:
                code = compile(self.program, "<solution>", "exec")
        except SyntaxError as err:
            return {"error": f"SyntaxError: {err.msg} (line {err.lineno})"}
        except (ValueError, MemoryError, RecursionError) as err:
            return _error(err)
        # LiveCodeBench loads the program as module `tmp_sol`; MBPP's executor runs it in a bare
        # namespace: neither runs an `if __name__ == "__main__":` block (but see the stdin shape).
        self.namespace = {"__name__": "tmp_sol" if preamble else "solution"}
        exec(compile(preamble + (self.setup or ""), "<setup>", "exec"), self.namespace)
        try:
            exec(code, self.namespace)
        except SystemExit:
            return {"error": "the program exited before its tests ran"}
        if self.mode == "stdin":
            self.target = self.namespace["wrapped_function"]
        elif self.mode == "functional":
            solution = self.namespace.get("Solution")
            if isinstance(solution, type):
                self.target = getattr(solution(), self.entry, None)
            else:
                self.target = self.namespace.get(self.entry)
            if not callable(self.target):
                return {"error": f"no function {self.entry!r} in the program"}
        return {"loaded": True}

    def stdin(self, text):
        import builtins

        real_open = builtins.open
        captured = io.StringIO()
        captured.close = lambda *args: None  # as LiveCodeBench's capture: closing is a no-op
        sys.stdin = _LiveCodeBenchStdin(text)
        builtins.open = lambda *args, **kwargs: io.StringIO(text)
        sys.stdout = captured
        try:
            self.target()
        except SystemExit:  # LiveCodeBench ignores exit(); the output so far counts
            pass
        finally:
            sys.stdout, sys.stdin = sys.__stdout__, sys.__stdin__
            builtins.open = real_open
        return {"stdout": captured.getvalue()}

    def call(self, args):
        value = self.target(*args)
        return {"value": encode(value)}

    def evaluate(self, expressions):
        values = []
        for source in expressions:
            try:
                values.append({"value": encode(eval(source, self.namespace))})
            except Exception as err:  # an operand that raises: the parent decides if it matters
                values.append(_error(err))
        return {"values": values}

    def answer(self, request):
        op = request["op"]
        try:
            if op == "load":
                return self.load()
            if op == "stdin":
                return self.stdin(request["input"])
            if op == "call":
                return self.call(request["args"])
            if op == "eval":
                return self.evaluate(request["expressions"])
            return {"error": f"unknown request {op!r}"}
        except SystemExit as stop:
            return {"error": f"exit status {stop.code}"}
        except BaseException as err:
            return _error(err)


def _serve(requests_fd, replies_fd, payload):
    """The runner's loop: one JSON line in, one JSON line out, until the input ends."""
    runner = _Runner(
        payload["mode"], payload["program"], payload.get("setup"), payload.get("entry_point")
    )
    del payload
    requests = os.fdopen(requests_fd, "rb")
    while True:
        line = requests.readline()
        if not line:
            os._exit(0)
        reply = runner.answer(json.loads(line))
        try:
            data = (json.dumps(reply) + "\n").encode()
        except (ValueError, TypeError) as err:
            data = (json.dumps({"error": f"unserialisable reply: {err}"[:300]}) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(replies_fd, view) :]


def _runner_main(payload, requests_fd, replies_fd, plan, isolation_queue):
    """In the child: isolate, drop privileges, limit, serve. Never returns."""
    limits = payload["limits"]
    cgroup_error = None
    if plan["cgroup_procs"]:
        _, cgroup_error = _join_cgroup(plan["cgroup_procs"])
    state = {"cgroup_error": cgroup_error}
    if plan["namespaces"]:
        workdir = os.getcwd()
        try:
            state.update(_private_filesystem(workdir, limits["file_size_mb"] * 2**20, sys.path))
        except OSError as err:
            state["fs_error"] = str(err)
        os.chdir(workdir)  # enter the tmpfs mounted over the working directory
    uid = plan["uid"]
    if uid is not None:
        if not plan["namespaces"]:
            _import_path_through_descriptors()
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        _libc.prctl(PR_SET_DUMPABLE, 1)  # /proc/self belongs to the new uid (import path)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    _limit(limits)
    if not plan["namespaces"]:  # no PID namespace hides the evaluator's processes
        state["signal_filter"] = _install_signal_filter()
    os.write(isolation_queue, (json.dumps(state) + "\n").encode())
    os.close(isolation_queue)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdin = sys.__stdin__ = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = open(os.devnull, "w")  # noqa: SIM115
    try:
        _serve(requests_fd, replies_fd, payload)
    finally:
        os._exit(0)


# ----------------------------------------------------------------------------- the supervisor
def _children():
    """PIDs of this process's children (its own and, as a subreaper, inherited orphans)."""
    found = set()
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as fh:
            found.update(int(p) for p in fh.read().split())
    return found


def _kill_descendants(deadline_s=5.0):
    """SIGKILL every child until none is left (orphans of killed ones are reparented to us)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        children = _children()
        if not children:
            return True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)
    return False


class _Supervisor:
    def __init__(self, runner_pid, to_runner, from_runner):
        self.pid = runner_pid
        self.to_runner, self.from_runner = to_runner, from_runner
        self.buffer = b""
        self.exit_status = None

    def ask(self, request, timeout_s, cap):
        """The runner's reply line, or ("timeout" | "died", detail)."""
        started = time.monotonic()
        try:
            os.write(self.to_runner, (json.dumps(request) + "\n").encode())
        except BrokenPipeError:
            return "died", self.reap()
        end = started + timeout_s
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0:
                self.kill()
                return "timeout", round(time.monotonic() - started, 3)
            ready, _, _ = select.select([self.from_runner], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.from_runner, 1 << 16)
            if not chunk:
                return "died", self.reap()
            self.buffer += chunk
            if len(self.buffer) > cap and b"\n" not in self.buffer[:cap]:
                self.kill()
                return "too_long", cap
        line, _, self.buffer = self.buffer.partition(b"\n")
        return "reply", line.decode(errors="replace")

    def kill(self):
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def reap(self):
        if self.exit_status is None:
            _, status = os.waitpid(self.pid, 0)
            self.exit_status = (
                {"signal": os.WTERMSIG(status)}
                if os.WIFSIGNALED(status)
                else {"exit": os.WEXITSTATUS(status)}
            )
        return self.exit_status


def main():
    del sys.path[0]  # this file's directory: the program must not import the project
    payload = json.loads(sys.stdin.buffer.read())
    nonce, limits = payload["nonce"], payload["limits"]
    report = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115

    def say(**fields):
        report.write(f"{nonce} {json.dumps(fields)}\n")
        report.flush()

    as_root = os.getuid() == 0
    uid = payload["uid"] if as_root else None
    isolation = {"namespaces": False, "read_only_fs": False, "user": uid or os.getuid()}
    if payload.get("isolate", True):
        try:
            isolation["namespaces"] = _unshare(as_root)
        except OSError as err:
            isolation["error"] = str(err)
    if not isolation["namespaces"]:  # orphans of the program become our children, to be killed
        isolation["subreaper"] = _libc.prctl(PR_SET_CHILD_SUBREAPER, 1) == 0
    # RLIMIT_NPROC counts every task of the uid: a run's own uid starts from none; without one,
    # the limit allows `processes` more than the user already runs (shared with its other jobs).
    already = 0 if uid is not None else _tasks_of(os.getuid())
    limits["nproc"] = already + 1 + limits["processes"]
    isolation["own_uid"] = uid is not None
    plan = {"namespaces": isolation["namespaces"], "uid": uid, "cgroup_procs": payload["cgroup"]}
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    state_r, state_w = os.pipe()
    runner = os.fork()  # with a new PID namespace, the runner is its PID 1
    if runner == 0:
        for fd in (requests_w, replies_r, state_r, report.fileno()):
            os.close(fd)
        nonce = report = say = None  # nothing of the verdict channel stays in the runner's frames
        payload.pop("nonce", None)
        _runner_main(payload, requests_r, replies_w, plan, state_w)
    for fd in (requests_r, replies_w, state_w):
        os.close(fd)
    with os.fdopen(state_r) as fh:
        state = fh.readline()
    if state:
        isolation.update(json.loads(state))
    say(isolation=isolation)
    supervisor = _Supervisor(runner, requests_w, replies_r)
    deadline = time.monotonic() + limits["wall_s"]
    for index, request in enumerate(payload["requests"]):
        timeout = min(limits["case_timeout_s"], deadline - time.monotonic())
        kind, body = supervisor.ask(request, max(timeout, 0.0), request.get("cap", 1 << 20))
        if kind == "reply":
            try:
                say(index=index, reply=json.loads(body))
            except ValueError:
                say(index=index, failure="garbled", detail=body[:200])
                break
            continue
        say(index=index, failure=kind, detail=body)
        break
    supervisor.kill()
    supervisor.reap()
    if not isolation["namespaces"]:
        _kill_descendants()
    say(done=True)
    os._exit(0)


if __name__ == "__main__":
    main()
