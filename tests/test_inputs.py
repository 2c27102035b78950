"""Images, documents, long history, artifacts and mirror mode, end to end through the openai client."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from relay.claude.client import Redirected
from relay.claude.images import fetch_image
from relay.claude.prompt import HISTORY_FILE, RemoteImage
from relay.errors import InvalidRequest
from relay.server.keys import upstream_key
from tests.conftest import API_KEY, MODEL, Relay, RelayFactory, eventually, session_key


def tiny_png() -> bytes:
    """A valid 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    )


def data_url(media: str, data: bytes) -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}]


async def test_data_url_image_is_uploaded_and_referenced(relay: Relay, fake) -> None:
    png = tiny_png()
    part = {"type": "image_url", "image_url": {"url": data_url("image/png", png)}}
    await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    upload = fake.calls_named("upload")[0]
    completion = fake.calls_named("completion")[0]
    assert upload.files == [("image_1.png", "image/png", png)]
    assert upload.session_key == completion.session_key
    assert completion.body["files"] == list(fake.uploads)
    assert "[image 1]" in completion.body["prompt"]


async def test_http_image_is_fetched_then_uploaded(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    relay = await make_relay(image_fetch_private=True)  # the test image server is on loopback
    png = tiny_png()

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    images = web.Application()
    images.router.add_get("/cat.png", serve)
    server = await aiohttp_server(images)
    part = {"type": "image_url", "image_url": {"url": str(server.make_url("/cat.png"))}}
    await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    assert fake.calls_named("upload")[0].files == [("image_1.png", "image/png", png)]


async def test_images_by_url_are_fetched_a_few_at_a_time_and_up_to_a_body_s_worth(
    make_relay: RelayFactory, fake, aiohttp_server: Any
) -> None:
    """A body of image links must neither open a socket per link nor fetch more than a client
    could have sent inline (MAX_BODY_SIZE)."""
    relay = await make_relay(image_fetch_private=True, max_body_size=64 * 1024)
    big = tiny_png() + bytes(30_000)  # a PNG with 30 KB of padding after its end
    open_now, most = 0, 0

    async def serve(request: web.Request) -> web.Response:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        await asyncio.sleep(0.02)
        open_now -= 1
        return web.Response(body=big if request.path == "/big.png" else tiny_png(), content_type="image/png")

    images = web.Application()
    images.router.add_get("/{name}", serve)
    server = await aiohttp_server(images)

    def parts(name: str, n: int) -> list[dict[str, Any]]:
        return [{"type": "image_url", "image_url": {"url": str(server.make_url(f"/{name}?n={i}"))}} for i in range(n)]

    await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts("cat.png", 12)}])  # type: ignore[misc]
    assert len(fake.calls_named("upload")) == 12 and most <= 4
    with pytest.raises(openai.APIStatusError) as info:
        await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": parts("big.png", 6)}])  # type: ignore[misc]
    assert info.value.status_code == 413 and "images given by URL add up to more than MAX_BODY_SIZE" in info.value.message
    assert len(fake.calls_named("completion")) == 1


async def test_at_most_a_hundred_images_and_documents_in_one_request(relay: Relay, fake) -> None:
    png = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    content = [{"type": "image_url", "image_url": {"url": png}}] * 101
    with pytest.raises(openai.BadRequestError) as info:
        await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])  # type: ignore[misc]
    assert info.value.param == "messages.0.content.100.image_url.url" and "at most 100 images and documents" in info.value.message
    assert not fake.calls_named("upload")


async def test_private_image_urls_are_refused(relay: Relay, fake) -> None:
    for url in ("http://127.0.0.1:1/x.png", "http://169.254.169.254/latest/meta-data", "http://localhost/a.png"):
        part = {"type": "image_url", "image_url": {"url": url}}
        with pytest.raises(openai.BadRequestError) as info:
            await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
        assert "private or local address" in info.value.message
    assert not fake.calls_named("completion")


