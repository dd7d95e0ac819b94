"""Rule conditions: a tiny expression language, parsed by hand and never handed to ``eval``.

Evaluation never raises on odd event data: a missing key reads as ``null`` and comparing
mismatched types is simply false, so one malformed event cannot break every rule."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from numbers import Number
from typing import Any, NamedTuple

__all__ = ["Condition", "ConditionError", "compile_condition"]

_MAX_LENGTH = 2000
_MAX_DEPTH = 32  # each '(', '[' and 'not' is a level; keeps recursion far below Python's limit
_KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None}
_PYTHON_SPELLINGS = {"True": "true", "False": "false", "None": "null"}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_PRIVATE_RE = re.compile(r"(?:^|\.)(_\w*)")
# No alternative can backtrack into another, so matching stays linear on hostile input.
_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<notin>not\s+in\b)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|[()\[\],])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class ConditionError(ValueError):
    """A condition that does not compile; .position is the 0-based offset into .source."""

    code = "invalid_condition"

    def __init__(self, message: str, position: int, source: str) -> None:
        super().__init__(message)
        self.position = position
        self.source = source


def _error(source: str, problem: str, position: int, tail: str = "") -> ConditionError:
    return ConditionError(f"{problem} at position {position}{tail}", position, source)


class _Token(NamedTuple):
    kind: str  # number, string, word (a name or keyword), op, end
    text: str
    position: int


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    for match in _TOKEN_RE.finditer(source):
        kind, text, pos = match.lastgroup or "", match.group(), match.start()
        if kind == "bad":
            problem = "unterminated string" if text in "\"'" else f"unexpected character {text!r}"
            raise _error(source, problem, pos)
        if kind == "notin":  # one token, so 'not in' can never be misread as unary 'not'
            kind, text = "op", "not in"
        if kind != "space":
            tokens.append(_Token(kind, text, pos))
    tokens.append(_Token("end", "", len(source)))
    return tokens


def _kind(value: Any) -> object:
    # Values compare only within a family: int, float and Decimal mix freely; bool does not.
    if isinstance(value, Number) and not isinstance(value, bool):
        return Number
    if isinstance(value, str):  # StrEnum members and other str subclasses compare as text
        return str
    if isinstance(value, list | tuple):
        return list
    return Mapping if isinstance(value, Mapping) else type(value)


def _equal(left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind is not _kind(right):
        return False
    if kind is list:
        return len(left) == len(right) and all(map(_equal, left, right))
    if kind is Mapping:
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    return bool(left == right)


def _ordered(compare: Callable[[Any, Any], Any], left: Any, right: Any) -> bool:
    if _kind(left) is not _kind(right):
        return False
    try:
        return bool(compare(left, right))
    except TypeError:  # None < None, dict < dict, lists holding mixed types...
        return False


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, Mapping | list | tuple | set | frozenset):
        return any(_equal(item, member) for member in container)
    return False


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _equal,
    "!=": lambda left, right: not _equal(left, right),
    "<": partial(_ordered, operator.lt),
    "<=": partial(_ordered, operator.le),
    ">": partial(_ordered, operator.gt),
    ">=": partial(_ordered, operator.ge),
    "in": _contains,
    "not in": lambda left, right: not _contains(left, right),
}


@dataclass(frozen=True)
class _Node:
    kind: str  # literal, path, list, not, and, or, or a key of _OPERATORS
    value: Any = None
    children: tuple[_Node, ...] = ()


def _evaluate(node: _Node, context: Mapping[str, Any]) -> Any:
    kind, children = node.kind, node.children
    if kind == "literal":
        return node.value
    if kind == "path":
        value: Any = context
        for segment in node.value:
            # Mappings only: attribute access is how sandboxes leak, so it is never attempted.
            value = value.get(segment) if isinstance(value, Mapping) else None
        return value
    if kind == "list":
        return [_evaluate(child, context) for child in children]
    if kind == "not":
        return not _evaluate(children[0], context)
    if kind in ("and", "or"):
        for child in children[:-1]:
            if bool(value := _evaluate(child, context)) is (kind == "or"):
                return value  # short-circuit, keeping Python's 'a or b' value semantics
        return _evaluate(children[-1], context)
    return _OPERATORS[kind](_evaluate(children[0], context), _evaluate(children[1], context))


class _Parser:
    """Recursive descent, lowest precedence first: or, and, not, comparison, operand."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.index = 0
        self.depth = 0

    def parse(self) -> _Node:
        node = self._logical("or")
        if self._peek().kind != "end":
            raise self._fail(self._peek(), "an operator or end of input")
        return node

    def _peek(self) -> _Token:
        return self.tokens[min(self.index, len(self.tokens) - 1)]

    def _at(self, text: str) -> bool:
        return self._peek().kind in ("op", "word") and self._peek().text == text

    def _accept(self, text: str) -> bool:
        found = self._at(text)
        self.index += found
        return found

    def _fail(self, token: _Token, expected: str) -> ConditionError:
        what = "end of input" if token.kind == "end" else f"token '{token.text}'"
        return _error(self.source, f"unexpected {what}", token.position, f"; expected {expected}")

    def _nested(self, token: _Token, parse: Callable[[], _Node]) -> _Node:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _error(self.source, f"nesting deeper than {_MAX_DEPTH} levels", token.position)
        node = parse()
        self.depth -= 1
        return node

    def _logical(self, word: str) -> _Node:
        # Flat n-ary nodes keep long 'a and b and c ...' chains from deepening the tree.
        operands: list[_Node] = []
        while not operands or self._accept(word):
            operands.append(self._logical("and") if word == "or" else self._not())
        return operands[0] if len(operands) == 1 else _Node(word, children=tuple(operands))

    def _not(self) -> _Node:
        token = self._peek()
        if not self._accept("not"):
            return self._comparison()
        return self._nested(token, lambda: _Node("not", children=(self._not(),)))

    def _at_comparison(self) -> bool:
        # Only 'in' among the words is an operator; 'not in' arrives as a single op token.
        return self._peek().kind in ("op", "word") and self._peek().text in _OPERATORS

    def _comparison(self) -> _Node:
        left = self._operand()
        if not self._at_comparison():
            return left
        self.index += 1
        node = _Node(self.tokens[self.index - 1].text, children=(left, self._operand()))
        if self._at_comparison():
            position = self._peek().position
            raise _error(self.source, "comparisons cannot be chained", position, "; use 'and'")
        return node

    def _operand(self) -> _Node:
        token = self._peek()
        self.index += 1
        if token.kind == "number":
            return _Node("literal", float(token.text) if "." in token.text else int(token.text))
        if token.kind == "string":
            return _Node("literal", self._unescape(token))
        if token.kind == "word" and token.text in _CONSTANTS:
            return _Node("literal", _CONSTANTS[token.text])
        if token.kind == "word" and token.text not in _KEYWORDS:
            return _Node("path", self._segments(token))
        if token.kind == "op" and token.text in ("(", "["):
            return self._nested(token, self._group if token.text == "(" else self._list)
        raise self._fail(token, "a value")

    def _group(self) -> _Node:
        node = self._logical("or")
        if not self._accept(")"):
            raise self._fail(self._peek(), "an operator or ')'")
        return node

    def _list(self) -> _Node:
        items: list[_Node] = []
        while not self._accept("]"):
            if items and not self._accept(","):
                raise self._fail(self._peek(), "',' or ']'")
            items.append(self._logical("or"))
        return _Node("list", children=tuple(items))

    def _unescape(self, token: _Token) -> str:
        body = token.text[1:-1]
        # finditer pairs escapes left to right, so an escaped backslash never starts another.
        for escape in _ESCAPE_RE.finditer(body):
            if escape.group(1) not in "\\\"'":
                position = token.position + 1 + escape.start()
                raise _error(self.source, f"unknown escape '{escape.group()}'", position)
        return _ESCAPE_RE.sub(r"\1", body)

    def _segments(self, token: _Token) -> tuple[str, ...]:
        head = token.text.split(".")[0]
        if head in _PYTHON_SPELLINGS:
            # Python habits would otherwise silently read a missing key as null.
            hint = f"; did you mean '{_PYTHON_SPELLINGS[head]}'?"
            raise _error(self.source, f"unknown name '{head}'", token.position, hint)
        if head in _KEYWORDS:
            raise _error(self.source, f"keyword '{head}'", token.position, " cannot start a path")
        if private := _PRIVATE_RE.search(token.text):
            problem, position = f"path segment '{private[1]}'", token.position + private.start(1)
            raise _error(self.source, problem, position, " may not start with '_'")
        return tuple(token.text.split("."))


@dataclass(frozen=True)
class Condition:
    """A compiled rule condition: constructing one parses ``source``; equal source, equal value."""

    source: str
    _root: _Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.source) > _MAX_LENGTH:
            message = f"condition is {len(self.source)} characters long; the limit is {_MAX_LENGTH}"
            raise ConditionError(message, _MAX_LENGTH, self.source)
        object.__setattr__(self, "_root", _Parser(self.source).parse())

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return bool(_evaluate(self._root, context))

    def roots(self) -> frozenset[str]:
        """The first segment of every path, so callers can refuse names they never supply."""
        found: set[str] = set()
        pending = [self._root]
        while pending:
            node = pending.pop()
            if node.kind == "path":
                found.add(node.value[0])
            pending.extend(node.children)
        return frozenset(found)


def compile_condition(source: str) -> Condition:
    """Parse ``source`` once; raises ConditionError naming what is wrong and where."""
    return Condition(source)
