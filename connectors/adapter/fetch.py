"""Guarded fetching of `image_url`: the adapter must not become a way into the private network.

Rules (each refusal names the one it broke):

- http/https only, with a host.
- The host is resolved ONCE, inside the connection step itself; every resolved address must be public
  (unless `allow_private`), and the socket is opened to one of exactly those checked addresses. There is
  no second lookup an attacker's DNS could answer differently (DNS rebinding). The Host header, TLS SNI
  and certificate verification still use the hostname, so https keeps working.
- "Public" looks through the IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96,
  6to4 2002::/16, IPv4-translated) and judges the embedded address.
- No proxy from the environment (a proxy would do its own resolution, beyond our check), no redirects.
- One total deadline for the whole fetch (waiting for a slot, connect, headers, body): a server that
  drips a byte at a time cannot hold a request open past it.
- A byte limit enforced while streaming, an image content type, no content encoding (the limit is on
  the bytes we keep, so a small gzip body cannot expand past it).
- At most `max_concurrent` fetches at once, so a flood of URL documents cannot open unbounded
  outbound connections.

Failures are split the way the adapter's status codes are (docs/design.md#the-adapter): `FetchRefused` is a property
of the URL (permanent, 422) and `FetchUnavailable` may succeed later (transient, 503). A transient failure
must never be reported as a bad image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

import httpcore
import httpx

from connectors.adapter.errors import AdapterError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Iterable[str | IPAddress]]]
"""Maps a hostname to its addresses; raises socket.gaierror when it has none. Injectable for tests."""


class FetchError(AdapterError):
    """Base of both fetch failures; `retryable` tells the failure contract which one it is."""

    retryable: bool = False


class FetchRefused(FetchError, ValueError):
    """The URL is not allowed or did not deliver an image (permanent: 422); the message says which rule."""

    retryable = False


class FetchUnavailable(FetchError):
    """The image could not be fetched now but might be later (transient: 503); the message says why."""

    retryable = True


# --------------------------------------------------------------------------------------------------
# Which addresses count as public

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix: last 32 bits are IPv4
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use: site-specific translators
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 SIIT: last 32 bits are IPv4


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 one stands for, if any: that is where the packets really end up."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    if address in _NAT64 or address in _IPV4_TRANSLATED:
        kind = "NAT64" if address in _NAT64 else "IPv4-translated"
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), kind
    if address.sixtofour is not None:
        return address.sixtofour, "6to4"
    return None


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address, or None when it is.

    `is_global` alone is not enough: Python counts multicast and IPv6 site-local as global, and judges
    NAT64/6to4/mapped addresses by their IPv6 prefix rather than by the IPv4 host they reach.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner, kind = embedded
            reason = non_public_reason(inner)
            return None if reason is None else f"{kind} form of {inner}, {reason}"
        if address in _NAT64_LOCAL:
            return "local-use NAT64"
        if address.is_site_local:
            return "site-local"
    for reason, hit in (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
                        ("link-local", address.is_link_local), ("multicast", address.is_multicast),
                        ("private", address.is_private), ("reserved", address.is_reserved),
                        ("not globally routable", not address.is_global)):
        if hit:
            return reason
    return None


# --------------------------------------------------------------------------------------------------
# Resolution: once, checked


async def system_resolver(host: str) -> list[str]:
    """The OS resolver (getaddrinfo), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _require_http_url(url: str) -> httpx.URL:
    """Parse with httpx's own parser, so the host we judge is the host httpx would connect to."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused(f"image_url must be an http(s) URL with a host, got {url[:80]!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise FetchRefused(f"image_url must be an http(s) URL with a host, got {url[:80]!r}")
    return parsed


async def resolve_checked(host: str, allow_private: bool, resolver: Resolver | None = None) -> list[IPAddress]:
    """Resolve `host` once and check every address; the caller must connect only to what this returns.

    Any non-public address refuses the whole host (not just that address): a name that mixes public and
    private answers is exactly what a rebinding attack looks like.
    """
    try:
        addresses = [ipaddress.ip_address(host)]  # a literal: nothing to resolve
    except ValueError:
        addresses = await _resolve(host, resolver)
    _check_addresses(host, addresses, allow_private)
    return addresses


async def _resolve(host: str, resolver: Resolver | None) -> list[IPAddress]:
    try:
        answers = await (resolver or system_resolver)(host)
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(a)) for a in answers))
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise FetchUnavailable(f"image_url host {host!r} could not be resolved right now ({exc})") from exc
        raise FetchRefused(f"image_url host {host!r} does not resolve ({exc})") from exc
    except ValueError as exc:
        raise FetchRefused(f"image_url host {host!r} resolved to something that is not an address ({exc})") from exc
    except OSError as exc:
        raise FetchUnavailable(f"image_url host {host!r} could not be resolved right now ({exc})") from exc
    if not addresses:
        raise FetchRefused(f"image_url host {host!r} does not resolve (no addresses)")
    return addresses


def _check_addresses(host: str, addresses: Iterable[IPAddress], allow_private: bool) -> None:
    if allow_private:
        return
    for address in addresses:
        reason = non_public_reason(address)
        if reason is not None:
            raise FetchRefused(f"image_url host {host!r} is not a public address ({address} is {reason}); "
                               "private or loopback addresses need adapter.url_fetch_allow_private")


async def check_url(url: str, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Advisory pre-check (scheme, host, addresses) without fetching.

    It resolves independently of any later connection, so on its own it does NOT protect against DNS
    rebinding; `ImageFetcher.fetch` is what enforces the rules.
    """
    parsed = _require_http_url(url)
    if not allow_private:
        await resolve_checked(parsed.host, allow_private, resolver)


