"""Answer extraction, normalisation and equivalence merging (mgrpo.algorithm.answers)."""

from __future__ import annotations

import threading

import math_verify
import pytest

from mgrpo.algorithm.answers import (
    extract_answer,
    last_boxed,
    math_verify_equal,
    merge_equivalent,
    normalize_answer,
)

# --------------------------------------------------------------------------- last_boxed


def test_last_boxed_returns_content_of_single_box():
    assert last_boxed(r"so the answer is \boxed{42}.") == "42"


def test_last_boxed_last_box_wins_over_earlier_boxes():
    text = r"first guess \boxed{1}, then \boxed{2}, finally \boxed{3} done"
    assert last_boxed(text) == "3"


def test_last_boxed_keeps_nested_braces_balanced():
    assert last_boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert last_boxed(r"x \boxed{\sqrt{\frac{a}{b^{2}}}} tail}") == r"\sqrt{\frac{a}{b^{2}}}"


def test_last_boxed_accepts_bare_token_form():
    # `\boxed 5` carries one token without braces; the token stops at whitespace / $ / braces.
    assert last_boxed(r"answer: \boxed 5") == "5"
    assert last_boxed(r"$\boxed 17$ is it") == "17"


def test_last_boxed_accepts_fbox():
    assert last_boxed(r"\fbox{7}") == "7"
    # fbox and boxed compete on position only: the last one wins.
    assert last_boxed(r"\boxed{1} \fbox{2}") == "2"
    assert last_boxed(r"\fbox{1} \boxed{2}") == "2"


def test_last_boxed_allows_whitespace_before_brace():
    assert last_boxed(r"\boxed  {9}") == "9"


def test_last_boxed_no_box_is_none():
    assert last_boxed("the answer is 42") is None
    assert last_boxed("") is None


def test_last_boxed_unclosed_last_box_is_none_even_if_an_earlier_box_closed():
    assert last_boxed(r"\boxed{12") is None
    assert last_boxed(r"\boxed{1} and then \boxed{\frac{1}{2}") is None


def test_last_boxed_empty_box_is_empty_string():
    assert last_boxed(r"\boxed{}") == ""


