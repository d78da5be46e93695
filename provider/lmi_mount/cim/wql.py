"""The query subset that WBEM clients send to ExecQuery and OpenQueryInstances.

Owns: parsing ``SELECT * | p1, p2 FROM Class [WHERE condition]`` where a
condition combines comparisons (``=``, ``<>``, ``!=``, ``<``, ``>``, ``<=``,
``>=``), ``[NOT] LIKE`` patterns (WQL: ``%`` any run, ``_`` one character,
``[a-z]`` and ``[^a-z]`` one of a set or not), ``IS [NOT] NULL``, ``NOT``,
``AND``, ``OR`` and parentheses over properties and string, number and
boolean literals (the queries of OpenLMI's lmishell: ``select * from
LMI_MountedFileSystem where MountPointPath = "/mnt"``) and, for indication
filters (DSP1054), ``SourceInstance ISA Class`` and the properties of an
embedded instance (``SourceInstance.Name``); checking a query
against the class it names; evaluating it on instances with SQL's
three-valued logic (a comparison with NULL is unknown, and unknown rows are
not selected); and running it (``execute``) for the CIM-XML server and the
pywbem_mock front end alike.

Must not know: the broker, XML, HTTP. It takes text and a class, and judges
instances that someone else enumerates.

Errors are CIMErrors: CIM_ERR_INVALID_QUERY naming the offending token and
its position. The languages are "WQL" and "DMTF:CQL" (DSP0202) for the same
subset, except LIKE, whose CQL pattern syntax is not WQL's and is refused
in CQL; any other language is CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED.
Comparisons of strings, LIKE included, are case-sensitive, as paths are.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pywbem import (
    CIM_ERR_INVALID_QUERY,
    CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED,
    CIMClass,
    CIMDateTime,
    CIMError,
    CIMInstance,
)

LANGUAGE: Final = "WQL"
CQL: Final = "DMTF:CQL"
LANGUAGES: Final = (LANGUAGE, CQL)
#: Parentheses and NOTs nest at most this deep.
MAX_NESTING: Final = 32
#: Queries longer than this are refused before they are read.
MAX_LENGTH: Final = 64 * 1024


def check_language(language: str | None) -> str:
    """The language's canonical name ("WQL" or "DMTF:CQL"), or the CIMError."""
    canonical = language.strip().upper() if language is not None else None
    if canonical not in LANGUAGES:
        raise CIMError(
            CIM_ERR_QUERY_LANGUAGE_NOT_SUPPORTED,
            f"query language {language!r} is not supported; use {LANGUAGE!r} or {CQL!r}",
        )
    return canonical


def _invalid(message: str) -> CIMError:
    return CIMError(CIM_ERR_INVALID_QUERY, f"query: {message}")


