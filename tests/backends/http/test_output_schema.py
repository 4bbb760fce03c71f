"""Structured output over HTTP: the ``openai`` and ``anthropic`` request bodies carry the job's
schema in each provider's shape (the fakes refuse any other), and replies that fail it are
retried as ``invalid_output``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from orchestrator.backends.http.anthropic import sendable_schema
from orchestrator.events import OutputParsed, RetryScheduled
from orchestrator.testing.anthropic import script as anthropic_script
from orchestrator.testing.anthropic.server import Reply as AnthropicReply
from orchestrator.testing.anthropic.server import Text, open_fake_anthropic
from orchestrator.testing.openai import script as openai_script
from orchestrator.testing.openai.server import Reply, open_fake_openai
from tests.http_helpers import events_of, run_jobs

SCHEMA = {
    "title": "city_info",
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
GOOD = '{"city": "Lyon", "population": 522250}'
RETRY = {"base_delay": 0.01, "max_delay": 0.05, "max_invalid_output": 2}


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")


# --- openai ------------------------------------------------------------------------------------


async def test_openai_sends_the_schema_as_a_strict_json_schema_response_format() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply(GOOD))
        result, recorder = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            model="gpt-4o-mini",
        )
    assert result.jobs["j"].output == {"city": "Lyon", "population": 522250}
    (request,) = fake.requests
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city_info", "schema": SCHEMA, "strict": True},
    }
    assert request.output_schema == SCHEMA
    assert events_of(recorder, OutputParsed) == [OutputParsed({"city": "Lyon", "population": 522250})]


async def test_openai_without_a_schema_sends_no_response_format() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply("hi"))
        await run_jobs(
            "openai", {"base_url": fake.base_url}, [{"id": "j", "prompt": "Hi"}], model="gpt-4o-mini"
        )
    assert "response_format" not in fake.requests[0].body and fake.requests[0].output_schema is None


async def test_openai_invalid_replies_are_retried_then_the_job_fails_with_the_validators_message() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply('{"city": "Lyon"}'), Reply("not json"), Reply('{"city": 1, "population": 2}'))
        result, recorder = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            retry=RETRY,
            model="gpt-4o-mini",
        )
    job = result.jobs["j"]
    assert job.status == "failed" and job.attempts == 3 and job.error_kind == "invalid_output"
    assert job.error == 'the reply does not match the schema at city: 1 is not of type "string"'
    assert [r.error_kind for r in events_of(recorder, RetryScheduled)] == ["invalid_output"] * 2
    assert len(fake.requests) == 3


async def test_openai_an_invalid_reply_then_a_valid_one_succeeds_and_reask_shows_the_error() -> None:
    async with open_fake_openai() as fake:
        fake.script(Reply('{"city": "Lyon", "population": -5}'), Reply(GOOD))
        result, _ = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            retry={**RETRY, "reask": True},
            model="gpt-4o-mini",
        )
    assert result.jobs["j"].ok and result.jobs["j"].attempts == 2
    second = fake.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == '{"city": "Lyon", "population": -5}'
    assert "at population: -5 is less than the minimum of 0" in second[2]["content"]


async def test_the_fake_openai_refuses_a_schema_strict_mode_cannot_take() -> None:
    loose = {"type": "object", "properties": {"city": {"type": "string"}}}
    async with open_fake_openai() as fake:
        result, _ = await run_jobs(
            "openai",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=loose,
            model="gpt-4o-mini",
        )
    assert result.jobs["j"].error_kind == "bad_request"
    assert "'additionalProperties' is required to be supplied and to be false" in (
        result.jobs["j"].error or ""
    )


@pytest.mark.parametrize(
    ("response_format", "problem"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}, "json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": []}}, "json_schema.schema"),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "a", "strict": True, "schema": SCHEMA | {"required": []}},
            },
            "'required' is required",
        ),
    ],
)
def test_the_fake_openai_checks_the_response_format_shape(response_format: Any, problem: str) -> None:
    found = openai_script.response_format_problem({"response_format": response_format})
    assert found is not None and problem in found
    good = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
    assert openai_script.response_format_problem({"response_format": good}) is None


# --- anthropic ---------------------------------------------------------------------------------


async def test_anthropic_sends_the_schema_as_output_config_format() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(AnthropicReply((Text(GOOD, chunk_chars=5),)))
        result, _ = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            model="claude-sonnet-4-5",
        )
    assert result.jobs["j"].output == orjson.loads(GOOD)
    (request,) = fake.message_requests()
    # the API refuses numeric bounds: they are left out of the request (and checked here instead)
    sent = {**SCHEMA, "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}}
    assert request.body["output_config"] == {"format": {"type": "json_schema", "schema": sent}}
    assert request.output_schema == sent


async def test_anthropic_a_bound_left_out_of_the_request_is_still_enforced() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(*[AnthropicReply((Text('{"city": "Lyon", "population": -5}'),))] * 3)
        result, _ = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            retry=RETRY,
            model="claude-sonnet-4-5",
        )
    assert result.jobs["j"].error == (
        "the reply does not match the schema at population: -5 is less than the minimum of 0"
    )


def test_only_the_constraints_the_api_refuses_are_left_out() -> None:
    schema = {
        "type": "object",
        "properties": {
            "minimum": {"type": "number", "minimum": 1, "maximum": 2, "multipleOf": 0.5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 2},
            "one": {"type": "array", "minItems": 1, "maxItems": 4},
            "kind": {"enum": [{"minimum": 1}], "pattern": "^a"},
        },
        "$defs": {"n": {"exclusiveMinimum": 0, "minLength": 1}},
    }
    assert sendable_schema(schema) == {
        "type": "object",
        "properties": {
            "minimum": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "one": {"type": "array", "minItems": 1},
            "kind": {"enum": [{"minimum": 1}], "pattern": "^a"},
        },
        "$defs": {"n": {}},
    }
    assert (
        anthropic_script.output_format_problem(
            {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
        )
        == "output_config.format.schema: 'minimum' is not supported in structured outputs"
    )
    sent = {"format": {"type": "json_schema", "schema": sendable_schema(schema)}}
    assert anthropic_script.output_format_problem({"output_config": sent}) is None


async def test_anthropic_invalid_then_valid_is_retried() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(AnthropicReply((Text("Here you go: " + GOOD),)), AnthropicReply((Text(GOOD),)))
        result, recorder = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            retry=RETRY,
            model="claude-sonnet-4-5",
        )
    assert result.jobs["j"].ok and result.jobs["j"].attempts == 2
    (retry,) = events_of(recorder, RetryScheduled)
    assert retry.error_kind == "invalid_output" and retry.message.startswith("the reply is not JSON")


async def test_anthropic_always_invalid_fails_as_invalid_output() -> None:
    async with open_fake_anthropic() as fake:
        fake.script(*[AnthropicReply((Text('{"city": "Lyon"}'),))] * 3)
        result, _ = await run_jobs(
            "anthropic",
            {"base_url": fake.base_url},
            [{"id": "j", "prompt": "A city?"}],
            output_schema=SCHEMA,
            retry=RETRY,
            model="claude-sonnet-4-5",
        )
    job = result.jobs["j"]
    assert job.status == "failed" and job.error_kind == "invalid_output" and job.attempts == 3
    assert job.error == 'the reply does not match the schema: "population" is a required property'


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ("json", "output_config: Input should be an object"),
        ({"format": {"type": "json"}}, "output_config.format.type"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema"),
        (
            {"format": {"type": "json_schema", "schema": {}, "strict": True}},
            "output_config.format.strict: Extra",
        ),
    ],
)
def test_the_fake_anthropic_checks_the_output_config_shape(config: Any, problem: str) -> None:
    found = anthropic_script.output_format_problem({"output_config": config})
    assert found is not None and found.startswith(problem)
    good = {"format": {"type": "json_schema", "schema": sendable_schema(SCHEMA)}}
    assert anthropic_script.output_format_problem({"output_config": good}) is None
