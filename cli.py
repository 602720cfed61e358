"""`visual-search` — the admin CLI: bootstrap a cluster, and run the local stack (`make up` / `make down`).

Every failure ends in one line naming what and where, and a non-zero exit; never a bare traceback.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from common.config import load_config
from common.errors import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, run_command

console = Console(stderr=False)
err_console = Console(stderr=True)


def adapter_ready(settings) -> None:
    """The connectors are useless if the adapter (and Triton behind it) cannot answer: say so before applying."""
    import httpx

    from localstack.processes import StartupError

    url = f"{settings.adapter.url.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        raise StartupError(f"the adapter is unreachable at {url} ({exc.__class__.__name__}); start it "
                           "(`make up`) or pass --skip-preflight") from exc
    if response.status_code != 200:
        raise StartupError(f"the adapter at {url} answers {response.status_code}: {response.text[:200]} "
                           f"(is Triton ready at {' '.join(settings.triton.urls)}?)")


LOCK_WAIT_S = 600.0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Plan, then apply under the bootstrap lock. A plan that replaces an index is refused (exit 2, the reason on
    stderr, the plan on stdout) unless --allow-reindex; --dry-run prints the plan and changes nothing."""
    from bootstrap.lock import bootstrap_lock
    from bootstrap.opensearch_api import Cluster, connect
    from bootstrap.reconcile import Plan, Reconciler, ReplaceRefused
    from common.model_facts import ClipFacts

    settings = load_config()
    # the servers first, then the local files: with the stack down, `make up` is the fix (it exports the models too)
    if not args.skip_preflight:
        adapter_ready(settings)
    cluster = Cluster(connect(settings.opensearch), settings.opensearch.url)
    cluster.request("GET", "/")  # an unreachable cluster is named before anything else is read
    clip = ClipFacts.load(settings.clip_dir)
    allow_reindex = bool(getattr(args, "allow_reindex", False))
    reconciler = Reconciler(cluster, settings, dry_run=args.dry_run, allow_reindex=allow_reindex,
                            say=lambda message: console.print(message, markup=False, highlight=False))

    def show(title: str, plan: Plan) -> None:
        console.print(f"[bold]{title}[/bold] against {settings.opensearch.url}")
        for line in plan.lines():  # one line per step, never wrapped: the plan is read and grepped
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        console.print(plan.summary(), markup=False, highlight=False)

    if args.dry_run:
        plan = reconciler.run(clip)  # reads only: nothing for another run to collide with
        show("plan (dry run, nothing applied)", plan)
        if plan.replacements and not allow_reindex:
            console.print("applying this plan needs --allow-reindex: it replaces an index (see the replace steps)",
                          markup=False, highlight=False)
        return EXIT_OK
    try:
        # observe-then-create is only safe one run at a time: two concurrent runs could both create
        with bootstrap_lock(cluster, wait_s=getattr(args, "lock_wait", LOCK_WAIT_S),
                            on_wait=lambda message: console.print(f"[yellow]lock:[/yellow] {message}",
                                                                  highlight=False)):
            plan = reconciler.run(clip)
    except ReplaceRefused as exc:
        show("plan (refused, nothing applied)", exc.plan)
        raise  # its message, naming --allow-reindex and the reason, goes to stderr; exit 2
    show("bootstrap", plan)
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from localstack.stack import up

    def bootstrap() -> None:
        cmd_bootstrap(argparse.Namespace(dry_run=False, skip_preflight=False))

    return up(load_config(), bootstrap=None if args.no_bootstrap else bootstrap)