async def test_redirects_are_followed_and_checked(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    png = tiny_png()

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query.get("to", "/cat.png"))

    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    images = web.Application()
    images.router.add_get("/hop", hop)
    images.router.add_get("/cat.png", cat)
    server = await aiohttp_server(images)
    trusting = await make_relay(image_fetch_private=True)
    part = {"type": "image_url", "image_url": {"url": str(server.make_url("/hop"))}}
    await trusting.openai().chat.completions.create(model=MODEL, messages=user(part))
    assert fake.calls_named("upload")[0].files == [("image_1.png", "image/png", png)]


async def test_a_redirect_inward_is_refused_at_the_hop() -> None:
    """A public URL that redirects to a private address: the hop is checked before it is fetched."""
    fetched: list[str] = []

    class OneHop:
        async def fetch_public(self, url: str, max_bytes: int, address: str | None = None) -> tuple[str, bytes]:
            fetched.append(url)
            raise Redirected("http://169.254.169.254/latest/meta-data")

    image = RemoteImage("http://1.1.1.1/cat.png", "messages.0.content.1.image_url", 1)
    with pytest.raises(InvalidRequest) as info:
        await fetch_image(OneHop(), image, allow_private=False)  # type: ignore[arg-type]
    assert "private or local address" in info.value.message
    assert fetched == ["http://1.1.1.1/cat.png"]


async def test_unreachable_image_url_is_400(make_relay: RelayFactory, fake, aiohttp_server: Any) -> None:
    relay = await make_relay(image_fetch_private=True)
    server = await aiohttp_server(web.Application())
    part = {"type": "image_url", "image_url": {"url": str(server.make_url("/missing.png"))}}
    with pytest.raises(openai.BadRequestError) as info:
        await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    assert "messages.0.content.1.image_url" in info.value.message and "404" in info.value.message
    assert not fake.calls_named("completion")


async def test_pdf_file_part_is_uploaded(relay: Relay, fake) -> None:
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
    part = {"type": "file", "file": {"file_data": data_url("application/pdf", pdf), "filename": "report.pdf"}}
    await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    assert fake.calls_named("upload")[0].files == [("report.pdf", "application/pdf", pdf)]
    assert fake.calls_named("completion")[0].body["files"] == list(fake.uploads)


async def test_text_file_part_becomes_an_attachment(relay: Relay, fake) -> None:
    csv = "a,b\n1,2\n"
    part = {"type": "file", "file": {"file_data": data_url("text/csv", csv.encode()), "filename": "data.csv"}}
    await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    body = fake.calls_named("completion")[0].body
    assert body["attachments"] == [{"extracted_content": csv, "file_name": "data.csv", "file_type": "text/plain", "file_size": 8}]
    assert not fake.calls_named("upload")


async def test_uploads_are_redone_on_the_account_that_answers(make_relay: RelayFactory, fake) -> None:
    fake.script(session_key(1), "server_error")
    relay = await make_relay(sessions=f"{session_key(1)},{session_key(2)}")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    part = {"type": "image_url", "image_url": {"url": data_url("image/png", tiny_png())}}
    await relay.openai().chat.completions.create(model=MODEL, messages=user(part))
    assert [u.session_key for u in fake.calls_named("upload")] == [session_key(1), session_key(2)]
    answered = fake.calls_named("completion")[-1]
    assert answered.session_key == session_key(2)
    mine = [fid for fid, (_, _, _) in fake.uploads.items()][-1]
    assert answered.body["files"] == [mine]


async def test_bad_image_is_400_and_relay_keeps_serving(relay: Relay, fake) -> None:
    client = relay.openai()
    for url in ("data:image/png;base64,!!!notbase64", data_url("image/bmp", b"BM....")):
        bad = {"type": "image_url", "image_url": {"url": url}}
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model=MODEL, messages=user(bad))
        assert "messages.0.content.1" in info.value.message
    huge = {"type": "image_url", "image_url": {"url": data_url("image/png", b"\x89PNG\r\n\x1a\n" + b"0" * (11 * 1024 * 1024))}}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=user(huge))
    assert "limit" in info.value.message
    assert not fake.calls_named("upload")
    assert (await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])).choices


