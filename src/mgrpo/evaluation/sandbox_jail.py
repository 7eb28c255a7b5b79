"""Jail for one generated program: isolate, limit, run its test cases, report one verdict line.

Started by :mod:`mgrpo.evaluation.sandbox` as ``python -I -B sandbox_jail.py`` with a minimal
environment, in an empty working directory and a new session; it reads one JSON payload from
stdin. Standard library only (it must not import the project: the program runs in this process).

Isolation, as far as the machine allows (what was achieved is reported with the verdict):

1. new network, mount, PID, IPC and UTS namespaces (``unshare``; as an unprivileged user inside a
   new user namespace that maps only the user's own uid);
2. in the new mount namespace: a fresh ``/proc`` that shows only the jail's processes, every
   mount read-only, and a size-limited tmpfs as the (empty) working directory;
3. as root: drop to ``nobody`` (so ``RLIMIT_NPROC`` applies and nothing of root's is readable);
4. rlimits: CPU seconds, address space, file size, processes, open files, no core dumps;
5. the program runs as PID 1 of its PID namespace: when it exits or is killed (its waiter's
   wall clock, or the parent's), the kernel kills every process it started.

The verdict is written to a private duplicate of the original stdout, prefixed by a per-run
nonce; the program's own stdout/stderr go to /dev/null (stdin-mode tests capture ``sys.stdout``).
"""

import contextlib
import ctypes
import io
import json
import os
import resource
import signal
import sys
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
PR_SET_PDEATHSIG = 1
NOBODY = 65534

_libc = ctypes.CDLL(None, use_errno=True)


class CaseTimeout(BaseException):  # BaseException: `except Exception` in a program cannot eat it
    pass


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


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


def _limit(limits, tasks_before):
    """rlimits; the process limit allows ``processes`` more than the user already runs."""
    mb = 2**20
    pairs = {
        resource.RLIMIT_CPU: (limits["cpu_s"], limits["cpu_s"] + 1),
        resource.RLIMIT_AS: (limits["memory_mb"] * mb,) * 2,
        resource.RLIMIT_FSIZE: (limits["file_size_mb"] * mb,) * 2,
        resource.RLIMIT_NPROC: (tasks_before + 1 + limits["processes"],) * 2,  # 1: itself
        resource.RLIMIT_NOFILE: (limits["open_files"],) * 2,
        resource.RLIMIT_CORE: (0, 0),
    }
    for which, value in pairs.items():
        resource.setrlimit(which, value)


# ----------------------------------------------------------------------------- test harness
def _alarm(seconds):
    def fire(signum, frame):
        raise CaseTimeout()

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm():
    signal.setitimer(signal.ITIMER_REAL, 0)


def _failure(err):
    if isinstance(err, CaseTimeout):
        return "timeout", "test case over its time limit"
    if isinstance(err, MemoryError):
        return "memory_limit", "MemoryError"
    if isinstance(err, AssertionError):
        return "wrong_answer", "assertion failed"
    lines = traceback.format_exception_only(type(err), err)
    return "runtime_error", "".join(lines).strip()[-400:]


def _same_output(got, want):
    """LiveCodeBench's rule: line by line after stripping; numbers compare as decimals."""
    from decimal import Decimal, InvalidOperation

    a = [line.strip() for line in got.strip().splitlines()]
    b = [line.strip() for line in want.strip().splitlines()]
    if a == b:
        return True
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        xs, ys = x.split(), y.split()
        if len(xs) != len(ys):
            return False
        try:
            if any(Decimal(p) != Decimal(q) for p, q in zip(xs, ys, strict=True)):
                return False
        except InvalidOperation:
            return False
    return True


