"""The parent's checks: which parts of an assert the program computes, and how replies compare."""

from __future__ import annotations

import pytest

from mgrpo.evaluation.sandbox_checks import (
    AssertCheck,
    Garbled,
    Opaque,
    decode,
    same_output,
    same_return_value,
)


@pytest.mark.parametrize(
    ("test", "leaves"),
    [
        ("assert add(1, 2) == 4", ["add(1, 2)"]),
        ("assert set(sim((3, 4), (4, 5))) == set((4,))", ["sim((3, 4), (4, 5))"]),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.001)", ["area(2)"]),
        ("assert not is_prime(8)", ["is_prime(8)"]),
        ("assert f(x=[i for i in range(3)])[0] == 1", ["f(x=[i for i in range(3)])"]),
        ("assert sorted(f()) == [i * 2 for i in range(3)]", ["f()"]),
        ("assert f(1) == 2 and g(2) == 3", ["f(1)", "g(2)"]),
        ("assert Pair(1, 2).total() == 3", ["Pair(1, 2).total()"]),
    ],
)
def test_the_program_computes_only_the_operands_that_name_it(test: str, leaves: list) -> None:
    assert AssertCheck(test).leaves == leaves  # the expected side is never among them


@pytest.mark.parametrize(
    ("test", "values", "holds"),
    [
        ("assert add(1, 2) == 3", [3], True),
        ("assert add(1, 2) == 3", [4], False),
        ("assert set(f()) == {1, 2}", [[2, 1, 1]], True),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.001)", [12.5664], True),
        ("assert math.isclose(area(2), 12.56, rel_tol=0.001)", [13.0], False),
        ("assert not is_prime(8)", [False], True),
        ("assert f() == (1, 2)", [{"tuple": [1, 2]}], True),
        ("assert f() == (1, 2)", [[1, 2]], False),  # as in Python: a list is not a tuple
        ("assert f() == {'a': 1}", [{"dict": [["a", 1]]}], True),
        ("assert f(1) == 2 or g() == 3", [2, 0], True),
    ],
)
def test_the_parent_decides_the_assert(test: str, values: list, holds: bool) -> None:
    assert AssertCheck(test).holds([{"value": v} for v in values]) is holds


def test_an_object_the_runner_could_not_express_never_compares_equal() -> None:
    check = AssertCheck("assert add(1, 2) == 4")
    with pytest.raises(TypeError, match="not plain data"):
        check.holds([{"value": {"opaque": "solution.E"}}])
    with pytest.raises(TypeError):
        bool(Opaque("x.E"))


@pytest.mark.parametrize("case", ["x = f()", "assert f()\nassert g()", "f() == 1", "assert ("])
def test_a_test_case_that_is_not_one_assert_is_refused_by_name(case: str) -> None:
    with pytest.raises(ValueError, match="test case"):
        AssertCheck(case)


@pytest.mark.parametrize(
    "forged",
    [{"tuple": [1], "extra": 2}, {"unknown": 1}, {"set": [[1]]}, {"int": "x"}, {"dict": 5}],
)
def test_a_forged_encoding_is_garbled(forged: object) -> None:
    with pytest.raises(Garbled):
        decode(forged)


def test_stdin_and_functional_rules_are_livecodebench_s() -> None:
    assert same_output("3.0\n 1 2 \n\n", "3\n1 2")
    assert not same_output("3\n", "3\n4\n")
    assert not same_output("abc", "abd")
    assert same_return_value((1, 2), [1, 2])
    assert not same_return_value([(1, 2)], [[1, 2]])


def test_the_program_s_values_cannot_make_the_parent_s_arithmetic_unbounded() -> None:
    check = AssertCheck("assert f() ** g() == 8 and h() * 3 == 9")
    with pytest.raises(Garbled, match="unbounded"):
        check.holds([{"value": 10}, {"value": 70_000}, {"value": 3}])
    assert check.holds([{"value": 2}, {"value": 3}, {"value": 3}])
    repeat = AssertCheck("assert f() * 3 == 'abc' * 3")
    with pytest.raises(Garbled, match="unbounded"):
        AssertCheck("assert g() * f() == ''").holds([{"value": 70_000}, {"value": "x"}])
    assert repeat.holds([{"value": "abc"}])


def test_names_the_setup_imports_are_the_test_s_not_the_program_s() -> None:
    check = AssertCheck("assert Counter(f()) == Counter('aab')", "from collections import Counter")
    assert check.leaves == ["f()"]  # the expected Counter is built here
    assert check.holds([{"value": {"dict": [["a", 2], ["b", 1]]}}])
    assert not check.holds([{"value": "ab"}])
