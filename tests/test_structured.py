"""Structured outputs on every API: the schema reaches claude.ai, the answer is checked (and
repaired once) before the client sees it, and the SDKs' parse helpers get exactly the JSON."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from pydantic import BaseModel

from relay.demo import FakeClaude
from tests.conftest import API_KEY, AUTH, MODEL, Relay, continues, session_key


class City(BaseModel):
    name: str
    population: int


class Trip(BaseModel):
    destination: City
    days: int
    tags: list[str]


def _asked(fake: FakeClaude, n: int = -1) -> str:
    return str(fake.calls_named("completion")[n].body["prompt"])


async def test_chat_completions_parse_gets_a_schema_valid_object(relay: Relay, fake: FakeClaude) -> None:
    done = await relay.openai().chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Plan a trip"}], response_format=Trip
    )
    trip = done.choices[0].message.parsed
    assert isinstance(trip, Trip) and isinstance(trip.destination, City)
    assert json.loads(done.choices[0].message.content or "") == trip.model_dump()
    assert '"population"' in _asked(fake) and "Answer with only a JSON object" in _asked(fake)  # the schema reached claude.ai


async def test_responses_parse_and_json_object_mode(relay: Relay, fake: FakeClaude) -> None:
    client = relay.openai()
    done = await client.responses.parse(model=MODEL, input="Plan a trip", text_format=Trip)
    assert isinstance(done.output_parsed, Trip) and json.loads(done.output_text) == done.output_parsed.model_dump()
    plain = await client.responses.create(
        model=MODEL, input="Any object [fake:fenced-json]", text={"format": {"type": "json_object"}}
    )
    assert json.loads(plain.output_text) == {"answer": "demo"}  # fences and prose taken away


async def test_anthropic_output_format_json_schema(relay: Relay, fake: FakeClaude) -> None:
    c = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
    schema = City.model_json_schema()
    done = await c.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "A city"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    await c.close()
    assert [b.type for b in done.content] == ["text"] and City.model_validate_json(done.content[0].text)  # type: ignore[union-attr]


async def test_an_invalid_first_answer_is_repaired_in_one_more_turn(relay: Relay, fake: FakeClaude) -> None:
    client = relay.openai()
    messages = [{"role": "user", "content": "Plan a trip [fake:invalid-json-once]"}]
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "trip", "schema": Trip.model_json_schema()}},  # type: ignore[arg-type]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert Trip.model_validate_json(text)  # the client never saw the invalid first answer
    calls = fake.calls_named("completion")
    assert len(calls) == 2 and continues(fake) and "does not match the required format" in calls[1].body["prompt"]
    async with aiohttp.ClientSession() as http, http.get(relay.url + "/metrics", headers=AUTH) as r:
        assert 'relay_structured_outputs_total{outcome="repaired"} 1.0' in await r.text()


async def test_a_twice_invalid_answer_is_a_clear_error(relay: Relay, fake: FakeClaude) -> None:
    client = relay.openai()
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": "Plan [fake:invalid-json-always]"}], response_format=Trip
        )
    assert info.value.status_code == 502 and info.value.code == "output_invalid"
    assert "does not match the requested format" in info.value.message and len(fake.calls_named("completion")) == 2
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "objekt"}}},  # type: ignore[typeddict-item]
        )
    assert "not a valid JSON Schema" in bad.value.message


async def test_an_answer_nested_too_deeply_is_an_invalid_answer_not_a_crash(relay: Relay, fake: FakeClaude) -> None:
    fake.script(session_key(1), text='{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(openai.APIStatusError) as info:
        await relay.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
        )
    assert info.value.status_code == 502 and info.value.code == "output_invalid", info.value.message
    assert len(fake.calls_named("completion")) == 2  # one repair turn, as for any invalid answer


async def test_schemas_that_cannot_be_checked_are_refused_before_anything_is_asked(relay: Relay, fake: FakeClaude) -> None:
    client = relay.openai()
    broken = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "objekt"}}}  # type: ignore[dict-item]
    bad_pattern = {"type": "object", "properties": {"s": {"type": "string", "pattern": "("}}}
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(3000)}}

    def fmt(schema: dict[str, Any]) -> dict[str, Any]:
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}}

    cases = [
        ({"tools": [broken]}, "tools (get_weather): not a valid JSON Schema"),
        (fmt(bad_pattern), "not a valid JSON Schema"),
        (fmt(huge), "bytes; at most 262144"),
    ]
    for extra, needle in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], **extra)  # type: ignore[call-overload]
        assert needle in info.value.message, info.value.message
    assert not fake.calls_named("completion")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


async def test_strict_tool_arguments_are_checked_and_repaired_once(relay: Relay, fake: FakeClaude) -> None:
    wrong = {"name": "get_weather", "arguments": {"city": "Paris", "days": "three"}}
    right = {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}

    def model(name: str, conversation: str) -> str:
        call = right if "does not match the required format" in conversation else wrong
        return f"<tool_call>{json.dumps(call)}</tool_call>"

    fake.reply = model
    client = relay.openai()
    done = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER])  # type: ignore[list-item]
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}  # type: ignore[union-attr]
    assert len(fake.calls_named("completion")) == 2 and "days" in _asked(fake)
    fake.reply = lambda name, conversation: f"<tool_call>{json.dumps(wrong)}</tool_call>"
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Again?"}], tools=[WEATHER])  # type: ignore[list-item]
    assert info.value.code == "output_invalid" and "at days" in info.value.message


NODE_TOOLS = os.environ.get("RELAY_NODE_TOOLS", "")


@pytest.mark.skipif(
    not NODE_TOOLS and not os.environ.get("CI"), reason="set RELAY_NODE_TOOLS to a folder with the AI SDK installed"
)
async def test_the_ai_sdks_generate_object_and_stream_object(relay: Relay, fake: FakeClaude, tmp_path: Path) -> None:
    assert (Path(NODE_TOOLS) / "node_modules" / "ai").is_dir(), "CI must install the AI SDK (ai, @ai-sdk/openai, zod)"
    (tmp_path / "node_modules").symlink_to(Path(NODE_TOOLS) / "node_modules")
    script = tmp_path / "object.mjs"
    script.write_text((Path(__file__).parent / "ai_sdk_object.mjs").read_text())
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), relay.url + "/v1", API_KEY, MODEL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    objects = json.loads(out.decode().strip().splitlines()[-1])
    for api in ("responses", "chat", "stream"):  # generateObject over both APIs, streamObject
        assert set(objects[api]) == {"name", "population", "tags"} and isinstance(objects[api]["population"], int)


# LangChain's stream of parsed objects trips a pydantic serializer warning inside the openai SDK.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_langchain_with_structured_output_json_schema(relay: Relay, fake: FakeClaude) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=relay.url + "/v1", api_key=API_KEY, model=MODEL, max_retries=0)  # type: ignore[arg-type]
    trip = await llm.with_structured_output(Trip, method="json_schema").ainvoke("Plan a trip")
    assert isinstance(trip, Trip) and '"destination"' in _asked(fake)
    streamed = [part async for part in llm.with_structured_output(City, method="json_schema").astream("A city")]
    assert isinstance(streamed[-1], City)
    await llm.root_async_client.close()  # type: ignore[union-attr]


async def test_pydantic_ai_native_output_over_chat_and_responses(relay: Relay, fake: FakeClaude) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=relay.url + "/v1", api_key=API_KEY)
    for model in (OpenAIChatModel(MODEL, provider=provider), OpenAIResponsesModel(MODEL, provider=provider)):
        result = await Agent(model, output_type=NativeOutput(Trip)).run("Plan a trip")
        assert isinstance(result.output, Trip)
    await provider.client.close()


LIBRARIES_PYTHON = os.environ.get("RELAY_LIBRARIES_PYTHON", "")


@pytest.mark.skipif(not LIBRARIES_PYTHON and not os.environ.get("CI"), reason="set RELAY_LIBRARIES_PYTHON (see .ci/run)")
async def test_the_agents_sdk_instructor_litellm_and_llm(relay: Relay, fake: FakeClaude) -> None:
    assert LIBRARIES_PYTHON, "CI must provide a venv with openai-agents, instructor, litellm and llm"
    script = Path(__file__).parent / "structured_libraries.py"
    proc = await asyncio.create_subprocess_exec(
        LIBRARIES_PYTHON,
        str(script),
        relay.url + "/v1",
        API_KEY,
        MODEL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = json.loads(out.decode().strip().splitlines()[-1])
    for result in (got["agents"]["chat"], got["agents"]["responses"], *got["instructor"].values(), got["litellm"], got["llm"]):
        assert City.model_validate(result)
