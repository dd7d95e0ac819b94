"""The rule condition language: behaviour of each construct, its errors, and its limits."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.engine.conditions import Condition, ConditionError, compile_condition

KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
COMPARISONS = {**ORDERING, "==": operator.eq, "!=": operator.ne}


def check(source: str, context: Mapping[str, Any] | None = None) -> bool:
    return compile_condition(source).evaluate({} if context is None else context)


def compile_error(source: str) -> ConditionError:
    with pytest.raises(ConditionError) as info:
        compile_condition(source)
    return info.value


class Currency(StrEnum):
    EUR = "EUR"


class RecordingMapping(Mapping[str, Any]):
    """A context that remembers which top-level names were looked up."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.looked_up: list[str] = []

    def __getitem__(self, key: str) -> Any:
        self.looked_up.append(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


ORDER_EVENT = {
    "data": {
        "amount": 6200,
        "currency": "EUR",
        "status": "shipped",
        "gift": True,
        "note": "",
        "customer": {"locale": "de-DE"},
        "tags": ["vip", "b2b"],
        "lines": {"sku-1": 2},
    },
    "customer": {"segment": "retail"},
}


# --- the examples the rule files use -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('data.amount >= 5000 and data.currency in ["EUR", "USD"]', True),
        ('data.amount >= 7000 and data.currency in ["EUR", "USD"]', False),
        ('data.amount >= 5000 and data.currency in ["GBP", "USD"]', False),
        ('customer.segment != "wholesale"', True),
        ('customer.segment != "retail"', False),
        ('not (data.status == "delivered")', True),
        ('not (data.status == "shipped")', False),
        ("data.gift", True),
        ("data.note", False),
        ('data.customer.locale == "de-DE"', True),
    ],
)
def test_rule_file_examples(source: str, expected: bool) -> None:
    assert check(source, ORDER_EVENT) is expected


# --- literals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("12", 12),
        ("-3", -3),
        ("0", 0),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ('"EUR"', "EUR"),
        ("'EUR'", "EUR"),
        ('""', ""),
        (r'"say \"hi\""', 'say "hi"'),
        (r"'it\'s'", "it's"),
        (r'"back\\slash"', "back\\slash"),
        (r'"\\"', "\\"),
        ('"it\'s"', "it's"),
        ("true", True),
        ("false", False),
        ("null", None),
        ('[1, "a", null]', [1, "a", None]),
        ("[]", []),
        ("[[1], [2, 3]]", [[1], [2, 3]]),
    ],
)
def test_literal_equals_the_same_value_from_the_context(literal: str, value: Any) -> None:
    assert check(f"x == {literal}", {"x": value}) is True
    assert check(f"{literal} == x", {"x": value}) is True
    assert check(f"x == {literal}", {"x": "something else"}) is False


def test_bare_literals_are_coerced_by_truthiness() -> None:
    assert check("true") is True
    assert check("false") is False
    assert check("null") is False
    assert check("0") is False
    assert check("7") is True
    assert check('""') is False
    assert check('"x"') is True
    assert check("[]") is False
    assert check("[0]") is True


def test_list_items_may_be_paths() -> None:
    context = {"data": {"home": "EUR", "away": "USD"}}
    assert check('"USD" in [data.home, data.away]', context) is True
    assert check('"GBP" in [data.home, data.away]', context) is False


# --- paths ---------------------------------------------------------------------------------


def test_paths_resolve_by_successive_key_lookup() -> None:
    assert check('data.customer.locale == "de-DE"', ORDER_EVENT) is True
    assert check("data.amount == 6200", ORDER_EVENT) is True
    assert check("data.amount == 6201", ORDER_EVENT) is False


@pytest.mark.parametrize(
    "path", ["nothing", "data.nothing", "data.customer.nothing", "data.nothing.deeper.still"]
)
def test_missing_keys_anywhere_read_as_null(path: str) -> None:
    assert check(f"{path} == null", ORDER_EVENT) is True
    assert check(path, ORDER_EVENT) is False
    assert check(f"not {path}", ORDER_EVENT) is True


