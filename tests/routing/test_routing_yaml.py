"""The YAML writer: every reader gets back exactly the objects, whatever the strings hold."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lane_router.render import dump_yaml

# Strings that YAML 1.1 (PyYAML, Go yaml.v2) or 1.2 readers would turn into something else.
TRICKY = [
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "n",
    "Y",
    "true",
    "False",
    "null",
    "~",
    "",
    " ",
    "-",
    ".",
    "1:20",
    "0o17",
    "0x1F",
    "1e3",
    "1_000",
    "9080",
    "3.14",
    ".inf",
    "-.5",
    "*.example.com",
    "a: b",
    "a #b",
    "#x",
    "@x",
    "`x",
    "!x",
    "&x",
    "|",
    ">",
    "[1]",
    "{a: 1}",
    "'q'",
    '"q"',
    "%x",
    "line\nbreak",
    "tab\there",
    "trailing ",
    "é",
    "\u2028",
    "x-lane",
    "127.0.0.1:15001",
    "[::1]:9081",
    "(?:.*,)?[ \\t]*lane[ \\t]*=",
    "2026-11-25",
    "=",
    "<<",
]


def test_tricky_strings_round_trip_as_strings() -> None:
    doc = {"values": TRICKY, "keys": {s: s for s in TRICKY if s}}
    assert list(yaml.safe_load_all(dump_yaml([doc]))) == [doc]


def test_plain_where_safe_and_documents_separated() -> None:
    text = dump_yaml([{"kind": "Service", "spec": {"port": 80, "on": True}}, {}])
    assert text == '---\nkind: Service\nspec:\n  port: 80\n  "on": true\n---\n{}\n'


def test_nested_lists_and_empty_collections() -> None:
    doc = {"a": [[1, 2], [], {}, [{"b": [3]}]], "c": {}, "d": [], "e": None, "f": False}
    assert yaml.safe_load(dump_yaml([doc])) == doc


_scalars = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none())
_trees = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=8), _trees, max_size=5), max_size=3))
def test_any_config_tree_round_trips(docs: list[dict]) -> None:
    assert list(yaml.safe_load_all(dump_yaml(docs))) == docs


def test_unprintable_and_line_separator_characters_are_escaped() -> None:
    values = ["\x7f", "\x85", "\u2028", "\u2029", "\ufeff", "\x00", "\U0001f600", "é"]
    text = dump_yaml([{"v": values}])
    assert not set(text) & set(values[:6])  # only escapes reach the file
    assert yaml.safe_load(text) == {"v": values}


def test_non_string_keys_and_unknown_types_are_refused() -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        dump_yaml([{"a": {1: "x"}}])
    with pytest.raises(TypeError, match="set"):
        dump_yaml([{"a": {"x"}}])
