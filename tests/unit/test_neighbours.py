"""The duplicate lookup's OpenSearch side: lookups made together share one _msearch, and each gets its own answer."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from connectors.adapter.neighbours import OpenSearchNeighbours


def hit(group: str, phash: str) -> dict:
    return {"fields": {"duplicate_group": [group], "perceptual_hash": [phash]}}


class Post:
    """The NDJSON POST, answered by `handler` (an httpx-style request → response function)."""

    def __init__(self, handler) -> None:
        self.handler, self.sent = handler, []

    async def __call__(self, path: str, ndjson: bytes) -> dict:
        self.sent.append(ndjson)
        response = self.handler(httpx.Request("POST", f"http://os{path}", content=ndjson))
        if response.status_code != 200:
            raise RuntimeError(f"OpenSearch answered {response.status_code}")
        return dict(response.json())

    async def aclose(self) -> None:
        pass


def run_lookups(handler, indices: list[str]) -> tuple[list, list[bytes]]:
    post = Post(handler)
    sent = post.sent

    async def main():
        neighbours = OpenSearchNeighbours(post)
        try:
            return await asyncio.gather(*(neighbours.near(i, [0.5, 0.5], 3) for i in indices),
                                        return_exceptions=True)
        finally:
            await neighbours.aclose()

    return list(asyncio.run(main())), sent


def test_lookups_made_together_share_one_msearch_and_get_their_own_answers():
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/_msearch"
        lines = [json.loads(line) for line in request.content.splitlines()]
        responses = []
        for header in lines[0::2]:
            if header["index"] == "missing":
                responses.append({"status": 404, "error": {"type": "index_not_found_exception"}})
            elif header["index"] == "broken":
                responses.append({"status": 500, "error": {"type": "search_phase_execution_exception"}})
            else:
                responses.append({"hits": {"hits": [hit(f"g-{header['index']}", "ab"), {"fields": {}}]}})
        return httpx.Response(200, json={"responses": responses})

    found, sent = run_lookups(answer, ["a", "missing", "b", "broken"])
    assert len(sent) == 1 and len(sent[0].splitlines()) == 8
    body = json.loads(sent[0].splitlines()[1])
    assert body["query"]["knn"]["global_image_embedding"]["vector"] == [0.5, 0.5] and body["_source"] is False
    assert found[0] == [("g-a", "ab")] and found[1] == [] and found[2] == [("g-b", "ab")]
    assert isinstance(found[3], RuntimeError) and "500" in str(found[3])


def test_a_failed_request_fails_every_lookup_in_it():
    found, _ = run_lookups(lambda request: httpx.Response(503, text="unavailable"), ["a", "b"])
    assert all(isinstance(f, RuntimeError) and "503" in str(f) for f in found)


@pytest.mark.parametrize("count", [40])
def test_a_full_batch_goes_without_waiting_for_the_window(count):
    def answer(request: httpx.Request) -> httpx.Response:
        n = len(request.content.splitlines()) // 2
        return httpx.Response(200, json={"responses": [{"hits": {"hits": []}}] * n})

    found, sent = run_lookups(answer, ["a"] * count)
    assert found == [[]] * count and [len(s.splitlines()) // 2 for s in sent] == [32, 8]
