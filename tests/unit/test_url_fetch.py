"""The `image_url` guard in connectors/adapter/fetch.py, against tiny HTTP servers started inside each test.

Every server listens on 127.0.0.1 and counts what it receives, so "refused" is checked on the wire
(the server got nothing), not only by the exception raised.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import pytest

from connectors.adapter.fetch import (
    FetchRefused,
    FetchUnavailable,
    ImageFetcher,
    check_url,
    non_public_reason,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 56  # only the content type matters to the fetcher
PUBLIC_V4 = "93.184.215.14"  # a global address the tests never really dial (see RecordingBackend)


# --------------------------------------------------------------------------------------------------
# A tiny HTTP/1.1 server


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


Writer = asyncio.StreamWriter


async def _respond(writer: Writer, status: str, body: bytes = b"", content_type: str = "image/png",
                   extra: str = "") -> None:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n")
    writer.write(head.encode() + body)
    await writer.drain()


async def _drip(writer: Writer, data: bytes, every_s: float) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every_s)


async def _route(server: LocalServer, path: str, writer: Writer) -> None:
    if path == "/cat.png":
        await _respond(writer, "200 OK", PNG)
    elif path == "/hold.png":  # slow enough for fetches to overlap; in flight until the answer is sent
        server.in_flight += 1
        server.max_in_flight = max(server.max_in_flight, server.in_flight)
        await asyncio.sleep(0.2)
        server.in_flight -= 1
        await _respond(writer, "200 OK", PNG)
    elif path == "/page":
        await _respond(writer, "200 OK", b"<html></html>", content_type="text/html")
    elif path == "/gzip.png":
        await _respond(writer, "200 OK", PNG, extra="Content-Encoding: gzip\r\n")
    elif path == "/big-declared.png":
        await _respond(writer, "200 OK", b"x" * 2048)
    elif path == "/big-undeclared.png":  # no Content-Length: only the streaming limit can stop it
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n" + b"x" * 2048)
        await writer.drain()
    elif path == "/redirect":
        await _respond(writer, "302 Found", extra="Location: /cat.png\r\n")
    elif path.startswith("/status/"):
        code = path.rsplit("/", 1)[1]
        await _respond(writer, f"{code} Status", b"nope", content_type="text/plain")
    elif path == "/hangup":  # closes without a response, as a crashing server would
        pass
    elif path == "/drip-body.png":  # headers at once, then one body byte per tick, forever in practice
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        await _drip(writer, b"x" * 1000, server.drip_s)
    elif path == "/drip-headers.png":  # even the status line arrives one byte per tick
        await _drip(writer, b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1\r\n\r\nx",
                    server.drip_s)
    else:
        await _respond(writer, "404 Not Found", b"", content_type="text/plain")


@dataclass
class LocalServer:
    """Serves the routes above on 127.0.0.1 and records each request; `drip_s` is the drip routes' tick."""

    drip_s: float = 0.25
    ssl_context: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            path = line.split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, v in
                       (h.split(":", 1) for h in header_lines if ":" in h)}
            self.seen.append(Seen(path, headers))
            await _route(self, path, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # teardown; returning normally keeps asyncio's stream callback quiet
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def fetcher(**kwargs) -> ImageFetcher:
    options = {"max_bytes": 1024, "timeout_s": 3.0, "allow_private": True, "max_concurrent": 4} | kwargs
    return ImageFetcher(**options)


# --------------------------------------------------------------------------------------------------
# Resolvers and a backend that record what they were asked


class FlippingResolver:
    """Answers a public address the first time and 127.0.0.1 afterwards: a DNS-rebinding attacker."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.calls.append(host)
        return [PUBLIC_V4] if len(self.calls) == 1 else ["127.0.0.1"]


def static_resolver(answers: dict[str, list[str]]) -> Callable[[str], Awaitable[list[str]]]:
    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[host]

    return resolve


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records every dial; dials to PUBLIC_V4 fail at once (no packet leaves the test), others are real."""

    def __init__(self) -> None:
        self.dialled: list[str] = []
        self.tls_server_names: list[str | None] = []
        self._real = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.dialled.append(host)
        if host == PUBLIC_V4:
            raise httpcore.ConnectError("unreachable from the test (simulated)")
        stream = await self._real.connect_tcp(host, port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)
        return _RecordingStream(stream, self.tls_server_names)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise AssertionError("never used")

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class _RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, tls_server_names: list[str | None]) -> None:
        self._inner, self._names = inner, tls_server_names

    async def read(self, max_bytes, timeout=None):
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer, timeout=None):
        await self._inner.write(buffer, timeout)

    async def aclose(self):
        await self._inner.aclose()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        self._names.append(server_hostname)
        return await self._inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info):
        return self._inner.get_extra_info(info)