def test_paths_never_fall_back_to_attributes() -> None:
    context = {"data": {"name": "abc", "obj": SimpleNamespace(secret="s3cret"), "n": 5}}
    assert check("data.name.upper == null", context) is True
    assert check("data.obj.secret == null", context) is True
    assert check("data.n.real == null", context) is True
    assert check("data.obj.secret", context) is False


def test_any_mapping_is_a_valid_context() -> None:
    context = MappingProxyType({"data": MappingProxyType({"amount": 10})})
    assert check("data.amount > 5", context) is True


def test_keywords_are_fine_after_the_first_segment() -> None:
    context = {"data": {"in": 1, "not": 2, "true": 3}}
    assert check("data.in == 1 and data.not == 2 and data.true == 3", context) is True


@pytest.mark.parametrize(
    ("source", "segment", "position"),
    [
        ("_private", "_private", 0),
        ("data._private == 1", "_private", 5),
        ("data.__class__", "__class__", 5),
        ("data.x.__dict__ == null", "__dict__", 7),
        ("true and __import__", "__import__", 9),
        ("data.ok or data._", "_", 16),
    ],
)
def test_underscore_segments_are_rejected(source: str, segment: str, position: int) -> None:
    error = compile_error(source)
    assert error.position == position
    assert f"'{segment}'" in str(error)
    assert f"position {position}" in str(error)


@pytest.mark.parametrize(
    ("python", "ours"), [("True", "true"), ("False", "false"), ("None", "null")]
)
def test_python_spellings_are_rejected_with_a_hint(python: str, ours: str) -> None:
    error = compile_error(f"data.gift == {python}")
    assert error.position == 13
    assert f"'{ours}'" in str(error)


def test_keyword_cannot_start_a_path() -> None:
    assert compile_error("x == true.value").position == 5


# --- comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 == 1", True),
        ("1 == 2", False),
        ("1 != 2", True),
        ("1 != 1", False),
        ("1 == 1.0", True),
        ('1 == "1"', False),
        ('1 != "1"', True),
        ("true == 1", False),
        ("false == 0", False),
        ("null == false", False),
        ("null == null", True),
        ("null != 0", True),
        ('"a" == "a"', True),
        ('"a" == "A"', False),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [2, 1]", False),
        ("[1] == [true]", False),
        ("[1] == [1.0]", True),
        ("[] == null", False),
    ],
)
def test_equality(source: str, expected: bool) -> None:
    assert check(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 < 2", True),
        ("2 < 1", False),
        ("2 < 2", False),
        ("2 <= 2", True),
        ("3 <= 2", False),
        ("3 > 2", True),
        ("2 > 2", False),
        ("2 >= 2", True),
        ("1 >= 2", False),
        ("1.5 < 2", True),
        ("-3 < -2.5", True),
        ('"apple" < "banana"', True),
        ('"b" >= "a"', True),
        ('"b" < "a"', False),
    ],
)
def test_ordering(source: str, expected: bool) -> None:
    assert check(source) is expected


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("null", "1"),
        ('"a"', "1"),
        ('"10"', "9"),
        ("true", "0"),
        ("false", "1"),
        ("[1]", "1"),
        ("null", "null"),
        ("missing", "0"),
    ],
)
def test_ordering_mismatched_types_is_false_both_ways(left: str, right: str) -> None:
    for symbol in ORDERING:
        assert check(f"{left} {symbol} {right}") is False, symbol
        assert check(f"{right} {symbol} {left}") is False, symbol


def test_ordering_unorderable_values_of_one_type_is_false() -> None:
    context = {"a": {"k": 1}, "b": {"k": 2}, "mixed": [1, None], "ints": [1, 2]}
    assert check("a < b", context) is False
    assert check("a >= b", context) is False
    assert check("mixed < ints", context) is False


