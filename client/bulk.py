"""Bulk indexing the way the README tells clients to do it: small bulks, few in flight, retry what is retryable.

Each image costs a model call server side, so a bulk's latency grows with its size; small bulks with a bounded
number in flight keep requests short and the pipeline busy. An item that fails with 429/502/503/504 (the
cluster or a dependency is busy or restarting) is sent again with exponential backoff; any other item error is
final for that item. Documents the pipeline could not analyze are not errors here: they land in the dead-letter
index (with their image) and are counted, and `replay` re-drives the retryable ones.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import ConnectionTimeout, NotFoundError, TransportError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Doc:
    id: str
    source: dict[str, Any]
    op_type: str = "index"  # "create": never overwrite a document that is already there

    def action(self, index: str) -> bytes:
        head = {self.op_type: {"_index": index, "_id": self.id}}
        return (json.dumps(head) + "\n" + json.dumps(self.source) + "\n").encode()


@dataclass
class ItemResult:
    id: str
    index: str | None  # where the document went: the target, the dead-letter index, or None (rejected)
    status: int
    error: str | None = None


@dataclass
class BulkOutcome:
    sent: int = 0
    retries: int = 0
    by_index: dict[str, int] = field(default_factory=dict)
    rejected: list[ItemResult] = field(default_factory=list)  # final item errors (bad request, or retries ran out)
    results: list[ItemResult] = field(default_factory=list)

    def add(self, result: ItemResult) -> None:
        self.results.append(result)
        if result.error is None and result.index:
            self.by_index[result.index] = self.by_index.get(result.index, 0) + 1
        else:
            self.rejected.append(result)

    def count(self, *indices: str) -> int:
        """Documents that went to any of `indices` (an alias and the versions behind it, say)."""
        return sum(self.by_index.get(index, 0) for index in indices)


def resolve(client: OpenSearch, name: str) -> set[str]:
    """`name` and, when it is an alias, the indices behind it: bulk responses name the concrete index."""
    try:
        behind = client.indices.get_alias(name=name)
    except NotFoundError:
        return {name}
    return {name, *behind}


def chunks(docs: Iterable[Doc], max_docs: int, max_bytes: int) -> Iterator[list[Doc]]:
    """Groups documents into bulks of at most `max_docs` documents and about `max_bytes` (one oversized
    document still goes, alone)."""
    batch: list[Doc] = []
    size = 0
    for doc in docs:
        length = len(doc.action("x"))
        if batch and (len(batch) >= max_docs or size + length > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += length
    if batch:
        yield batch


def _item_result(item: dict[str, Any]) -> ItemResult:
    result = next(iter(item.values()))
    error = result.get("error")
    text = None if error is None else (error.get("reason") if isinstance(error, dict) else str(error))
    return ItemResult(str(result.get("_id")), result.get("_index"), int(result.get("status", 0)), text)


class BulkSender:
    """Sends one chunk, retrying its retryable items (and whole-request transport failures) with backoff."""

    def __init__(self, client: OpenSearch, index: str, max_retries: int = 8, initial_backoff_s: float = 2.0,
                 max_backoff_s: float = 60.0, request_timeout_s: float = 900.0, pipeline: str | None = None) -> None:
        self.client = client
        self.pipeline = pipeline  # e.g. "_none": documents that already carry their analysis skip the models
        self.index = index
        self.max_retries = max_retries
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.initial_backoff_s * 2 ** attempt)
        time.sleep(delay / 2 + random.uniform(0, delay / 2))

    def _post(self, docs: Sequence[Doc]) -> list[ItemResult] | None:
        """The bulk's item results, or None when the request itself failed in a way worth repeating."""
        body = b"".join(doc.action(self.index) for doc in docs)
        try:
            response = self.client.transport.perform_request(
                "POST", "/_bulk", body=body, headers={"content-type": "application/x-ndjson"},
                params={"request_timeout": self.request_timeout_s,
                        **({"pipeline": self.pipeline} if self.pipeline else {})})
        except (OSConnectionError, ConnectionTimeout):
            return None
        except TransportError as exc:
            if isinstance(exc.status_code, int) and exc.status_code in RETRYABLE_STATUS:
                return None
            raise
        return [_item_result(item) for item in response["items"]]

    def send(self, docs: Sequence[Doc]) -> tuple[list[ItemResult], int]:
        """Final results for every document of `docs`, and how many retries it took."""
        pending = {doc.id: doc for doc in docs}
        if not pending:
            return [], 0
        final: list[ItemResult] = []
        retries = 0
        for attempt in range(self.max_retries + 1):
            results = self._post(list(pending.values()))
            if results is None:
                again = list(pending.values())
            else:
                again = []
                for result in results:
                    if result.status in RETRYABLE_STATUS and attempt < self.max_retries:
                        again.append(pending[result.id])
                    else:
                        final.append(result)
            if not again:
                return final, retries
            pending = {doc.id: doc for doc in again}
            retries += len(again)
            self._backoff(attempt)
        final += [ItemResult(doc.id, None, 503, "the cluster stayed unavailable through every retry")
                  for doc in pending.values()]
        return final, retries


def bulk_index(client: OpenSearch, index: str, docs: Sequence[Doc], *, bulk_docs: int = 16,
               bulk_bytes: int = 8_000_000, in_flight: int = 2, label: str | None = None,
               sender: BulkSender | None = None) -> BulkOutcome:
    """Indexes `docs` with at most `in_flight` bulks of at most `bulk_docs` documents at a time, showing
    progress; every document ends in the outcome: indexed, dead-lettered, or rejected with its reason."""
    sender = sender or BulkSender(client, index)
    outcome = BulkOutcome(sent=len(docs))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress, ThreadPoolExecutor(in_flight) as pool:
        task = progress.add_task(label or f"indexing into {index}", total=len(docs))
        for results, retries in pool.map(sender.send, chunks(docs, bulk_docs, bulk_bytes)):
            for result in results:
                outcome.add(result)
            outcome.retries += retries
            progress.advance(task, len(results))
    return outcome