# --------------------------------------------------------------------------------------------------
# 1. DNS rebinding: one resolution, and the socket goes to the address that was checked


def test_rebinding_resolver_is_asked_once_and_the_checked_address_is_dialled():
    """Host `localhost` so that any second, unpinned lookup (the OS's) would reach the local server."""

    async def main():
        resolver, backend = FlippingResolver(), RecordingBackend()
        async with LocalServer() as server, fetcher(allow_private=False, resolver=resolver,
                                                    network_backend=backend) as f:
            with pytest.raises(FetchUnavailable, match="could not be fetched right now"):
                await f.fetch(server.url("/cat.png", host="localhost"))
            assert resolver.calls == ["localhost"]
            assert backend.dialled == [PUBLIC_V4]
            assert server.seen == []

    run(main())


def test_rebinding_resolver_answering_private_first_is_refused_before_any_dial():
    async def main():
        backend = RecordingBackend()
        resolver = static_resolver({"images.example": [PUBLIC_V4, "127.0.0.1"]})  # mixed answers
        async with LocalServer() as server, fetcher(allow_private=False, resolver=resolver,
                                                    network_backend=backend) as f:
            with pytest.raises(FetchRefused, match=r"not a public address \(127\.0\.0\.1 is loopback\)"):
                await f.fetch(server.url("/cat.png", host="images.example"))
            assert backend.dialled == []
            assert server.seen == []

    run(main())


def test_local_names_are_refused_with_the_real_resolver_and_reach_nothing():
    async def main():
        async with LocalServer() as server, fetcher(allow_private=False) as f:
            for host in ("localhost", "127.0.0.1", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "127.1"):
                with pytest.raises(FetchRefused, match="private or loopback"):
                    await f.fetch(server.url("/cat.png", host=host))
            assert server.seen == []

    run(main())


def test_connection_goes_to_the_resolved_address_with_the_original_host_header():
    async def main():
        backend = RecordingBackend()
        resolver = static_resolver({"images.example": ["127.0.0.1"]})
        async with LocalServer() as server, fetcher(resolver=resolver, network_backend=backend) as f:
            assert await f.fetch(server.url("/cat.png", host="images.example")) == PNG
            assert backend.dialled == ["127.0.0.1"]
            assert server.seen[0].headers["host"] == f"images.example:{server.port}"

    run(main())


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate valid for DNS name `name` only (no IP SAN), made with the openssl CLI."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a test certificate")
@pytest.mark.parametrize("cert_name, works", [("images.example", True), ("other.example", False)])
def test_https_to_a_pinned_address_keeps_sni_and_verifies_the_hostname(tmp_path, cert_name, works):
    """The certificate names only the hostname, so success proves verification ran against the hostname
    (not the dialled 127.0.0.1); a certificate for another name is refused as the URL's fault."""
    cert, key = _certificate(tmp_path, cert_name)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    sni_seen: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: sni_seen.append(name)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main():
        backend = RecordingBackend()
        resolver = static_resolver({"images.example": ["127.0.0.1"]})
        async with LocalServer(ssl_context=server_ctx) as server, fetcher(
                resolver=resolver, ssl_context=client_ctx, network_backend=backend) as f:
            url = server.url("/cat.png", host="images.example", scheme="https")
            if works:
                assert await f.fetch(url) == PNG
                assert server.seen[0].headers["host"] == f"images.example:{server.port}"
            else:
                with pytest.raises(FetchRefused, match="TLS certificate is not valid"):
                    await f.fetch(url)
                assert server.seen == []
            assert backend.dialled == ["127.0.0.1"]
            assert backend.tls_server_names == ["images.example"]
            assert sni_seen == ["images.example"]

    run(main())


