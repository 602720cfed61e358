"""Re-drives dead letters through the ingest pipeline, the way a queue's dead-letter redrive does.

A dead letter holds the document as it was sent (its image included) plus why it failed. Replay sends the
document again to the index it was meant for, under its original id, and removes the dead letter only once
the document is indexed there. A document that was re-sent and indexed since is not overwritten by its older
copy (it counts as indexed). A document that fails again is re-routed by the pipeline onto its own dead letter
(same id, the reason updated), so nothing is duplicated: replay is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch, helpers
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from client.bulk import BulkSender, Doc, resolve
from common import contract


@dataclass
class ReplayOutcome:
    considered: int = 0
    indexed: int = 0
    failed_again: int = 0
    not_replayable: list[str] = field(default_factory=list)  # dead letters without an image or URL to send
    errors: list[str] = field(default_factory=list)  # replays rejected outright (kept in the dead letter)

    def summary(self) -> str:
        return (f"{self.considered} dead letter(s) considered: {self.indexed} indexed and removed, "
                f"{self.failed_again} failed again (kept, reason updated), {len(self.not_replayable)} without "
                f"an image to replay, {len(self.errors)} rejected")


@dataclass(frozen=True)
class DeadLetter:
    id: str
    seq_no: int
    primary_term: int
    target_index: str
    doc: Doc


def dead_letter_query(include_permanent: bool, ids: list[str] | None = None) -> dict[str, Any]:
    """Dead letters worth replaying: retryable ones unless `include_permanent`, optionally only `ids`."""
    filters: list[dict[str, Any]] = []
    if not include_permanent:
        filters.append({"term": {f"{contract.FAILURE_FIELD}.{contract.RETRYABLE_FIELD}": True}})
    if ids is not None:
        filters.append({"ids": {"values": ids}})
    return {"query": {"bool": {"filter": filters}}} if filters else {"query": {"match_all": {}}}


def original_document(source: dict[str, Any]) -> dict[str, Any]:
    """The document as its sender wrote it: the dead letter minus what the failure route added."""
    return {k: v for k, v in source.items() if k not in (contract.FAILURE_FIELD, contract.FAILED_AT_FIELD)}


def as_dead_letter(hit: dict[str, Any], default_index: str) -> DeadLetter | None:
    source = hit["_source"]
    document = original_document(source)
    if not (document.get(contract.IMAGE_FIELD) or document.get(contract.IMAGE_URL_FIELD)):
        return None
    failure = source.get(contract.FAILURE_FIELD) or {}
    target = failure.get("index") or default_index
    doc_id = failure.get("doc_id") or hit["_id"]
    return DeadLetter(hit["_id"], hit["_seq_no"], hit["_primary_term"], target,
                      Doc(doc_id, document))


def _scan(client: OpenSearch, dead_letter_index: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # small pages: a dead letter may hold an image of many megabytes
    yield from helpers.scan(client, index=dead_letter_index, query=query, size=20, seq_no_primary_term=True,
                            scroll="10m", request_timeout=120)


def replay(client: OpenSearch, index: str, dead_letter_index: str, *, include_permanent: bool = False,
           ids: list[str] | None = None, bulk_docs: int = 16, bulk_bytes: int = 8_000_000) -> ReplayOutcome:
    """Replays the selected dead letters into their target index as they are read (a dead letter may hold a
    20 MB image: only one bulk's worth per target is ever in memory); prints a progress bar."""
    outcome = ReplayOutcome()
    query = dead_letter_query(include_permanent, ids)
    client.indices.refresh(index=dead_letter_index)
    outcome.considered = client.count(index=dead_letter_index, body=query)["count"]
    pending: dict[str, list[DeadLetter]] = {}
    pending_bytes: dict[str, int] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(f"replaying {dead_letter_index}", total=outcome.considered)

        def flush(target: str) -> None:
            batch = pending.pop(target, [])
            pending_bytes.pop(target, None)
            if batch:
                _replay_batch(client, target, dead_letter_index, batch, outcome)
                progress.advance(task, len(batch))

        for hit in _scan(client, dead_letter_index, query):
            letter = as_dead_letter(hit, index)
            if letter is None:
                outcome.not_replayable.append(hit["_id"])
                progress.advance(task)
                continue
            target = letter.target_index
            pending.setdefault(target, []).append(letter)
            pending_bytes[target] = pending_bytes.get(target, 0) + len(letter.doc.action(target))
            if len(pending[target]) >= bulk_docs or pending_bytes[target] >= bulk_bytes:
                flush(target)
        for target in list(pending):
            flush(target)
    return outcome


def _replay_batch(client: OpenSearch, target: str, dead_letter_index: str, batch: list[DeadLetter],
                  outcome: ReplayOutcome) -> None:
    """Sends one bulk of dead letters to `target` and removes those that are indexed there now."""
    by_doc = {letter.doc.id: letter for letter in batch}
    landed = resolve(client, target)  # the alias and the version behind it, after an index replacement
    present = _already_indexed(client, target, list(by_doc))
    done = [by_doc[doc_id] for doc_id in present]
    results, _ = BulkSender(client, target).send([letter.doc for letter in batch if letter.doc.id not in present])
    for result in results:
        if result.index in landed and result.error is None:
            done.append(by_doc[result.id])
        elif result.index == dead_letter_index:
            outcome.failed_again += 1
        else:
            outcome.errors.append(f"{result.id}: {result.status} {result.error}")
    outcome.indexed += _remove(client, dead_letter_index, done)


def _already_indexed(client: OpenSearch, index: str, ids: list[str]) -> set[str]:
    """Ids already in the target index: re-sent and indexed since they failed."""
    found = client.mget(index=index, body={"ids": ids}, _source=False, request_timeout=60)["docs"]
    return {doc["_id"] for doc in found if doc.get("found")}


def _remove(client: OpenSearch, dead_letter_index: str, letters: list[DeadLetter]) -> int:
    """Deletes dead letters that were replayed, each only if it is still the version that was read (a new
    failure of the same document written meanwhile is kept)."""
    if not letters:
        return 0
    body = [{"delete": {"_index": dead_letter_index, "_id": letter.id, "if_seq_no": letter.seq_no,
                        "if_primary_term": letter.primary_term}} for letter in letters]
    response = client.bulk(body=body, refresh="wait_for", request_timeout=120)
    return sum(1 for item in response["items"] if item["delete"].get("status") == 200)
