r"""Final-answer extraction and normalisation.

A rollout's answer is the content of its *last* ``\boxed{...}`` (or ``\fbox{...}``). No box, an
unclosed last box or an empty one means *no answer*: it does not vote and earns reward 0.
Answers are normalised to a canonical string (the *answer class* under ``answer_equivalence:
exact``); in the default mode math-verify then merges the symbolic leftovers
(:func:`merge_equivalent`). Ground truths from problem files go through the same
:func:`normalize_answer` (``mgrpo.data.read_problems``), so a truth and a rollout that box the
same thing always land in the same class.

String rules, applied in this order and repeated until nothing changes (:func:`normalize_answer`):

==  ==========================  ===============================================  ================
#   rule                        examples                                         result
==  ==========================  ===============================================  ================
1   dollar signs and math       ``\$5``, ``$5$``                                 ``5``
    delimiters go
2   spacing commands,           ``1\,000``, ``\left(1,2\right)``,                ``1000``,
    ``\left``/``\right``,       ``\displaystyle\frac12``                         ``(1,2)``, ``0.5``
    ``\displaystyle`` go
3   a one-variable prefix       ``x = 5``, ``a=3``, ``\theta=\frac{\pi}{2}``     ``5``, ``3``, ...
    ``v=`` goes (one letter or  kept: ``x=``, ``f(x)=2``, ``xy=3``,
    a Greek letter, and no      ``x=1,y=2``
    second ``=``)
4   a unit after a quantity     ``5\text{ dollars}``, ``5 dollars``,             ``5``
    goes (see below)            ``5\mbox{ cm}^2``, ``60\text{ km}/\text{h}``
5   text wrappers unwrap        ``\text{yes}``, ``\textbf{12}``                  ``yes``, ``12``
6   degree and percent signs    ``90^\circ``, ``90^{\circ}``, ``90°``,           ``90``, ``10``
    go                          ``10\%``, ``10%``
7   ``\dfrac``/``\tfrac``       ``\dfrac{1}{2}``, ``\frac12``, ``\sqrt3``,       ``0.5``,
    become ``\frac``; one-token ``\sqrt x``                                      ``\sqrt{3}``,
    arguments get braces (TeX                                                    ``\sqrt{x}``
    reads one token)
8   whitespace goes; ``{,}``    ``5 and 7``, ``1{,}000``                         ``5and7``, ``1000``
    becomes ``,``; a trailing
    period goes
9   a lone choice letter in     ``(C)``, ``\text{(C)}``                          ``C``
    parentheses loses them
10  a plain rational becomes    ``1,000``, ``3.50``, ``-0``, ``5.``, ``1/2``,    ``1000``, ``3.5``,
    one canonical string:       ``\frac{2}{4}``, ``-\frac{1}{3}``,               ``0``, ``5``,
    an integer, else a finite   ``\frac{-2}{6}``                                 ``0.5``, ``0.5``,
    decimal, else a reduced                                                      ``-\frac{1}{3}``,
    ``\frac{p}{q}`` (exact: no                                                   ``-\frac{1}{3}``
    rounding)
==  ==========================  ===============================================  ================

Units (rule 4). The question fixes the unit, so the number is what a rollout answers: a unit is
dropped when it ends the answer and follows a *quantity* (a head with a digit and no letters
outside LaTeX commands, such as ``5``, ``-1,000``, ``\frac{3}{2}``, ``2\sqrt{3}``, ``(3,4)``).
A unit is either a text group (``\text``, ``\mbox``, ``\mathrm``, ...) of letters (spaces,
``.``, ``/``, ``-`` and ``'`` allowed inside), or, after whitespace, plain words of two or more
letters; either may carry a power (``^2``, ``^{3}``). So ``5\text{ cm}`` and ``5\text{ cm}^2``
are both ``5`` (a square unit is what an area question asks for; the number is the answer).
Never units: ``i``, ``e`` and ``pi`` (numbers); one plain letter (``2 x`` is a product);
anything followed by more of the answer (``5 \text{ and } 7`` stays ``5and7``, not ``5``); a
head with a variable in it (``2x\text{ cm}`` stays ``2xcm``); a unit glued to the number
without a space or text group (``5dollars``). A text answer with no quantity keeps its words
(``\text{yes}`` is ``yes``, ``\text{(C)}`` is ``C``); choice letters keep their case.
Degrees and percent signs (rule 6) are units wherever they stand: ``50\%`` votes with ``50``,
never with ``0.5`` (math-verify alone would merge ``50\%`` and ``0.5``).

Words and lists. An answer of two or more letters and nothing else (``yes``, ``odd``, ``Devon``,
after rule 5 took its ``\\text{}`` off) is a word: words equal only as words, case aside, in both
modes (:func:`same_word`), never through math-verify, which reads ``no`` as the product ``n*o``
and so equal to ``on``. A comma groups thousands only in a well-formed number (``1,000``,
``12,345,678``); otherwise it separates items (``0,125`` is the list 0 and 125, never 125 or
0.125), and math-verify is given it that way. Rule 5 unwraps nested text groups in one linear
pass (hostile nesting costs no more than its length).

What the string rules leave to math-verify (``answer_equivalence: math_verify``): reordered or
rewritten expressions (``2\pi r``/``2r\pi``, ``\sqrt{3}``/``3^{1/2}``), sets and lists in another
order, numbers inside tuples, and a repeating fraction against its decimal rounded to six or
more places (math-verify rounds: ``0.333333`` votes with ``\frac{1}{3}`` there; ``0.333``
never). Two numbers with finite decimal expansions are compared exactly in both modes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

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


_GREEK = (
    "alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|iota|kappa|lambda|mu|nu|"
    "xi|pi|rho|sigma|tau|upsilon|phi|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Xi|Pi|Sigma|"
    "Phi|Psi|Omega"
)
# Rule 2: spacing that never carries meaning (`\!` and `\,` may sit inside a number: 1\,000).
_SPACING_GONE = ("\\!", "\\,", "\\left", "\\right", "\\displaystyle")
_SPACING_BLANK = re.compile(r"\\(?:;|:|quad|qquad| )|~")
# Rule 3: `x =`, `\theta=` at the start, with no second `=` after it.
_VARIABLE_PREFIX = re.compile(rf"(?:[A-Za-z]|\\(?:{_GREEK})(?![A-Za-z]))\s*=\s*(?P<rest>[^=]+)")
# Rule 4: units.
_TEXT_COMMANDS = r"\\(?:text|textrm|textnormal|textit|textbf|textsf|mbox|mathrm|mathbf|mathit)"
_POWER = r"(?:\^\s*(?:\d|\{\s*\d\s*\}))?"
# Bounded repetitions and a head that ends in a non-space keep the scans linear in the length
# of a (possibly very long, garbage) box.
_TEXT_UNIT = re.compile(
    rf"(?P<head>.*?){_TEXT_COMMANDS}\s*\{{\s*(?P<unit>[A-Za-z][A-Za-z .'/-]{{0,40}})\}}"
    rf"\s*{_POWER}\s*\.?"
)
_WORD_UNIT = re.compile(
    rf"(?P<head>.*?\S)\s+(?P<unit>[A-Za-z]{{2,20}}\.?(?:[\s/-]{{1,3}}[A-Za-z]{{1,20}}\.?){{0,3}})"
    rf"\s*{_POWER}\s*\.?"
)
_NOT_UNITS = frozenset({"i", "e", "pi"})
# Rule 5: every text group's command and braces, found in one pass.
_TEXT_OPENER = re.compile(rf"{_TEXT_COMMANDS}\s*\{{")
# Rule 6.
_DEGREE_PERCENT = ("^\\circ", "^{\\circ}", "\\degree", "°", "\\%", "%")
# Rule 7: a one-token argument is a digit, a letter or a Greek letter.
_TOKEN = rf"(?:[0-9A-Za-z]|\\(?:{_GREEK})(?![A-Za-z]))"
_BRACED = r"\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"  # balanced, three levels deep
_ARG_FIXES = (
    (re.compile(rf"\\frac\s*({_TOKEN})"), r"\\frac{\1}"),
    (re.compile(rf"\\frac({_BRACED})\s*({_TOKEN})"), r"\\frac\1{\2}"),
    (re.compile(rf"\\sqrt\s*({_TOKEN})"), r"\\sqrt{\1}"),
)
# Rule 9.
_CHOICE = re.compile(r"\(([A-Za-z])\)")


def _is_quantity(head: str) -> bool:
    """A digit and no letters outside command names: ``5``, ``\\frac{3}{2}``, ``2\\sqrt{3}``."""
    bare = re.sub(r"\\[A-Za-z]+", "", head)
    return bool(re.search(r"\d", bare)) and not re.search(r"[A-Za-z]", bare)


def _unwrap_text_groups(s: str) -> str:
    """``\\text{yes}`` -> ``yes``, nested groups too, in time linear in ``s`` (rule 5).

    Braces are matched once with a stack; a text command's opening brace and its matching
    closing brace go, with the command. An unclosed group is left as it is.
    """
    openers = {m.end() - 1: m.start() for m in _TEXT_OPENER.finditer(s)}  # brace -> command
    if not openers:
        return s
    drop: list[tuple[int, int]] = []  # [start, end) spans to remove
    stack: list[int] = []
    for i, char in enumerate(s):
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            opened = stack.pop()
            if opened in openers:
                drop.append((openers[opened], opened + 1))
                drop.append((i, i + 1))
    drop.sort()
    kept, position = [], 0
    for start, end in drop:
        kept.append(s[position:start])
        position = end
    kept.append(s[position:])
    return "".join(kept)


def _drop_unit(s: str, pattern: re.Pattern[str]) -> str:
    match = pattern.fullmatch(s)
    if match is None or match.group("unit").strip(" .").lower() in _NOT_UNITS:
        return s
    head = match.group("head").strip()
    return head if _is_quantity(head) else s


def normalize_answer(answer: str) -> str:
    """Canonical string for an extracted answer (string rules only; fast and thread-safe).

    The rules and what they merge are tabled in this module's docstring. They are applied until
    nothing changes, so a normalised answer (a ground truth written in canonical form, say)
    normalises to itself.
    """
    s = answer
    for _ in range(_MAX_PASSES):
        s, previous = _normalize_once(s), s
        if s == previous:
            break
    return s


_MAX_PASSES = 4  # real answers settle in one or two passes


def _normalize_once(answer: str) -> str:
    s = answer.strip().replace("\\$", "").replace("$", "")  # 1
    for token in _SPACING_GONE:  # 2
        s = s.replace(token, "")
    s = _SPACING_BLANK.sub(" ", s).strip()
    prefix = _VARIABLE_PREFIX.fullmatch(s)  # 3
    if prefix and prefix.group("rest").strip():
        s = prefix.group("rest").strip()
    s = _drop_unit(s, _TEXT_UNIT)  # 4: a text-group unit
    s = _unwrap_text_groups(s)  # 5
    s = _drop_unit(s.strip(), _WORD_UNIT)  # 4: plain words (a text group may have held them)
    for token in _DEGREE_PERCENT:  # 6
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")  # 7
    for pattern, braced in _ARG_FIXES:
        s = pattern.sub(braced, s)
    s = "".join(s.split()).replace("{,}", ",").rstrip(".")  # 8
    if _CHOICE.fullmatch(s):  # 9
        s = s[1]
    return _canonical_number(s) or s  # 10


# A comma groups thousands only in a well-formed number (`1,000`, `12,345,678`): `0,125` and
# `01,234` are lists, not numbers.
_DECIMAL = r"[-+]?(?:[1-9]\d{0,2}(?:,\d{3})+(?:\.\d*)?|\d+\.?\d*|\.\d+)"
_RATIONAL = re.compile(
    rf"(?P<sign>[-+]?)(?:(?P<num>{_DECIMAL})(?:/(?P<den>{_DECIMAL}))?"
    rf"|\\frac\{{(?P<fnum>{_DECIMAL})\}}\{{(?P<fden>{_DECIMAL})\}})"
)


_MAX_NUMBER_CHARS = 400  # longer "numbers" stay strings (and stay within int-to-str limits)


def _plain_rational(s: str) -> Fraction | None:
    """The exact value of a plain number, ``a/b`` or ``\\frac{a}{b}``; None for anything else."""
    match = _RATIONAL.fullmatch(s) if len(s) <= _MAX_NUMBER_CHARS else None
    if match is None:
        return None
    num = match.group("num") or match.group("fnum")
    den = match.group("den") or match.group("fden") or "1"
    try:
        value = Fraction(Decimal(num.replace(",", ""))) / Fraction(Decimal(den.replace(",", "")))
    except (InvalidOperation, ZeroDivisionError):
        return None
    return -value if match.group("sign") == "-" else value


def _canonical_number(s: str) -> str | None:
    """Canonical string of a plain rational (rule 10), or None if ``s`` is not one.

    An integer (``-0`` is ``0``); else the exact finite decimal (``3.50`` and ``\\frac{7}{2}`` are
    ``3.5``); else the reduced fraction with its sign in front (``-\\frac{1}{3}``).
    """
    value = _plain_rational(s)
    if value is None:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    twos = fives = 0
    rest = value.denominator
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    sign = "-" if value < 0 else ""
    if rest == 1:  # only 2s and 5s: a finite decimal, written out exactly
        places = max(twos, fives)
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
        return f"{sign}{digits[:-places]}.{digits[-places:].rstrip('0')}"
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def extract_answer(response: str) -> str | None:
    """Normalised final answer of a response, or ``None`` if it has no (non-empty) box."""
    boxed = last_boxed(response)
    if boxed is None:
        return None
    key = normalize_answer(boxed)
    return key or None


def _finite_decimal(s: str) -> str | None:
    """Canonical form of ``s`` if it is a plain number with a finite decimal expansion."""
    canonical = _canonical_number(s)
    return canonical if canonical is not None and "\\frac" not in canonical else None


_WORD = re.compile(r"[A-Za-z]{2,}")
_MATH_NAMES = frozenset({"pi", "infty", "inf", "oo"})  # letters that math-verify reads as numbers


def is_word(answer: str) -> bool:
    """A normalised answer that is a word (``yes``, ``odd``, ``Devon``), compared as a string.

    Two or more letters and nothing else (a text answer after rule 5, spaces removed). A
    product of one-letter variables written without an operator (``xy``) is a word too: such
    answers are compared as written, never reordered.
    """
    return _WORD.fullmatch(answer) is not None and answer.lower() not in _MATH_NAMES


def same_word(a: str, b: str) -> bool | None:
    """Whether two answers are the same word (case aside); None if neither is a word."""
    if not (is_word(a) or is_word(b)):
        return None
    return a.casefold() == b.casefold()


def math_verify_equal(a: str, b: str, timeout_s: int = 2) -> bool:
    """Symbolic equivalence of two normalised answers via math-verify (either direction).

    Plain numbers are decided without math-verify where that is exact: equal canonical numbers
    are equal, and two finite decimals are equal only if identical (math-verify would round them
    at six decimals). A repeating fraction against a decimal is left to math-verify.

    math-verify enforces its timeout with ``signal.alarm``, which only works in the main thread;
    elsewhere (Ray workers, thread pools) it runs without one, so very long inputs are refused
    rather than risk an unbounded sympy call.
    """
    if a == b:
        return True
    words = same_word(a, b)
    if words is not None:  # math-verify reads `no` as the product n*o, equal to `on`
        return words
    canonical_a, canonical_b = _canonical_number(a), _canonical_number(b)
    if canonical_a is not None and canonical_a == canonical_b:
        return True
    if _finite_decimal(a) is not None and _finite_decimal(b) is not None:
        return False
    from math_verify import parse, verify

    in_main = threading.current_thread() is threading.main_thread()
    if not in_main and max(len(a), len(b)) > 64:
        return False
    timeout = timeout_s if in_main else None
    # A comma left after normalisation separates items (well-formed thousands became plain
    # numbers): spaced, so that math-verify does not read `0,125` as the decimal 0.125.
    pa = parse(f"${a.replace(',', ', ')}$", parsing_timeout=timeout)
    pb = parse(f"${b.replace(',', ', ')}$", parsing_timeout=timeout)
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
