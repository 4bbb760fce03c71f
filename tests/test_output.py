"""Structured output's one rule: orchestrator/output.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.output import Invalid, check_reply, schema_problems
from orchestrator.spec import OutputSchema

CITY = OutputSchema(
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["city", "population"],
    }
)


def test_a_reply_that_meets_the_schema_is_its_parsed_value() -> None:
    assert check_reply(CITY, ' {"city": "Lyon", "population": 522250}\n') == {
        "city": "Lyon",
        "population": 522250,
    }


def test_a_reply_that_is_not_json_is_invalid_and_says_so() -> None:
    found = check_reply(CITY, "Sure! Lyon.")
    assert isinstance(found, Invalid)
    assert found.message.startswith("the reply is not JSON: ")


def test_json_followed_by_more_text_is_not_json() -> None:
    found = check_reply(CITY, '{"city": "Lyon", "population": 1} and more')
    assert isinstance(found, Invalid) and "not JSON" in found.message


def test_a_schema_violation_names_where_in_the_reply_and_what() -> None:
    found = check_reply(CITY, '{"city": "Lyon", "population": 1, "tags": ["a", 2]}')
    assert found == Invalid('the reply does not match the schema at tags[1]: 2 is not of type "string"')
    found = check_reply(CITY, '{"city": "Lyon", "population": -1}')
    assert found == Invalid(
        "the reply does not match the schema at population: -1 is less than the minimum of 0"
    )


def test_json_null_is_a_value_like_any_other() -> None:
    assert check_reply(OutputSchema({"type": "null"}), "null") is None


@given(st.text())
def test_any_text_gives_a_value_or_invalid_never_an_exception(text: str) -> None:
    found = check_reply(CITY, text)
    assert isinstance(found, Invalid | dict)


def test_a_valid_schema_has_no_problems() -> None:
    assert schema_problems(CITY.schema) == []
    assert schema_problems(True) == []


def test_a_bad_schema_names_the_key_path_inside_it() -> None:
    assert schema_problems({"type": "object", "properties": {"n": {"minimum": "x"}}}) == [
        ("properties.n.minimum", '"x" is not of type "number"')
    ]
    assert schema_problems({"type": "strin"})[0][0] == "type"
    assert schema_problems({"pattern": "("}) == [("pattern", '"(" is not a "regex"')]
    assert schema_problems(5) == [("", "expected a JSON Schema (a table or a JSON object)")]


def test_a_schema_that_refers_to_another_document_is_refused_not_fetched() -> None:
    for schema in ({"$ref": "file:///etc/passwd"}, {"$ref": "http://127.0.0.1:9/x.json"}):
        problems = schema_problems(schema)
        assert len(problems) == 1
        assert "not fetched" in problems[0][1]
    assert schema_problems({"$schema": "http://127.0.0.1:9/meta"}) != []


def test_a_local_reference_is_followed() -> None:
    schema = OutputSchema({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"})
    assert schema_problems(schema.schema) == []
    assert check_reply(schema, "3") == 3
    assert isinstance(check_reply(schema, '"3"'), Invalid)


def test_the_name_is_the_title_when_it_is_a_plain_word() -> None:
    assert OutputSchema({"title": "city_info"}).name == "city_info"
    assert OutputSchema({"title": "city info!"}).name == "output"
    assert OutputSchema(True).name == "output"
