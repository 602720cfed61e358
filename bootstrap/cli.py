"""`visual-search` — the admin CLI: bootstrap a cluster, and run the local stack (`make up` / `make down`).

Every failure ends in one line naming what and where, and a non-zero exit; never a bare traceback.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from common.config import ConfigError, load_config

console = Console(stderr=False)


def adapter_ready(settings) -> None:
    """The connectors are useless if the adapter (and Triton behind it) cannot answer: say so before applying."""
    import httpx

    from bootstrap.processes import StartupError

    url = f"{settings.adapter.url.rstrip('/')}/health"
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        raise StartupError(f"the adapter is unreachable at {url} ({exc.__class__.__name__}); start it "
                           "(`make up`) or pass --skip-preflight") from exc
    if response.status_code != 200:
        raise StartupError(f"the adapter at {url} answers {response.status_code}: {response.text[:200]} "
                           f"(is Triton ready at {settings.triton.grpc_url}?)")


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from bootstrap.opensearch_api import Cluster, connect
    from bootstrap.reconcile import Reconciler
    from common.model_facts import ClipFacts

    settings = load_config()
    clip = ClipFacts.load(settings.clip_dir)
    if not args.skip_preflight:
        adapter_ready(settings)
    cluster = Cluster(connect(settings.opensearch), settings.opensearch.url)
    plan = Reconciler(cluster, settings, dry_run=args.dry_run).run(clip)
    title = "plan (dry run, nothing applied)" if args.dry_run else "bootstrap"
    console.print(f"[bold]{title}[/bold] against {settings.opensearch.url}")
    for step in plan.steps:
        console.print(f"  {step}")
    console.print(f"{len(plan.changes)} change(s), {len(plan.steps) - len(plan.changes)} unchanged")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from bootstrap.stack import up

    return up(load_config(), bootstrap=not args.no_bootstrap)


def cmd_down(args: argparse.Namespace) -> int:
    from bootstrap.stack import down

    return down(load_config())


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bootstrap.examples import run_examples
    from bootstrap.ingest import image_files, ingest_folder, write_sample_images
    from bootstrap.opensearch_api import connect

    settings = load_config()
    folder = Path(args.folder) if args.folder else write_sample_images(settings.cache / "demo-images")
    if not image_files(folder):
        console.print(f"[red]error:[/red] no images under {folder}")
        return 2
    client = connect(settings.opensearch)
    counts = ingest_folder(client, settings.index.name, folder)
    console.print(f"indexed: {counts.get(settings.index.name, 0)}, dead-lettered "
                  f"({settings.index.dead_letter}): {counts.get(settings.index.dead_letter, 0)}, "
                  f"rejected: {counts.get('rejected', 0)}")
    run_examples(client, settings.index.name, image_files(folder)[0], console)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bootstrap.stack import status

    return status(load_config())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visual-search", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="create/update the OpenSearch side idempotently")
    boot.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    boot.add_argument("--skip-preflight", action="store_true", help="do not check the adapter's health first")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bootstrap.opensearch_api import ClusterError
    from bootstrap.opensearch_dist import DistributionError
    from bootstrap.opensearch_node import NodeError
    from bootstrap.processes import StartupError
    from common.model_facts import MissingArtifactError

    try:
        return args.func(args)
    except (ConfigError, ClusterError, DistributionError, NodeError, StartupError, MissingArtifactError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