# --------------------------------------------------------------------------------------------------
# 2. One total deadline


@pytest.mark.parametrize("path", ["/drip-body.png", "/drip-headers.png"])
def test_total_deadline_stops_a_dripping_server(path):
    """Each byte comes well within any per-read timeout (0.25 s < 1 s); only a total deadline stops it."""
    timeout = 1.0

    async def main():
        async with LocalServer(drip_s=0.25) as server, fetcher(timeout_s=timeout) as f:
            start = time.monotonic()
            with pytest.raises(FetchUnavailable, match=r"total deadline of 1s") as caught:
                await f.fetch(server.url(path))
            elapsed = time.monotonic() - start
            assert timeout - 0.05 <= elapsed < timeout + 1.0, elapsed
            assert caught.value.retryable

    run(main())


# --------------------------------------------------------------------------------------------------
# 3. No proxy from the environment, no redirects


def test_environment_proxies_are_ignored(monkeypatch):
    async def main():
        async with LocalServer() as proxy, LocalServer() as server:
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
                monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
            for name in ("NO_PROXY", "no_proxy"):
                monkeypatch.delenv(name, raising=False)
            async with fetcher() as f:
                assert await f.fetch(server.url("/cat.png")) == PNG
            assert proxy.seen == []
            assert [s.path for s in server.seen] == ["/cat.png"]

    run(main())


def test_redirects_are_refused_not_followed():
    async def main():
        async with LocalServer() as server, fetcher() as f:
            with pytest.raises(FetchRefused, match=r"HTTP 302 redirect to '/cat.png'; redirects are not followed"):
                await f.fetch(server.url("/redirect"))
            assert [s.path for s in server.seen] == ["/redirect"]

    run(main())


# --------------------------------------------------------------------------------------------------
# 4. Which addresses are public


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"), ("100.64.0.1", "not globally routable"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.1.2.3", "multicast"), ("240.0.0.1", "private"),
    ("255.255.255.255", "private"), ("192.0.2.1", "private"),
    ("::1", "loopback"), ("::", "unspecified"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("fd12:3456::1", "private"), ("fec0::1", "site-local"), ("ff02::1", "multicast"), ("ff0e::1", "multicast"),
    ("2001:db8::1", "private"), ("::7f00:1", "reserved"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, private"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1, loopback"),
    ("64:ff9b::a00:1", "NAT64 form of 10.0.0.1, private"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, link-local"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1, loopback"),
    ("2002:c0a8:101::1", "6to4 form of 192.168.1.1, private"),
    ("::ffff:0:a00:1", "IPv4-translated form of 10.0.0.1, private"),
])
def test_non_public_addresses(address, reason):
    assert non_public_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", PUBLIC_V4, "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses(address):
    assert non_public_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1", "fe80::1"])
def test_fetch_refuses_hosts_resolving_to_non_public_forms(address):
    async def main():
        backend = RecordingBackend()
        async with fetcher(allow_private=False, resolver=static_resolver({"images.example": [address]}),
                           network_backend=backend) as f:
            with pytest.raises(FetchRefused, match="private or loopback addresses need"):
                await f.fetch("http://images.example/cat.png")
        assert backend.dialled == []

    run(main())


def test_allow_private_serves_local_images():
    async def main():
        async with LocalServer() as server, fetcher(allow_private=True) as f:
            assert await f.fetch(server.url("/cat.png")) == PNG
            assert await f.fetch(server.url("/cat.png", host="localhost")) == PNG
        await check_url(server.url("/cat.png"), allow_private=True)

    run(main())


# --------------------------------------------------------------------------------------------------
# 5. Concurrency cap


def test_concurrent_fetches_are_capped():
    async def main():
        async with LocalServer() as server, fetcher(max_concurrent=2) as f:
            results = await asyncio.gather(*(f.fetch(server.url("/hold.png")) for _ in range(6)))
            assert results == [PNG] * 6
            assert server.max_in_flight == 2

    run(main())


