"""Images given by URL: fetched once per request, checked like inline ones."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from ..errors import InvalidRequest
from .client import FetchError, Redirected, UpstreamClient
from .prompt import MAX_IMAGE_BYTES, RemoteImage, Upload, image_upload

MAX_REDIRECTS = 3


async def _public_only(url: str, where: str) -> None:
    """Refuse URLs that resolve to this machine or a private network: callers must not be able to
    make the relay read its own surroundings (cloud metadata, admin ports) and hand them to Claude."""
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidRequest(f"{where}: cannot resolve host {host!r}", param=where) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise InvalidRequest(f"{where}: the URL points at a private or local address", param=where)


async def fetch_image(upstream: UpstreamClient, image: RemoteImage, *, allow_private: bool) -> Upload:
    """Download an http(s) image (size-capped, through PROXY); every redirect target is checked too."""
    url = image.url
    for _ in range(MAX_REDIRECTS + 1):
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(f"{image.where}: redirected to a non-http URL", param=image.where)
        if not allow_private:
            await _public_only(url, image.where)
        try:
            _, data = await upstream.fetch_public(url, MAX_IMAGE_BYTES)
        except Redirected as hop:
            url = hop.location
            continue
        except FetchError as exc:
            raise InvalidRequest(f"{image.where}: {exc}", param=image.where) from None
        return image_upload(data, image.where, image.index)
    raise InvalidRequest(f"{image.where}: too many redirects", param=image.where)
