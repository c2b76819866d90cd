"""DynamoDB expressions, parsed: a small tokenizer and a recursive-descent parser for condition,
filter, key-condition and update expressions. Parsing knows nothing of an item or of the
request's placeholders; `evaluate` binds and evaluates the trees built here.

Grammar (keywords are case-insensitive):
    condition  := disjunct ("OR" disjunct)*
    disjunct   := conjunct ("AND" conjunct)*
    conjunct   := "NOT" conjunct | "(" condition ")" | function | comparison
    comparison := operand (comparator operand | "BETWEEN" operand "AND" operand
                  | "IN" "(" operand ("," operand)* ")")
    operand    := path | ":value" | "size" "(" path ")"
    path       := name ("." name | "[" digits "]")*          name := identifier | "#name"
    update     := ("SET" set ("," set)* | "REMOVE" path ("," path)*
                  | "ADD" path ":value" ("," ...)* | "DELETE" path ":value" ("," ...)*)+
    set        := path "=" term (("+" | "-") term)?
    term       := operand | "if_not_exists" "(" path "," term ")"
                  | "list_append" "(" term "," term ")"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Union

CONDITION_FUNCTIONS = {  # name -> arity; these are conditions (true or false)
    "attribute_exists": 1,
    "attribute_not_exists": 1,
    "attribute_type": 2,
    "begins_with": 2,
    "contains": 2,
}
COMPARATORS = ("=", "<>", "<", "<=", ">", ">=")
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}
_CLAUSES = ("SET", "REMOVE", "ADD", "DELETE")
_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<digits>[0-9]+)|(?P<punct><>|<=|>=|[()\[\],.=<>+-]))"
)


class ExpressionError(Exception):
    """An expression DynamoDB would refuse before touching any item (a ValidationException)."""


# The trees -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Path:
    """A document path; each element a name ("a" or a "#placeholder") or a list index."""

    elements: tuple[str | int, ...]


@dataclass(frozen=True)
class ValueRef:
    name: str  # ":placeholder"


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Arithmetic:
    op: str  # "+" or "-"
    left: Node
    right: Node


@dataclass(frozen=True)
class Comparison:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Between:
    subject: Node
    low: Node
    high: Node


@dataclass(frozen=True)
class In:
    subject: Node
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Logical:
    op: str  # "AND" or "OR"
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Update:
    set: tuple[tuple[Path, Node], ...] = ()
    remove: tuple[Path, ...] = ()
    add: tuple[tuple[Path, ValueRef], ...] = ()
    delete: tuple[tuple[Path, ValueRef], ...] = ()


Node = Union[Path, ValueRef, Function, Arithmetic, Comparison, Between, In, Logical, Not]  # noqa: UP007


@dataclass(frozen=True)
class Parsed:
    """A parsed expression and the placeholders it uses (checked against the request's)."""

    tree: Node | Update
    names: frozenset[str] = field(default_factory=frozenset)
    values: frozenset[str] = field(default_factory=frozenset)
    words: frozenset[str] = field(default_factory=frozenset)  # bare attribute names

    @property
    def condition(self) -> Node:
        assert not isinstance(self.tree, Update)
        return self.tree

    @property
    def update(self) -> Update:
        assert isinstance(self.tree, Update)
        return self.tree


# Tokens --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # name | value | word | digits | punct | end
    text: str
    at: int


def _tokenize(text: str, what: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            bad = text[pos:].strip()[:1]
            raise ExpressionError(f'Invalid {what}: Syntax error; token: "{bad}", near: "{text}"')
        tokens.append(_Token(match.lastgroup, match.group(match.lastgroup), match.start()))
        pos = match.end()
    tokens.append(_Token("end", "<EOF>", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, what: str) -> None:
        self._text, self._what = text, what
        self._tokens = _tokenize(text, what)
        self._pos = 0
        self.names: set[str] = set()
        self.values: set[str] = set()
        self.words: set[str] = set()

    # Token helpers
    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._pos + ahead, len(self._tokens) - 1)]

    def _keyword(self, token: _Token) -> str | None:
        upper = token.text.upper()
        return upper if token.kind == "word" and upper in _KEYWORDS else None

    def _take(self) -> _Token:
        token = self._peek()
        self._pos += 1
        return token

    def _accept(self, text: str) -> bool:
        token = self._peek()
        if (token.kind == "punct" and token.text == text) or self._keyword(token) == text:
            self._pos += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        if not self._accept(text):
            self._fail()

    def _fail(self) -> ExpressionError:
        token = self._peek()
        raise ExpressionError(
            f'Invalid {self._what}: Syntax error; token: "{token.text}", near: "{self._text}"'
        )

    def finish(self) -> None:
        if self._peek().kind != "end":
            self._fail()

    # Conditions
    def condition(self) -> Node:
        node = self._disjunct()
        while self._accept("OR"):
            node = Logical("OR", node, self._disjunct())
        return node

    def _disjunct(self) -> Node:
        node = self._conjunct()
        while self._accept("AND"):
            node = Logical("AND", node, self._conjunct())
        return node

    def _conjunct(self) -> Node:
        if self._accept("NOT"):
            return Not(self._conjunct())
        if self._accept("("):
            node = self.condition()
            self._expect(")")
            return node
        token, after = self._peek(), self._peek(1)
        if token.kind == "word" and after.text == "(" and token.text in CONDITION_FUNCTIONS:
            self._take()
            return self._call(token.text, CONDITION_FUNCTIONS[token.text], self.operand)
        subject = self.operand()
        if self._accept("BETWEEN"):
            low = self.operand()
            self._expect("AND")
            return Between(subject, low, self.operand())
        if self._accept("IN"):
            self._expect("(")
            options = [self.operand()]
            while self._accept(","):
                options.append(self.operand())
            self._expect(")")
            return In(subject, tuple(options))
        token = self._peek()
        if token.kind == "punct" and token.text in COMPARATORS:
            self._take()
            return Comparison(token.text, subject, self.operand())
        raise self._fail()

    def _call(self, name: str, arity: int, parse: Callable[[], Node]) -> Function:
        self._expect("(")
        args: list[Node] = [parse()]
        while self._accept(","):
            args.append(parse())
        self._expect(")")
        if len(args) != arity:
            raise ExpressionError(
                f"Invalid {self._what}: Incorrect number of operands for operator or function;"
                f" operator or function: {name}, number of operands: {len(args)}"
            )
        return Function(name, tuple(args))

    def operand(self) -> Node:
        token = self._peek()
        if token.kind == "value":
            self._take()
            self.values.add(token.text)
            return ValueRef(token.text)
        if token.kind == "word" and self._peek(1).text == "(":
            if token.text != "size":
                raise ExpressionError(
                    f"Invalid {self._what}: Invalid function name; function: {token.text}"
                )
            self._take()
            return self._call("size", 1, self.path)
        return self.path()

    def path(self) -> Path:
        elements: list[str | int] = [self._name()]
        while True:
            if self._accept("."):
                elements.append(self._name())
            elif self._accept("["):
                token = self._take()
                if token.kind != "digits":
                    raise self._fail()
                elements.append(int(token.text))
                self._expect("]")
            else:
                return Path(tuple(elements))

    def _name(self) -> str:
        token = self._peek()
        if token.kind == "name":
            self.names.add(token.text)
        elif token.kind == "word" and self._keyword(token) is None:
            self.words.add(token.text)
        else:
            raise self._fail()
        self._take()
        return token.text

    # Updates
    def update(self) -> Update:
        sets: list[tuple[Path, Node]] = []
        removes: list[Path] = []
        adds: list[tuple[Path, ValueRef]] = []
        deletes: list[tuple[Path, ValueRef]] = []
        seen: set[str] = set()
        while self._peek().kind != "end":
            clause = self._keyword(self._peek())
            if clause not in _CLAUSES:
                raise self._fail()
            if clause in seen:
                raise ExpressionError(
                    f'Invalid {self._what}: The "{clause}" section can only be used once in an'
                    " update expression;"
                )
            seen.add(clause)
            self._take()
            while True:
                target = self.path()
                if clause == "SET":
                    sets.append((target, self._assigned()))
                elif clause == "REMOVE":
                    removes.append(target)
                else:
                    (adds if clause == "ADD" else deletes).append((target, self._value()))
                if not self._accept(","):
                    break
        if not seen:
            raise self._fail()
        return Update(tuple(sets), tuple(removes), tuple(adds), tuple(deletes))

    def _assigned(self) -> Node:
        self._expect("=")
        value = self._term()
        token = self._peek()
        if token.kind == "punct" and token.text in ("+", "-"):
            self._take()
            value = Arithmetic(token.text, value, self._term())
        return value

    def _value(self) -> ValueRef:
        token = self._peek()
        if token.kind != "value":
            raise self._fail()
        self._take()
        self.values.add(token.text)
        return ValueRef(token.text)

    def _term(self) -> Node:
        token = self._peek()
        if token.kind == "word" and self._peek(1).text == "(":
            if token.text == "if_not_exists":
                self._take()
                self._expect("(")
                subject = self.path()
                self._expect(",")
                fallback = self._term()
                self._expect(")")
                return Function("if_not_exists", (subject, fallback))
            if token.text == "list_append":
                self._take()
                return self._call("list_append", 2, self._term)
        return self.operand()


@lru_cache(maxsize=4096)
def parse_condition(text: str, what: str = "ConditionExpression") -> Parsed:
    """A condition, filter or key-condition expression."""
    if not text.strip():
        raise ExpressionError(f"Invalid {what}: The expression can not be empty;")
    parser = _Parser(text, what)
    tree = parser.condition()
    parser.finish()
    return Parsed(tree, frozenset(parser.names), frozenset(parser.values), frozenset(parser.words))


@lru_cache(maxsize=4096)
def parse_update(text: str) -> Parsed:
    if not text.strip():
        raise ExpressionError("Invalid UpdateExpression: The expression can not be empty;")
    parser = _Parser(text, "UpdateExpression")
    tree = parser.update()
    parser.finish()
    return Parsed(tree, frozenset(parser.names), frozenset(parser.values), frozenset(parser.words))
