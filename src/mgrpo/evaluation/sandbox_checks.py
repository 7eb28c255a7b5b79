"""How the parent judges a program's replies: expected outputs never enter the program's process.

The jail's runner sends back plain data only (tagged JSON, :func:`decode`): a stdin case's
captured output, a functional case's return value, an assert's operand values. Everything that
decides the grade runs here, in the evaluating process, on builtin objects this module built:

- **stdin**: LiveCodeBench's rule (:func:`same_output`);
- **functional**: LiveCodeBench's rule: a returned tuple becomes a list, then ``==`` with the
  JSON output (nested tuples stay tuples and differ from lists, as there);
- **assert**: the test statement is split (:class:`AssertCheck`). Every sub-expression that names
  something of the program's (``add(1, 2)``) is a *leaf*, evaluated by the runner; the rest of the
  statement (``== 4``, ``set(...)``, ``math.isclose(..., rel_tol=...)``, ``not``, names the test's
  setup imports such as ``Counter``) is evaluated here on the leaves' values. The expected side
  of an assert is never sent to the program.

A value the runner could not express as plain data (an object of the program's own class) is an
:class:`Opaque`; comparing it, hashing it or asking its truth fails the test, so an object whose
``__eq__`` always answers yes gains nothing.
"""

from __future__ import annotations

import ast
import builtins
import functools
import math
import operator
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

# Names a test statement may use that are evaluated here, never by the program: builtins, the
# modules MBPP's tests use, and whatever the test's setup code imports (test_imports).
TRUSTED_MODULES = {"math": math}


@functools.lru_cache(maxsize=64)
def _trusted_globals(setup: str) -> dict[str, Any]:
    """The parent's namespace for a test: builtins, ``math``, and the setup's imports."""
    namespace: dict[str, Any] = {"__builtins__": builtins, **TRUSTED_MODULES}
    try:
        tree = ast.parse(setup)
    except SyntaxError:
        return namespace
    imports = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom)]
    if imports:  # the test data's own imports (trusted); other setup code runs in the program
        exec(compile(ast.Module(body=imports, type_ignores=[]), "<setup>", "exec"), namespace)
    return namespace


class Opaque:
    """A value the program returned that is not plain data; it equals nothing, not even itself."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def _refuse(self, *args: object) -> Any:
        raise TypeError(f"the program returned a {self.type_name}, which is not plain data")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __len__ = _refuse  # type: ignore[assignment]
    __iter__ = __hash__ = __add__ = __radd__ = __sub__ = __mul__ = __contains__ = _refuse  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


class Garbled(ValueError):
    """A reply that is not the runner's plain-data encoding (a program that forged it)."""


def decode(value: Any, depth: int = 0) -> Any:
    """Builtin objects from the runner's tagged JSON (``sandbox_jail.encode``)."""
    if depth > 200:
        raise Garbled("value nested too deeply")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode(v, depth + 1) for v in value]
    if not isinstance(value, dict) or len(value) != 1:
        raise Garbled(f"not an encoded value: {str(value)[:80]}")
    ((tag, body),) = value.items()
    try:
        if tag == "tuple":
            return tuple(decode(v, depth + 1) for v in body)
        if tag == "set":
            return {decode(v, depth + 1) for v in body}
        if tag == "dict":
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
        if tag == "int":
            return int(body)
        if tag == "float":
            return float(body)
        if tag == "bytes":
            return bytes.fromhex(body)
        if tag == "complex":
            return complex(decode(body[0]), decode(body[1]))
        if tag == "opaque":
            return Opaque(str(body)[:200])
    except (TypeError, ValueError) as err:
        raise Garbled(f"bad {tag!r} value: {err}") from None
    raise Garbled(f"unknown tag {tag!r}")


# ----------------------------------------------------------------------------- stdin
def same_output(got: str, want: str) -> bool:
    """LiveCodeBench's rule: line by line after stripping; numbers compare as decimals."""
    a = [line.strip() for line in got.strip().split("\n")]
    b = [line.strip() for line in want.strip().split("\n")]
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        try:
            if [Decimal(p) for p in x.split()] != [Decimal(q) for q in y.split()]:
                return False
        except InvalidOperation:
            return False
    return True


# ----------------------------------------------------------------------------- functional
def same_return_value(value: Any, expected: Any) -> bool:
    """LiveCodeBench's rule for call-based problems (``grade_call_based``); ``expected`` parsed."""
    if isinstance(value, tuple):  # only the top level, as there
        value = list(value)
    return bool(value == expected)


# ----------------------------------------------------------------------------- assert
class LeafError(Exception):
    """An operand the program computed raised (its message is the runner's)."""


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor, ast.LShift: operator.lshift, ast.RShift: operator.rshift,
    ast.MatMult: operator.matmul,
}  # fmt: skip
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}  # fmt: skip
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}  # fmt: skip


