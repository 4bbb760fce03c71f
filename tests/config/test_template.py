"""Prompt templates: strict, text-exact, never evaluating anything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.config.template import MissingColumn, TemplateError, as_text, parse

names = st.text(st.characters(blacklist_characters="{}"), min_size=1, max_size=8)
plain = st.text(st.characters(blacklist_characters="{}"), max_size=20)


def test_fields_are_filled_and_doubled_braces_are_literal() -> None:
    t = parse("Classify {{this}}: {text} ({lang})")
    assert t.columns == ("text", "lang")
    assert t.render({"text": "good", "lang": "en", "other": "x"}) == "Classify {this}: good (en)"


def test_a_value_is_inserted_as_text_never_evaluated() -> None:
    t = parse("{a}")
    assert t.render({"a": "{b} {0.__class__} }}"}) == "{b} {0.__class__} }}"


def test_attribute_index_and_format_spec_syntax_is_just_a_column_name() -> None:
    with pytest.raises(MissingColumn) as exc:
        parse("{text.upper}").render({"text": "x"})
    assert str(exc.value) == "column 'text.upper' is missing"
    assert parse("{x:>10}").render({"x:>10": "v"}) == "v"
    assert parse("{0[0]}").columns == ("0[0]",)


def test_non_string_values_go_in_as_json_text() -> None:
    assert (
        parse("{n} {b} {z} {l}").render({"n": 3, "b": True, "z": None, "l": [1, "a"]})
        == '3 true null [1,"a"]'
    )
    assert as_text(1.5) == "1.5"


def test_missing_column_names_the_first_missing_one() -> None:
    with pytest.raises(MissingColumn) as exc:
        parse("{a}{b}{c}").render({"a": 1})
    assert exc.value.column == "b"


@pytest.mark.parametrize(
    "source, message",
    [
        ("Hello {name", "unclosed '{' at character 7"),
        ("a } b", "single '}' at character 3 (write '}}' for a brace)"),
        ("{}", "empty field '{}' at character 1: name a column"),
        ("{a{b}", "'{' inside a field at character 3 (write '{{' for a brace)"),
    ],
)
def test_syntax_errors_say_where(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as exc:
        parse(source)
    assert str(exc.value) == message


@given(st.text(max_size=60), st.dictionaries(names, st.text(max_size=10)))
def test_parse_and_render_raise_only_their_own_errors(source: str, row: dict[str, str]) -> None:
    try:
        t = parse(source)
    except TemplateError:
        return
    try:
        t.render(row)
    except MissingColumn as exc:
        assert exc.column not in row and exc.column in t.columns


@given(st.lists(st.tuples(plain, names), max_size=6), plain, st.data())
def test_rendering_is_text_exact(pieces: list[tuple[str, str]], tail: str, data: st.DataObject) -> None:
    row = {name: data.draw(st.text(max_size=12)) for _, name in pieces}
    source = "".join(text.replace("{", "{{") + "{" + name + "}" for text, name in pieces) + tail
    expected = "".join(text + row[name] for text, name in pieces) + tail
    assert parse(source).render(row) == expected


@given(st.text(max_size=40))
def test_escaped_text_renders_to_itself(text: str) -> None:
    assert parse(text.replace("{", "{{").replace("}", "}}")).render({}) == text
