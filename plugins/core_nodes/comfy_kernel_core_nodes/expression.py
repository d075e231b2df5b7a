"""A small, safe arithmetic evaluator for ComfyMathExpression.

Expressions are parsed with :mod:`ast` and walked over a fixed set of node
kinds: numbers, names given by the caller, arithmetic, comparisons, boolean
logic, ``x if c else y``, subscripts and calls to the listed functions. No
attribute access, no lambdas, no comprehensions and no builtins other than
those listed, so a workflow cannot run arbitrary Python. Exponents are capped
so ``9**9**9`` fails fast instead of eating the server's memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

MAX_EXPONENT = 4000
MAX_LENGTH = 10_000


class ExpressionError(ValueError):
    """The expression is malformed or uses something the evaluator does not allow."""


def _power(base: Any, exp: Any) -> Any:
    if isinstance(exp, (int, float)) and abs(exp) > MAX_EXPONENT:
        raise ExpressionError(f"Exponent {exp} exceeds maximum allowed ({MAX_EXPONENT})")
    return base ** exp


def _sum(*args: Any) -> Any:
    if len(args) == 1 and hasattr(args[0], "__iter__"):
        return sum(args[0])
    return sum(args)


#: The functions an expression may call, as ComfyUI's math node offers them.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _power, "sqrt": math.sqrt,
    "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2, "log10": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float,
}

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}


def evaluate(expression: str, names: Mapping[str, Any],
             functions: Mapping[str, Callable[..., Any]] = FUNCTIONS) -> Any:
    """Value of ``expression`` with ``names`` bound; raises :class:`ExpressionError` for what is not allowed."""
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(f"Expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"Invalid expression: {exc.msg}") from None
    return _Walker(names, functions).visit(tree.body)


class _Walker:
    def __init__(self, names: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]]):
        self.names = names
        self.functions = functions

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"'{type(node).__name__}' is not allowed in an expression")
        return method(node)

    def _Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, (int, float, bool, str)) or node.value is None:
            return node.value
        raise ExpressionError(f"Constant {node.value!r} is not allowed")

    def _Name(self, node: ast.Name) -> Any:
        if node.id in self.names:
            return self.names[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise ExpressionError(f"'{node.id}' is not defined")

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"Operator '{type(node.op).__name__}' is not allowed")
        return op(self.visit(node.left), self.visit(node.right))

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"Operator '{type(node.op).__name__}' is not allowed")
        return op(self.visit(node.operand))

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        value: Any = None
        for operand in node.values:
            value = self.visit(operand)
            if isinstance(node.op, ast.And) and not value:
                return value
            if isinstance(node.op, ast.Or) and value:
                return value
        return value

    def _Compare(self, node: ast.Compare) -> bool:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
            name = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
            raise ExpressionError(f"Function '{name}' is not allowed")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError("Only positional arguments are allowed")
        return self.functions[node.func.id](*(self.visit(a) for a in node.args))

    def _Subscript(self, node: ast.Subscript) -> Any:
        container = self.visit(node.value)
        if isinstance(node.slice, ast.Slice):
            raise ExpressionError("Slices are not allowed")
        return container[self.visit(node.slice)]

    def _List(self, node: ast.List) -> list[Any]:
        return [self.visit(e) for e in node.elts]

    def _Tuple(self, node: ast.Tuple) -> tuple[Any, ...]:
        return tuple(self.visit(e) for e in node.elts)
