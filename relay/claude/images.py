"""Images given by URL: fetched once per request, checked like inline ones."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import InvalidRequest, PayloadTooLarge
from .client import FetchError, Redirected, UpstreamClient
from .prompt import MAX_IMAGE_BYTES, RemoteImage, Upload, image_upload

MAX_REDIRECTS = 3


Resolve = Callable[[str], Awaitable[list[str]]]


async def system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def _checked_address(url: str, where: str, allow_private: bool, resolve: Resolve) -> str:
    """The address to fetch `url` from, resolved once. Unless allowed, addresses on this machine or
    a private network are refused: callers must not make the relay read its own surroundings
    (cloud metadata, admin ports) and hand them to Claude. The fetch is pinned to the address
    checked here, so a second lookup (DNS rebinding) cannot point it elsewhere."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = await resolve(host)
    except OSError:
        addresses = []
    if not addresses:
        raise InvalidRequest(f"{where}: cannot resolve host {host!r}", param=where)
    if not allow_private and not all(ipaddress.ip_address(a).is_global for a in addresses):
        raise InvalidRequest(f"{where}: the URL points at a private or local address", param=where)
    return addresses[0]


async def fetch_image(
    upstream: UpstreamClient, image: RemoteImage, *, allow_private: bool, resolve: Resolve = system_resolve
) -> Upload:
    """Download an http(s) image (size-capped, through PROXY); every redirect target is checked too."""
    url = image.url
    for _ in range(MAX_REDIRECTS + 1):
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"{image.where}: redirected to a non-http URL", param=image.where)
        address = await _checked_address(url, image.where, allow_private, resolve)
        try:
            _, data = await upstream.fetch_public(url, MAX_IMAGE_BYTES, address=address)
        except Redirected as hop:
            url = hop.location
            continue
        except FetchError as exc:
            raise InvalidRequest(f"{image.where}: {exc}", param=image.where) from None
        return image_upload(data, image.where, image.index)
    raise InvalidRequest(f"{image.where}: too many redirects", param=image.where)


# Images fetched at once for one request: a body of image links must not open a socket each.
FETCHES_AT_ONCE = 4


async def fetch_all(files: list[Upload | RemoteImage], fetch: Callable[[RemoteImage], Awaitable[Upload]], limit: int) -> None:
    """Replace each linked image in `files` with its upload, a few fetches at a time. What they
    bring may add up to `limit` bytes (MAX_BODY_SIZE: as much as the client could have sent
    inline); a body of links to large images would otherwise fetch and hold gigabytes."""
    gate = asyncio.Semaphore(FETCHES_AT_ONCE)
    fetched = 0

    async def one(index: int, image: RemoteImage) -> None:
        nonlocal fetched
        async with gate:
            if fetched > limit:
                return  # the request has already failed; no more fetches for it
            upload = files[index] = await fetch(image)
            fetched += len(upload.data)
            if fetched > limit:
                message = f"{image.where}: the images given by URL add up to more than MAX_BODY_SIZE ({limit} bytes)"
                raise PayloadTooLarge(message, param=image.where)

    await asyncio.gather(*(one(i, f) for i, f in enumerate(files) if isinstance(f, RemoteImage)))
