"""The verdict is decided outside the program; LiveCodeBench's harness behaviour is reproduced.

Every cheating program here passed (or would pass) when the tests ran inside the program's own
interpreter; each must now fail. Each LiveCodeBench case states what its official harness does.
"""

from __future__ import annotations

import pytest
from sandbox_support import asserts, functional, run, stdin_cases

# ----------------------------------------------------------------------------- cheating programs
ALWAYS_EQUAL = "class E:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"

# Looks for the expected value of an `== N` test in every string it can reach: the frames
# calling it, every container the garbage collector knows, and the module globals.
SNOOP = """
import gc, re, sys
def _snoop():
    found = []
    def scan(value):
        if isinstance(value, str):
            found.extend(re.findall(r"==\\s*(-?\\d+)", value))
    frame = sys._getframe(1)
    while frame is not None:
        for value in frame.f_locals.values():
            scan(value)
            if isinstance(value, dict):
                for item in value.values():
                    scan(item)
            if isinstance(value, list):
                for item in value:
                    scan(item)
        frame = frame.f_back
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            for item in list(obj.values()):
                scan(item)
        elif isinstance(obj, list | tuple):
            for item in list(obj):
                scan(item)
    return int(found[-1]) if found else -1
"""


@pytest.mark.parametrize(
    ("program", "test"),
    [
        (ALWAYS_EQUAL + "def add(a, b):\n    return E()\n", "assert add(1, 2) == 4"),
        # an int whose == always holds
        ("class Yes(int):\n    def __eq__(s, o):\n        return True\n"
         "    __hash__ = int.__hash__\ndef add(a, b):\n    return Yes(0)\n",
         "assert add(1, 2) == 4"),
        # a list whose == always holds: compared by its contents
        ("class L(list):\n    def __eq__(s, o):\n        return True\n"
         "def pair():\n    return L([0])\n", "assert pair() == [1, 2]"),
        # the test's own `sorted` and `set` replaced in builtins
        (ALWAYS_EQUAL + "import builtins\nbuiltins.sorted = lambda *a, **k: E()\n"
         "builtins.set = lambda *a, **k: E()\ndef f():\n    return [3, 1]\n",
         "assert sorted(f()) == [1, 2, 3] and set(f()) == {1, 2, 3}"),
        # AssertionError made harmless
        ("import builtins\nbuiltins.AssertionError = type('Never', (BaseException,), {})\n"
         "def f():\n    return 0\n", "assert f() == 1"),
        # reads the expected value from the harness's frames and memory
        (SNOOP + "def add(a, b):\n    return _snoop()\n", "assert add(1, 2) == 4"),
        # the name the setup imports rebound, so that both sides of the test build the same
        ("Counter = lambda *a, **k: {}\ndef f():\n    return 'xyz'\n",
         "assert Counter(f()) == Counter('aab')"),
        # `not` of an object that says it is false
        ("class F:\n    def __bool__(self):\n        return False\ndef ok():\n    return F()\n",
         "assert not ok()"),
    ],
)  # fmt: skip
def test_an_assert_cannot_be_passed_by_the_program(program: str, test: str) -> None:
    result = run(program, asserts(test, setup="from collections import Counter"))
    assert result.status in ("wrong_answer", "runtime_error"), result


def test_functional_return_values_are_compared_outside() -> None:
    tests = functional("solve", ("[1, 2]", "3"))
    for body in (
        ALWAYS_EQUAL + "class Solution:\n    def solve(self, xs):\n        return E()\n",
        "class L(list):\n    def __eq__(s, o):\n        return True\n"
        "class Solution:\n    def solve(self, xs):\n        return L()\n",
        SNOOP + "class Solution:\n    def solve(self, xs):\n        return _snoop()\n",
    ):
        assert run(body, tests).status == "wrong_answer"


STDIN_CHEATS = {
    # prints the expected output if the harness holds it anywhere the program can look
    "frames": """
import gc, sys
def outputs(value):
    if isinstance(value, dict) and isinstance(value.get("output"), str):
        yield value["output"]
    if isinstance(value, list):
        for item in value:
            yield from outputs(item)
found = []
frame = sys._getframe()
while frame is not None:  # the case being run first (a local dict), then every other place
    found.extend(v["output"] for v in list(frame.f_locals.values()) if isinstance(v, dict)
                 and isinstance(v.get("output"), str))
    frame = frame.f_back
for obj in gc.get_objects():
    found.extend(outputs(obj))
print(found[0] if found else "")
""",
    # replaces every comparison-looking function of the harness
    "comparison": """
import sys
for module in list(sys.modules.values()):
    for name in dir(module):
        if "same" in name or "compare" in name or "check" in name:
            try:
                setattr(module, name, lambda *a, **k: True)
            except Exception:
                pass
print("nonsense")
""",
    # finds the harness's verdict writer in its frames and reports success, then exits
    "verdict writer": """
import os, sys
frame = sys._getframe()
while frame is not None:
    for name, value in list(frame.f_locals.items()):
        if callable(value) and name in ("say", "report", "write_verdict"):
            try:
                value(status="passed", passed=2, cases=2, detail=None, isolation={})
            except Exception:
                pass
    frame = frame.f_back
for fd in range(3, 64):
    try:
        os.write(fd, b'{"stdout": "42"}\\n{"status": "passed", "passed": 2}\\n')
    except OSError:
        pass
os._exit(0)
""",
}