def _plain(value):
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run_tests(program, tests, case_timeout):
    """Status of the program on its tests: (status, cases passed, detail)."""
    mode, cases = tests["mode"], tests["cases"]
    try:
        code = compile(program, "<solution>", "exec")
    except SyntaxError as err:
        return "runtime_error", 0, f"SyntaxError: {err.msg} (line {err.lineno})"
    except (ValueError, MemoryError) as err:
        return _failure(err)[0], 0, str(err)[:400]
    real_stdin, real_stdout = sys.stdin, sys.stdout
    passed = 0
    try:
        if mode in ("assert", "functional"):
            namespace = {"__name__": "solution"}
            setup = compile(tests.get("setup") or "", "<setup>", "exec")
            try:
                _alarm(case_timeout)
                exec(setup, namespace)
                exec(code, namespace)
                _disarm()
            except SystemExit:
                _disarm()
                return "runtime_error", 0, "the program exited before its tests ran"
            if mode == "functional":
                entry = tests["entry_point"]
                if "Solution" in namespace:
                    target = getattr(namespace["Solution"](), entry, None)
                else:
                    target = namespace.get(entry)
                if not callable(target):
                    return "runtime_error", 0, f"no function {entry!r} in the program"
            for case in cases:
                _alarm(case_timeout)
                if mode == "assert":
                    exec(compile(case, "<test>", "exec"), namespace)
                    ok = True
                else:
                    args = [json.loads(line) for line in case["input"].split("\n") if line.strip()]
                    ok = _plain(target(*args)) == _plain(json.loads(case["output"]))
                _disarm()
                if not ok:
                    return "wrong_answer", passed, "wrong return value"
                passed += 1
        else:  # stdin
            for case in cases:
                sys.stdin, sys.stdout = io.StringIO(case["input"]), io.StringIO()
                try:
                    _alarm(case_timeout)
                    exec(code, {"__name__": "__main__"})
                except SystemExit as stop:
                    if stop.code not in (None, 0):
                        _disarm()
                        return "runtime_error", passed, f"exit status {stop.code}"
                finally:
                    _disarm()
                    output = sys.stdout.getvalue()
                    sys.stdin, sys.stdout = real_stdin, real_stdout
                if not _same_output(output, case["output"]):
                    return "wrong_answer", passed, "wrong output"
                passed += 1
    except BaseException as err:
        _disarm()
        sys.stdin, sys.stdout = real_stdin, real_stdout
        status, detail = _failure(err)
        return status, passed, detail
    return "passed", passed, None


# ----------------------------------------------------------------------------- main
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
    tasks_before = _tasks_of(NOBODY if as_root else os.getuid())
    isolation = {"namespaces": False, "read_only_fs": False, "user": os.getuid()}
    if payload.get("isolate", True):
        try:
            isolation["namespaces"] = _unshare(as_root)
        except OSError as err:
            isolation["error"] = str(err)
    if isolation["namespaces"]:
        child = os.fork()  # the child is PID 1 of the new PID namespace
        if child:
            # The waiter: enforce the wall clock on the whole namespace, relay the exit status.
            def expire(signum, frame):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)

            signal.signal(signal.SIGALRM, expire)
            signal.setitimer(signal.ITIMER_REAL, limits["wall_s"])
            _, status = os.waitpid(child, 0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            if os.WIFSIGNALED(status):
                say(exit_signal=os.WTERMSIG(status))
            os._exit(0)
        workdir = os.getcwd()
        try:
            isolation.update(_private_filesystem(workdir, limits["file_size_mb"] * 2**20, sys.path))
        except OSError as err:
            isolation["error"] = str(err)
        os.chdir(workdir)  # enter the tmpfs mounted over the working directory
    if as_root:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        isolation["user"] = NOBODY
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
    _limit(limits, tasks_before)
    program, tests = payload["program"], payload["tests"]
    del payload
    status, passed, detail = run_tests(program, tests, limits["case_timeout_s"])
    say(status=status, passed=passed, cases=len(tests["cases"]), detail=detail, isolation=isolation)
    os._exit(0)


if __name__ == "__main__":
    main()
