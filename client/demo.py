"""`visual-search demo`: every README search mode against a live index, printed with what matched.

The generated samples are named by what they hold (`client.ingest.write_sample_images`), so each hit's file name
shows whether the search found what it was asked for: "a red circle" should list files holding a red-circle first.
"""

from __future__ import annotations

import json
from pathlib import Path

from opensearchpy import OpenSearch
from rich.console import Console

from client.queries import filtered_query, hybrid_query, image_query, object_query, text_query


def run_examples(client: OpenSearch, index: str, sample_image: Path, console: Console) -> None:
    cases = {
        "text → image": text_query("a red circle"),
        "image → image": image_query(sample_image.read_bytes()),
        "object-level": object_query("a blue star"),
        "filtered (class, confidence, date)": filtered_query("shapes", "circle", 0.5, "2020-01-01"),
        "hybrid (keywords + neural)": hybrid_query("a green triangle", "triangle"),
    }
    for title, body in cases.items():
        hits = client.search(index=index, body=body)["hits"]["hits"]
        shown = json.dumps(body)[:160] + ("…" if len(json.dumps(body)) > 160 else "")
        console.print(f"\n[bold]{title}[/bold]  {shown}", highlight=False)
        for hit in hits:
            line = f"  {hit['_score']:.4f}  {hit['_source'].get('filename', hit['_id'])}"
            inner = hit.get("inner_hits", {}).get("detected_objects", {}).get("hits", {}).get("hits", [])
            if inner:
                obj = inner[0]["_source"]
                line += f"  → {obj['class_name']} {obj['confidence']:.2f} at {obj['bbox']}"
            console.print(line, highlight=False)
