"""Results as JSON (everything) and a markdown table (the figures people read), under bench/results/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.relevance import COPY_TARGET, HYBRID_TARGET, OBJECT_TARGET, TEXT_TARGET

RESULTS = Path(__file__).resolve().parent / "results"


def _rate(mix: dict[str, Any]) -> str:
    """A mix's queries/s: the median round, and the range over rounds when there were several."""
    rates = mix.get("rounds_queries_per_s", [])
    return f"{mix['queries_per_s']} ({min(rates)}–{max(rates)})" if len(rates) > 1 else str(mix["queries_per_s"])


def _yes(flag: bool | None) -> str:
    return "" if flag is None else ("yes" if flag else "no")


def _stored_name(variant: dict[str, Any]) -> str:
    """How a cache-bench index keeps its hits: codec, and the global vector derived or in `_source`."""
    derived = "derived source" if variant.get("derived_source") else "vectors in _source"
    return f"{variant.get('codec')} codec, {derived}"


def _s(summary: dict[str, Any], key: str = "p50") -> str:
    return "—" if not summary or not summary.get("n") else f"{summary[key]}"


def _spread(summary: dict[str, Any]) -> str:
    if not summary or not summary.get("n"):
        return "—"
    return f"{summary['p50']} ({summary['min']}–{summary['max']})"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: name, measured value, threshold, pass/fail (None when the stage did not run)."""
    out: list[dict[str, Any]] = []

    def add(name: str, measured: float | None, threshold: float, higher_is_better: bool, note: str = "") -> None:
        ok = None if measured is None else (measured >= threshold if higher_is_better else measured <= threshold)
        out.append({"target": name, "measured": measured, "threshold": threshold,
                    "pass": ok, "note": note})

    ingest = results.get("ingest")
    if ingest:
        add("OpenSearch ingest ≥ 0.85 × direct Triton (peak vs peak)",
            ingest["opensearch_peak_x_triton_peak"]["p50"], 0.85, True,
            f"per round {_spread(ingest['opensearch_peak_x_triton_peak'])}")
        add("Triton ingest ≥ 2 × naive PyTorch loop (Triton peak)", ingest["triton_peak_x_naive"]["p50"], 2.0, True,
            f"per round {_spread(ingest['triton_peak_x_naive'])}; at concurrency 1: "
            f"{ingest['triton_c1_x_naive']['p50']}×")
        if "triton_alt_peak_x_triton_peak" in ingest:
            alt = ingest["triton_alt_peak_x_triton_peak"]
            out.append({"target": "(comparison) --compare-triton server peak ÷ served Triton peak", "measured":
                        alt["p50"], "threshold": None, "pass": None, "note": f"per round {_spread(alt)}"})
    query = results.get("query")
    if query:
        for scope in ("global", "nested"):
            g = query["gaps"][scope]
            add(f"{scope}: neural − (embed + knn) ≤ 5 ms at p50", g["gap_p50_ms"], 5.0, False,
                f"paired per-query median {g['gap_paired_median_ms']} ms")
    for run in results.get("recall", []):
        product = run["modes"]["product"]
        add(f"recall@10 ≥ 0.95, {run['vectors']} {run.get('kind', 'random')} vectors, the product's query "
            f"({run['product_query']})", product["recall_at_10"], 0.95, True,
            f"latency p50 {_s(product['latency_ms'])} ms, p95 {_s(product['latency_ms'], 'p95')} ms")
    cached = results.get("cache")
    if cached:
        shipped, others = cached["variants"][0], cached["variants"][1:]
        add("repeated text query through OpenSearch, p50 ms (query cache)", shipped["repeated_ms"]["p50"], 12.0, False,
            f"cold p50 {shipped['cold_ms']['p50']} ms; no hits read {shipped['repeated_no_hits_ms']['p50']} ms; "
            + "; ".join(f"{_stored_name(o)} {o['repeated_ms']['p50']} ms" for o in others)
            + f"; {cached['documents']} documents, {_stored_name(shipped)}")
        add("100-query mix, 80 % repeats, concurrency 8: queries/s (median round)", shipped["mix"]["queries_per_s"],
            200.0, True,
            f"rounds {_rate(shipped['mix'])} q/s; no hits read {shipped['mix_no_hits']['queries_per_s']} q/s; "
            + "; ".join(f"{_stored_name(o)} {o['mix']['queries_per_s']} q/s" for o in others))
    stored = results.get("bytes")
    if stored:
        rows = {r["variant"]: r for r in stored["variants"]}
        base = rows["template"]
        add(f"store bytes per image after force-merge, {stored['images']} images (template as shipped)",
            base["bytes_per_image"], 5000, False, f"10 M images: {base['projected_10m_gb']} GB (spec: ~5 KB/image); "
            f"recall@10 {base['recall_at_10']}")
    q = results.get("int8")
    if q:
        m = q["model_speedups"]
        add("int8 ingest speedup: fp32 ÷ int8 model ms per image (detector + image + crops) ≥ 1.8×", q["speedup"],
            1.8, True, f"detector {m['detector']}×, image encoder {m['image_encoder']}×, crops {m['crops']}×; "
            f"text query {m['text']}×")
    rel = results.get("relevance")
    if rel:
        n = f"{rel['scenes']} held-out scenes"
        add(f"text → image precision@10, \"a {{colour}} {{shape}}\" ({n})", rel["text"]["mean"], TEXT_TARGET, True,
            f"{rel['text']['queries']} queries")
        add(f"object query: matched object of the queried colour and shape ({n})", rel["objects_query"]["rate"],
            OBJECT_TARGET, True, f"{rel['objects_query']['hits']} hits")
        add(f"hybrid + class filter precision@10 ({n})", rel["hybrid"]["mean"], HYBRID_TARGET, True,
            f"hits without the class: {rel['hybrid']['hits_without_class']}")
        add(f"image → image: a smaller recompressed copy finds its original first ({n})", rel["image"]["rate"],
            COPY_TARGET, True, f"{rel['image']['copies']} copies")
    ceiling = results.get("ceiling")
    if ceiling:
        from bench.ceiling import TARGET_RATIO

        add(f"ingest ceiling: pipeline ÷ raw write ≥ {TARGET_RATIO}, 64×64 JPEGs, free networks", ceiling["ratio"],
            TARGET_RATIO, True, f"{ceiling['summary']['pipeline_images_per_s']} vs "
            f"{ceiling['summary']['raw_bulk_images_per_s']} images/s; lost {ceiling['summary']['lost']}")
    bulk = results.get("bulk")
    if bulk:
        add("one _bulk of all images ≥ 0.9 × streaming images/s", bulk["one_bulk_x_streaming"], 0.9, True,
            f"{bulk['images']} images")
        add("one _bulk: documents lost (after replay)", bulk["one_bulk_after_replay"]["lost"]
            + bulk["one_bulk_after_replay"]["dead_lettered"], 0, False, "lost + still dead-lettered")
    return out


def markdown(results: dict[str, Any]) -> str:
    m, sv, md = results["machine"], results["servers"], results["models"]
    lines = [f"# Benchmark {results['timestamp']} ({results['mode']})", "",
             f"{m['cpu_model']}, {m['logical_cores']} logical cores, {m['memory_gb']} GiB; load average at start "
             f"{m['load_average']}, at end {results.get('load_average_end')} (shared machine: expect noise). "
             f"OpenSearch {sv['opensearch']} (Lucene {sv['lucene']}), Triton {sv['triton']} ({sv['profile']} "
             f"profile). CLIP {md['clip']['variant']} ({md['clip']['weights']}), detector {md['yolo']['name']} "
             f"({md['yolo']['weights']}).", ""]

    lines += ["## Targets", ""]
    rows = []
    for t in results["targets"]:
        verdict = {True: "**pass**", False: "**FAIL**", None: "—"}[t["pass"]]
        threshold = "—" if t["threshold"] is None else t["threshold"]
        rows.append([t["target"], t["measured"], threshold, verdict, t["note"]])
    lines += _table(["target", "measured", "threshold", "result", "note"], rows)

    ingest = results.get("ingest")
    if ingest:
        im = results["images"]
        lines += ["## Ingestion throughput", "",
                  f"{im['count']} JPEG images ({', '.join(im['sizes'])}; mean {im['mean_jpeg_kb']} KiB), "
                  f"{ingest['rounds']} rounds; images/s as median (min–max) over rounds; ratios are computed within "
                  f"each round. OpenSearch: parallel `_bulk` streams of {ingest['bulk_size']} documents (the "
                  "documents of one bulk are analyzed concurrently). Naive: one process, one image at a time, "
                  "then one `_bulk` of the vectors.", ""]
        rows = []
        for row in ingest["rows"]:
            rows.append([row["path"], row["concurrency"], _spread(row["images_per_s"]),
                         _spread(row.get("x_triton_same_concurrency", {})), _spread(row.get("x_naive", {})),
                         row["objects_per_image"] if row["path"] != "opensearch" else "—", row["errors"]])
        lines += _table(["path", "concurrency", "images/s", "× Triton (same conc.)", "× naive", "objects/image",
                         "errors"], rows)
        direct = [r for r in ingest["rows"] if r["path"] == "triton"]
        if direct and all(r["objects_per_image"] == 0 for r in direct):
            lines += ["**Note:** the served detector found no object in these images, so the per-object path "
                      "(box_embedding crops in Triton, one eager CLIP call per crop in the naive loop) did not run: "
                      "these figures cover detection + the global embedding only.", ""]
        n = ingest.get("naive_pipeline", {})
        if n:
            lines += [f"Naive loop per image: decode {n['decode_ms_per_image']} ms, detect {n['detect_ms_per_image']}"
                      f" ms, global embedding {n['embed_image_ms_per_image']} ms, object crops "
                      f"{n['embed_crops_ms_per_image']} ms ({n['crops']} crops in {n['images']} images; "
                      f"torch threads {n['torch_threads']}).", ""]
        rows = []
        for path, b in ingest.get("breakdown", {}).items():
            for model, s in b["triton_models"].items():
                rows.append([path, f"triton:{model}", s["requests"], s["mean_batch"], s["total_ms"], s["queue_ms"],
                             s["compute_infer_ms"]])
            for endpoint, s in b["adapter_endpoints"].items():
                rows.append([path, f"adapter:{endpoint}", s["requests"], "—", s["mean_ms"], "—", "—"])
        if rows:
            lines += ["Server-side time per request during those passes (Triton statistics, adapter histogram):", ""]
            lines += _table(["path", "stage", "requests", "mean batch", "ms/request", "queue ms", "compute ms"], rows)

    query = results.get("query")
    if query:
        lines += ["## Query latency", "",
                  f"{query['queries_per_kind']} queries per kind, interleaved; client-side ms; k = {query['k']}.", ""]
        took = query["server_took_ms"]
        rows = [[name, _s(s), _s(s, "p95"), _s(s, "p99"), _s(took.get(name, {}))]
                for name, s in query["latency_ms"].items()]
        lines += _table(["call", "p50", "p95", "p99", "server took p50"], rows)
        rows = [[scope, g["neural_p50_ms"], g["embed_p50_ms"], g["knn_p50_ms"], g["gap_p50_ms"],
                 g["gap_paired_median_ms"], g["gap_vs_ml_predict_p50_ms"]] for scope, g in query["gaps"].items()]
        lines += _table(["scope", "neural p50", "adapter embed p50", "knn p50", "gap p50", "gap (paired median)",
                         "gap vs ML predict"], rows)

    if results.get("recall"):
        lines += ["## Vector search: recall@10 vs exact", ""]
        rows = []
        for run in results["recall"]:
            for mode, r in run["modes"].items():
                rows.append([run["vectors"], run.get("kind", "random"), run["dimension"], mode, r["recall_at_10"],
                             r["recall_min"], _s(r["latency_ms"]), _s(r["latency_ms"], "p95"), _s(r["took_ms"]),
                             run["segments"], run["load_docs_per_s"], run["load_seconds"]])
        method = results["recall"][0]["method"]
        merged = "force-merged to one segment" if results["args"].get("force_merge") else "as loaded"
        lines.append(f"HNSW {method.get('engine')} {method.get('space_type')} {method.get('parameters')}, index "
                     f"{merged}; exact = numpy brute force; vectors: see bench/recall.py. `product` is what the "
                     "product's queries send (client.queries.knn_options: `k` and `method_parameters.ef_search`); "
                     "`k_only` sends `k` alone; `ef_N` adds `method_parameters.ef_search: N`. Latency: client-side ms "
                     "of a `knn` query for 10 hits; load: bulk with refresh off, then one refresh.")
        lines.append("")
        lines += _table(["vectors", "kind", "dim", "query", "recall@10", "min", "p50 ms", "p95 ms", "took p50",
                         "segments", "load docs/s", "load s"], rows)

    cached = results.get("cache")
    if cached:
        c = cached["cache"]
        lines += ["## Query cache (repeated queries through OpenSearch)", "",
                  f"{cached['documents']} generated documents (bench/cache.py) in the images template as shipped and "
                  f"with the other stored-fields codec or derived source; {cached['hits']} hits per query, their "
                  "`_source` without vectors, or `size: 0` (embedding and k-NN only, no hit read). Cold = texts "
                  "never sent before (cache misses); repeated = one text sent again; mix: "
                  f"{round(cached['repeat_share'] * 100)} % repeats; each index warmed first by "
                  f"{cached.get('warmed', 0)} untimed queries; each mix run "
                  f"{len(cached['variants'][0]['mix'].get('rounds_queries_per_s', [0]))} times (median, min–max). "
                  f"Cache after the stage: {c.get('entries')} entries, "
                  f"{round((c.get('bytes') or 0) / 1024, 1)} KiB, {c.get('hits')} hits, {c.get('misses')} misses.", ""]
        rows, concurrency = [], cached["variants"][0]["mix"]["concurrency"]
        for v in cached["variants"]:
            m, bare = v["mix"], v["mix_no_hits"]
            rows.append([v["variant"], v.get("codec", ""), _yes(v.get("derived_source")), _s(v["cold_ms"]),
                         _s(v["repeated_ms"]), _s(v["repeated_ms"], "p95"), _s(v["repeated_no_hits_ms"]),
                         _rate(m), _s(m["latency_ms"]), _rate(bare), m.get("client_cpu_cores", "")])
        lines += _table(["index", "codec", "derived source", "cold p50 ms", "repeated p50 ms", "repeated p95 ms",
                         "repeated, no hits read p50", f"mix q/s (concurrency {concurrency})", "mix p50 ms",
                         "mix q/s, no hits read", "bench client cores"], rows)
    stored = results.get("bytes")
    if stored:
        lines += ["## Bytes per image (index store after a force-merge)", "",
                  f"{stored['images']} generated documents in the images template ({stored['objects_per_image']} "
                  f"objects per image, {stored['dimension']}-d vectors), one index per variant (bench/store.py says "
                  "what each changes), force-merged to one segment; recall@10 of the global field vs brute force "
                  "with the product's query.", ""]
        rows = [[r["variant"], r.get("codec", ""), _yes(r.get("derived_source")), r["bytes_per_image"], r["x_template"],
                 r["source_chars_per_image"], r["projected_10m_gb"], r["recall_at_10"], r["latency_p50_ms"],
                 r["load_seconds"], r["merge_seconds"]]
                for r in stored["variants"]]
        lines += _table(["variant", "codec", "derived source", "bytes/image", "× template", "_source chars sent",
                         "10 M images (GB)", "recall@10", "knn p50 ms", "load s", "merge s"], rows)
    q = results.get("int8")
    if q:
        lines += ["## int8 vs fp32 on the CPU (ONNX Runtime, the models alone)", "",
                  f"{q['images']} bench JPEGs, {q['rounds']} rounds alternating the precisions; preprocessing shared "
                  "and not timed; each precision detects its own objects and embeds their crops. ms p50 over images "
                  "(text: over queries); ms/image: median over rounds (min–max). Quantization: detector "
                  f"{q['methods']['yolo']['model']}; image encoder {q['methods']['clip']['image']}; text encoder "
                  f"{q['methods']['clip']['text']}.", ""]
        rows = []
        for p in ("fp32", "int8"):
            t, size = q["per_model_ms"][p], q["sizes_mb"][p]
            rows.append([p, _spread(q["ms_per_image"][p]), _s(t["detector"]), _s(t["image_encoder"]), _s(t["crops"]),
                         q["objects_per_image"][p], _s(t["text"]),
                         f"{size['detector']} / {size['image']} / {size['text']}"])
        m = q["model_speedups"]
        rows.append(["fp32 ÷ int8", f"**{q['speedup']}×**", f"{m['detector']}×", f"{m['image_encoder']}×",
                     f"{m['crops']}×", "", f"{m['text']}×", ""])
        lines += _table(["precision", "ms/image", "detector", "image encoder", "crops", "objects/image", "text query",
                         "MB detector / image / text"], rows)
    bulk = results.get("bulk")
    if bulk:
        lines += ["## One `_bulk` of every image in one request, beside streaming", "",
                  f"{bulk['images']} generated JPEGs (mean {bulk['mean_jpeg_kb']} KiB). Streaming: the project's "
                  "client (bulks of 16, 2 in flight, retries of 429/503 items). One bulk: a single request, then "
                  "`replay` of its retryable dead letters (the README's client step).", ""]
        rows = []
        for name in ("streaming", "one_bulk", "one_bulk_after_replay"):
            r = bulk[name]
            rows.append([name.replace("_", " "), r.get("seconds", r.get("replay_seconds", "—")),
                         r.get("images_per_s", "—"), r["sent"], r["indexed"], r["dead_lettered"],
                         r["dead_lettered_with_image"], r["lost"]])
        lines += _table(["pass", "seconds", "images/s", "sent", "indexed", "dead-lettered", "… with image", "lost"],
                        rows)
        lines += [f"One bulk ÷ streaming (images/s): {bulk['one_bulk_x_streaming']}×.", ""]

    thumbs = results.get("thumbnails")
    if thumbs:
        chars, disk = thumbs["base64_chars_per_document"], thumbs["store_bytes_per_document"]
        lines += ["## Thumbnails (what the results page's picture adds to each document)", "",
                  f"{thumbs['images']} bench JPEGs (mean {round(thumbs['source_jpeg_bytes']['mean'] / 1024, 1)} "
                  f"KiB); thumbnail: JPEG of at most {thumbs['max_side']} px a side, quality {thumbs['quality']}, "
                  "base64 in `_source` (stored, not indexed). On disk: the same documents with and without it, "
                  "each index force-merged to one segment.", ""]
        lines += _table(["figure", "p50", "mean", "max"], [
            ["base64 bytes per document (sent, in `_source`)", chars["p50"], chars["mean"], chars["max"]],
            ["JPEG bytes", thumbs["jpeg_bytes"]["p50"], thumbs["jpeg_bytes"]["mean"], thumbs["jpeg_bytes"]["max"]],
            ["adapter ms per thumbnail", _s(thumbs["ms_per_thumbnail"]), thumbs["ms_per_thumbnail"]["mean"],
             thumbs["ms_per_thumbnail"]["max"]],
            ["on-disk bytes per document", "—", disk, "—"]])
        lines += [f"The thumbnail is {round(100 * thumbs['share_of_source_image'], 1)} % of the source image's "
                  "size.", ""]

    memory = results.get("memory")
    if memory:
        lines += ["## Memory (MiB)", ""]
        idle, load = memory.get("idle", {}), memory.get("under_load", {})
        rows = [[name, _s(idle.get(name, {})), _s(load.get(name, {})), _s(load.get(name, {}), "max")]
                for name in sorted(load)]
        lines += _table(["figure", "before load", "under load (median)", "under load (max)"], rows)
    rel = results.get("relevance")
    if rel:
        lines += ["## Relevance through OpenSearch (held-out generated scenes, bench/relevance.py)", "",
                  f"{rel['scenes']} scenes holding {rel['objects']} objects indexed through the pipeline in "
                  f"{rel['index_seconds']} s ({rel['indexed']} indexed); queries restricted to them by tag.", ""]
        rows = [[name, round(r.get("mean", r.get("rate", 0.0)), 3), r.get("queries", r.get("copies", "")),
                 "; ".join(f"{q} {v:.2f}" for q, v in r.get("worst", []))]
                for name, r in (("text → image precision@10", rel["text"]),
                                ("object query: matched object right", rel["objects_query"]),
                                ("hybrid + class filter precision@10", rel["hybrid"]),
                                ("image → image: copy first", rel["image"]))]
        lines += _table(["measure", "value", "queries", "worst queries"], rows)
    clusters = results.get("cluster")
    if clusters:
        secured = "secured" if clusters["security"] else "unsecured"
        lines += ["## One OpenSearch node beside several (bench/cluster.py)", "",
                  f"Each cluster started for the stage on this machine ({secured}), bootstrapped, then sent the "
                  "same generated JPEGs through the streaming client (bulks of 16, 2 in flight); the models are the "
                  "stack's one Triton on the same cores.", ""]
        rows = [[r["nodes"], f"{r['shards']} / {r['replicas']}", f"{r['start_to_green_s']} ({r['start_x_first']}×)",
                 ", ".join(str(m) for m in r["rss_mib_idle"]), ", ".join(str(m) for m in r["rss_mib_after_ingest"]),
                 f"{r['images_per_s']} ({r['images_per_s_x_first']}×)", f"{r['indexed']}/{r['images']}"]
                for r in clusters["rows"]]
        lines += _table(["nodes", "shards / replicas", "start to green, s", "RSS per node idle (MiB)",
                         "RSS after ingest (MiB)", "images/s", "indexed"], rows)
    if results.get("ceiling"):
        from bench.ceiling import markdown as ceiling_markdown

        lines += ceiling_markdown(results["ceiling"])
    lines += [f"Raw figures: `{results['json_file']}`.", ""]
    return "\n".join(lines)


def write(results: dict[str, Any], out_dir: Path = RESULTS) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["timestamp"].replace(":", "").replace("-", "")
    json_path, md_path = out_dir / f"{stamp}.json", out_dir / f"{stamp}.md"
    results["json_file"] = json_path.name
    results["targets"] = targets(results)
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(markdown(results))
    shutil.copyfile(md_path, out_dir / "latest.md")
    return json_path, md_path