def test_decimals_from_the_context_compare_with_numbers() -> None:
    context = {"data": {"amount": Decimal("5000.00")}}
    assert check("data.amount >= 5000", context) is True
    assert check("data.amount == 5000", context) is True
    assert check("data.amount > 5000", context) is False
    assert check("data.amount < 5000.5", context) is True


def test_str_subclasses_compare_as_text() -> None:
    context = {"data": {"currency": Currency.EUR}}
    assert check('data.currency == "EUR"', context) is True
    assert check('data.currency in ["USD", "EUR"]', context) is True
    assert check('data.currency < "F"', context) is True


def test_comparisons_do_not_chain() -> None:
    assert compile_error("1 < 2 < 3").position == 6
    assert compile_error("1 == 1 == 1").position == 7
    assert compile_error('"a" in "ab" in "abc"').position == 12
    assert "chained" in str(compile_error("a != b == c"))


# --- membership ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"EUR" in ["EUR", "USD"]', True),
        ('"GBP" in ["EUR", "USD"]', False),
        ('"ell" in "hello"', True),
        ('"" in "hello"', True),
        ('"xyz" in "hello"', False),
        ('1 in "123"', False),
        ("1 in [1.0]", True),
        ("1 in [true]", False),
        ("null in [null]", True),
        ("null in []", False),
        ('"vip" in data.tags', True),
        ('"b2c" in data.tags', False),
        ('"sku-1" in data.lines', True),
        ("2 in data.lines", False),
        ("1 in data.missing", False),
        ("1 in data.amount", False),
        ("1 in null", False),
        ("[1] in [[1], [2]]", True),
        ('"GBP" not in ["EUR", "USD"]', True),
        ('"EUR" not in ["EUR", "USD"]', False),
        ('"vip" not in data.tags', False),
        ("1 not in null", True),
        ("1 not\n   in [2]", True),
    ],
)
def test_membership(source: str, expected: bool) -> None:
    assert check(source, ORDER_EVENT) is expected


def test_membership_in_sets_and_tuples_from_the_context() -> None:
    context = {"s": frozenset({"a", "b"}), "t": ("x", "y")}
    assert check('"a" in s and "y" in t', context) is True
    assert check('"c" in s or "z" in t', context) is False


# --- boolean logic -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true and true", True),
        ("true and false", False),
        ("false and true", False),
        ("false or false", False),
        ("false or true", True),
        ("true or false", True),
        ("not true", False),
        ("not false", True),
        ("not null", True),
        ("not not true", True),
        ("not not 0", False),
        ('1 and "x" and [0]', True),
        ('0 or "" or [] or null', False),
        ('0 or "" or 3', True),
    ],
)
def test_boolean_operators(source: str, expected: bool) -> None:
    assert check(source) is expected


def test_or_yields_the_first_truthy_value_like_python() -> None:
    assert check('(data.nickname or "friend") == "friend"', {"data": {}}) is True
    assert check('(data.nickname or "friend") == "Ann"', {"data": {"nickname": "Ann"}}) is True
    assert check("(0 and 5) == 0") is True


@pytest.mark.parametrize(
    ("source", "flag", "looked_up"),
    [
        ("flag and boom", False, ["flag"]),
        ("flag or boom", True, ["flag"]),
        ("flag and boom", True, ["flag", "boom"]),
        ("flag or boom", False, ["flag", "boom"]),
        ("flag and boom and bang", False, ["flag"]),
    ],
)
def test_and_or_short_circuit(source: str, flag: bool, looked_up: list[str]) -> None:
    context = RecordingMapping({"flag": flag, "boom": 1, "bang": 1})
    compile_condition(source).evaluate(context)
    assert context.looked_up == looked_up


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true or false and false", True),  # and binds tighter than or
        ("(true or false) and false", False),
        ("false and false or true", True),
        ("false and (false or true)", False),
        ("not true or true", True),  # not binds tighter than or
        ("not (true or true)", False),
        ("not false and false", False),  # ... and than and
        ("not 1 == 2", True),  # comparison binds tighter than not
        ('not "a" in ["b"]', True),
        ("1 < 2 and 3 > 4 or 5 >= 5", True),
        ("1 < 2 and (3 > 4 or 5 < 5)", False),
        ("((((true))))", True),
    ],
)
def test_precedence(source: str, expected: bool) -> None:
    assert check(source) is expected