async def test_long_history_goes_as_a_file_and_still_answers(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(max_chat_history_length=500)
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "z" * 100} for i in range(10)]
    messages.append({"role": "user", "content": "summarise"})
    done = await relay.openai().chat.completions.create(model=MODEL, messages=messages)
    assert "You said: summarise" in (done.choices[0].message.content or "")
    body = fake.calls_named("completion")[0].body
    assert body["attachments"][0]["file_name"] == HISTORY_FILE
    assert "turn 9" in body["attachments"][0]["extracted_content"]
    assert "turn 9" not in body["prompt"] and body["prompt"].endswith("Human: summarise")


async def test_artifacts_disabled_sends_no_tool_and_the_note(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(prompt_disable_artifacts=True)
    await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "code?"}])
    body = fake.calls_named("completion")[0].body
    assert body["tools"] == []
    assert "markdown code blocks" in body["prompt"]


async def test_upstream_artifact_arrives_as_markdown(relay: Relay, fake) -> None:
    artifact = {
        "id": "x",
        "type": "application/vnd.ant.code",
        "title": "hello.py",
        "language": "python",
        "content": "print('hi')",
    }
    for n in (1, 2, 3):
        fake.script(session_key(n), text="Here:", tool_block=("artifacts", artifact))
    stream = await relay.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "Here:\n\n**hello.py**\n\n```python\nprint('hi')\n```\n\n"


async def test_mirror_mode_uses_the_callers_cookie(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(enable_mirror_api=True, mirror_api_prefix="/mirror")
    mine = session_key(42)
    for prefix in ("/mirror/v1", "/mirror/hf/v1"):
        done = await relay.openai(prefix, api_key=mine).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert done.choices[0].message.content
        models = await relay.openai(prefix, api_key=mine).models.list()
        assert models.data
    completions = fake.calls_named("completion")
    assert {c.session_key for c in completions} == {mine}
    assert len([c for c in fake.calls_named("orgs") if c.session_key == mine]) == 1  # org cached for mirror keys
    assert all(a.requests == 0 for a in relay.pool.accounts)


async def test_mirror_mode_rejects_other_bearers_without_upstream_calls(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(enable_mirror_api=True, mirror_api_prefix="/mirror")
    await eventually(lambda: all(a.org_id for a in relay.pool.accounts))
    before = len(fake.calls)
    for key in (API_KEY, "sk-ant-api03-notacookie"):
        with pytest.raises(openai.AuthenticationError):
            await relay.openai("/mirror/v1", api_key=key).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
    assert len(fake.calls) == before
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{relay.url}/mirror/v1/accounts", headers={"Authorization": f"Bearer {session_key(42)}"}) as r:
            assert r.status == 404


async def test_mirror_key_refused_upstream_is_401_without_failover(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(enable_mirror_api=True, mirror_api_prefix="/mirror")
    fake.script(session_key(43), "invalid")
    with pytest.raises(openai.AuthenticationError) as info:
        await relay.openai("/mirror/v1", api_key=session_key(43)).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert "refused" in info.value.message
    assert {c.session_key for c in fake.calls} == {session_key(43)} | {session_key(n) for n in (1, 2, 3)}
    assert not [c for c in fake.calls_named("completion") if c.session_key != session_key(43)]


async def test_mirror_sessions_are_bounded_and_never_closed_under_a_stream(make_relay: RelayFactory, fake) -> None:
    relay = await make_relay(enable_mirror_api=True, mirror_api_prefix="/mirror")
    upstream = relay.app[upstream_key]
    slow = session_key(90)
    fake.script(slow, text=" ".join(["w"] * 40), chunk_delay=0.02)
    stream = await relay.openai("/mirror/v1", api_key=slow).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got = []
    async for chunk in stream:
        got.append(chunk.choices[0].delta.content or "")
        if len(got) == 3:
            for n in range(100, 100 + upstream.config.max_guest_sessions + 5):
                await relay.openai("/mirror/v1", api_key=session_key(n)).chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
    assert "".join(got) == " ".join(["w"] * 40)
    # Idle guest sessions were closed: the fake sees no more connections than the bound allows
    # (plus one per pooled account that found its organization at start).
    limit = upstream.config.max_guest_sessions + len(relay.pool)
    await eventually(lambda: len(fake.server.handler.connections) <= limit)  # type: ignore[attr-defined]
