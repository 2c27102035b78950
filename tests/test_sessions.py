"""Conversation sessions: one claude.ai chat per client conversation, continued with
`parent_message_uuid` and only the new turns; branches, moves, refusals, replicas, expiry."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from loguru import logger

from bench.sessions import RESULT, TOOL, agent_model
from relay.demo import FakeClaude
from relay.pool.account import State
from tests.conftest import (
    ADMIN_KEY,
    API_KEY,
    AUTH,
    MODEL,
    Relay,
    RelayFactory,
    admin_call,
    continues,
    eventually,
    needs_redis,
    session_key,
)

TURNS = 20


def _chats(fake: FakeClaude) -> set[str]:
    return {c.path.split("/")[-2] for c in fake.calls_named("completion")}


# Reads files until it has read TURNS of them, then answers; it sees the whole conversation.
_agent_model = agent_model(TURNS)


async def _agent_session(relay: Relay) -> list[Any]:
    """A Claude-Code-like loop over the Anthropic API: every turn adds a tool call and its 4 KB result."""
    client = anthropic.AsyncAnthropic(base_url=relay.url, api_key=API_KEY, max_retries=0, timeout=20)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Read the files."}]
    answers: list[Any] = []
    try:
        for _ in range(TURNS + 1):
            answer = await client.messages.create(model=MODEL, max_tokens=1000, messages=messages, tools=[TOOL])  # type: ignore[arg-type]
            answers.append([(b.type, getattr(b, "text", None), getattr(b, "input", None)) for b in answer.content])
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]})
            calls = [b for b in answer.content if b.type == "tool_use"]
            if not calls:
                break
            results = [{"type": "tool_result", "tool_use_id": c.id, "content": RESULT} for c in calls]
            messages.append({"role": "user", "content": results})
    finally:
        await client.close()
    return answers


async def test_a_twenty_turn_agent_session_is_one_chat_whose_turns_carry_only_what_is_new(
    make_relay: RelayFactory, fake: FakeClaude
) -> None:
    fake.reply = _agent_model
    relay = await make_relay(sessions=session_key(1))
    answers = await _agent_session(relay)
    completions = fake.calls_named("completion")
    assert len(completions) == TURNS + 1 and answers[-1] == [("text", f"I read {TURNS} files.", None)]
    assert len(_chats(fake)) == 1 and not fake.calls_named("create")
    last = json.dumps(completions[TURNS].body).encode()
    assert len(last) <= 1.5 * len(RESULT), len(last)  # turn 20's upstream bytes: about its new content
    assert all(continues(fake, n) for n in range(1, TURNS + 1))
    # Every answer is the one a fresh chat with the whole transcript gets from the same model.
    fresh_fake = FakeClaude()
    fresh_fake.reply = _agent_model
    fake.conversations.clear()
    fresh = await make_relay(sessions=session_key(1), conversations="fresh")
    before = len(fake.calls_named("completion"))
    assert await _agent_session(fresh) == answers
    assert len(_chats(fake)) - 1 == len(fake.calls_named("completion")) - before  # one chat per request there


async def _chat(client: openai.AsyncOpenAI, messages: list[dict[str, Any]]) -> str:
    done = await client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    return done.choices[0].message.content or ""


async def test_a_retried_or_edited_turn_is_a_branch_of_the_same_chat(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1))
    client = relay.openai()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    try:
        first = [{"role": "user", "content": "one"}]
        a1 = await _chat(client, first)
        second = [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "two"}]
        await _chat(client, second)
        assert continues(fake)
        await _chat(client, second)  # retried
        edited = [*second[:2], {"role": "user", "content": "two, edited"}]
        await _chat(client, edited)
    finally:
        logger.remove(sink)
    calls = fake.calls_named("completion")
    parent = calls[0].body["turn_message_uuids"]["assistant_message_uuid"]
    assert [c.body["parent_message_uuid"] for c in calls[1:]] == [parent] * 3 and len(_chats(fake)) == 1
    assert [c.body["prompt"] for c in calls[1:]] == ["Human: two", "Human: two", "Human: two, edited"]
    sessions = [line.split("session=")[1].split()[0] for line in lines if "session=" in line]
    assert sessions == ["fresh", "continued", "branched", "branched"]
    messages = fake.conversations[next(iter(_chats(fake)))]["messages"]
    assert len([m for m in messages.values() if m.parent == parent]) == 3  # three children of one message


async def test_an_answer_sent_back_with_other_white_space_still_continues(make_relay: RelayFactory, fake: FakeClaude) -> None:
    """Clients re-serialise an answer's white space (tabs, no-break and em spaces, line breaks) and may
    keep a `<think>` section in it; the turn still matches where the answer left the chat."""
    fake.script(session_key(1), text="Paris is  the capital.\n\nIt is in France.")
    relay = await make_relay(sessions=session_key(1))
    client = relay.openai()
    first = [{"role": "user", "content": "where?"}]
    answer = await _chat(client, first)
    resent = "<think>a thought</think>\t" + answer.replace(" ", "\u00a0", 1).replace("\n\n", " \u2003\r\n ") + "  \n"
    await _chat(client, [*first, {"role": "assistant", "content": resent}, {"role": "user", "content": "and?"}])
    assert continues(fake) and fake.calls_named("completion")[-1].body["prompt"] == "Human: and?"


async def test_fresh_chats_say_whether_the_conversation_was_new_or_diverged(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1))
    client = relay.openai()
    first = [{"role": "user", "content": "one"}]
    answer = await _chat(client, first)
    await _chat(client, [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "two"}])
    # A history relay never answered (another provider's answer, or a session that expired).
    await _chat(client, [*first, {"role": "assistant", "content": "said elsewhere"}, {"role": "user", "content": "two"}])
    async with aiohttp.ClientSession() as http, http.get(relay.url + "/metrics", headers=AUTH) as r:
        metrics = await r.text()
    for kind, reason in (("fresh", "no_match"), ("continued", "continued"), ("fresh", "divergence")):
        assert f'relay_session_turns_total{{kind="{kind}",reason="{reason}"}} 1.0' in metrics
    assert "Human: one" in fake.calls_named("completion")[-1].body["prompt"]  # the whole transcript


async def test_a_session_moves_with_its_whole_transcript_when_its_account_cannot_serve(
    make_relay: RelayFactory, fake: FakeClaude
) -> None:
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    client = relay.openai()
    first = [{"role": "user", "content": "remember: blue"}]
    a1 = await _chat(client, first)
    home = fake.calls_named("completion")[0].session_key
    account = next(a for a in relay.pool.accounts if a.key == home)
    fake.script(home, "rate_limited")
    second = [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "what colour?"}]
    await _chat(client, second)
    moved = fake.calls_named("completion")[-1]
    assert account.state is State.COOLING and moved.session_key != home
    assert "remember: blue" in moved.body["prompt"] and "what colour?" in moved.body["prompt"]  # the whole transcript
    third = [*second, {"role": "assistant", "content": await _last_answer(fake)}, {"role": "user", "content": "and now?"}]
    await _chat(client, third)
    assert continues(fake) and fake.calls_named("completion")[-1].session_key == moved.session_key
    _, metrics = await _metrics(relay)
    assert 'relay_session_turns_total{kind="fresh",reason="account_moved"} 1.0' in metrics


async def _last_answer(fake: FakeClaude) -> str:
    conv = fake.calls_named("completion")[-1].path.split("/")[-2]
    messages = fake.conversations[conv]["messages"]
    return next(m.text for m in reversed(list(messages.values())) if m.sender == "assistant")


async def _metrics(relay: Relay) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(relay.url + "/metrics", headers=AUTH) as r:
        return r.status, await r.text()


async def test_refused_continuations_start_a_fresh_chat_on_the_same_account(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1))
    client = relay.openai()
    history = [{"role": "user", "content": "start"}]
    for refusal in ("unknown chat", "too long"):
        answer = await _chat(client, history)
        history += [{"role": "assistant", "content": answer}, {"role": "user", "content": f"after {refusal}"}]
        conv = fake.calls_named("completion")[-1].path.split("/")[-2]
        if refusal == "unknown chat":
            del fake.conversations[conv]  # gone upstream (deleted by hand in the web app, say)
        else:
            fake.max_conversation_chars = 10  # the chat has outgrown the model's context (a fresh one has not)
        await _chat(client, history)
        refused, fresh = fake.calls_named("completion")[-2:]
        assert refused.body["parent_message_uuid"] != fresh.body["parent_message_uuid"]
        assert fresh.path != refused.path and "start" in fresh.body["prompt"]  # a fresh chat, whole transcript
        fake.max_conversation_chars = 10_000_000
    _, metrics = await _metrics(relay)
    assert 'relay_session_turns_total{kind="fresh",reason="refused"} 2.0' in metrics, [
        x for x in metrics.splitlines() if "session_turns" in x
    ]


async def test_two_requests_extending_one_point_at_once_both_get_answers(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1))
    fake.script(session_key(1), chunk_delay=0.01)
    client = relay.openai()
    first = [{"role": "user", "content": "one"}]
    a1 = await _chat(client, first)
    both = await asyncio.gather(
        *(_chat(client, [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": q}]) for q in ("a", "b"))
    )
    assert all(both) and len(_chats(fake)) == 1
    parents = {c.body["parent_message_uuid"] for c in fake.calls_named("completion")[1:]}
    assert len(parents) == 1  # two children of the same answer


async def test_sessions_are_never_shared_between_client_keys(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1), admin_key=ADMIN_KEY)
    _, made = await admin_call(relay, "POST", "/v1/admin/keys", {"name": "ivy"})
    first = [{"role": "user", "content": "one"}]
    a1 = await _chat(relay.openai(), first)
    second = [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "two"}]
    await _chat(relay.openai(api_key=made["key"]), second)
    assert not continues(fake) and len(_chats(fake)) == 2


async def test_idle_sessions_end_and_their_chats_are_deleted(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1), session_ttl=0.4)
    await _chat(relay.openai(), [{"role": "user", "content": "one"}])
    conv = next(iter(_chats(fake)))
    _, accounts = await admin_call(relay, "GET", "/v1/accounts", headers=AUTH)
    assert accounts["data"][0]["open_sessions"] == 1
    await eventually(lambda: conv in fake.deleted, timeout=5)
    kept = await make_relay(sessions=session_key(1))
    await _chat(kept.openai(), [{"role": "user", "content": "two"}])
    conv = fake.calls_named("completion")[-1].path.split("/")[-2]
    assert conv in fake.conversations
    await kept.server.close()  # the memory store's sessions end with the process
    assert conv in fake.deleted


async def test_fresh_conversations_are_one_chat_per_request(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1), conversations="fresh")
    client = relay.openai()
    first = [{"role": "user", "content": "one"}]
    a1 = await _chat(client, first)
    await _chat(client, [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "two"}])
    assert len(_chats(fake)) == 2 and "one" in fake.calls_named("completion")[-1].body["prompt"]
    await eventually(lambda: not fake.conversations)


@needs_redis
async def test_a_conversation_goes_on_through_another_replica(
    make_relay: RelayFactory, fake: FakeClaude, shared_redis: str
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    one = await make_relay(sessions=session_key(1), state_url=shared_redis, state_prefix=prefix)
    two = await make_relay(sessions=session_key(1), state_url=shared_redis, state_prefix=prefix)
    first = [{"role": "user", "content": "one"}]
    a1 = await _chat(one.openai(), first)
    await _chat(two.openai(), [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "two"}])
    assert continues(fake) and len(_chats(fake)) == 1
    _, accounts = await admin_call(two, "GET", "/v1/accounts", headers=AUTH)
    assert accounts["data"][0]["open_sessions"] == 1


async def test_item_references_resolve_and_continue_the_session(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1))
    client = relay.openai()
    first = await client.responses.create(model=MODEL, input=[{"role": "user", "content": "My name is Ada."}])
    message = next(o for o in first.output if o.type == "message")
    # What the AI SDK sends from its second turn: earlier output by reference.
    again = await client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "My name is Ada."},
            {"type": "item_reference", "id": message.id},
            {"role": "user", "content": "What is my name?"},
        ],  # type: ignore[list-item]
    )
    assert again.status == "completed" and continues(fake)
    assert fake.calls_named("completion")[-1].body["prompt"] == "Human: What is my name?"
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=MODEL, input=[{"type": "item_reference", "id": "msg_unknown"}])  # type: ignore[list-item]
    assert info.value.code == "item_not_found" and info.value.param == "input.0.id"


async def test_mirror_mode_cookies_have_sessions_of_their_own(make_relay: RelayFactory, fake: FakeClaude) -> None:
    relay = await make_relay(sessions=session_key(1), enable_mirror_api=True, mirror_api_prefix="/mirror", session_ttl=0.5)
    mine = session_key(9)
    guest = relay.openai(prefix="/mirror/v1", api_key=mine)
    first = [{"role": "user", "content": "one"}]
    a1 = await _chat(guest, first)
    second = [*first, {"role": "assistant", "content": a1}, {"role": "user", "content": "two"}]
    await _chat(relay.openai(), second)  # the pool never continues a mirror-mode chat
    assert not continues(fake)
    await _chat(guest, second)
    calls = fake.calls_named("completion")
    assert calls[-1].session_key == mine and calls[-1].path == calls[0].path  # continued with the caller's own cookie
    conv = calls[0].path.split("/")[-2]
    await eventually(lambda: conv in fake.deleted, timeout=5)  # and deleted with it once idle