# --- errors --------------------------------------------------------------------------------


def test_error_message_names_the_token_position_and_expectation() -> None:
    error = compile_error("(data.amount >)")
    assert str(error) == "unexpected token ')' at position 14; expected a value"
    assert error.position == 14
    assert error.source == "(data.amount >)"


def test_condition_error_is_a_value_error_with_a_stable_code() -> None:
    error = compile_error("1 +")
    assert isinstance(error, ValueError)
    assert error.code == "invalid_condition"
    assert ConditionError.code == "invalid_condition"


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("", 0, "end of input"),
        ("   ", 3, "end of input"),
        ("data.amount >=", 14, "end of input"),
        ("data.amount >= )", 15, "token ')'"),
        ("a)", 1, "expected an operator or end of input"),
        ("(a", 2, "expected an operator or ')'"),
        ("(a b)", 3, "token 'b'"),
        ("[1 2]", 3, "expected ',' or ']'"),
        ("[1, ]", 4, "expected a value"),
        ("[1,", 3, "end of input"),
        ("a not b", 2, "token 'not'"),
        ("not in [1]", 0, "token 'not in'"),
        ("and a", 0, "token 'and'"),
        ("a or", 4, "end of input"),
        ("a and or b", 6, "token 'or'"),
        ("a in", 4, "expected a value"),
        ('"abc', 0, "unterminated string"),
        ("x == 'abc", 5, "unterminated string"),
        (r'x == "a\"', 5, "unterminated string"),
        ("a @ b", 2, "unexpected character '@'"),
        ("a = 1", 2, "unexpected character '='"),
        ("a && b", 2, "unexpected character '&'"),
        ("!a", 0, "unexpected character '!'"),
        ("- 1", 0, "unexpected character '-'"),
        ("1.", 1, "unexpected character '.'"),
        ("data.", 4, "unexpected character '.'"),
        ("a -1 == 0", 2, "token '-1'"),
        (r'x == "a\n"', 7, r"unknown escape '\n'"),
        (r'x == "\\\t"', 8, r"unknown escape '\t'"),
        ("1 2", 2, "token '2'"),
        ("12abc", 2, "token 'abc'"),
    ],
)
def test_syntax_errors_say_what_and_where(source: str, position: int, fragment: str) -> None:
    error = compile_error(source)
    assert error.position == position
    assert error.source == source
    assert f"at position {position}" in str(error)
    assert fragment in str(error)


# --- limits --------------------------------------------------------------------------------


def test_source_length_limit() -> None:
    assert check("true" + " " * 1996) is True
    error = compile_error("true" + " " * 1997)
    assert "2000" in str(error)
    assert "2001" in str(error)


def test_a_long_flat_chain_within_the_limit_evaluates() -> None:
    source = " or ".join(["false"] * 199 + ["true"])
    assert len(source) <= 2000
    assert check(source) is True
    assert check(" and ".join(["x"] * 300), {"x": 1}) is True


@pytest.mark.parametrize(
    ("at_limit", "too_deep", "position"),
    [
        ("(" * 32 + "true" + ")" * 32, "(" * 33 + "true" + ")" * 33, 32),
        ("[" * 32 + "]" * 32, "[" * 33 + "]" * 33, 32),
        ("not " * 32 + "false", "not " * 33 + "false", 128),
        ("not (" * 16 + "false" + ")" * 16, "not (" * 16 + "not false" + ")" * 16, 80),
        ("x in " + "[" * 32 + "]" * 32, "x in " + "[" * 33 + "]" * 33, 37),
    ],
)
def test_nesting_depth_limit(at_limit: str, too_deep: str, position: int) -> None:
    compile_condition(at_limit)
    error = compile_error(too_deep)
    assert error.position == position
    assert "32" in str(error)