# --------------------------------------------------------------------------------------------------
# The pinned connection layer


class _CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend whose connect_tcp resolves+checks the host and dials only checked addresses.

    httpcore hands `connect_tcp` the URL's hostname and later calls `start_tls(server_hostname=<hostname>)`
    on the stream we return, so swapping the dialled address here keeps SNI and certificate verification
    on the hostname, and httpx keeps the Host header.
    """

    def __init__(self, allow_private: bool, resolver: Resolver | None, delegate: httpcore.AsyncNetworkBackend):
        self._allow_private = allow_private
        self._resolver = resolver
        self._delegate = delegate

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, self._allow_private, self._resolver)
        failure: Exception | None = None
        for address in addresses:  # every one was checked above; try them in resolver order
            try:
                return await self._delegate.connect_tcp(str(address), port, timeout=timeout,
                                                        local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise FetchRefused("image_url may not use a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._delegate.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (exception mapping, streaming) over a pool that uses the checked backend.

    httpx 0.28 has no public `network_backend` argument (encode/httpx PR #3749 adds one), so the pool is
    replaced after construction; the isinstance check fails loudly if a future httpx changes that layout.
    """

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: httpcore.AsyncNetworkBackend):
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, retries=0)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps an httpcore pool in `_pool`; "
                               "connectors/adapter/fetch.py must be adapted")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=False, retries=0, network_backend=backend)


# --------------------------------------------------------------------------------------------------
# The fetcher


def _classify(exc: httpx.HTTPError) -> FetchError:
    """httpx failures → refused (the URL's fault) or unavailable (might work later)."""
    what = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return FetchRefused(f"image_url TLS certificate is not valid for its host ({cause.verify_message})")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return FetchUnavailable(f"image_url timed out ({what})")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.PoolTimeout):
        return FetchUnavailable(f"image_url could not be fetched right now ({what})")
    return FetchRefused(f"image_url could not be fetched ({what})")


class ImageFetcher:
    """Fetches `image_url`s under the rules in this module's docstring. Create once, share, `aclose()` at exit.

    `resolver` and `network_backend` exist for tests (a resolver that lies, a backend that records where
    it was asked to connect); production uses the OS resolver and httpcore's anyio backend.
    """

    def __init__(self, max_bytes: int, timeout_s: float, allow_private: bool, max_concurrent: int,
                 resolver: Resolver | None = None, ssl_context: ssl.SSLContext | None = None,
                 network_backend: httpcore.AsyncNetworkBackend | None = None) -> None:
        if max_bytes <= 0 or timeout_s <= 0 or max_concurrent <= 0:
            raise ValueError("max_bytes, timeout_s and max_concurrent must be positive")
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        backend = _CheckedNetworkBackend(allow_private, resolver, network_backend or httpcore.AnyIOBackend())
        limits = httpx.Limits(max_connections=max_concurrent, max_keepalive_connections=max_concurrent)
        transport = _PinnedTransport(ssl_context or httpx.create_ssl_context(trust_env=False), limits, backend)
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout_s),
            headers={"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "visual-search-adapter"})

    async def fetch(self, url: str) -> bytes:
        """The image bytes at `url`, or FetchRefused / FetchUnavailable with a one-line reason.

        The deadline covers everything from this call on, including waiting for a free slot, so a
        caller never waits longer than `timeout_s` for an answer.
        """
        _require_http_url(url)
        deadline = asyncio.timeout(self.timeout_s)
        acquired = False
        try:
            async with deadline, self._slots:
                acquired = True
                return await self._get(url)
        except TimeoutError as exc:
            if not acquired:
                raise FetchUnavailable(f"image_url fetch waited {self.timeout_s:g}s for one of {self.max_concurrent} "
                                       "fetch slots (adapter is busy fetching other URLs)") from exc
            raise FetchUnavailable(f"image_url fetch exceeded its total deadline of {self.timeout_s:g}s "
                                   "(connect + headers + body)") from exc

    async def _get(self, url: str) -> bytes:
        try:
            async with self._client.stream("GET", url) as response:
                self._check_response(response)
                data = bytearray()
                async for chunk in response.aiter_raw():
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise FetchRefused(f"image_url body exceeds the {self.max_bytes} byte limit")
                return bytes(data)
        except FetchError:
            raise
        except httpx.HTTPError as exc:
            raise _classify(exc) from exc
        except httpx.InvalidURL as exc:
            raise FetchRefused(f"image_url is not a valid URL ({exc})") from exc

    def _check_response(self, response: httpx.Response) -> None:
        status = response.status_code
        if 300 <= status < 400:
            location = response.headers.get("location", "")[:80]
            raise FetchRefused(f"image_url answered HTTP {status} redirect to {location!r}; redirects are not followed")
        if status in (408, 429) or status >= 500:
            raise FetchUnavailable(f"image_url answered HTTP {status} (transient)")
        if status != 200:
            raise FetchRefused(f"image_url answered HTTP {status}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise FetchRefused(f"image_url content type is {kind!r}, not an image")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchRefused(f"image_url content encoding {encoding!r} is not accepted (asked for identity)")
        try:
            declared = int(response.headers.get("content-length") or 0)
        except ValueError:
            declared = 0  # h11 rejects malformed lengths; the streaming limit below still applies
        if declared > self.max_bytes:
            raise FetchRefused(f"image_url body is {declared} bytes, above the {self.max_bytes} byte limit")

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._client.aclose()

    async def __aenter__(self) -> ImageFetcher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()
