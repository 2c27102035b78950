"""claude.ai's 2025-2026 stream shapes reach every client API in its own form."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import API_KEY, AUTH, HI, MODEL, Relay, RelayFactory, session_key


def script_all(fake: Any, **kw: Any) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), **kw)


def _anthropic(relay: Relay) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0)
    relay.clients.append(client)  # type: ignore[arg-type]
    return client


@pytest.mark.parametrize("form", ["summary", "both"])
async def test_thinking_that_comes_as_summaries_reaches_every_api_once(relay: Relay, fake, form: str) -> None:
    script_all(fake, text="Four.", thinking="Two and two make four.", thinking_form=form)
    chat = await relay.openai().chat.completions.create(model=MODEL + "-think", messages=HI)
    assert chat.choices[0].message.content == "<think>\nTwo and two make four.\n</think>\n\nFour."
    message = await _anthropic(relay).messages.create(
        model=MODEL, max_tokens=100, messages=HI, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [(b.type, getattr(b, "thinking", getattr(b, "text", ""))) for b in message.content] == [
        ("thinking", "Two and two make four."),
        ("text", "Four."),
    ]
    response = await relay.openai().responses.create(model=MODEL, input="2+2?", reasoning={"effort": "high"})
    assert response.output[0].summary[0].text == "Two and two make four."  # type: ignore[union-attr]


async def test_interleaved_thinking_stays_where_it_happened(relay: Relay, fake) -> None:
    script_all(fake, text="First then the rest.", thinking="Plan.", interleave=True)
    stream = await relay.openai().chat.completions.create(model=MODEL + "-think", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "<think>\nPlan.\n</think>\n\nFirst \n\n<think>\nAnd once more.\n</think>\n\nthen the rest."
    async with _anthropic(relay).messages.stream(
        model=MODEL, max_tokens=100, messages=HI, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as events:
        message = await events.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "thinking", "text"]


@pytest.mark.parametrize(("setting", "line"), [("compact", '[web_search: "relay news"]'), ("none", None)])
async def test_claude_tool_activity_is_one_line_or_nothing_never_json(
    make_relay: RelayFactory, fake, setting: str, line: str | None
) -> None:
    script_all(fake, text="Here is the news.", search="relay news")
    relay = await make_relay(show_tool_activity=setting)
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI, web_search_options={})
    content = done.choices[0].message.content or ""
    assert content.endswith("Here is the news.")
    assert "knowledge" not in content and "{" not in content
    assert (line in content) if line else content == "Here is the news."


async def test_a_model_the_plan_lacks_moves_to_another_account_and_is_remembered(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), models=frozenset({MODEL}))
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    client = relay.openai()
    for _ in range(2):
        done = await client.chat.completions.create(model="claude-opus-4-6", messages=HI)
        assert done.choices[0].message.content
    asked = [c.session_key for c in fake.calls_named("completion")]
    assert asked.count(session_key(1)) == 1  # asked once, then remembered
    first = relay.pool.accounts[0]
    assert first.state.value == "active" and first.view()["models_unavailable"] == ["claude-opus-4-6"]
    await client.chat.completions.create(model=MODEL, messages=HI)  # the account still serves its own models


async def test_no_account_with_the_model_is_a_clear_400(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), models=frozenset({MODEL}))
    relay = await make_relay(sessions=session_key(1))
    for _ in range(2):
        with pytest.raises(openai.BadRequestError) as info:
            await relay.openai().chat.completions.create(model="claude-opus-4-6", messages=HI)
        assert info.value.code == "model_not_available"
    assert len(fake.calls_named("completion")) == 1


async def test_completion_body_carries_the_current_web_app_fields(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(temporary_chats=True)
    async with aiohttp.ClientSession() as http:
        async with http.post(relay.url + "/v1/chat/completions", json={"model": MODEL, "messages": HI}, headers=AUTH) as r:
            assert r.status == 200
    body = fake.calls_named("completion")[0].body
    uuids = body["turn_message_uuids"]
    assert set(uuids) == {"human_message_uuid", "assistant_message_uuid"} and len(set(uuids.values())) == 2
    assert body["locale"] == "en-US" and body["timezone"] == "UTC" and body["rendering_mode"] == "messages"
    assert body["create_conversation_params"]["is_temporary"] is True


async def test_web_search_is_off_unless_asked(relay: Relay, fake) -> None:
    script_all(fake, text="Plain answer.", search="relay news")
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI)
    assert done.choices[0].message.content == "Plain answer."
    assert {"type": "web_search_v0", "name": "web_search"} not in fake.calls_named("completion")[0].body["tools"]
    await relay.openai().chat.completions.create(model=MODEL, messages=HI, web_search_options={})
    assert {"type": "web_search_v0", "name": "web_search"} in fake.calls_named("completion")[1].body["tools"]


async def test_openai_chat_gets_url_citations_streamed_and_whole(relay: Relay, fake) -> None:
    script_all(fake, text="Relays are fast today.", search="relay news")
    done = await relay.openai().chat.completions.create(model=MODEL, messages=HI, web_search_options={})
    message = done.choices[0].message
    (note,) = message.annotations or []
    cited = note.url_citation
    assert note.type == "url_citation" and cited.url == "https://example.org/0" and cited.title == "Result 0"
    assert (message.content or "")[cited.start_index : cited.end_index] == "Relays "
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=HI, web_search_options={}, stream=True)
    chunks = [c async for c in stream if c.choices]
    streamed = [a for c in chunks for a in (c.choices[0].delta.model_extra or {}).get("annotations", [])]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == [note.model_dump()] and content == message.content


async def test_anthropic_web_search_gets_server_tool_blocks_and_cited_text(relay: Relay, fake) -> None:
    script_all(fake, text="Relays are fast today.", search="relay news")
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]
    whole = await _anthropic(relay).messages.create(model=MODEL, max_tokens=100, messages=HI, tools=tools)  # type: ignore[arg-type]
    async with _anthropic(relay).messages.stream(model=MODEL, max_tokens=100, messages=HI, tools=tools) as events:  # type: ignore[arg-type]
        streamed = await events.get_final_message()
    for message in (whole, streamed):
        kinds = [b.type for b in message.content]
        assert kinds == ["server_tool_use", "web_search_tool_result", "text"], kinds
        use, result, text = message.content
        assert use.input == {"query": "relay news"} and result.tool_use_id == use.id  # type: ignore[union-attr]
        assert [r.url for r in result.content] == [f"https://example.org/{n}" for n in range(3)]  # type: ignore[union-attr]
        assert text.citations[0].cited_text == "Relays " and text.citations[0].url == "https://example.org/0"  # type: ignore[union-attr]
        assert message.usage.server_tool_use.web_search_requests == 1  # type: ignore[union-attr]
        assert "[web_search" not in text.text  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError):
        await _anthropic(relay).messages.create(
            model=MODEL,
            max_tokens=100,
            messages=HI,
            tools=[{**tools[0], "allowed_domains": ["example.org"]}],  # type: ignore[list-item]
        )


async def test_responses_web_search_gets_annotations_and_codex_default_stays_off(relay: Relay, fake) -> None:
    script_all(fake, text="Relays are fast today.", search="relay news")
    client = relay.openai()
    done = await client.responses.create(model=MODEL, input="news?", tools=[{"type": "web_search"}])
    part = done.output[-1].content[0]  # type: ignore[union-attr]
    (note,) = part.annotations  # type: ignore[union-attr]
    assert note.type == "url_citation" and part.text[note.start_index : note.end_index] == "Relays "  # type: ignore[union-attr]
    async with client.responses.stream(model=MODEL, input="news?", tools=[{"type": "web_search"}]) as stream:
        kinds = [e.type async for e in stream]
    assert "response.output_text.annotation.added" in kinds
    plain = await client.responses.create(
        model=MODEL, input="news?", tools=[{"type": "web_search", "external_web_access": False}]
    )  # type: ignore[list-item]
    assert plain.output_text == "Relays are fast today."


async def test_effort_reaches_claude_from_every_api(relay: Relay, fake) -> None:
    await relay.openai().responses.create(model=MODEL, input="hi", reasoning={"effort": "high"})
    await relay.openai().chat.completions.create(model=MODEL, messages=HI, reasoning_effort="medium")
    await _anthropic(relay).messages.create(
        model=MODEL, max_tokens=100, messages=HI, thinking={"type": "enabled", "budget_tokens": 2048}
    )
    await _anthropic(relay).messages.create(
        model=MODEL, max_tokens=100, messages=HI, extra_body={"output_config": {"effort": "max"}}
    )
    await relay.openai().chat.completions.create(model=MODEL + "-think", messages=HI)
    bodies = [c.body for c in fake.calls_named("completion")]
    assert [(b.get("effort"), b.get("thinking_mode")) for b in bodies] == [
        ("high", "extended"),
        ("medium", "extended"),
        ("low", "extended"),
        ("max", "off"),
        (None, None),
    ]
    assert all(
        b["create_conversation_params"].get("paprika_mode") == "extended" for b in (bodies[0], bodies[1], bodies[2], bodies[4])
    )


async def test_an_account_that_refuses_the_effort_fields_is_asked_without_them(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), refuse_fields=frozenset({"effort"}))
    relay = await make_relay(sessions=session_key(1))
    for _ in range(2):
        done = await relay.openai().responses.create(model=MODEL, input="hi", reasoning={"effort": "low"})
        assert done.status == "completed"
    assert ["effort" in c.body for c in fake.calls_named("completion")] == [True, False, False]
    assert relay.pool.accounts[0].features["effort"] is False and relay.pool.accounts[0].state.value == "active"
