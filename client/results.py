"""Search results as people look at them: sent and refused the same way, and drawn the same way, by the viewer
(the page on :8300) and the CLI (`visual-search search`, its terminal lines and its HTML contact sheet).

A result keeps boxes in the original image's pixels with the image's width and height; whatever draws it scales
them onto the thumbnail (as percentages), so a thumbnail of any size lines up.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from client.queries import (
    HIDE_VECTORS,
    OBJECT_QUERY_SOURCE,
    OBJECTS,
    Filters,
    like_object_query,
    matched_object,
    one_per_picture,
    search_body,
    stored_object_vector,
)
from common.errors import VisualSearchError


class SearchFailed(VisualSearchError):
    """OpenSearch did not answer a search, or refused it. `status` 4xx: the query's fault (fix the query);
    anything else: the service's. The message carries OpenSearch's own reason and never a credential."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def bad_query(self) -> bool:
        return self.status is not None and 400 <= self.status < 500


def opensearch_reason(info: Any, fallback: str) -> str:
    """The most telling reason in an OpenSearch error body.

    A refused search says only "all shards failed" at the top; what was wrong (an unparseable date, an unknown
    field) is its root cause, sometimes with a deeper cause in the shard failure. Both are named.
    """
    if not isinstance(info, dict):
        return str(info or fallback)
    error = info.get("error")
    if not isinstance(error, dict):
        return str(error or fallback)

    def said(node: dict) -> str:
        return f"{node.get('type', 'error')}: {node.get('reason')}"

    roots = [r for r in error.get("root_cause") or [] if isinstance(r, dict)]
    first = roots[0] if roots else error
    shards = [f.get("reason") for f in error.get("failed_shards") or [] if isinstance(f, dict)]
    deepest: Any = next((r for r in shards if isinstance(r, dict)), first)
    while isinstance(deepest.get("caused_by"), dict):
        deepest = deepest["caused_by"]
    if said(deepest) == said(first):
        return said(first)
    return f"{said(first)} (caused by {said(deepest)})"


@contextmanager
def _asking(refused: Callable[[TransportError], str]) -> Iterator[None]:
    """OpenSearch's failures as SearchFailed: unreachable (no status), or refused with `refused(exc)` as the message
    and its status."""
    try:
        yield
    except OSConnectionError as exc:
        raise SearchFailed(f"OpenSearch is unreachable ({exc.__class__.__name__})") from exc
    except TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else None
        raise SearchFailed(refused(exc), status) from exc


def search(client: OpenSearch, index: str, body: dict) -> dict:
    """The search response, or SearchFailed with OpenSearch's reason."""
    with _asking(lambda exc: f"OpenSearch refused the search ({exc.status_code}): "
                             f"{opensearch_reason(exc.info, str(exc.error))}"):
        return dict(client.search(index=index, body=body))


def parse_object_ref(spec: str) -> tuple[str, int]:
    """`DOC_ID:N` (the id may itself hold colons) → (DOC_ID, N)."""
    doc_id, sep, n = spec.rpartition(":")
    if not sep or not doc_id or not n.isdigit():
        raise SearchFailed(f"not an object reference: {spec!r} (write DOC_ID:N, N the object's place from 0)", 400)
    return doc_id, int(n)


def like_object_body(client: OpenSearch, index: str, spec: str, k: int, filters: Filters | None = None,
                     offset: int = 0, candidates: int | None = None, source: Any = OBJECT_QUERY_SOURCE) -> dict:
    """The search for images holding objects like object N of a document, with that object's stored embedding
    (read from the document: no model call, no upload)."""
    doc_id, n = parse_object_ref(spec)
    with _asking(lambda exc: f"no document {doc_id!r} in {index} ({exc.status_code})"):
        document = client.get(index=index, id=doc_id, _source_includes=[f"{OBJECTS}.object_embedding"])
    try:
        vector = stored_object_vector(document, n)
    except IndexError as exc:
        raise SearchFailed(str(exc), 404) from exc
    return like_object_query(vector, k, exclude_id=doc_id, filters=filters, offset=offset, candidates=candidates,
                             source=source)


def request_body(client: OpenSearch, index: str, *, text: str | None = None, image: bytes | None = None,
                 objects: bool = False, like_object: str | None = None, all_copies: bool = False,
                 filters: Filters | None = None, k: int = 5, offset: int = 0, candidates: int | None = None,
                 source: Any = HIDE_VECTORS) -> dict:
    """The body of a search as the viewer and the CLI ask it: like a stored object (`DOC_ID:N`), else by text or
    image; one hit per duplicate group unless `all_copies`."""
    if like_object:
        body = like_object_body(client, index, like_object, k, filters, offset, candidates, source)
    else:
        body = search_body(text=text, image=image, objects=objects, filters=filters, k=k, offset=offset,
                           candidates=candidates, source=source)
    return body if all_copies else one_per_picture(body)


