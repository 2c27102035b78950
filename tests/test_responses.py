"""The OpenAI Responses API through the relay, driven by the official openai client (and Codex CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import (
    ADMIN_KEY,
    API_KEY,
    AUTH,
    MODEL,
    RedisServer,
    Relay,
    RelayFactory,
    admin_call,
    continues,
    needs_redis,
    session_key,
)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
# .ci/run installs Codex CLI from the npm registry and names the binary here.
CODEX = os.environ.get("RELAY_CODEX", "")


def script_all(fake, **kw: Any) -> None:  # type: ignore[no-untyped-def]
    for n in (1, 2, 3):
        fake.script(session_key(n), **kw)


async def test_non_stream_answer_and_what_upstream_saw(relay: Relay, fake) -> None:
    script_all(fake, text="Hello world")
    done = await relay.openai().responses.create(model=MODEL, input="hi there", instructions="Be brief.")
    assert done.object == "response" and done.id.startswith("resp_")
    assert done.status == "completed"
    assert done.output_text == "Hello world"
    assert [o.type for o in done.output] == ["message"]
    assert done.usage is not None and done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert done.instructions == "Be brief."
    prompt = fake.calls_named("completion")[0].body["prompt"]
    assert prompt == "System: Be brief.\n\nHuman: hi there"


async def test_stream_has_the_full_event_sequence(relay: Relay, fake) -> None:
    script_all(fake, text="one two three")
    async with relay.openai().responses.stream(model=MODEL, input="hi") as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert final.output_text == "one two three" and final.status == "completed"


async def test_raw_stream_frames_name_their_events(relay: Relay) -> None:
    body = {"model": MODEL, "input": "hi", "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/responses", json=body, headers=AUTH) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    frames = [f for f in raw.split("\n\n") if f.startswith("event: ")]
    for frame in frames:
        name, data = frame.split("\n", 1)
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert "[DONE]" not in raw


async def test_tool_round_trip_with_call_ids(relay: Relay, fake) -> None:
    fake.reply = lambda model, prompt: "It is sunny." if "[tool result (" in prompt else f"Let me check.\n{CALL}"
    client = relay.openai()
    first = await client.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].call_id.startswith("call_")
    assert first.output_text == "Let me check."
    history: list[Any] = [
        {"role": "user", "content": "Weather in Paris?"},
        *[o.model_dump(exclude_none=True) for o in first.output],
    ]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"sky": "clear"}'})
    final = await client.responses.create(model=MODEL, input=history, tools=[WEATHER], store=False)
    assert final.output_text == "It is sunny."
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    # The session's chat goes on: only the tool result is sent, the model reads the whole chat.
    assert f"[tool result (get_weather, {calls[0].call_id})]" in prompt and CALL not in prompt and continues(fake)
    assert CALL in fake.seen[-1]


async def test_streamed_call_events(relay: Relay, fake) -> None:
    script_all(fake, text=CALL)
    async with relay.openai().responses.stream(model=MODEL, input="go", tools=[WEATHER]) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert CALL not in json.dumps(final.model_dump())


async def test_namespace_functions_are_offered_and_answered_with_their_namespace(relay: Relay, fake) -> None:
    script_all(fake, text='<tool_call>{"name": "agents.spawn", "arguments": {"task": "x"}}</tool_call>')
    tools = [
        {
            "type": "namespace",
            "name": "agents",
            "description": "sub-agents",
            "tools": [
                {
                    "type": "function",
                    "name": "spawn",
                    "parameters": {"type": "object", "properties": {"task": {"type": "string"}}},
                },
            ],
        },
        {"type": "web_search", "external_web_access": False},
    ]
    done = await relay.openai().responses.create(model=MODEL, input="spawn", tools=tools)  # type: ignore[arg-type]
    call = done.output[0]
    assert call.type == "function_call" and call.name == "spawn" and call.namespace == "agents"
    assert "agents.spawn" in fake.calls_named("completion")[0].body["prompt"]


async def test_reasoning_effort_turns_thinking_on_and_yields_a_summary(relay: Relay, fake) -> None:
    script_all(fake, text="Four.", thinking="Two and two.")
    client = relay.openai()
    done = await client.responses.create(model=MODEL, input="2+2?", reasoning={"effort": "high", "summary": "auto"})
    assert [o.type for o in done.output] == ["reasoning", "message"]
    assert done.output[0].summary[0].text == "Two and two."  # type: ignore[union-attr]
    assert fake.calls_named("completion")[0].body["create_conversation_params"]["paprika_mode"] == "extended"
    plain = await client.responses.create(model=MODEL, input="2+2?", reasoning={"summary": "auto"})
    assert [o.type for o in plain.output] == ["message"]


async def test_previous_response_id_continues_and_store_false_keeps_nothing(relay: Relay, fake) -> None:
    script_all(fake, text="Noted.")
    client = relay.openai()
    first = await client.responses.create(model=MODEL, input="My name is Ada.")
    await client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    prompt = fake.calls_named("completion")[-1].body["prompt"]
    assert prompt == "Human: What is my name?" and continues(fake)
    assert fake.seen[-1] == "Human: My name is Ada.\n\nAssistant: Noted.\n\nHuman: What is my name?"
    unstored = await client.responses.create(model=MODEL, input="secret", store=False)
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model=MODEL, input="again", previous_response_id=unstored.id)
    assert info.value.code == "previous_response_not_found" and info.value.param == "previous_response_id"
    assert len(fake.calls_named("completion")) == 3


async def test_kept_answers_are_found_only_by_the_key_they_were_given_to(make_relay: RelayFactory, fake) -> None:
    script_all(fake, text="Noted.")
    relay = await make_relay(admin_key=ADMIN_KEY)
    _, ada = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "ada"})
    _, bob = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "bob"})
    mine, theirs = relay.openai(api_key=ada["key"]), relay.openai(api_key=bob["key"])
    first = await mine.responses.create(model=MODEL, input="My secret is 42.")
    with pytest.raises(openai.NotFoundError) as info:
        await theirs.responses.create(model=MODEL, input="What is the secret?", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found"
    reference = [{"type": "item_reference", "id": first.output[0].id}, {"role": "user", "content": "and?"}]
    with pytest.raises(openai.BadRequestError) as bad:
        await theirs.responses.create(model=MODEL, input=reference)  # type: ignore[arg-type]
    assert bad.value.code == "item_not_found"
    assert not any("42" in c.body["prompt"] for c in fake.calls_named("completion")[1:])
    await mine.responses.create(model=MODEL, input="What is the secret?", previous_response_id=first.id)
    await mine.responses.create(model=MODEL, input=reference)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):  # nor does the relay's own APIKEY see a named key's answers
        await relay.openai().responses.create(model=MODEL, input="?", previous_response_id=first.id)


async def test_kept_answers_bring_in_at_most_a_body_s_worth(make_relay: RelayFactory, fake) -> None:
    """Each reference is a copy of its item: a body of references to one long answer would
    otherwise multiply it in memory."""
    script_all(fake, text="word " * 4000)  # a 20 KB answer
    relay = await make_relay(max_body_size=64 * 1024)
    client = relay.openai()
    long = await client.responses.create(model=MODEL, input="Write at length.")
    ref = {"type": "item_reference", "id": long.output[0].id}
    await client.responses.create(model=MODEL, input=[ref, ref, {"role": "user", "content": "Shorter?"}])  # type: ignore[list-item]
    with pytest.raises(openai.APIStatusError) as info:
        await client.responses.create(model=MODEL, input=[ref] * 10 + [{"role": "user", "content": "?"}])  # type: ignore[operator]
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    assert "MAX_BODY_SIZE" in info.value.message and len(fake.calls_named("completion")) == 2
    # Each turn on previous_response_id keeps the whole conversation again: it may outgrow the limit too.
    turn = long
    with pytest.raises(openai.APIStatusError) as grown:
        for _ in range(5):
            turn = await client.responses.create(model=MODEL, input="More.", previous_response_id=turn.id)
    assert grown.value.status_code == 413 and grown.value.param == "previous_response_id"


async def test_streamed_answer_is_kept_before_the_stream_ends(relay: Relay, fake) -> None:
    script_all(fake, text="Kept.")
    client = relay.openai()
    async with client.responses.stream(model=MODEL, input="remember this") as stream:
        async for event in stream:
            if event.type == "response.completed":
                # The client may continue before the stream has even closed.
                again = await client.responses.create(model=MODEL, input="and now?", previous_response_id=event.response.id)
                assert again.status == "completed"
    assert "remember this" in fake.seen[-1] and continues(fake)


async def test_kept_answers_survive_a_restart_in_their_own_file(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.json"
    script_all(fake, text="Noted.")
    relay = await make_relay(state_file=str(state))
    first = await relay.openai().responses.create(model=MODEL, input="My name is Ada.")
    await relay.server.close()  # shutdown writes what is pending
    assert "_answers" not in json.loads(state.read_text())
    kept = json.loads((tmp_path / "state.json.answers").read_text())["answers"]
    assert [k for k in kept if k.endswith(":" + first.id)]  # under its owner's scope
    again = await make_relay(state_file=str(state))
    await again.openai().responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    assert "My name is Ada." in fake.seen[-1]


@needs_redis
async def test_previous_response_is_shared_between_replicas(make_relay: RelayFactory, fake, shared_redis: str) -> None:
    prefix = f"t{time.monotonic_ns()}"
    one = await make_relay(state_url=shared_redis, state_prefix=prefix)
    two = await make_relay(state_url=shared_redis, state_prefix=prefix)
    first = await one.openai().responses.create(model=MODEL, input="My name is Ada.")
    await two.openai().responses.create(model=MODEL, input="Name?", previous_response_id=first.id)
    assert "My name is Ada." in fake.seen[-1] and continues(fake)  # the other replica continued the same chat


@needs_redis
async def test_kept_answers_keep_their_owner_over_replicas_and_an_outage(make_relay: RelayFactory, fake, tmp_path: Path) -> None:
    script_all(fake, text="Noted.")
    server = RedisServer(tmp_path)
    server.start()
    try:
        one = await make_relay(state_url=server.url, admin_key=ADMIN_KEY)
        two = await make_relay(state_url=server.url, admin_key=ADMIN_KEY)
        _, ada = await admin_call(one, "POST", "/v1/admin/keys", {"name": "ada"})
        _, bob = await admin_call(one, "POST", "/v1/admin/keys", {"name": "bob"})
        first = await one.openai(api_key=ada["key"]).responses.create(model=MODEL, input="My secret is 42.")
        with pytest.raises(openai.NotFoundError):
            await two.openai(api_key=bob["key"]).responses.create(model=MODEL, input="?", previous_response_id=first.id)
        await two.openai(api_key=ada["key"]).responses.create(model=MODEL, input="Secret?", previous_response_id=first.id)
        assert "My secret is 42." in fake.seen[-1]
        server.stop()  # each replica keeps what it answers meanwhile, still under its owner
        during = await one.openai(api_key=ada["key"]).responses.create(model=MODEL, input="Mine too: 7.")
        with pytest.raises(openai.NotFoundError):
            await one.openai(api_key=bob["key"]).responses.create(model=MODEL, input="?", previous_response_id=during.id)
        await one.openai(api_key=ada["key"]).responses.create(model=MODEL, input="Which?", previous_response_id=during.id)
        assert "Mine too: 7." in fake.seen[-1]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": 5}, "input"),
        ({"model": MODEL, "input": [{"role": "wizard", "content": "x"}]}, "input.0.role"),
        ({"model": MODEL, "input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"model": MODEL, "input": "x", "background": True}, "background"),
        (
            {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input.0.content.0.image_url",
        ),
        ({"model": MODEL, "input": [{"role": "user", "content": "   "}]}, "input"),
        (
            {"model": MODEL, "input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice.name",
        ),
    ],
    ids=["no-input", "input-type", "bad-role", "format-type", "background", "file-id", "empty", "unknown-tool"],
)
async def test_bad_requests_name_the_field(relay: Relay, fake, body: dict[str, Any], field: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/responses", json=body, headers=AUTH) as r:
        answer = await r.json()
        assert r.status == 400, answer
    assert answer["error"]["message"].startswith(field) and answer["error"]["type"] == "invalid_request_error"
    assert not fake.calls_named("completion")


async def test_errors_have_openai_shape_and_status(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(sessions=session_key(1))
    with pytest.raises(openai.AuthenticationError):
        await relay.openai(api_key="wrong").responses.create(model=MODEL, input="hi")
    fake.script(session_key(1), "rate_limited", resets_at=time.time() + 300)
    with pytest.raises(openai.RateLimitError) as info:
        await relay.openai().responses.create(model=MODEL, input="hi")
    assert 290 <= int(info.value.response.headers["Retry-After"]) <= 301


async def test_mid_stream_failure_ends_with_response_failed(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "drop", text="a b c d e f", drop_after=3)
    relay = await make_relay(sessions=session_key(1))
    body = {"model": MODEL, "input": "hi", "stream": True}
    async with aiohttp.ClientSession() as http, http.post(f"{relay.url}/v1/responses", json=body, headers=AUTH) as r:
        raw = (await r.read()).decode()
    events = [json.loads(f.split("data: ", 1)[1]) for f in raw.split("\n\n") if "data: " in f]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and "mid-answer" in events[-1]["response"]["error"]["message"]
    assert "".join(e.get("delta", "") for e in events if e["type"] == "response.output_text.delta") == "a b c "


async def test_max_tokens_answer_is_incomplete(relay: Relay, fake) -> None:
    script_all(fake, text="cut sh", stop_reason="max_tokens")
    done = await relay.openai().responses.create(model=MODEL, input="hi", max_output_tokens=5)
    assert done.status == "incomplete" and done.incomplete_details and done.incomplete_details.reason == "max_output_tokens"


async def test_sync_client_and_hf_prefix(relay: Relay) -> None:
    def call() -> str:
        client = openai.OpenAI(base_url=relay.url + "/hf/v1", api_key=API_KEY, max_retries=0)
        with client.responses.stream(model=MODEL, input="hi there") as stream:
            return stream.get_final_response().output_text

    assert "You said: hi there" in await asyncio.to_thread(call)


@pytest.mark.skipif(not CODEX and not os.environ.get("CI"), reason="set RELAY_CODEX to a codex binary to run")
async def test_codex_cli_answers_through_the_relay(relay: Relay, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert CODEX and os.path.exists(CODEX), "CI must provide Codex CLI (RELAY_CODEX)"
    fake.reply = lambda model, prompt: (
        "The command said hello."
        if "[tool result (" in prompt
        else '<tool_call>{"name": "exec_command", "arguments": {"cmd": "echo relay-codex-ok"}}</tool_call>'
    )
    out = await _codex(relay.url, tmp_path, MODEL, tmp_path, "Run the greeting.")
    assert "The command said hello." in out
    prompts = [c.body["prompt"] for c in fake.calls_named("completion")]
    assert "Run the greeting." in prompts[0] and "relay-codex-ok" in prompts[-1]
    # One chat for the whole Codex session: each later turn continued it.
    assert len({c.path for c in fake.calls_named("completion")}) == 1


@pytest.mark.skipif(not CODEX and not os.environ.get("CI"), reason="set RELAY_CODEX to a codex binary to run")
async def test_codex_cli_patches_a_file_with_apply_patch(make_relay: RelayFactory, fake, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert CODEX and os.path.exists(CODEX), "CI must provide Codex CLI (RELAY_CODEX)"
    relay = await make_relay(model_aliases="gpt-5.5=claude-opus-5-5")
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from relay\n*** End Patch\n"

    def reply(model: str, conversation: str) -> str:
        if "[tool result (apply_patch" in conversation:
            return "Wrote hello.txt."
        call = {"name": "apply_patch", "arguments": {"input": patch}}
        return f"<tool_call>{json.dumps(call)}</tool_call>"

    fake.reply = reply
    work = tmp_path / "work"
    work.mkdir()
    out = await _codex(relay.url, tmp_path, "gpt-5.5", work, "--sandbox", "workspace-write", "Create hello.txt.")
    first = fake.calls_named("completion")[0].body
    assert "apply_patch" in first["prompt"] and first["model"] == "claude-opus-5-5"
    assert (work / "hello.txt").read_text() == "hello from relay\n"
    assert "Wrote hello.txt." in out


async def _codex(relay_url: str, tmp_path: Path, model: str, work: Path, *args: str) -> str:
    """`codex exec ARGS` in `work` with relay as its provider; its output (fails the test on an error)."""
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "relay"\n\n[model_providers.relay]\nname = "relay"\n'
        f'base_url = "{relay_url}/v1"\nenv_key = "RELAY_API_KEY"\nwire_api = "responses"\n'
    )
    env = {**os.environ, "CODEX_HOME": str(home), "HOME": str(tmp_path), "RELAY_API_KEY": API_KEY}
    pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE, "stdin": asyncio.subprocess.DEVNULL}
    assert CODEX
    proc = await asyncio.create_subprocess_exec(CODEX, "exec", "--skip-git-repo-check", *args, env=env, cwd=work, **pipes)  # type: ignore[arg-type]
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode()