def cmd_down(args: argparse.Namespace) -> int:
    from localstack.stack import down

    return down(load_config())


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bootstrap.opensearch_api import connect
    from client.bulk import resolve
    from client.demo import run_examples
    from client.ingest import image_files, ingest_folder, write_sample_images

    settings = load_config()
    folder = Path(args.folder) if args.folder else write_sample_images(settings.cache / "demo-images")
    if not image_files(folder):
        err_console.print(f"[red]error:[/red] no images under {folder}")
        return EXIT_UNUSABLE
    client = connect(settings.opensearch)
    outcome = ingest_folder(client, settings.index.name, folder)
    dead = outcome.count(settings.index.dead_letter)
    indexed = outcome.count(*resolve(client, settings.index.name))
    console.print(f"indexed: {indexed}, dead-lettered ({settings.index.dead_letter}): "
                  f"{dead}, rejected: {len(outcome.rejected)}, item retries: {outcome.retries}")
    for item in outcome.rejected[:10]:
        err_console.print(f"  rejected {item.id}: {item.status} {item.error}", highlight=False)
    if dead:
        console.print("dead letters keep their image and reason; `make replay` re-drives the retryable ones")
    run_examples(client, settings.index.name, image_files(folder)[0], console)
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from bootstrap.opensearch_api import connect
    from client.replay import replay

    settings = load_config()
    outcome = replay(connect(settings.opensearch), settings.index.name, settings.index.dead_letter,
                     include_permanent=args.all, ids=args.ids or None)
    console.print(outcome.summary())
    for error in outcome.errors[:10]:
        err_console.print(f"  {error}", highlight=False)
    return EXIT_FAILED if outcome.errors else EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    """Prints what a search returns (id, score, the matched object) and, with --html, writes a contact sheet: the
    results as they look, boxes drawn, in one file that opens anywhere (pictures inline)."""
    from pathlib import Path

    from bootstrap.opensearch_api import connect
    from client.queries import Count, Filters
    from client.results import SearchFailed, contact_sheet, line, request_body, search, view

    settings = load_config()
    if not args.text and not args.image and not args.like_object:
        err_console.print("[red]error:[/red] give a text query, --image FILE or --like-object DOC_ID:N")
        return EXIT_UNUSABLE
    image = None
    if args.image:
        try:
            image = Path(args.image).read_bytes()
        except OSError as exc:
            raise SearchFailed(f"cannot read the query image {args.image}: {exc.strerror or exc}") from exc
    try:
        counts = tuple(Count.parse(c) for c in args.counts or ())
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return EXIT_UNUSABLE
    filters = Filters(classes=tuple(args.classes or ()), min_confidence=args.min_confidence,
                      tags=tuple(args.tags or ()), since=args.since, until=args.until, counts=counts)
    client = connect(settings.opensearch)
    body = request_body(client, settings.index.name, text=args.text, image=image, objects=args.objects,
                        like_object=args.like_object, all_copies=args.all_copies, filters=filters, k=args.k)
    try:
        found = search(client, settings.index.name, body)
    except SearchFailed as exc:
        if exc.status is None:
            raise SearchFailed(f"{exc} at {settings.opensearch.url}") from exc
        raise
    results = [view(hit) for hit in found["hits"]["hits"]]
    for result in results:
        console.print(line(result), markup=False, highlight=False, soft_wrap=True)
    if not results:
        console.print("no results")
    if args.html:
        what = (f"object {args.like_object}" if args.like_object else
                f"image {Path(args.image).name}" if args.image else repr(args.text))
        kind = "objects like" if args.objects or args.like_object else "images like"
        title = f"{kind} {what}: {len(results)} result(s)"
        Path(args.html).write_text(contact_sheet(results, title))
        console.print(f"contact sheet: {args.html}", markup=False, highlight=False)
    return EXIT_OK


def cmd_duplicates(args: argparse.Namespace) -> int:
    """Lists the duplicate groups with more than one member, largest first, with their members."""
    from bootstrap.opensearch_api import connect
    from client.queries import duplicate_groups_query
    from client.results import search

    settings = load_config()
    found = search(connect(settings.opensearch), settings.index.name, duplicate_groups_query(args.limit))
    groups = found["aggregations"]["groups"]
    for bucket in groups["buckets"]:
        hits = bucket["members"]["hits"]["hits"]
        members = ", ".join(h["_id"] for h in hits) + (" …" if bucket["doc_count"] > len(hits) else "")
        console.print(f"{bucket['key']}  {bucket['doc_count']} copies: {members}", markup=False, highlight=False,
                      soft_wrap=True)
    if not groups["buckets"]:
        console.print("no duplicates: every picture is indexed once")
    elif groups.get("sum_other_doc_count"):
        console.print(f"… more groups (documents in them: {groups['sum_other_doc_count']}): raise --limit")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from localstack.stack import status

    return status(load_config())