def _unbounded(op: ast.operator, left: Any, right: Any) -> bool:
    """Whether the test's ``left <op> right`` on a program's values could run for hours.

    ``x ** n`` and ``x << n`` with an exponent over 65,536, or a sequence repeated that often:
    no real test does this, but the values are the program's to choose.
    """

    def big(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and abs(x) > 1 << 16

    sequence = (str, bytes, list, tuple)
    if isinstance(op, ast.Pow | ast.LShift):
        return isinstance(left, int) and abs(left) > 1 and big(right)
    if isinstance(op, ast.Mult):
        return (isinstance(left, sequence) and big(right)) or (
            isinstance(right, sequence) and big(left)
        )
    return False


def _free_names(node: ast.AST) -> set[str]:
    """Names ``node`` reads that it does not bind itself (comprehension targets, lambda args)."""
    loaded, bound = set(), set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loaded if isinstance(sub.ctx, ast.Load) else bound).add(sub.id)
        elif isinstance(sub, ast.arg):
            bound.add(sub.arg)
    return loaded - bound


class AssertCheck:
    """One ``assert`` test statement, split into the program's leaves and the trusted rest."""

    def __init__(self, source: str, setup: str = "") -> None:
        self.globals = _trusted_globals(setup)
        self.trusted_names = frozenset(dir(builtins)) | frozenset(self.globals)
        try:
            module = ast.parse(source)
        except SyntaxError as err:
            raise ValueError(f"test case {source!r} does not parse: {err.msg}") from None
        if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
            raise ValueError(
                f"test case {source!r} is not one assert statement: the grader can only check "
                "an assert's outcome outside the program"
            )
        self.source = source
        self.test = module.body[0].test
        self.leaves: list[str] = []
        self._leaf_index: dict[int, int] = {}
        self._plan(self.test)

    def _untrusted(self, node: ast.AST) -> bool:
        return bool(_free_names(node) - self.trusted_names)

    def _splittable(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            return not self._untrusted(node.func)
        return isinstance(
            node,
            ast.Compare | ast.BoolOp | ast.UnaryOp | ast.BinOp | ast.Subscript | ast.Tuple
            | ast.List | ast.Set | ast.Dict | ast.Starred | ast.Slice | ast.keyword,
        )  # fmt: skip

    def _plan(self, node: ast.AST) -> None:
        if not self._untrusted(node):
            return
        if self._splittable(node):
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.expr_context | ast.operator | ast.cmpop | ast.boolop
                                  | ast.unaryop):  # fmt: skip
                    self._plan(child)
            return
        self._leaf_index[id(node)] = len(self.leaves)
        self.leaves.append(ast.unparse(node))

    def holds(self, replies: list[dict[str, Any]]) -> bool:
        """The assert's outcome given the runner's replies for :attr:`leaves` (may raise)."""
        if len(replies) != len(self.leaves):
            raise Garbled(f"{len(replies)} values for {len(self.leaves)} operands")
        values: list[Any] = []
        for reply in replies:
            if not isinstance(reply, dict):
                raise Garbled("an operand reply is not an object")
            values.append(reply)
        return bool(_Evaluator(self, values).value(self.test))


class _Evaluator:
    def __init__(self, check: AssertCheck, replies: list[dict[str, Any]]) -> None:
        self.check, self.replies = check, replies

    def leaf(self, node: ast.AST) -> Any:
        reply = self.replies[self.check._leaf_index[id(node)]]
        if "error" in reply:
            raise LeafError(str(reply["error"])[:400])
        if "value" not in reply:
            raise Garbled("an operand reply has no value")
        return decode(reply["value"])

    def value(self, node: ast.AST) -> Any:
        if id(node) in self.check._leaf_index:
            return self.leaf(node)
        if not self.check._untrusted(node):
            return eval(compile(ast.Expression(node), "<test>", "eval"), dict(self.check.globals))
        if isinstance(node, ast.Compare):
            left = self.value(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.value(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            result = None
            for operand in node.values:
                result = self.value(operand)
                if isinstance(node.op, ast.And) != bool(result):
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.value(node.operand))
        if isinstance(node, ast.BinOp):
            left, right = self.value(node.left), self.value(node.right)
            if _unbounded(node.op, left, right):
                raise Garbled("an operand would make the test's arithmetic unbounded")
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.Call):
            args: list[Any] = []
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    args.extend(self.value(arg.value))
                else:
                    args.append(self.value(arg))
            kwargs = {k.arg: self.value(k.value) for k in node.keywords if k.arg}
            return self.value(node.func)(*args, **kwargs)
        if isinstance(node, ast.Subscript):
            return self.value(node.value)[self.value(node.slice)]
        if isinstance(node, ast.Slice):
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if p is None else self.value(p) for p in parts))
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = [self.value(e) for e in node.elts]
            kind = {ast.Tuple: tuple, ast.List: list, ast.Set: set}[type(node)]
            return kind(items)
        if isinstance(node, ast.Dict):
            return {
                self.value(k): self.value(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k
            }
        raise Garbled(f"cannot evaluate {ast.unparse(node)!r}")
