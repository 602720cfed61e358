"""Stage `cache`: repeated vs cold text queries through OpenSearch, and a mix of both (bench/cache.py)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stage import Results, Stage, StageEnv, Target, target
from bench.tables import Row, num, rate, stat, stored_name, table, yes


def steps(args: argparse.Namespace) -> int:
    from bench import cache

    return len(cache.VARIANTS)


def run(env: StageEnv) -> dict[str, Any]:
    from bench import cache

    return cache.run(env.ctx, env.tag, progress=lambda label: env.progress(f"query cache: {label}"))


def targets(cached: dict[str, Any], results: Results) -> list[Target]:
    shipped, others = cached["variants"][0], cached["variants"][1:]
    return [target("repeated text query through OpenSearch, p50 ms (query cache)", shipped["repeated_ms"]["p50"],
                   12.0, False,
                   f"cold p50 {shipped['cold_ms']['p50']} ms; no hits read {shipped['repeated_no_hits_ms']['p50']} ms; "
                   + "; ".join(f"{stored_name(o)} {o['repeated_ms']['p50']} ms" for o in others)
                   + f"; {cached['documents']} documents, {stored_name(shipped)}"),
            target("100-query mix, 80 % repeats, concurrency 8: queries/s (median round)",
                   shipped["mix"]["queries_per_s"], 200.0, True,
                   f"rounds {rate(shipped['mix'])} q/s; no hits read {shipped['mix_no_hits']['queries_per_s']} q/s; "
                   + "; ".join(f"{stored_name(o)} {o['mix']['queries_per_s']} q/s" for o in others))]


def markdown(cached: dict[str, Any], results: Results) -> list[str]:
    c = cached["cache"]
    lines = ["## Query cache (repeated queries through OpenSearch)", "",
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
        rows.append([v["variant"], v.get("codec", ""), yes(v.get("derived_source")), stat(v["cold_ms"]),
                     stat(v["repeated_ms"]), stat(v["repeated_ms"], "p95"), stat(v["repeated_no_hits_ms"]),
                     rate(m), stat(m["latency_ms"]), rate(bare), m.get("client_cpu_cores", "")])
    lines += table(["index", "codec", "derived source", "cold p50 ms", "repeated p50 ms", "repeated p95 ms",
                    "repeated, no hits read p50", f"mix q/s (concurrency {concurrency})", "mix p50 ms",
                    "mix q/s, no hits read", "bench client cores"], rows)
    return lines


def _stored(variant: dict[str, Any]) -> str:
    """As `stored_name`, but strict: the figures table fails loudly on a JSON of another shape."""
    return f"{variant['codec']} codec, {'derived source' if variant['derived_source'] else 'vectors in _source'}"


def figures(s: dict[str, Any]) -> list[Row]:
    shipped, others = s["variants"][0], s["variants"][1:]
    mix = shipped["mix"]
    rounds = mix.get("rounds_queries_per_s", [])
    spread = f" ({num(min(rounds))}–{num(max(rounds))})" if len(rounds) > 1 else ""
    rows = [(f"repeated text query p50 ms ({s['documents']} documents; cold)",
             f"{num(shipped['repeated_ms']['p50'])} ({num(shipped['cold_ms']['p50'])})"),
            ("query mix, 80 % repeats, concurrency 8, queries/s (median round)",
             f"{num(mix['queries_per_s'])}{spread}"),
            ("repeated query reading no hit (`size: 0`) p50 ms", num(shipped["repeated_no_hits_ms"]["p50"]))]
    rows += [(f"{_stored(o)}: repeated p50 ms, mix queries/s",
              f"{num(o['repeated_ms']['p50'])}, {num(o['mix']['queries_per_s'])}") for o in others]
    return rows


STAGE = Stage(name="cache", title="query cache", run=run, steps=steps, targets=targets, markdown=markdown,
              figures=figures)