def view(hit: dict) -> dict:
    """One hit as it is drawn: picture, size, every detected object, which one matched (object-level), score."""
    source = hit.get("_source") or {}
    objects = [{"class_name": o.get("class_name"), "class_id": o.get("class_id"), "confidence": o.get("confidence"),
                "bbox": o.get("bbox")} for o in source.get(OBJECTS) or []]
    matched = matched_object(hit)
    return {"id": hit["_id"], "score": hit.get("_score"), "image_id": source.get("image_id"),
            "filename": source.get("filename"), "tags": source.get("tags") or [],
            "upload_date": source.get("upload_date"), "width": source.get("width"), "height": source.get("height"),
            "thumbnail": source.get("thumbnail"), "objects": objects,
            "matched": matched[0] if matched is not None else None}


def line(result: dict) -> str:
    """`score  id  [name]  → matched object` for a terminal."""
    text = f"{result['score']:.4f}  {result['id']}"
    name = result.get("filename") or result.get("image_id")
    if name and name != result["id"]:
        text += f"  ({name})"
    if result["matched"] is not None and result["matched"] < len(result["objects"]):
        obj = result["objects"][result["matched"]]
        box = obj["bbox"] or {}
        where = ", ".join(f"{box.get(k, 0):.0f}" for k in ("x1", "y1", "x2", "y2"))
        text += f"  → {obj['class_name']} {obj['confidence']:.2f} at [{where}]"
    else:
        text += f"  {len(result['objects'])} object(s)"
    return text


SHEET_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #1d2330; background: #f4f5f7; }
.results { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 16px; }
.result { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 10px; }
.frame { position: relative; margin: 0 auto; background: #e9ecf0; }
.frame img { display: block; width: 100%; height: 100%; }
.box { position: absolute; border: 2px solid #e0218a; }
.box span { position: absolute; left: -2px; bottom: 100%; background: #e0218a; color: #fff; font-size: 10px;
            padding: 0 3px; white-space: nowrap; }
.box.matched { border: 3px solid #ffe600; box-shadow: 0 0 0 2px #000; z-index: 2; }
.box.matched span { background: #ffe600; color: #000; font-weight: 600; }
.meta { margin-top: 8px; font-size: 12px; color: #4a5260; word-break: break-all; }
"""


def _frame_size(width: int, height: int, max_width: int = 240, max_height: int = 300) -> tuple[int, int]:
    scale = min(max_width / width, max_height / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _card(result: dict) -> str:
    width, height = result.get("width") or 0, result.get("height") or 0
    sized = width > 0 and height > 0
    w, h = _frame_size(width, height) if sized else (240, 180)
    parts = [f'<div class="result" data-id="{html.escape(result["id"])}">',
             f'<div class="frame" style="width:{w}px;height:{h}px">']
    if result.get("thumbnail"):
        picture = html.escape(result["thumbnail"])
        parts.append(f'<img alt="{html.escape(result["id"])}" src="data:image/jpeg;base64,{picture}">')
    for i, obj in enumerate(result["objects"] if sized else []):
        b = obj.get("bbox") or {}
        style = (f"left:{100 * b['x1'] / width:.3f}%;top:{100 * b['y1'] / height:.3f}%;"
                 f"width:{100 * (b['x2'] - b['x1']) / width:.3f}%;height:{100 * (b['y2'] - b['y1']) / height:.3f}%")
        matched = " matched" if i == result["matched"] else ""
        label = f"{obj['class_name']} {obj['confidence']:.2f}"
        parts.append(f'<div class="box{matched}" data-class="{html.escape(str(obj["class_name"]))}" '
                     f'data-confidence="{obj["confidence"]:.3f}" style="{style}"><span>{html.escape(label)}</span>'
                     "</div>")
    parts.append("</div>")
    meta = f"score {result['score']:.4f} · {result.get('filename') or result.get('image_id') or result['id']}"
    parts.append(f'<div class="meta">{html.escape(meta)}</div></div>')
    return "".join(parts)


def contact_sheet(results: list[dict], title: str) -> str:
    """One self-contained HTML page (pictures inline as data: URLs, no external file) of `results`."""
    cards = "\n".join(_card(result) for result in results) or "<p>no results</p>"
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{SHEET_CSS}</style></head>\n<body><h1>{html.escape(title)}</h1>\n"
            f"<div class=\"results\">\n{cards}\n</div></body></html>\n")