# --------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?))
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    | (?P<op><=|>=|<>|!=|=|<|>)
    | (?P<punct>[(),*;])
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS: Final = frozenset(
    ("SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "LIKE",
     "ISA")
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "string", "number", "name", "keyword", "op", "punct", "end"
    text: str
    position: int

    def describe(self) -> str:
        if self.kind == "end":
            return f"the end of the query (position {self.position})"
        return f"{self.text!r} at position {self.position}"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _invalid(f"unexpected character {text[position]!r} at position {position}")
        kind = match.lastgroup
        assert kind is not None
        token_text = match.group()
        if kind == "name" and token_text.upper() in _KEYWORDS:
            tokens.append(Token("keyword", token_text.upper(), position))
        elif kind != "space":
            tokens.append(Token(kind, token_text, position))
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# --------------------------------------------------------------------------
# Syntax tree
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Property:
    """A property, or (``SourceInstance.Name``) a property of an embedded instance."""

    name: str
    token: Token

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any  # str, int, float, bool, or None for NULL
    token: Token


Operand = Property | Literal


@dataclass(frozen=True, slots=True)
class Comparison:
    left: Operand
    op: str
    right: Operand


@dataclass(frozen=True, slots=True)
class IsNull:
    operand: Operand
    negated: bool


@dataclass(frozen=True, slots=True)
class Like:
    operand: Property
    pattern: Literal
    negated: bool
    matcher: LikePattern


@dataclass(frozen=True, slots=True)
class Not:
    operand: Condition


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "AND" | "OR"
    operands: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class IsA:
    """``SourceInstance ISA LMI_MountedFileSystem``: an embedded instance of the
    class or of a subclass (DSP1054's filters on indications)."""

    operand: Property
    classname: str
    token: Token


Condition = Comparison | Like | IsNull | IsA | Not | BoolOp

#: Whether a class is another or derives from it; without a model, the names
#: must be equal.
IsSubclass = Callable[[str, str], bool]


def same_class(classname: str, ancestor: str) -> bool:
    return classname.lower() == ancestor.lower()


@dataclass(frozen=True)
class Query:
    """A parsed query: the class, the selected properties (None for ``*``) and the condition."""

    text: str
    classname: str
    properties: tuple[str, ...] | None
    where: Condition | None

    def referenced_properties(self) -> set[str]:
        """Lower-case names of the properties the WHERE clause reads."""
        names: set[str] = set()
        for condition in _leaves(self.where):
            if isinstance(condition, Comparison):
                operands: tuple[Any, ...] = (condition.left, condition.right)
            else:
                operands = (condition.operand,)
            names.update(operand.path[0].lower() for operand in operands
                         if isinstance(operand, Property))
        return names

    def isa_classes(self) -> list[str]:
        """The classes the WHERE clause's ISA conditions name."""
        return [c.classname for c in _leaves(self.where) if isinstance(c, IsA)]

    def property_list(self) -> list[str] | None:
        """The properties an enumeration must return for this query (None: all)."""
        if self.properties is None:
            return None
        wanted = {p.lower(): p for p in self.properties}
        for name in self.referenced_properties():
            wanted.setdefault(name, name)
        return list(wanted.values())

    def matches(self, instance: CIMInstance, is_subclass: IsSubclass = same_class) -> bool:
        return self.where is None or _evaluate(self.where, instance, is_subclass) is True

    def project(self, instance: CIMInstance) -> CIMInstance:
        """``instance`` with only the selected properties (all of them for ``*``)."""
        if self.properties is None:
            return instance
        wanted = {p.lower() for p in self.properties}
        result = CIMInstance(
            instance.classname, path=instance.path, qualifiers=instance.qualifiers
        )
        for name, prop in instance.properties.items():
            if name.lower() in wanted:
                result.properties[name] = prop
        return result

    def select(self, instances: Iterable[CIMInstance]) -> Iterable[CIMInstance]:
        """The matching instances, projected, lazily."""
        for instance in instances:
            if self.matches(instance):
                yield self.project(instance)

    def check(self, cls: CIMClass,
              get_class: Callable[[str], CIMClass] | None = None) -> None:
        """Check the query against the class it names (with inherited properties).

        Every property must exist; a literal must suit the property it is
        compared with; booleans and references compare with = and <> only;
        arrays do not compare at all. With ``get_class``, a property of an
        embedded instance whose class an ``ISA`` joined by ``AND`` names
        (``SourceInstance ISA C AND SourceInstance.P = 1``) is checked as
        well, where ``C`` declares it (a subclass may add it).
        """
        declared = cls.properties
        for name in self.properties or ():
            if name not in declared:
                raise _invalid(f"class {cls.classname} has no property {name!r}")
        if self.where is not None:
            _check(self.where, cls, _embedded_classes(self.where, get_class))


def _leaves(condition: Condition | None) -> Iterator[Comparison | IsNull | Like | IsA]:
    """The conditions under NOT, AND and OR, left to right."""
    if condition is None:
        return
    if isinstance(condition, Not):
        yield from _leaves(condition.operand)
    elif isinstance(condition, BoolOp):
        for part in condition.operands:
            yield from _leaves(part)
    else:
        yield condition


# --------------------------------------------------------------------------
# Parser (recursive descent)
# --------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, language: str) -> None:
        self.text = text
        self.language = language
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "keyword" and token.text in words

    def expect_keyword(self, word: str) -> Token:
        if not self.at_keyword(word):
            raise _invalid(f"expected {word}, found {self.current.describe()}")
        return self.advance()

    def expect_name(self, what: str) -> Token:
        token = self.current
        if token.kind != "name":
            raise _invalid(f"expected {what}, found {token.describe()}")
        return self.advance()

    def query(self) -> Query:
        self.expect_keyword("SELECT")
        properties: tuple[str, ...] | None
        if self.current.kind == "punct" and self.current.text == "*":
            self.advance()
            properties = None
        else:
            names = [self.expect_name("a property name or *").text]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                names.append(self.expect_name("a property name").text)
            properties = tuple(names)
        self.expect_keyword("FROM")
        classname = self.expect_name("a class name").text
        where = None
        if self.at_keyword("WHERE"):
            self.advance()
            where = self.condition()
        if self.current.kind == "punct" and self.current.text == ";":
            self.advance()
        if self.current.kind != "end":
            raise _invalid(f"unexpected {self.current.describe()}")
        return Query(self.text, classname, properties, where)

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _invalid(
                f"conditions nest deeper than {MAX_NESTING} levels at {self.current.describe()}"
            )

    def condition(self) -> Condition:
        operands = [self.conjunction()]
        while self.at_keyword("OR"):
            self.advance()
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else BoolOp("OR", tuple(operands))

    def conjunction(self) -> Condition:
        operands = [self.negation()]
        while self.at_keyword("AND"):
            self.advance()
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else BoolOp("AND", tuple(operands))

    def negation(self) -> Condition:
        if self.at_keyword("NOT"):
            self.advance()
            self.nest()
            operand = self.negation()
            self.depth -= 1
            return Not(operand)
        return self.primary()

    def primary(self) -> Condition:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            self.nest()
            condition = self.condition()
            self.depth -= 1
            closing = self.current
            if not (closing.kind == "punct" and closing.text == ")"):
                raise _invalid(f"expected ')' to close {token.describe()}, found "
                               f"{closing.describe()}")
            self.advance()
            return condition
        left = self.operand()
        if self.at_keyword("IS"):
            self.advance()
            negated = False
            if self.at_keyword("NOT"):
                self.advance()
                negated = True
            self.expect_keyword("NULL")
            return IsNull(left, negated)
        if self.at_keyword("ISA"):
            keyword = self.advance()
            if not isinstance(left, Property):
                raise _invalid(f"ISA at {keyword.describe()} needs a property on its left")
            classname = self.expect_name("a class name after ISA")
            return IsA(left, classname.text, keyword)
        negated = False
        if self.at_keyword("NOT"):
            self.advance()
            negated = True
            if not self.at_keyword("LIKE"):
                raise _invalid(f"expected LIKE, found {self.current.describe()}")
        if self.at_keyword("LIKE"):
            return self.like(left, token, negated)
        op = self.current
        if op.kind != "op":
            raise _invalid(f"expected a comparison operator or IS after {token.describe()}, "
                           f"found {op.describe()}")
        self.advance()
        right = self.operand()
        if isinstance(left, Literal) and isinstance(right, Literal):
            raise _invalid(f"comparison at {token.describe()} names no property")
        return Comparison(left, "<>" if op.text == "!=" else op.text, right)

    def like(self, left: Operand, token: Token, negated: bool) -> Like:
        keyword = self.advance()
        if self.language != LANGUAGE:
            raise _invalid(f"LIKE at {keyword.describe()}: {self.language}'s pattern syntax "
                           f"(DSP0202) is not supported; use {LANGUAGE} for LIKE")
        if not isinstance(left, Property):
            raise _invalid(f"LIKE at {keyword.describe()} needs a property on its left")
        pattern = self.operand()
        if not (isinstance(pattern, Literal) and isinstance(pattern.value, str)):
            raise _invalid(f"LIKE at {keyword.describe()} needs a string pattern, found "
                           f"{pattern.token.describe()}")
        return Like(left, pattern, negated, LikePattern(pattern))

    def operand(self) -> Operand:
        token = self.advance()
        if token.kind == "name":
            return Property(token.text, token)
        if token.kind == "string":
            return Literal(_ESCAPE.sub(r"\1", token.text[1:-1]), token)
        if token.kind == "number":
            return Literal(_number(token), token)
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE"):
            return Literal(token.text == "TRUE", token)
        if token.kind == "keyword" and token.text == "NULL":
            return Literal(None, token)
        raise _invalid(f"expected a property or a value, found {token.describe()}")


#: The longest number a query may hold: far beyond any uint64 or real64.
MAX_NUMBER_LENGTH = 100


def _number(token: Token) -> int | float:
    text = token.text
    if len(text) > MAX_NUMBER_LENGTH:
        raise _invalid(f"the number {text[:20]}... has {len(text)} characters; "
                       f"at most {MAX_NUMBER_LENGTH} are read")
    digits = text.lstrip("+-")
    try:
        if digits[:2].lower() == "0x":
            value = int(digits, 16)
            return -value if text.startswith("-") else value
        if re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        return float(text)
    except ValueError:
        raise _invalid(f"{text!r} is not a number") from None


class LikePattern:
    """A WQL LIKE pattern, matched without backtracking.

    A regular expression with ``.*`` per ``%`` backtracks exponentially
    (``%%%%%%%%%%x`` took 44 s on one path, holding the interpreter, and
    with it the whole server). Here the pattern is split at its ``%`` into
    segments of one-character tokens (a character, ``_``, a set), each a
    fixed-length expression: the first must match at the start, the last at
    the end, and each one between at its leftmost place after the one before
    (greedy leftmost placement is exact when ``%`` is the only wildcard of
    variable length). The work is linear in the value per segment.
    """

    def __init__(self, pattern: Literal) -> None:
        segments: list[list[str]] = [[]]
        text, index = pattern.value, 0
        while index < len(text):
            char = text[index]
            if char == "%":
                segments.append([])
            elif char == "_":
                segments[-1].append(".")
            elif char == "[":
                # A ']' right after '[' or '[^' belongs to the set: "[]x]", "[^]x]".
                first = index + (3 if text.startswith("[^", index) else 2)
                end = text.find("]", first)
                if end < 0 or first > len(text):
                    raise _invalid(f"LIKE pattern {pattern.token.describe()}: '[' at offset "
                                   f"{index} is not closed")
                body = text[index + 1:end]
                negated = body.startswith("^")
                members = body[1:] if negated else body
                ranges = "".join(re.escape(c) if c != "-" or i in (0, len(members) - 1)
                                 else "-" for i, c in enumerate(members))
                segments[-1].append(f"[{'^' if negated else ''}{ranges}]")
                index = end
            else:
                segments[-1].append(re.escape(char))
            index += 1
        try:
            self._segments = [(re.compile("".join(tokens), re.DOTALL), len(tokens))
                              for tokens in segments]
        except re.error as exc:
            raise _invalid(f"LIKE pattern {pattern.token.describe()}: {exc}") from None

    def matches(self, value: str) -> bool:
        segments = self._segments
        if len(segments) == 1:
            return segments[0][0].fullmatch(value) is not None
        (first, first_length), *middle, (last, last_length) = segments
        if first_length and first.match(value) is None:
            return False
        position = first_length
        tail = len(value) - last_length  # where the last segment must start
        for segment, length in middle:
            if not length:
                continue  # "%%"
            found = segment.search(value, position, tail)
            if found is None:
                return False
            position = found.end()
        return position <= tail and last.fullmatch(value, tail) is not None


def parse(text: str, language: str = LANGUAGE) -> Query:
    """Parse a query of ``language`` (WQL or DMTF:CQL, the same subset but LIKE);
    CIM_ERR_INVALID_QUERY names what is wrong."""
    if len(text) > MAX_LENGTH:
        raise _invalid(f"the query is {len(text)} characters long; the limit is {MAX_LENGTH}")
    return _Parser(text, language).query()


# --------------------------------------------------------------------------
# Checking against the class
# --------------------------------------------------------------------------

_INTEGER_TYPES: Final = frozenset(
    ("uint8", "uint16", "uint32", "uint64", "sint8", "sint16", "sint32", "sint64")
)
_NUMERIC_TYPES: Final = _INTEGER_TYPES | {"real32", "real64"}
_EQUALITY: Final = frozenset(("=", "<>"))


def _kind(cim_type: str) -> str:
    if cim_type in _NUMERIC_TYPES:
        return "number"
    if cim_type in ("string", "char16"):
        return "string"
    return cim_type  # boolean, datetime, reference


def _literal_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def _embedded_classes(where: Condition, get_class: Callable[[str], CIMClass] | None
                      ) -> dict[str, CIMClass]:
    """Lower-case embedded-instance property -> the class an ``ISA`` among the
    conditions ``AND`` joins at the top names: every instance the filter
    selects is one of that class (or a subclass)."""
    if get_class is None:
        return {}
    found: dict[str, CIMClass] = {}
    parts = where.operands if isinstance(where, BoolOp) and where.op == "AND" else (where,)
    for part in parts:
        if isinstance(part, IsA) and len(part.operand.path) == 1:
            with contextlib.suppress(KeyError):
                found[part.operand.name.lower()] = get_class(part.classname)
    return found


def _check(condition: Condition, cls: CIMClass,
           embedded: Mapping[str, CIMClass] | None = None) -> None:
    embedded = embedded or {}
    if isinstance(condition, Not):
        _check(condition.operand, cls, embedded)
        return
    if isinstance(condition, BoolOp):
        for part in condition.operands:
            # Under OR an ISA says nothing of the other branches.
            _check(part, cls, embedded if condition.op == "AND" else {})
        return
    if isinstance(condition, IsNull):
        if isinstance(condition.operand, Property):
            _declared(condition.operand, cls, embedded)
        return
    if isinstance(condition, IsA):
        prop = _declared(condition.operand, cls)
        if prop is not None and not _embedded(prop):
            raise _invalid(f"ISA at {condition.token.describe()} needs an embedded instance; "
                           f"{condition.operand.name!r} is {prop.type}")
        return
    if isinstance(condition, Like):
        prop = _declared(condition.operand, cls, embedded)
        if prop is None:
            return  # a property of an embedded instance: its class is known only then
        if prop.is_array or _kind(prop.type) != "string":
            raise _invalid(f"LIKE needs a string property; {condition.operand.name!r} at "
                           f"{condition.operand.token.describe()} is "
                           f"{prop.type}{'[]' if prop.is_array else ''}")
        return
    kinds: list[tuple[str, Operand]] = []
    for operand in (condition.left, condition.right):
        if isinstance(operand, Property):
            prop = _declared(operand, cls, embedded)
            if prop is None:
                return  # a property of an embedded instance: checked when evaluated
            if prop.is_array:
                raise _invalid(f"array property {operand.name!r} at {operand.token.describe()} "
                               "cannot be compared")
            kinds.append((_kind(prop.type), operand))
        else:
            kinds.append((_literal_kind(operand.value), operand))
    (left_kind, left), (right_kind, right) = kinds
    where = (left if isinstance(left, Property) else right).token.describe()
    if "null" in (left_kind, right_kind):
        return  # always unknown; legal, if pointless (use IS NULL)
    if left_kind == "reference" or right_kind == "reference":
        raise _invalid(f"references cannot be compared ({where})")
    # A datetime compares with a string literal (its text), not a string property.
    compatible = left_kind == right_kind or (
        {left_kind, right_kind} == {"datetime", "string"}
        and not all(isinstance(operand, Property) for _, operand in kinds))
    if not compatible:
        raise _invalid(f"cannot compare a {left_kind} with a {right_kind} at {where}")
    if "boolean" in (left_kind, right_kind) and condition.op not in _EQUALITY:
        raise _invalid(f"booleans compare with = and <> only, not {condition.op} ({where})")
    for kind, operand in kinds:
        if kind == "datetime" and isinstance(operand, Literal):
            try:
                CIMDateTime(operand.value)
            except ValueError as exc:
                where = operand.token.describe()
                raise _invalid(f"{where} is not a CIM datetime: {exc}") from None


def _declared(operand: Property, cls: CIMClass,
              embedded: Mapping[str, CIMClass] | None = None) -> Any:
    """The declaration of ``operand``; for a property of an embedded instance
    (``SourceInstance.Name``), whose first part must be an embedded instance,
    its declaration in the class ``embedded`` knows for it, else None."""
    first, *rest = operand.path
    prop = cls.properties.get(first)
    if prop is None:
        raise _invalid(
            f"class {cls.classname} has no property {first!r} ({operand.token.describe()})"
        )
    if not rest:
        return prop
    if not _embedded(prop):
        raise _invalid(f"{operand.token.describe()}: {first!r} is no embedded instance, "
                       "so it has no properties")
    known = (embedded or {}).get(first.lower())
    if known is not None and len(rest) == 1:
        return known.properties.get(rest[0])
    return None


def _embedded(prop: Any) -> bool:
    """Whether a declared property holds an embedded instance."""
    return prop.type == "string" and not prop.is_array and any(
        name in prop.qualifiers for name in ("EmbeddedInstance", "EmbeddedObject"))


# --------------------------------------------------------------------------
# Evaluation (three-valued: True, False, None for unknown)
# --------------------------------------------------------------------------

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<>": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _value(operand: Operand, instance: CIMInstance) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    value: Any = instance
    for name in operand.path:
        if not isinstance(value, CIMInstance):
            return None
        prop = value.properties.get(name)
        value = None if prop is None else prop.value
    return value


def _comparable(left: Any, right: Any) -> tuple[Any, Any] | None:
    """The two values as Python compares them, or None (unknown): a datetime
    property compares with a string literal as a CIM datetime, and datetimes
    by the instant or the interval they are (CIMDateTime itself has no order)."""
    try:
        if isinstance(left, CIMDateTime) and isinstance(right, str):
            right = CIMDateTime(right)
        elif isinstance(right, CIMDateTime) and isinstance(left, str):
            left = CIMDateTime(left)
    except ValueError:
        return None  # a string that is no datetime compares with none
    if isinstance(left, CIMDateTime) and isinstance(right, CIMDateTime):
        if left.is_interval != right.is_interval:
            return None
        return ((left.timedelta, right.timedelta) if left.is_interval
                else (left.datetime, right.datetime))
    return left, right


def _evaluate(condition: Condition, instance: CIMInstance,
              is_subclass: IsSubclass = same_class) -> bool | None:
    if isinstance(condition, IsA):
        embedded = _value(condition.operand, instance)
        if not isinstance(embedded, CIMInstance):
            return None
        return is_subclass(embedded.classname, condition.classname)
    if isinstance(condition, Comparison):
        left = _value(condition.left, instance)
        right = _value(condition.right, instance)
        if left is None or right is None:
            return None
        pair = _comparable(left, right)
        if pair is None:
            return None
        try:
            return bool(_COMPARE[condition.op](*pair))
        except TypeError:
            # Values of kinds the class check did not foresee (an
            # unchecked query, or a provider's odd value) match nothing.
            return None
    if isinstance(condition, IsNull):
        is_null = _value(condition.operand, instance) is None
        return not is_null if condition.negated else is_null
    if isinstance(condition, Like):
        value = _value(condition.operand, instance)
        if not isinstance(value, str):
            return None
        return condition.matcher.matches(value) is not condition.negated
    if isinstance(condition, Not):
        value = _evaluate(condition.operand, instance, is_subclass)
        return None if value is None else not value
    results = [_evaluate(c, instance, is_subclass) for c in condition.operands]
    if condition.op == "AND":
        if False in results:
            return False
        return None if None in results else True
    if True in results:
        return True
    return None if None in results else False


# --------------------------------------------------------------------------
# Running a query
# --------------------------------------------------------------------------


def execute(
    language: str | None,
    text: str | None,
    *,
    get_class: Callable[[str], CIMClass | None],
    enumerate_instances: Callable[[str, list[str] | None], Iterable[CIMInstance]],
) -> tuple[Query, CIMClass, Iterator[CIMInstance]]:
    """Run a query: its language checked, its text parsed, checked against the class
    ``get_class`` gives (None: no such class, which makes the query invalid, as
    DSP0200 says of ExecQuery), and the instances ``enumerate_instances`` gives
    for the class (with a property list, or None for all) selected, lazily."""
    canonical = check_language(language)
    if text is None:
        raise CIMError(CIM_ERR_INVALID_QUERY, "the query is missing")
    query = parse(text, canonical)
    cls = get_class(query.classname)
    if cls is None:
        raise _invalid(f"class {query.classname!r} does not exist")
    query.check(cls)
    instances = enumerate_instances(query.classname, query.property_list())
    return query, cls, iter(query.select(instances))
