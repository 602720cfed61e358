"""Stage `bytes`: index store bytes per image after a force-merge, and what shrinks it (bench/store.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, option, target
from bench.tables import Row, num, table, yes

OPTIONS = (option("--bytes-images", "documents per bytes-per-image index", type=int, default=10_000),)


def steps(args: argparse.Namespace) -> int:
    from bench import store

    return len(store.VARIANTS)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import store

    return store.run(env.ctx, env.args.bytes_images, env.tag, lambda label: env.progress(f"bytes: {label}"))


def targets(stored: dict[str, Any], results: Results) -> list[Target]:
    rows = {r["variant"]: r for r in stored["variants"]}
    base = rows["template"]
    return [target(f"store bytes per image after force-merge, {stored['images']} images (template as shipped)",
                   base["bytes_per_image"], 5000, False, f"10 M images: {base['projected_10m_gb']} GB (spec: ~5 "
                   f"KB/image); recall@10 {base['recall_at_10']}")]


def markdown(stored: dict[str, Any], results: Results) -> list[str]:
    lines = ["## Bytes per image (index store after a force-merge)", "",
             f"{stored['images']} generated documents in the images template ({stored['objects_per_image']} "
             f"objects per image, {stored['dimension']}-d vectors), one index per variant (bench/store.py says "
             "what each changes), force-merged to one segment; recall@10 of the global field vs brute force "
             "with the product's query.", ""]
    rows = [[r["variant"], r.get("codec", ""), yes(r.get("derived_source")), r["bytes_per_image"], r["x_template"],
             r["source_chars_per_image"], r["projected_10m_gb"], r["recall_at_10"], r["latency_p50_ms"],
             r["load_seconds"], r["merge_seconds"]]
            for r in stored["variants"]]
    lines += table(["variant", "codec", "derived source", "bytes/image", "× template", "_source chars sent",
                    "10 M images (GB)", "recall@10", "knn p50 ms", "load s", "merge s"], rows)
    return lines


def figures(s: dict[str, Any]) -> list[Row]:
    return [(f"store bytes per image, {s['images']} images, {v['variant']}"
             + (" (as shipped)" if v["variant"] == "template" else ""),
             f"{num(v['bytes_per_image'])} (recall@10 {num(v['recall_at_10'])})") for v in s["variants"]]


STAGE = Stage(name="bytes", title="bytes per image", run=run, steps=steps, options=OPTIONS, targets=targets,
              markdown=markdown, figures=figures)
