"""OpenAI chat completions through the relay, driven by the official openai client."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from relay.demo import org_for
from tests.conftest import API_KEY, Relay, RelayFactory, eventually, relay_process, session_key, wait_healthy

HI = [{"role": "user", "content": "hi there"}]


async def test_non_stream_answer_and_what_upstream_saw(relay: Relay, fake) -> None:
    fake.script(session_key(1), text="Hello world")
    client = relay.openai()
    done = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert done.object == "chat.completion"
    assert done.id.startswith("chatcmpl-")
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    answered = fake.calls_named("completion")[0]
    assert done.choices[0].message.content == (
        "Hello world" if answered.session_key == session_key(1) else fake.reply("claude-sonnet-4-6", "Human: hi there")
    )
    assert answered.body["prompt"] == "Human: hi there"
    assert answered.body["model"] == "claude-sonnet-4-6"
    assert answered.body["rendering_mode"] == "messages"
    assert org_for(answered.session_key) in answered.path
    assert answered.headers["Accept"] == "text/event-stream"


async def test_stream_is_standard_openai(relay: Relay, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), text="one two three four")
    client = relay.openai()
    stream = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stream=True)
    chunks = [c async for c in stream]
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_an_upstream_that_flushes_every_event_and_ping_on_its_own(relay: Relay, fake) -> None:
    fake.per_event, fake.chunks = True, 260  # as claude.ai writes: one event (or ping) per write
    client = relay.openai()
    stream = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    whole = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert text == whole.choices[0].message.content and len(text.split()) == 260


@pytest.mark.parametrize("interval", ["0.05", "0"])
async def test_events_that_come_fast_are_read_together(fake, interval: str) -> None:  # type: ignore[no-untyped-def]
    """claude.ai flushes each event; relay handles its reads at most every UPSTREAM_READ_INTERVAL
    while they come faster, so one wake-up relays many events (one chunk), and none is lost."""
    fake.chunks, fake.chunk_delay = 300, 0.002  # one event every 2 ms, each in its own write
    proc, port = relay_process(fake, UPSTREAM_READ_INTERVAL=interval)  # its own loop, which may rest
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, port)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
        stream = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stream=True)
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
        await client.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "".join(pieces) == "".join(f"token{n} " for n in range(300))
    # The first 32 events one by one (a stream's first events never make relay rest), then 0.5 s
    # of events in a dozen rests; without rests about one chunk per event.
    assert len(pieces) <= 80 if interval != "0" else len(pieces) >= 150, len(pieces)


async def test_stream_wire_format_ends_with_one_done_and_usage(relay: Relay, fake) -> None:
    body = {"model": "claude-sonnet-4-6", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["x-request-id"]
            raw = (await r.read()).decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    assert frames[-1] == "data: [DONE]"
    assert raw.count("data: [DONE]") == 1
    usage = json.loads(frames[-2].removeprefix("data: "))
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    finish = json.loads(frames[-3].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}


async def test_thinking_model_turns_thinking_on_for_that_conversation_only(relay: Relay, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), text="The answer.", thinking="Pondering deeply.")
    client = relay.openai()
    stream = await client.chat.completions.create(model="claude-opus-4-6-think", messages=HI, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "<think>\nPondering deeply.\n</think>\n\nThe answer."
    completion = fake.calls_named("completion")[0]
    assert completion.body["model"] == "claude-opus-4-6"
    assert completion.body["create_conversation_params"]["paprika_mode"] == "extended"
    assert not [c for c in fake.calls if "account" in c.path]  # account-wide settings are never written


async def test_plain_model_does_not_ask_for_thinking(relay: Relay, fake) -> None:
    await relay.openai().chat.completions.create(model="claude-opus-4-6", messages=HI)
    assert "paprika_mode" not in fake.calls_named("completion")[0].body["create_conversation_params"]


async def test_reasoning_content_format(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(thinking_format="reasoning_content")
    for n in (1, 2, 3):
        fake.script(session_key(n), text="Answer.", thinking="Hmm.")
    done = await relay.openai().chat.completions.create(model="claude-sonnet-4-6-think", messages=HI)
    message = done.choices[0].message
    assert message.content == "Answer."
    assert message.model_extra and message.model_extra["reasoning_content"] == "Hmm."


async def test_max_tokens_stop_reason_is_length(relay: Relay, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), text="cut short", stop_reason="max_tokens")
    done = await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert done.choices[0].finish_reason == "length"


async def test_stop_sequences_cut_the_text(relay: Relay, fake) -> None:
    for n in (1, 2, 3):
        fake.script(session_key(n), text="alpha beta STOP gamma delta")
    client = relay.openai()
    done = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stop=["STOP"])
    assert done.choices[0].message.content == "alpha beta "
    stream = await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stop="STOP", stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == "alpha beta "


async def test_models_lists_think_twins_and_hf_prefix(relay: Relay) -> None:
    for prefix in ("/v1", "/hf/v1"):
        models = await relay.openai(prefix).models.list()
        ids = [m.id for m in models.data]
        assert "claude-sonnet-4-6" in ids and "claude-sonnet-4-6-think" in ids
    done = await relay.openai("/hf/v1").chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert done.choices[0].message.content


async def test_unknown_model_is_404_model_not_found(relay: Relay, fake) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await relay.openai().chat.completions.create(model="gpt-4o", messages=HI)
    assert info.value.code == "model_not_found"
    assert not fake.calls_named("completion")


async def test_wrong_api_key_is_401(relay: Relay, fake) -> None:
    client = relay.openai(api_key="wrong-key")
    with pytest.raises(openai.AuthenticationError) as info:
        await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert info.value.body["type"] == "authentication_error"  # type: ignore[index]
    assert info.value.request_id
    assert not fake.calls_named("completion")


async def test_missing_api_key_is_401(relay: Relay, fake) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{relay.url}/v1/chat/completions", json={"model": "claude-sonnet-4-6", "messages": HI}) as r:
            body = await r.json()
            assert r.status == 401
    assert body["error"]["type"] == "authentication_error"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert not fake.calls_named("completion")


async def test_x_api_key_header_is_accepted(relay: Relay) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.url}/v1/models", headers={"x-api-key": API_KEY}) as r:
        assert r.status == 200


async def test_health_needs_no_auth_and_shows_no_secret(relay: Relay) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{relay.url}/health") as r:
        text = await r.text()
        assert r.status == 200
    assert json.loads(text)["accounts"] == 3
    assert "sk-ant" not in text and API_KEY not in text


async def test_chats_are_deleted_after_use(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(conversations="fresh")  # one chat per request (sessions: tests/test_sessions.py)
    await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    conv = fake.calls_named("completion")[0].path.split("/")[-2]
    await eventually(lambda: conv in fake.deleted)
    assert not fake.conversations


async def test_chat_delete_false_keeps_chats(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(chat_delete=False)
    await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    await asyncio.sleep(0.2)
    assert not fake.calls_named("delete")
    assert len(fake.conversations) == 1


async def test_sync_client(relay: Relay) -> None:
    def call() -> str:
        client = openai.OpenAI(base_url=relay.url + "/v1", api_key=API_KEY, max_retries=0)
        with client.chat.completions.create(model="claude-sonnet-4-6", messages=HI, stream=True) as stream:
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    text = await asyncio.to_thread(call)
    assert "You said: hi there" in text


async def test_org_is_discovered_once_per_account(relay: Relay, fake) -> None:
    client = relay.openai()
    for _ in range(6):
        await client.chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert len(fake.calls_named("orgs")) == 3
    assert {c.session_key for c in fake.calls_named("completion")} == {session_key(n) for n in (1, 2, 3)}


async def test_key_with_org_skips_discovery(make_relay: RelayFactory, fake) -> None:
    org = org_for(session_key(7))
    relay = await make_relay(sessions=f"{session_key(7)}:{org}")
    await relay.openai().chat.completions.create(model="claude-sonnet-4-6", messages=HI)
    assert not fake.calls_named("orgs")
    assert org in fake.calls_named("completion")[0].path


async def test_one_model_by_id(relay: Relay, fake) -> None:
    client = relay.openai()
    model = await client.models.retrieve("claude-sonnet-4-6-think")
    assert model.id == "claude-sonnet-4-6-think" and model.object == "model"
    assert (await client.models.retrieve("claude-3-7-sonnet-20250219")).id == "claude-3-7-sonnet-20250219"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("gpt-4o")
    assert info.value.code == "model_not_found"