# --------------------------------------------------------------------------- normalize_answer


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),  # \dfrac -> \frac
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),  # \tfrac -> \frac
        (r"\frac12", r"\frac{1}{2}"),  # short form gets braces
        (r"\dfrac12", r"\frac{1}{2}"),  # both rules together
        ("1,000", "1000"),  # thousands separator
        ("1,234,567", "1234567"),
        ("-1,000", "-1000"),
        ("1,000.50", "1000.5"),  # separator + trailing zero
        ("3.50", "3.5"),  # trailing zero dropped
        ("3.0", "3"),  # integral decimal -> integer
        ("-0", "0"),  # negative zero
        ("-0.0", "0"),
        ("+5", "5"),
        (".5", "0.5"),
        ("5.", "5"),  # trailing period stripped
        ("007", "7"),
        ("(C)", "C"),  # multiple choice
        ("(b)", "b"),
        ("x=2", "2"),
        ("x = 2", "2"),  # whitespace removed before the prefix rule
        ("y=-3", "-3"),
        ("n=10", "10"),
        ("k=\\frac{1}{2}", r"\frac{1}{2}"),
        ("x=", "x="),  # nothing after the prefix: left alone
        (r"\text{C}", "C"),  # text wrappers unwrapped
        (r"\textbf{12}", "12"),
        (r"\mathrm{(A)}", "A"),  # unwrap, then multiple-choice rule
        (r"\mbox{7}", "7"),
        (r"10\%", "10"),  # percent, escaped
        ("10%", "10"),  # percent, bare
        (r"90^\circ", "90"),  # degrees
        (r"90^{\circ}", "90"),
        ("$5$", "5"),  # math delimiters
        (r"\left( 1, 2 \right)", "(1,2)"),  # \left/\right and spaces removed
        (r"1\,000", "1000"),  # thin space \, removed -> plain digits
        ("  42  ", "42"),
        ("abc", "abc"),  # not a number: kept as is
        ("12,34", "12,34"),  # not a thousands pattern: not a number, kept
    ],
)
def test_normalize_answer_canonical_forms(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalize_answer_dfrac_and_frac_vote_together():
    assert normalize_answer(r"\dfrac{3}{4}") == normalize_answer(r"\frac{3}{4}") == r"\frac{3}{4}"


def test_normalize_answer_is_idempotent_on_canonical_forms():
    for raw in ["1,000", "3.50", "-0", "(C)", r"\dfrac12", r"x=2", r"10\%"]:
        once = normalize_answer(raw)
        assert normalize_answer(once) == once


# --------------------------------------------------------------------------- extract_answer


def test_extract_answer_normalises_last_box():
    assert extract_answer(r"I think \boxed{1} no wait \boxed{\dfrac{1}{2}}") == r"\frac{1}{2}"
    assert extract_answer(r"total \boxed{1,000}") == "1000"
    assert extract_answer(r"\boxed{3.50}") == "3.5"
    assert extract_answer(r"\boxed{(C)}") == "C"
    assert extract_answer(r"\boxed{x = 2}") == "2"
    assert extract_answer(r"\boxed{\text{B}}") == "B"
    assert extract_answer(r"\boxed{10\%}") == "10"
    assert extract_answer(r"\boxed{30^\circ}") == "30"
    assert extract_answer(r"\boxed 5") == "5"
    assert extract_answer(r"\fbox{-0}") == "0"


def test_extract_answer_without_box_is_none():
    assert extract_answer("The answer is 5.") is None


def test_extract_answer_unclosed_box_is_none():
    assert extract_answer(r"\boxed{5") is None


@pytest.mark.parametrize("empty", [r"\boxed{}", r"\boxed{ }", r"\boxed{$$}", r"\boxed{\text{}}"])
def test_extract_answer_empty_box_is_none(empty):
    assert extract_answer(f"so {empty}") is None


# --------------------------------------------------------------------------- math_verify_equal


def test_math_verify_equal_identical_strings():
    assert math_verify_equal("2", "2")
    assert math_verify_equal(r"\frac{1}{2}", r"\frac{1}{2}")


def test_math_verify_equal_symbolic_equivalence():
    assert math_verify_equal("0.5", r"\frac{1}{2}")
    assert math_verify_equal(r"\frac{1}{2}", "0.5")
    assert math_verify_equal(r"\frac{2}{4}", r"\frac{1}{2}")


def test_math_verify_equal_different_values():
    assert not math_verify_equal("2", "3")
    assert not math_verify_equal(r"\frac{1}{3}", "0.5")


def _refuse(*args, **kwargs):
    raise AssertionError("math_verify must not be called on this path")


def test_math_verify_equal_numeric_fast_path_skips_math_verify(monkeypatch):
    monkeypatch.setattr(math_verify, "parse", _refuse)
    monkeypatch.setattr(math_verify, "verify", _refuse)
    # Two different canonical numbers: decided by string identity alone.
    assert math_verify_equal("2", "3") is False
    assert math_verify_equal("0.5", "-0.5") is False
    assert math_verify_equal("1000", "999") is False
    # Identical strings: True before anything else.
    assert math_verify_equal("2", "2") is True
    assert math_verify_equal(r"\sqrt{2}", r"\sqrt{2}") is True


def test_math_verify_equal_non_numeric_pair_does_call_math_verify(monkeypatch):
    # Control for the fast-path test: the patch is effective when math-verify is needed.
    monkeypatch.setattr(math_verify, "parse", _refuse)
    with pytest.raises(AssertionError, match="must not be called"):
        math_verify_equal("0.5", r"\frac{1}{2}")


def test_math_verify_equal_refuses_long_inputs_off_the_main_thread(monkeypatch):
    monkeypatch.setattr(math_verify, "parse", _refuse)
    long_expr = "x+" * 40 + "1"  # 81 characters > 64
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(math_verify_equal(long_expr, "y")))
    worker.start()
    worker.join()
    assert result == [False]


# --------------------------------------------------------------------------- merge_equivalent


def test_merge_equivalent_with_math_verify_merges_half_and_frac():
    merged = merge_equivalent(["0.5", r"\frac{1}{2}", "2", "3", None, "2"])
    # representative = first seen member of the class ("0.5"); 2 and 3 stay apart; None stays.
    assert merged == ["0.5", "0.5", "2", "3", None, "2"]


def test_merge_equivalent_representative_is_first_seen():
    merged = merge_equivalent([r"\frac{1}{2}", "0.5", None])
    assert merged == [r"\frac{1}{2}", r"\frac{1}{2}", None]


def test_merge_equivalent_none_equality_is_string_identity():
    answers = ["0.5", r"\frac{1}{2}", None]
    merged = merge_equivalent(answers, None)
    assert merged == answers
    assert merged is not answers  # a fresh list


def test_merge_equivalent_all_none_and_empty():
    assert merge_equivalent([None, None]) == [None, None]
    assert merge_equivalent([]) == []


def test_merge_equivalent_compares_only_distinct_strings_against_representatives():
    calls: list[tuple[str, str]] = []

    def case_insensitive(a: str, b: str) -> bool:
        calls.append((a, b))
        return a.lower() == b.lower()

    merged = merge_equivalent(["A", "a", "B", "A", "b", None, "a"], case_insensitive)
    assert merged == ["A", "A", "B", "A", "B", None, "A"]
    # "A": no representatives yet -> 0 calls; "a": vs A (match); "B": vs A (no) -> B new;
    # repeated "A"/"a" are cached; "b": vs A (no), vs B (match). Representative is arg 1.
    assert calls == [("A", "a"), ("A", "B"), ("A", "b"), ("B", "b")]
