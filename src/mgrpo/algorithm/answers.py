"""Final-answer extraction and normalisation.

A rollout's answer is the content of its *last* ``\\boxed{...}``. Answers are normalised to a
canonical string so that equivalent answers (``0.5``, ``\\frac12``, ``\\dfrac{1}{2}``) vote
together.
Cheap string rules handle the common cases; math-verify merges the symbolic leftovers
(see :func:`merge_equivalent`). No box, or an empty one, means *no answer*: it does not vote
and earns reward 0.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation

# `\boxed{` (content follows, braces balanced by hand) or `\boxed 5` (one bare token).
_BOX = re.compile(r"\\(?:boxed|fbox)(?:\s*\{|\s+(?P<token>[^\s${}]+))")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``; nested braces allowed.

    ``\\boxed 5`` (a single token, no braces) is accepted too. Returns ``None`` if there is no box
    or the last box is never closed.
    """
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    if match.group("token") is not None:
        return match.group("token")
    depth = 0
    for j in range(match.end() - 1, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[match.end() : j]
    return None


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\frac(\d)(\d)")
_REMOVE = (
    "\\left",
    "\\right",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\quad",
    "\\displaystyle",
    "^\\circ",
    "^{\\circ}",
    "\\%",
    "%",
    "$",
)


def normalize_answer(answer: str) -> str:
    """Canonical string for an extracted answer (string rules only; fast and thread-safe)."""
    s = answer.strip()
    s = _TEXT_WRAPPER.sub(r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "")
    s = "".join(s.split())
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = s.rstrip(".")
    if s.startswith(("x=", "y=", "k=", "n=")) and len(s) > 2:
        s = s[2:]
    if re.fullmatch(r"\([A-Za-z]\)", s):  # multiple-choice "(C)" -> "C"
        s = s[1]
    return _canonical_number(s) or s


def _canonical_number(s: str) -> str | None:
    """Canonical decimal: ``1,000`` -> ``1000``, ``3.50`` -> ``3.5``, ``-0`` -> ``0``.

    None if ``s`` is not a plain number.
    """
    plain = s.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", plain):
        return None
    try:
        value = Decimal(plain)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(response: str) -> str | None:
    """Normalised final answer of a response, or ``None`` if it has no (non-empty) box."""
    boxed = last_boxed(response)
    if boxed is None:
        return None
    key = normalize_answer(boxed)
    return key or None


def math_verify_equal(a: str, b: str, timeout_s: int = 2) -> bool:
    """Symbolic equivalence of two normalised answers via math-verify (either direction).

    math-verify enforces its timeout with ``signal.alarm``, which only works in the main thread;
    elsewhere (Ray workers, thread pools) it runs without one, so very long inputs are refused
    rather than risk an unbounded sympy call.
    """
    if a == b:
        return True
    if _canonical_number(a) is not None and _canonical_number(b) is not None:
        return False  # both already canonical numbers: equal iff identical strings
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    if not in_main and max(len(a), len(b)) > 64:
        return False
    timeout = timeout_s if in_main else None
    pa = parse(f"${a}$", parsing_timeout=timeout)
    pb = parse(f"${b}$", parsing_timeout=timeout)
    if not pa or not pb:
        return False
    return bool(verify(pa, pb, timeout_seconds=timeout) or verify(pb, pa, timeout_seconds=timeout))


Equivalence = Callable[[str, str], bool]


def merge_equivalent(
    answers: Sequence[str | None], equal: Equivalence | None = math_verify_equal
) -> list[str | None]:
    """Map every answer to the first-seen member of its equivalence class.

    Only distinct strings are compared (usually a handful per prompt), so the cost is small even
    for large pools. ``equal=None`` keeps plain string identity.
    """
    if equal is None:
        return list(answers)
    representatives: list[str] = []
    mapping: dict[str, str] = {}
    for ans in answers:
        if ans is None or ans in mapping:
            continue
        mapping[ans] = next((r for r in representatives if equal(r, ans)), ans)
        if mapping[ans] == ans:
            representatives.append(ans)
    return [None if a is None else mapping[a] for a in answers]
