"""Function calling emulated over the web chat, through both SDKs."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from relay.claude.tools import CLOSE, OPEN, ToolCallParser
from relay.conversation import ToolSpec
from relay.reply import Text, ToolCall
from tests.conftest import API_KEY, MODEL, Relay, continues

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
CALL = OPEN + '{"name": "get_weather", "arguments": {"city": "Paris"}}' + CLOSE


def agent(answer_after_result: str = "It is sunny in Paris.", call: str = CALL):  # type: ignore[no-untyped-def]
    """A fake model: calls the tool first, answers once a tool result is in the prompt."""

    def reply(model: str, prompt: str) -> str:
        return answer_after_result if "[tool result (" in prompt else f"Let me check.\n{call}"

    return reply


async def test_openai_round_trip(relay: Relay, fake) -> None:
    fake.reply = agent()
    client = relay.openai()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id.startswith("call_") and call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    prompt = fake.calls_named("completion")[0].body["prompt"]
    assert "get_weather" in prompt and OPEN in prompt
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    final = await client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert final.choices[0].finish_reason == "stop"
    second_prompt = fake.calls_named("completion")[1].body["prompt"]
    assert f"[tool result (get_weather, {call.id})]" in second_prompt and continues(fake) and CALL in fake.seen[1]


async def test_openai_streamed_call_is_reassembled_and_never_leaks(relay: Relay, fake) -> None:
    fake.reply = agent()
    client = relay.openai()
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "w?"}], tools=[WEATHER], stream=True
    )
    text, args, names, finish = "", "", [], None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            args += (tc.function.arguments or "") if tc.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert OPEN not in text and "tool_call" not in text
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"
    async with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": "w?"}], tools=[WEATHER]
    ) as helper:
        done = await helper.get_final_completion()
    assert done.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]


async def test_parallel_calls(relay: Relay, fake) -> None:
    both = CALL + "\n" + OPEN + '{"name": "get_time", "arguments": {}}' + CLOSE
    fake.reply = agent(call=both)
    done = await relay.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER, TIME]
    )
    assert [c.function.name for c in done.choices[0].message.tool_calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]
    assert len({c.id for c in done.choices[0].message.tool_calls}) == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        OPEN + '{"name": "get_weather", "arguments": {}}' + CLOSE,
        OPEN + '{"name": "get_weather", "arguments": {"city": "Pa' + CLOSE,
        OPEN + '{"name": "get_weather", "arguments": {"city": ' + "[" * 5000 + "]" * 5000 + "}}" + CLOSE,
    ],
    ids=["missing-required", "broken-json", "nested-too-deep"],
)
async def test_invalid_call_falls_back_to_text(relay: Relay, fake, bad: str) -> None:
    fake.reply = agent(call=bad)
    done = await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER])
    assert done.choices[0].finish_reason == "stop"
    assert not done.choices[0].message.tool_calls
    assert bad in (done.choices[0].message.content or "")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_call_to_an_undeclared_tool_gets_one_repair_turn(relay: Relay, fake, stream: bool) -> None:  # type: ignore[no-untyped-def]
    rockets = OPEN + '{"name": "launch_rockets", "arguments": {}}' + CLOSE
    fake.reply = lambda model, conversation: CALL if "There is no tool named 'launch_rockets'" in conversation else rockets
    client = relay.openai()
    done = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER])
    calls = fake.calls_named("completion")
    # The same chat is told which tools exist and answers again: the client gets the real call.
    assert done.choices[0].message.tool_calls and done.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert len(calls) == 2 and calls[1].path == calls[0].path and "get_weather" in calls[1].body["prompt"]
    assert calls[1].body["parent_message_uuid"] == calls[0].body["turn_message_uuids"]["assistant_message_uuid"]
    fake.reply = lambda model, conversation: rockets  # still wrong after the repair: text, never markup
    if stream:
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "!"}], tools=[WEATHER], stream=True
            )
        ]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        again = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "!"}], tools=[WEATHER])
        text = again.choices[0].message.content or ""
    assert OPEN not in text and CLOSE not in text and "launch_rockets" in text
    assert len(fake.calls_named("completion")) == 4


async def test_tool_choice_none_offers_nothing_and_parses_nothing(relay: Relay, fake) -> None:
    fake.reply = agent()
    done = await relay.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER], tool_choice="none"
    )
    assert not done.choices[0].message.tool_calls
    assert CALL in (done.choices[0].message.content or "")
    assert "get_weather" not in fake.calls_named("completion")[0].body["prompt"]


async def test_tool_choice_required_and_named_are_in_the_prompt(relay: Relay, fake) -> None:
    fake.reply = agent()
    client = relay.openai()
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER], tool_choice="required"
    )
    named = {"type": "function", "function": {"name": "get_weather"}}
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "?"}], tools=[WEATHER], tool_choice=named
    )  # type: ignore[arg-type]
    prompts = [c.body["prompt"] for c in fake.calls_named("completion")]
    assert "must call at least one tool" in prompts[0] and "must call the tool get_weather" in prompts[1]


async def test_anthropic_round_trip(relay: Relay, fake) -> None:
    fake.reply = agent()
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
    relay.clients.append(client)  # type: ignore[arg-type]
    tools = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    async with client.messages.stream(model=MODEL, max_tokens=500, messages=messages, tools=tools) as stream:  # type: ignore[arg-type]
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id.startswith("toolu_")  # type: ignore[union-attr]
    assert "".join(b.text for b in first.content if b.type == "text") == "Let me check."  # type: ignore[union-attr]
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "clear sky"}]},
    ]
    final = await client.messages.create(model=MODEL, max_tokens=500, messages=messages, tools=tools)  # type: ignore[arg-type]
    assert final.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert "clear sky" in fake.calls_named("completion")[1].body["prompt"]


async def test_anthropic_custom_tools_with_nested_fields_are_offered_whole(relay: Relay, fake) -> None:
    """Some clients send `{"type": "custom", "name", "custom": {"description", "input_schema"}}`."""
    fake.reply = agent()
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
    relay.clients.append(client)  # type: ignore[arg-type]
    schema = WEATHER["function"]["parameters"]  # type: ignore[index]
    tools = [{"type": "custom", "name": "get_weather", "custom": {"description": "Weather by city", "input_schema": schema}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.messages.create(model=MODEL, max_tokens=500, messages=messages, tools=tools)  # type: ignore[arg-type]
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}  # type: ignore[union-attr]
    prompt = fake.calls_named("completion")[0].body["prompt"]
    assert "Weather by city" in prompt and '"city"' in prompt


def test_parser_finds_calls_split_anywhere() -> None:
    text = "Sure. " + CALL + " done"
    for cut in range(1, len(text)):
        parser = ToolCallParser([ToolSpec("get_weather", parameters=WEATHER["function"]["parameters"])])  # type: ignore[index]
        events = parser.feed(text[:cut]) + parser.feed(text[cut:]) + parser.flush()
        merged: list[Any] = []
        for e in events:
            if isinstance(e, Text) and merged and isinstance(merged[-1], Text):
                merged[-1] = Text(merged[-1].text + e.text)
            else:
                merged.append(e)
        assert [type(e) for e in merged] == [Text, ToolCall, Text], cut
        # white space that only separates text from a call is dropped, wherever the text was cut
        assert merged[0].text == "Sure." and merged[2].text == "done"


def test_parser_lets_lookalike_text_through() -> None:
    parser = ToolCallParser([ToolSpec("x")])
    events = parser.feed("a < b and <tool") + parser.feed("s> are fine") + parser.flush()
    assert "".join(e.text for e in events if isinstance(e, Text)) == "a < b and <tools> are fine"