def test_a_flood_beyond_the_cap_opens_no_connections():
    """While the only slot is held by a fetch that cannot finish, the others never reach the network."""

    async def main():
        async with LocalServer(drip_s=0.25) as server, fetcher(max_concurrent=1, timeout_s=0.5) as f:
            drip = asyncio.create_task(f.fetch(server.url("/drip-body.png")))
            await asyncio.sleep(0.05)  # let it take the slot first
            flood = await asyncio.gather(*(f.fetch(server.url("/drip-headers.png")) for _ in range(5)),
                                         return_exceptions=True)
            with pytest.raises(FetchUnavailable, match="total deadline"):
                await drip
            assert all(isinstance(e, FetchUnavailable) for e in flood), flood
            assert [s.path for s in server.seen][:2] == ["/drip-body.png", "/drip-headers.png"]
            assert len(server.seen) <= 2  # at most one flood fetch got the freed slot for its last 0.05 s

    run(main())


def test_waiting_for_a_slot_is_bounded_by_the_deadline_and_says_so():
    async def main():
        async with LocalServer() as server, fetcher(max_concurrent=1, timeout_s=0.3) as f:
            async with f._slots:  # the one slot is taken (as by a long fetch)
                with pytest.raises(FetchUnavailable, match=r"waited 0\.3s for one of 1 fetch slots"):
                    await f.fetch(server.url("/cat.png"))
            assert server.seen == []

    run(main())


# --------------------------------------------------------------------------------------------------
# 6. Refused (permanent) versus unavailable (transient), one line each


@pytest.mark.parametrize("path, error, message", [
    ("/status/404", FetchRefused, "HTTP 404"),
    ("/status/403", FetchRefused, "HTTP 403"),
    ("/status/204", FetchRefused, "HTTP 204"),
    ("/page", FetchRefused, "content type is 'text/html', not an image"),
    ("/gzip.png", FetchRefused, "content encoding 'gzip' is not accepted"),
    ("/big-declared.png", FetchRefused, "2048 bytes, above the 1024 byte limit"),
    ("/big-undeclared.png", FetchRefused, "exceeds the 1024 byte limit"),
    ("/status/500", FetchUnavailable, r"HTTP 500 \(transient\)"),
    ("/status/503", FetchUnavailable, r"HTTP 503 \(transient\)"),
    ("/status/429", FetchUnavailable, r"HTTP 429 \(transient\)"),
    ("/hangup", FetchUnavailable, "could not be fetched right now"),
])
def test_responses_are_classified(path, error, message):
    async def main():
        async with LocalServer() as server, fetcher() as f:
            with pytest.raises(error, match=message) as caught:
                await f.fetch(server.url(path))
        text = str(caught.value)
        assert "\n" not in text and text.startswith("image_url")
        assert caught.value.retryable is (error is FetchUnavailable)

    run(main())


def test_connection_refused_is_unavailable():
    with socket.socket() as sock:  # a port that was just free: nothing listens on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def main():
        async with fetcher() as f:
            with pytest.raises(FetchUnavailable, match="ConnectError"):
                await f.fetch(f"http://127.0.0.1:{port}/cat.png")

    run(main())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.jpg", "javascript:alert(1)", "nope",
                                 "http:///no-host", "http://[::1"])
def test_bad_urls_are_refused(url):
    async def main():
        async with fetcher() as f:
            with pytest.raises(FetchRefused, match="http"):
                await f.fetch(url)
        with pytest.raises(FetchRefused, match="http"):
            await check_url(url, allow_private=True)

    run(main())


@pytest.mark.parametrize("errno, error, message", [
    (socket.EAI_NONAME, FetchRefused, "does not resolve"),
    (socket.EAI_AGAIN, FetchUnavailable, "could not be resolved right now"),
])
def test_resolution_failures(errno, error, message):
    async def resolver(host: str) -> list[str]:
        raise socket.gaierror(errno, "test")

    async def main():
        async with fetcher(allow_private=False, resolver=resolver) as f:
            with pytest.raises(error, match=message):
                await f.fetch("http://images.example/cat.png")
        with pytest.raises(error, match=message):
            await check_url("http://images.example/cat.png", allow_private=False, resolver=resolver)

    run(main())