def cmd_config(args: argparse.Namespace) -> int:
    """Prints every key of the effective config: value, where it came from (default, the file, a VS_* variable, or
    derived by a validator) and what it means; secrets as ***. Reads only the config: no server is needed."""
    import json
    import textwrap
    from dataclasses import asdict

    from common.config import explain, format_value

    entries = explain(load_config())
    if args.json:
        print(json.dumps([asdict(entry) for entry in entries], indent=2))
        return EXIT_OK
    for entry in entries:
        print(f"{entry.key} = {format_value(entry.value)}  ({entry.source})")
        print(textwrap.fill(entry.description, width=100, initial_indent="    ", subsequent_indent="    "))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visual-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="create/update the OpenSearch side idempotently")
    boot.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    boot.add_argument("--skip-preflight", action="store_true", help="do not check the adapter's health first")
    boot.add_argument("--lock-wait", type=float, default=LOCK_WAIT_S, metavar="SECONDS",
                      help="how long to wait for another bootstrap of the same cluster to finish")
    boot.add_argument("--allow-reindex", action="store_true",
                      help="allow replacing an index whose mapping cannot change in place (e.g. a new vector "
                           "dimension): a new version is built, documents with image_url are re-analyzed, the alias "
                           "moves; writes to the index are refused meanwhile")
    boot.set_defaults(func=cmd_bootstrap)
    up = sub.add_parser("up", help="start OpenSearch, Triton and the adapter on 127.0.0.1, then bootstrap")
    up.add_argument("--no-bootstrap", action="store_true")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="what runs where").set_defaults(func=cmd_status)
    demo = sub.add_parser("demo", help="bulk-index a folder of images (default: generated samples), then "
                                       "run every search mode")
    demo.add_argument("folder", nargs="?", help="folder of images; sub-folder names become tags")
    demo.set_defaults(func=cmd_demo)
    redrive = sub.add_parser("replay", help="re-drive dead letters through the ingest pipeline (retryable ones "
                                            "unless --all); each is removed once indexed")
    redrive.add_argument("--all", action="store_true", help="also permanently failed ones (e.g. after a model fix)")
    redrive.add_argument("ids", nargs="*", help="only these dead-letter ids")
    redrive.set_defaults(func=cmd_replay)
    find = sub.add_parser("search", help="search the images index and print the results (id, score, matched "
                                         "object); --html writes a contact sheet with the boxes drawn")
    find.add_argument("text", nargs="?", help="what to look for, e.g. \"a red circle\"")
    find.add_argument("--image", metavar="FILE", help="search by this image instead of text")
    find.add_argument("--objects", action="store_true", help="object-level: images with an object like the query, "
                                                              "and which object matched")
    find.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    find.add_argument("--class", dest="classes", action="append", metavar="NAME",
                      help="only images with an object of this class (object-level: the matched one); repeatable")
    find.add_argument("--min-confidence", type=float, metavar="C", help="... with at least this confidence")
    find.add_argument("--tag", dest="tags", action="append", metavar="TAG", help="only images with this tag; "
                                                                                 "repeatable (all of them)")
    find.add_argument("--since", metavar="DATE", help="uploaded on or after (2026-01-01, now-30d)")
    find.add_argument("--until", metavar="DATE", help="uploaded on or before")
    find.add_argument("--count", dest="counts", action="append", metavar="CLASS<OP>N",
                      help="how many objects of a class: circle>=2, star=0, square<=1; repeatable (all of them)")
    find.add_argument("--like-object", metavar="DOC_ID:N", help="images holding an object like object N (from 0) "
                                                                 "of document DOC_ID, by its stored embedding")
    find.add_argument("--all-copies", action="store_true", help="show every copy of a picture (default: one per "
                                                                "duplicate group)")
    find.add_argument("--html", metavar="OUT.html", help="write a self-contained contact sheet of the results")
    find.set_defaults(func=cmd_search)
    dups = sub.add_parser("duplicates", help="list the duplicate groups with more than one member")
    dups.add_argument("--limit", type=int, default=100, help="largest groups shown (default 100)")
    dups.set_defaults(func=cmd_duplicates)
    config = sub.add_parser("config", help="every config key: its value, where it came from, what it means")
    config.add_argument("--json", action="store_true", help="a JSON list of {key, value, source, description}")
    config.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes (common.errors): 0 done, 1 ran and reports failures, 2 could not run (message on stderr)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