def test_depth_32_still_evaluates_correctly() -> None:
    assert check("not " * 32 + "true") is True
    assert check("not " * 31 + "true") is False
    assert check("(" * 32 + "1 == 1" + ")" * 32) is True


@pytest.mark.parametrize("hostile", ["(" * 1999, "[" * 1999, "not " * 499, "-" * 2000])
def test_hostile_input_is_rejected_cleanly(hostile: str) -> None:
    compile_error(hostile)


# --- the Condition value -------------------------------------------------------------------


def test_condition_keeps_its_source_and_compares_by_it() -> None:
    first = compile_condition("data.gift")
    assert first.source == "data.gift"
    assert first == compile_condition("data.gift")
    assert first != compile_condition("data.gift == true")
    assert len({first, compile_condition("data.gift")}) == 1
    assert repr(first) == "Condition(source='data.gift')"
    assert Condition("data.gift") == first


def test_condition_is_frozen() -> None:
    condition = compile_condition("true")
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.source = "false"  # type: ignore[misc]


def test_evaluate_always_returns_a_real_bool() -> None:
    assert check("data.customer", ORDER_EVENT) is True
    assert check("data.amount", ORDER_EVENT) is True
    assert check("data.note", ORDER_EVENT) is False


# --- properties ----------------------------------------------------------------------------


@given(a=st.integers(), b=st.integers(), symbol=st.sampled_from(sorted(COMPARISONS)))
def test_integer_literal_comparisons_agree_with_python(a: int, b: int, symbol: str) -> None:
    assert check(f"{a} {symbol} {b}") is COMPARISONS[symbol](a, b)


numbers = st.one_of(st.integers(), st.floats(allow_nan=False), st.decimals(allow_nan=False))


@given(a=numbers, b=numbers, symbol=st.sampled_from(sorted(COMPARISONS)))
def test_context_number_comparisons_agree_with_python(a: Any, b: Any, symbol: str) -> None:
    assert check(f"a {symbol} b", {"a": a, "b": b}) is COMPARISONS[symbol](a, b)


@given(
    other=st.one_of(st.none(), st.booleans(), st.text(), st.lists(st.integers())),
    number=st.integers(),
    symbol=st.sampled_from(sorted(ORDERING)),
)
def test_ordering_against_a_non_number_is_always_false(
    other: Any, number: int, symbol: str
) -> None:
    context = {"other": other, "number": number}
    assert check(f"other {symbol} number", context) is False
    assert check(f"number {symbol} other", context) is False


@given(text=st.text(max_size=200), quote=st.sampled_from(['"', "'"]))
def test_any_text_round_trips_through_a_string_literal(text: str, quote: str) -> None:
    escaped = text.replace("\\", "\\\\").replace(quote, "\\" + quote)
    literal = f"{quote}{escaped}{quote}"
    assert check(f"x == {literal}", {"x": text}) is True
    assert check(f"x == {literal}", {"x": text + "!"}) is False


identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in KEYWORDS
)


@given(keys=st.lists(identifiers, min_size=1, max_size=6), value=st.integers())
def test_dotted_paths_find_nested_values(keys: list[str], value: int) -> None:
    context: Any = value
    for key in reversed(keys):
        context = {key: context}
    path = ".".join(keys)
    assert check(f"{path} == {value}", context) is True
    assert check(f"{path}.deeper == null", context) is True
    assert check(f"{path}x == null", context) is True


# A boolean expression tree: a bool, a variable name, ("cmp", a, symbol, b), ("not", t),
# ("paren", t), or ("and" | "or", t, t).
Tree = Any
VARIABLES = ("v0", "v1", "v2", "v3")
PRECEDENCE = {"or": 1, "and": 2, "not": 3}


