"""Guarded fetching of `image_url`: the adapter must not become a way into the private network.

http/https only; the host must resolve to public addresses unless the config allows private ones; a
timeout, a byte limit enforced while streaming, and an image content type.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlparse

import httpx


class FetchRefused(ValueError):
    """The URL is not allowed or did not deliver an image; the message says which rule."""


async def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchRefused(f"image_url host {host!r} does not resolve") from exc
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def check_url(url: str, allow_private: bool) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FetchRefused(f"image_url must be an http(s) URL, got {url[:80]!r}")
    if allow_private:
        return
    for address in await _addresses(parsed.hostname):
        if not address.is_global:
            raise FetchRefused(f"image_url host {parsed.hostname!r} is a private or loopback address ({address}); "
                               "set adapter.url_fetch_allow_private to allow it")


async def fetch_image(client: httpx.AsyncClient, url: str, max_bytes: int, timeout_s: float,
                      allow_private: bool) -> bytes:
    await check_url(url, allow_private)
    try:
        async with client.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
            if response.status_code != 200:
                raise FetchRefused(f"image_url answered HTTP {response.status_code}")
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
                raise FetchRefused(f"image_url content type is {kind!r}, not an image")
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise FetchRefused(f"image_url body is {declared} bytes, above the {max_bytes} byte limit")
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise FetchRefused(f"image_url body exceeds the {max_bytes} byte limit")
            return bytes(data)
    except httpx.TimeoutException as exc:
        raise FetchRefused(f"image_url did not answer within {timeout_s:.0f}s") from exc
    except httpx.HTTPError as exc:
        raise FetchRefused(f"image_url could not be fetched: {exc.__class__.__name__}: {exc}") from exc
