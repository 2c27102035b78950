"""Images given by URL: fetched once per request, checked like inline ones."""

from __future__ import annotations

from .errors import InvalidRequest
from .prompt import MAX_IMAGE_BYTES, RemoteImage, Upload, image_upload
from .upstream import FetchError, UpstreamClient


async def fetch_image(upstream: UpstreamClient, image: RemoteImage, index: int = 1) -> Upload:
    """Download an http(s) image (size-capped, through PROXY); failures are the caller's 400."""
    try:
        _, data = await upstream.fetch_public(image.url, MAX_IMAGE_BYTES)
    except FetchError as exc:
        raise InvalidRequest(f"{image.where}: {exc}", param=image.where) from None
    return image_upload(data, image.where, index)