def trees(depth: int) -> st.SearchStrategy[Tree]:
    leaves = st.one_of(
        st.booleans(),
        st.sampled_from(VARIABLES),
        st.tuples(
            st.just("cmp"),
            st.integers(-3, 3),
            st.sampled_from(sorted(COMPARISONS)),
            st.integers(-3, 3),
        ),
    )
    if depth == 0:
        return leaves
    smaller = trees(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(st.just("not"), smaller),
        st.tuples(st.just("paren"), smaller),
        st.tuples(st.sampled_from(["and", "or"]), smaller, smaller),
    )


def precedence(tree: Tree) -> int:
    return PRECEDENCE.get(tree[0], 4) if isinstance(tree, tuple) else 4


def render(tree: Tree) -> str:
    """Print with the fewest parentheses the grammar allows, so precedence is really tested."""
    if isinstance(tree, bool):
        return "true" if tree else "false"
    if isinstance(tree, str):
        return tree
    kind = tree[0]
    if kind == "cmp":
        return f"{tree[1]} {tree[2]} {tree[3]}"
    if kind == "paren":
        return f"({render(tree[1])})"

    def operand(child: Tree) -> str:
        text = render(child)
        return f"({text})" if precedence(child) < PRECEDENCE[kind] else text

    if kind == "not":
        return f"not {operand(tree[1])}"
    return f"{operand(tree[1])} {kind} {operand(tree[2])}"


def reference(tree: Tree, variables: Mapping[str, bool]) -> bool:
    if isinstance(tree, bool):
        return tree
    if isinstance(tree, str):
        return variables[tree]
    kind = tree[0]
    if kind == "cmp":
        compare: Callable[[int, int], bool] = COMPARISONS[tree[2]]
        return compare(tree[1], tree[3])
    if kind == "paren":
        return reference(tree[1], variables)
    if kind == "not":
        return not reference(tree[1], variables)
    if kind == "and":
        return reference(tree[1], variables) and reference(tree[2], variables)
    return reference(tree[1], variables) or reference(tree[2], variables)


@given(
    tree=trees(6),
    values=st.fixed_dictionaries({name: st.booleans() for name in VARIABLES}),
)
def test_boolean_trees_evaluate_like_python(tree: Tree, values: dict[str, bool]) -> None:
    source = render(tree)
    assert compile_condition(source).evaluate(values) is reference(tree, values), source


def test_render_uses_minimal_parentheses() -> None:
    # Guards the property above: a printer that parenthesised everything would test nothing.
    assert render(("or", ("and", True, "v0"), ("not", ("cmp", 1, "<", 2)))) == (
        "true and v0 or not 1 < 2"
    )
    assert render(("and", ("or", True, False), ("not", ("and", True, True)))) == (
        "(true or false) and not (true and true)"
    )


# Whitespace-separated fragments, valid and not; "not in" is added whole.
TOKEN_SOUP = [
    *"( ) [ ] , == != < <= > >= and or not in true false null 1 -2 3.5".split(),
    *"\"s\" 't' data.amount data.tags x _y a.__b \" ' \\ . - @ None".split(),
    "not in",
]


def compile_or_error(source: str) -> Condition | ConditionError:
    try:
        return compile_condition(source)
    except ConditionError as error:
        return error


@given(
    source=st.one_of(
        st.text(max_size=120),
        st.text(alphabet="()[],=!<>-.0123456789 \"'\\_abdilnorstux", max_size=80),
        st.lists(st.sampled_from(TOKEN_SOUP), max_size=30).map(" ".join),
        st.lists(st.sampled_from(TOKEN_SOUP), max_size=30).map("".join),
    )
)
def test_arbitrary_text_fails_only_with_condition_error(source: str) -> None:
    outcome = compile_or_error(source)
    if isinstance(outcome, ConditionError):
        assert outcome.source == source
        assert 0 <= outcome.position <= len(source)
        assert f"position {outcome.position}" in str(outcome)
    else:
        assert isinstance(outcome.evaluate(ORDER_EVENT), bool)
        assert isinstance(outcome.evaluate({}), bool)
