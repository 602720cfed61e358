"""The connector contract's edge cases: how ML Commons' substitutions arrive, and URL guarding."""

from __future__ import annotations

import asyncio

import pytest

from connectors.adapter.fetch import FetchRefused, check_url
from connectors.adapter.schemas import AnalyzeRequest, EmbedRequest


@pytest.mark.parametrize("absent", [None, "", "null", "NULL", "${parameters.inputImage}", "  "])
def test_absent_values(absent):
    request = EmbedRequest(text="a dog", image=absent)
    assert request.texts == ["a dog"] and request.images == []


def test_image_only_query_with_null_text():
    request = EmbedRequest(text="null", image="aGVsbG8=")
    assert request.texts == [] and request.images == ["aGVsbG8="]


def test_analyze_prefers_the_image_then_the_url():
    assert AnalyzeRequest(image="abc", image_url="http://x/y.jpg").source == ("image", "abc")
    assert AnalyzeRequest(image="", image_url="http://x/y.jpg").source == ("image_url", "http://x/y.jpg")
    assert AnalyzeRequest(image="null", image_url="${parameters.image_url}").source is None


@pytest.mark.parametrize("url", ["http://127.0.0.1/a.jpg", "http://localhost:8200/x", "http://10.0.0.5/a.png",
                                 "http://[::1]/a.jpg", "http://169.254.169.254/latest"])
def test_private_and_loopback_urls_are_refused(url):
    with pytest.raises(FetchRefused, match="private or loopback"):
        asyncio.run(check_url(url, allow_private=False))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.jpg", "javascript:alert(1)", "nope"])
def test_non_http_schemes_are_refused(url):
    with pytest.raises(FetchRefused, match="http"):
        asyncio.run(check_url(url, allow_private=False))