@pytest.mark.parametrize("name", sorted(STDIN_CHEATS))
def test_a_stdin_program_cannot_see_or_change_the_check(name: str) -> None:
    result = run(STDIN_CHEATS[name], stdin_cases(("5\n", "42\n"), ("6\n", "43\n")))
    assert result.status in ("wrong_answer", "runtime_error"), result


def test_a_program_that_disables_its_timers_is_stopped_at_the_case_limit() -> None:
    program = (
        "import signal\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "def f():\n    signal.setitimer(signal.ITIMER_REAL, 0)\n    while True:\n        pass\n"
    )
    # The run's budget is 10 s; the case's is 1 s: only a clock outside the program stops it at 1.
    result = run(program, asserts(*["assert f() == 1"] * 9), total_timeout_s=10.0)
    assert result.status == "timeout"
    assert result.seconds < 4.0, result


# ----------------------------------------------------------------------------- LiveCodeBench
def test_functional_programs_run_after_livecodebench_imports() -> None:
    program = (
        "class Solution:\n"
        "    def maxSum(self, nums: List[int], k: int) -> Optional[int]:\n"
        "        heap = nums[:]\n"
        "        heapify(heap)\n"
        "        extra = gcd(4, 6) - 2 + len(Counter()) + int(inf > 0) - 1\n"
        "        return sum(nlargest(k, heap)) + extra\n"
    )
    assert run(program, functional("maxSum", ("[1, 5, 3]\n2", "8"))).status == "passed"


def test_functional_tuples_compare_as_livecodebench_does() -> None:
    tests = functional("pair", ("[3, 1]", "[1, 3]"))
    top = "class Solution:\n    def pair(self, xs):\n        return tuple(sorted(xs))\n"
    assert run(top, tests).status == "passed"  # a returned tuple becomes a list there
    nested = functional("pairs", ("[3, 1]", "[[1, 3]]"))
    inner = "class Solution:\n    def pairs(self, xs):\n        return [tuple(sorted(xs))]\n"
    assert run(inner, nested).status == "wrong_answer"  # nested tuples stay tuples there


SUM = ("1 2\n", "3\n")


@pytest.mark.parametrize(
    ("program", "status"),
    [
        ("a, b = map(int, input().split())\nprint(a + b)", "passed"),
        ("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)", "passed"),
        ("import sys\ninput = sys.stdin.readline\nprint(sum(map(int, input().split())))", "passed"),
        ("import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))", "passed"),
        ("import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))", "passed"),
        ("import sys\nsys.stdout.write(str(sum(map(int, input().split()))))", "passed"),
        ("print(sum(map(int, input().split())))\nexit(3)", "passed"),  # exit is ignored there
        ("def main():\n    print(3)\nif __name__ == '__main__':\n    main()", "passed"),
        # LiveCodeBench's preamble binds `open` before its harness patches it: open(0) reads the
        # process's own (empty) standard input there.
        ("print(sum(map(int, open(0).read().split())))", "wrong_answer"),
        # Its stdout is a StringIO, which has no `buffer`.
        ("import sys\nsys.stdout.buffer.write(b'3')", "runtime_error"),
        # The program runs as the body of a function there: `global` does not reach its names.
        ("total = 0\ndef add(x):\n    global total\n    total += x\nadd(3)\nprint(total)",
         "runtime_error"),
        ("print(sum(map(int, input().split())) + bisect_left([1], 1) + len(deque()))", "passed"),
    ],
)  # fmt: skip
def test_stdin_idioms_behave_as_in_livecodebench(program: str, status: str) -> None:
    result = run(program, stdin_cases(SUM))
    assert result.status == status, result


def test_a_bad_test_case_is_a_grader_error_naming_it() -> None:
    bad = functional("solve", ("[1, 2]", "3"), ("[1, 2", "3"))
    result = run("class Solution:\n    def solve(self, xs):\n        return 3\n", bad)
    assert result.status == "grader_error" and "functional test case 1" in result.detail
    not_assert = run("x = 1", asserts("x == 1"))
    assert not_assert.status == "grader_error" and "'x == 1'" in not_assert.detail
