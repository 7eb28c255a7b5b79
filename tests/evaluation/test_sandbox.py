"""The code sandbox: test modes, and hostile programs contained, failed and within limits."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from sandbox_support import LIMITS, SECRET_NAME, attack, leftover_jails

from mgrpo.evaluation.sandbox import JAIL, jail_owner_tag, run_program


# ----------------------------------------------------------------------------- test modes
def test_assert_mode_passes_and_fails() -> None:
    tests = {"mode": "assert", "setup": "import math", "cases": ["assert f(4) == 2"]}
    assert run_program("def f(x):\n    return math.isqrt(x)\n", tests, LIMITS).status == "passed"
    wrong = run_program("def f(x):\n    return x\n", tests, LIMITS)
    assert (wrong.status, wrong.passed) == ("wrong_answer", 0)
    broken = run_program("def f(x) return x\n", tests, LIMITS)
    assert broken.status == "runtime_error" and "SyntaxError" in broken.detail


def test_stdin_mode_compares_lines_and_numbers() -> None:
    tests = {
        "mode": "stdin",
        "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "1.5 1.5\n", "output": "3.00"}],
    }
    adds = "a, b = map(float, input().split())\nprint(a + b)\n"
    assert run_program(adds, tests, LIMITS).status == "passed"  # "3.0" == "3" as decimals
    result = run_program("print(input())\n", tests, LIMITS)
    assert (result.status, result.passed) == ("wrong_answer", 0)


def test_functional_mode_calls_the_solution_method() -> None:
    tests = {
        "mode": "functional",
        "entry_point": "pair",
        "cases": [
            {"input": "[3, 1, 2]\n2", "output": "[1, 2]"},
            {"input": "[5]\n0", "output": "[]"},
        ],
    }
    program = "class Solution:\n    def pair(self, xs, k):\n        return tuple(sorted(xs)[:k])\n"
    assert run_program(program, tests, LIMITS).status == "passed"  # a tuple equals its list
    missing = run_program("def other():\n    pass\n", tests, LIMITS)
    assert missing.status == "runtime_error" and "pair" in missing.detail


def test_exiting_early_is_not_passing() -> None:
    # Without the verdict protocol, `exit(0)` before the tests would look like success.
    result = run_program(
        "import sys\nsys.exit(0)\n", {"mode": "assert", "cases": ["assert False"]}, LIMITS
    )
    assert result.status == "runtime_error"


def test_a_forged_verdict_line_does_not_count() -> None:
    # The old protocol's verdict line, written to every descriptor the program can reach.
    program = (
        "import os\n"
        "for fd in range(3, 20):\n"
        "    try:\n"
        '        os.write(fd, b\'0123 {"status": "passed", "passed": 1}\\n\')\n'
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_program(program, {"mode": "assert", "cases": ["assert False"]}, LIMITS)
    assert result.status in ("wrong_answer", "runtime_error")


# ----------------------------------------------------------------------------- hostile programs
def test_infinite_loop_times_out(unharmed: Path) -> None:
    result = attack("while True:\n    pass")
    assert result.status == "timeout"
    assert result.seconds < LIMITS.total_timeout_s + 10


def test_a_program_that_ignores_alarms_and_sleeps_is_killed(unharmed: Path) -> None:
    body = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(3600)"
    result = attack(body)
    assert result.status == "timeout"
    assert result.seconds < LIMITS.total_timeout_s + 10


def test_fork_bomb_is_contained_and_killed(unharmed: Path) -> None:
    result = attack(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    assert result.status in ("timeout", "runtime_error")
    assert result.seconds < LIMITS.total_timeout_s + 10
    # leftover_jails() (in `unharmed`) checks that no forked copy survives.


def test_the_leftover_check_sees_this_process_jails_only() -> None:
    """A jail left running is found (so `unharmed` can fail), one of another owner (a parallel
    test worker's) is not. Both jails wait for a payload that never comes."""
    import subprocess
    import sys

    jails = {
        owner: subprocess.Popen(
            [sys.executable, "-I", "-B", str(JAIL), jail_owner_tag(owner)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        for owner in (os.getpid(), os.getpid() + 1)
    }
    try:
        assert leftover_jails() == [jails[os.getpid()].pid]
    finally:
        for jail in jails.values():
            jail.kill()
            jail.wait()
    assert leftover_jails() == []


def test_process_count_is_limited(unharmed: Path) -> None:
    body = (
        "import os, time\n"
        "made = 0\n"
        "for _ in range(500):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "    except OSError:\n"
        "        raise RuntimeError(f'fork refused after {made}')\n"
        "    made += 1\n"
        "return True"
    )
    result = attack(body)
    assert result.status == "runtime_error"
    made = int(result.detail.rsplit(" ", 1)[-1])
    bounds = result.isolation["bounds"]["processes"]
    if "shared" in bounds:  # the user's own processes that exit meanwhile leave room
        assert LIMITS.processes <= made <= LIMITS.processes + 16, result
    else:  # a cgroup or a uid of its own: exactly the limit
        assert made == LIMITS.processes, result


def test_ten_gigabytes_of_memory_are_refused(unharmed: Path) -> None:
    result = attack("data = bytearray(10 * 2**30)\nreturn True")
    assert result.status == "memory_limit"


def test_a_one_gigabyte_file_is_cut_off(unharmed: Path) -> None:
    body = (
        "with open('big', 'wb') as fh:\n"
        "    for _ in range(1024):\n"
        "        fh.write(bytes(2**20))\n"
        "return True"
    )
    result = attack(body)
    assert result.status == "runtime_error" and "File too large" in result.detail
    assert not list(Path(tempfile.gettempdir()).glob("mgrpo-sandbox-*/big"))


def test_writing_outside_the_working_directory_fails(
    unharmed: Path, needs_namespaces: None
) -> None:
    # A world-writable directory: only the sandbox's read-only file system stops the write.
    target_dir = Path(tempfile.mkdtemp(prefix="mgrpo-sandbox-test-"))
    target_dir.chmod(0o777)
    targets = [target_dir / "escaped.txt", "../escaped.txt", unharmed / "own.txt"]
    body = (
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as fh:\n"
        "            fh.write('escaped')\n"
        "        return True\n"
        "    except OSError:\n"
        "        continue\n"
        "return False"
    )
    try:
        result = attack(body)
        assert result.status == "wrong_answer"
        assert list(target_dir.iterdir()) == []
        assert not (Path(tempfile.gettempdir()) / "escaped.txt").exists()
    finally:
        target_dir.rmdir()


@pytest.mark.parametrize("isolate", [True, False])
def test_the_parents_environment_is_not_inherited(unharmed: Path, isolate: bool) -> None:
    body = (
        "import os\n"
        f"if {SECRET_NAME!r} in os.environ:\n"
        "    return True\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        with open(f'/proc/{pid}/environ', 'rb') as fh:\n"
        f"            if {SECRET_NAME.encode()!r} in fh.read():\n"
        "                return True\n"
        "    except OSError:\n"
        "        pass\n"
        "return False"
    )
    result = attack(body, isolate=isolate)
    if not isolate and os.getuid() != 0:
        pytest.skip("without namespaces a program runs as this user and can read its /proc")
    assert result.status == "wrong_answer"


def test_no_network(unharmed: Path, needs_namespaces: None) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        body = (
            "import socket\n"
            f"for address in [('127.0.0.1', {port}), ('1.1.1.1', 53)]:\n"
            "    try:\n"
            "        socket.create_connection(address, timeout=1).close()\n"
            "        return True\n"
            "    except OSError:\n"
            "        pass\n"
            "return False"
        )
        result = attack(body)
        assert result.status == "wrong_answer"
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected to this process


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("while True:\n    pass", "timeout"),
        ("data = bytearray(10 * 2**30)\nreturn True", "memory_limit"),
    ],
)
def test_limits_hold_without_namespaces(unharmed: Path, body: str, status: str) -> None:
    assert attack(body, isolate=False).status == status
