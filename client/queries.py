"""The README's search modes as query bodies: the one place the CLI, the viewer, the demo, the bench and the tests
build them, so what a page shows is exactly what the README tells people to send.

Each mode takes the same optional filters and paging. Called with neither, a builder returns the README's body
as printed there (the README examples are these functions' output).

Filters come in two kinds, and where each goes matters for k-NN:

* image-level queries: filters on the image (tags, upload date) and on its objects (class, minimum confidence, as
  a nested clause) go in the `neural` clause's `filter`, so the lucene engine filters while it searches
  (efficient filtering): a filtered query still returns `k` results, not the survivors of the unfiltered top `k`;
* object-level queries: class and confidence constrain the *matched* object (the one highlighted), and the nested
  `neural` clause's `filter` takes either kind efficiently, image fields (k-NN joins them to the parent) or
  object fields, but not both in one filter (measured on 2.19: a filter mixing them matches nothing, and a
  `neural` inside a `bool` inside the `nested` query loses the search pipeline's default model id). With both,
  the object filters stay efficient and the image filters apply to the images found, from more candidates.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from common.contract import DUPLICATE_GROUP_FIELD as DUPLICATE_GROUP
from common.contract import OBJECT_COUNTS_FIELD as OBJECT_COUNTS
from common.contract import PERCEPTUAL_HASH_FIELD as PERCEPTUAL_HASH

OBJECTS = "detected_objects"
HIDE_VECTORS = {"excludes": ["global_image_embedding", f"{OBJECTS}.object_embedding"]}
# what the object-level README query returns per image: which image (the matched object comes in inner_hits)
OBJECT_QUERY_SOURCE = ["image_id", "filename"]
# candidates an object-level query explores (objects, not images: several may belong to one image)
OBJECT_CANDIDATES = 50
# candidates an image-level query explores when filters are set (README: "ask for a larger k than you show")
FILTERED_CANDIDATES = 100


@cache
def configured_ef_search() -> int:
    """`index.hnsw_ef_search` from the config (read once per process)."""
    from common.config import load_config

    return load_config().index.hnsw_ef_search


def knn_options(k: int) -> dict[str, Any]:
    """What every vector clause carries: `k`, and how many candidates the HNSW search explores. The lucene engine
    ignores the index-level ef_search and explores only `k` without `method_parameters` (recall@10 0.2 on 10k
    vectors); `bench --only recall` measures recall and latency at each ef_search, the `product` row at this one."""
    return {"k": k, "method_parameters": {"ef_search": max(k, configured_ef_search())}}


@dataclass(frozen=True)
class Count:
    """How many objects of a class an image holds: at least `least`, at most `most` (None: no bound). An image
    without any object of the class has none of its count field, and counts as 0."""

    class_name: str
    least: int | None = None
    most: int | None = None

    @classmethod
    def parse(cls, text: str) -> Count:
        """`circle>=2`, `star=0`, `square<=1`, `cross>0`, `circle<3`: what --count and the README write."""
        match = _COUNT.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"not a count: {text!r} (write it like circle>=2, star=0, square<=1)")
        name, op, value = match["name"].strip(), match["op"], int(match["n"])
        bounds = {">=": (value, None), ">": (value + 1, None), "<=": (None, value), "<": (None, value - 1),
                  "=": (value, value), "==": (value, value)}[op]
        return cls(name, *bounds)

    def clauses(self) -> list[dict]:
        field = f"{OBJECT_COUNTS}.{self.class_name}"
        out: list[dict] = []
        if self.least is not None and self.least > 0:
            out.append({"range": {field: {"gte": self.least}}})
        if self.most is not None:  # "at most m" is "not at least m + 1": an absent count is 0
            out.append({"bool": {"must_not": [{"range": {field: {"gte": self.most + 1}}}]}})
        return out


_COUNT = re.compile(r"(?P<name>[^<>=]+?)\s*(?P<op>>=|<=|==|=|>|<)\s*(?P<n>\d+)")


@dataclass(frozen=True)
class Filters:
    """What a result must satisfy. Empty fields do not filter.

    `classes`: the image has an object of one of these classes (object-level: the matched object is one);
    `min_confidence`: ... with at least this confidence (together with `classes`: the same object satisfies both);
    `tags`: the image carries every one of these tags; `since` / `until`: upload date bounds, inclusive
    (anything OpenSearch's date field parses: `2026-01-01`, `now-7d`); `counts`: how many objects of a class the
    image holds (`object_counts`, e.g. at least two circles and no star).
    """

    classes: tuple[str, ...] = ()
    min_confidence: float | None = None
    tags: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    counts: tuple[Count, ...] = ()

    def object_clauses(self) -> list[dict]:
        """Clauses on one object's fields (to be evaluated in the nested context)."""
        clauses: list[dict] = []
        if len(self.classes) == 1:
            clauses.append({"term": {f"{OBJECTS}.class_name": self.classes[0]}})
        elif self.classes:
            clauses.append({"terms": {f"{OBJECTS}.class_name": list(self.classes)}})
        if self.min_confidence is not None:
            clauses.append({"range": {f"{OBJECTS}.confidence": {"gte": self.min_confidence}}})
        return clauses

    def image_clauses(self) -> list[dict]:
        """Clauses on the image's own fields."""
        clauses: list[dict] = []
        if self.since is not None or self.until is not None:
            bounds = {key: value for key, value in (("gte", self.since), ("lte", self.until)) if value is not None}
            clauses.append({"range": {"upload_date": bounds}})
        clauses += [{"term": {"tags": tag}} for tag in self.tags]
        clauses += [clause for count in self.counts for clause in count.clauses()]
        return clauses

    def for_images(self) -> dict | None:
        """One filter over images: object clauses wrapped in a nested query (one object must satisfy all)."""
        clauses = self.image_clauses()
        objects = self.object_clauses()
        if objects:
            inner = objects[0] if len(objects) == 1 else {"bool": {"filter": objects}}
            clauses.insert(0, {"nested": {"path": OBJECTS, "query": inner}})
        return {"bool": {"filter": clauses}} if clauses else None

    def __bool__(self) -> bool:
        return bool(self.object_clauses() or self.image_clauses())


NO_FILTERS = Filters()


def _image_level(vector_input: dict[str, str], k: int, filters: Filters | None, offset: int, candidates: int | None,
                 source: Any) -> dict:
    filters = filters or NO_FILTERS
    neural: dict[str, Any] = {**vector_input, **knn_options(_candidates(k, offset, candidates, FILTERED_CANDIDATES
                                                                           if filters else None))}
    image_filter = filters.for_images()
    if image_filter is not None:
        neural["filter"] = image_filter
    return _page({"size": k, "_source": source, "query": {"neural": {"global_image_embedding": neural}}}, offset)


def _object_level(vector_input: dict[str, Any], k: int, filters: Filters | None, offset: int,
                  candidates: int | None, source: Any, clause: str = "neural") -> dict:
    """`clause` "neural" (the search pipeline embeds `vector_input`'s text or image) or "knn" (a stored vector)."""
    filters = filters or NO_FILTERS
    image_clauses, object_clauses = filters.image_clauses(), filters.object_clauses()
    post_filtered = bool(image_clauses and object_clauses)
    neural: dict[str, Any] = {**vector_input, **knn_options(_candidates(
        k, offset, candidates, OBJECT_CANDIDATES * (4 if post_filtered else 1)))}
    efficient = object_clauses or image_clauses
    if efficient:
        neural["filter"] = {"bool": {"filter": efficient}}
    inner_hits = {"size": 1, "_source": {"excludes": [f"{OBJECTS}.object_embedding"]}}
    query: dict[str, Any] = {"nested": {"path": OBJECTS, "score_mode": "max",
                                        "query": {clause: {f"{OBJECTS}.object_embedding": neural}},
                                        "inner_hits": inner_hits}}
    if post_filtered:
        query = {"bool": {"must": [query], "filter": image_clauses}}
    return _page({"size": k, "_source": source, "query": query}, offset)


def _candidates(k: int, offset: int, candidates: int | None, floor: int | None) -> int:
    """The k-NN `k`: never fewer than the results up to the end of this page (or that page would be short)."""
    return max(k + offset, candidates or 0, floor or 0)


def _page(body: dict, offset: int) -> dict:
    if offset:
        body["from"] = offset
    return body


def _image_input(image: bytes) -> dict[str, str]:
    return {"query_image": base64.b64encode(image).decode()}


def text_query(text: str, k: int = 5, *, filters: Filters | None = None, offset: int = 0,
               candidates: int | None = None, source: Any = HIDE_VECTORS) -> dict:
    """Text → image: the images whose global embedding is nearest the text's."""
    return _image_level({"query_text": text}, k, filters, offset, candidates, source)


def image_query(image: bytes, k: int = 5, *, filters: Filters | None = None, offset: int = 0,
                candidates: int | None = None, source: Any = HIDE_VECTORS) -> dict:
    """Image → image: `image` is the query image's file bytes (sent base64; OpenSearch embeds it)."""
    return _image_level(_image_input(image), k, filters, offset, candidates, source)


def object_query(text: str, k: int = 5, *, filters: Filters | None = None, offset: int = 0,
                 candidates: int | None = None, source: Any = OBJECT_QUERY_SOURCE) -> dict:
    """Which images contain an object like `text`, and which object (box, class, confidence) matched."""
    return _object_level({"query_text": text}, k, filters, offset, candidates, source)


def object_image_query(image: bytes, k: int = 5, *, filters: Filters | None = None, offset: int = 0,
                       candidates: int | None = None, source: Any = OBJECT_QUERY_SOURCE) -> dict:
    """Which images contain an object like the query image (a crop of the thing sought, say), and which."""
    return _object_level(_image_input(image), k, filters, offset, candidates, source)


def like_object_query(vector: list[float], k: int = 5, *, exclude_id: str | None = None,
                      filters: Filters | None = None, offset: int = 0, candidates: int | None = None,
                      source: Any = OBJECT_QUERY_SOURCE) -> dict:
    """Images holding an object like a stored one: `vector` is that object's `object_embedding` (read from its
    document, no model call), `exclude_id` the document it came from (which would otherwise come first)."""
    body = _object_level({"vector": vector}, k, filters, offset, candidates, source, clause="knn")
    if exclude_id is not None:
        body["query"] = {"bool": {"must": [body["query"]], "must_not": [{"ids": {"values": [exclude_id]}}]}}
    return body


def stored_object_vector(document: dict, n: int) -> list[float]:
    """Object `n`'s `object_embedding` in a document's `_source` (as GET returns it); IndexError when there is none."""
    objects = (document.get("_source") or {}).get(OBJECTS) or []
    if not 0 <= n < len(objects) or not objects[n].get("object_embedding"):
        raise IndexError(f"document {document.get('_id')} has no object {n} (it has {len(objects)})")
    return [float(v) for v in objects[n]["object_embedding"]]


def one_per_picture(body: dict) -> dict:
    """The body with each duplicate group shown once (its best hit): the viewer's default, README "one per
    picture"."""
    return {**body, "collapse": {"field": DUPLICATE_GROUP}}


# Per-class facets of a search's results: how many of the matched images hold each class (nested terms, counted
# back per image with reverse_nested). Over what the query matched: for a k-NN query, its k candidates.
CLASS_FACETS = {"classes": {"nested": {"path": OBJECTS}, "aggs": {"names": {
    "terms": {"field": f"{OBJECTS}.class_name", "size": 100}, "aggs": {"images": {"reverse_nested": {}}}}}}}


def with_class_facets(body: dict) -> dict:
    return {**body, "aggs": CLASS_FACETS}


def class_facets(response: dict) -> dict[str, int]:
    """class name → images among the results holding at least one object of it, most first."""
    buckets = response.get("aggregations", {}).get("classes", {}).get("names", {}).get("buckets", [])
    return {b["key"]: int(b["images"]["doc_count"]) for b in buckets}


def duplicate_groups_query(limit: int = 100, members: int = 10) -> dict:
    """The `limit` largest duplicate groups with more than one member, each with its first `members` members
    (oldest upload first); `sum_other_doc_count` in the answer tells whether more groups exist."""
    return {"size": 0, "aggs": {"groups": {
        "terms": {"field": DUPLICATE_GROUP, "min_doc_count": 2, "size": limit},
        "aggs": {"members": {"top_hits": {"size": members, "_source": ["image_id", "filename", "width", "height"],
                                          "sort": [{"upload_date": {"order": "asc", "unmapped_type": "date"}}]}}}}}}


def filtered_query(text: str, class_name: str, min_confidence: float, since: str, k: int = 5) -> dict:
    """The README's filtered example: text → image, among images with a `class_name` object of at least
    `min_confidence` uploaded since `since`."""
    return text_query(text, k, filters=Filters(classes=(class_name,), min_confidence=min_confidence, since=since))


def hybrid_query(text: str, keywords: str, k: int = 5, *, filters: Filters | None = None) -> dict:
    """Lexical (filename, tags) and neural scores combined by the search pipeline's normalization."""
    lexical: dict[str, Any] = {"multi_match": {"query": keywords, "fields": ["filename", "tags"]}}
    neural: dict[str, Any] = {"query_text": text, **knn_options(50)}
    image_filter = (filters or NO_FILTERS).for_images()
    if image_filter is not None:  # each sub-query filtered alike, so neither brings in what the other excludes
        lexical = {"bool": {"must": [lexical], "filter": [image_filter]}}
        neural["filter"] = image_filter
    return {"size": k, "_source": HIDE_VECTORS, "query": {"hybrid": {"queries": [
        lexical, {"neural": {"global_image_embedding": neural}}]}}}


def search_body(*, text: str | None = None, image: bytes | None = None, objects: bool = False,
                filters: Filters | None = None, k: int = 10, offset: int = 0, candidates: int | None = None,
                source: Any = HIDE_VECTORS) -> dict:
    """The body for what a search form asks: text or a query image, image- or object-level, filtered, paged.

    A query image wins over text (an uploaded image is the more specific request). `source` defaults to
    everything but the vectors (the thumbnail and every detected object are what a page draws).
    """
    if image is not None:
        builder_image = object_image_query if objects else image_query
        return builder_image(image, k, filters=filters, offset=offset, candidates=candidates, source=source)
    if text is None or not text.strip():
        raise ValueError("give a text or a query image")
    builder_text = object_query if objects else text_query
    return builder_text(text, k, filters=filters, offset=offset, candidates=candidates, source=source)


def matched_object(hit: dict) -> tuple[int, dict] | None:
    """(offset in `detected_objects`, the object) that an object-level query matched in this hit, else None."""
    inner = hit.get("inner_hits", {}).get(OBJECTS, {}).get("hits", {}).get("hits", [])
    if not inner:
        return None
    return int(inner[0]["_nested"]["offset"]), inner[0].get("_source", {})


def copies_query(embedding: list[float], k: int) -> dict:
    """The `k` documents whose global embedding is nearest `embedding`, with their duplicate group and perceptual
    hash: where the adapter looks for earlier copies of an image it analyzes. Both come from doc values, not from
    `_source` (which derived source would first rebuild with every vector); no filter (an `exists` filter costs a
    pass over the index per query; the rare document without a group is skipped by the reader). The HNSW search
    explores only `k` candidates: a copy embeds next to its original, it needs no wider search."""
    return {"size": k, "_source": False, "docvalue_fields": [DUPLICATE_GROUP, PERCEPTUAL_HASH],
            "query": {"knn": {"global_image_embedding": {"vector": embedding, "k": k,
                                                         "method_parameters": {"ef_search": k}}}}}
