"""The command line: ``dicom-node serve | migrate | import | check | forward``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, Settings, load

log = logging.getLogger("node")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom narrates every PDU at INFO; our own association line says what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from .server import serve

    return serve(settings)


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_index
    from .index.migrate import migrate

    applied = migrate(open_index(settings))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_context
    from .importer import run_import
    from .index.outbox import install_hook

    install_hook(r.name for r in settings.remotes if r.forward)
    return run_import(open_context(settings), args.paths, progress=not args.quiet)


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from .check import run_check
    from .context import open_context

    return run_check(open_context(settings), repair=args.repair)


def _cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_context
    from .remotes.forward_admin import run_forward

    return run_forward(open_context(settings), retry=args.retry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="config file (default: $DICOM_NODE_CONFIG or ./config.toml)")
        p.add_argument("--log-level", default="INFO")
        p.set_defaults(func=func)
        return p

    command("serve", _cmd_serve, "run the DIMSE and HTTP servers")
    command("migrate", _cmd_migrate, "apply pending index migrations")
    p = command("import", _cmd_import, "store DICOM files and folders (recursive)")
    p.add_argument("paths", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p = command("check", _cmd_check, "check that index and files agree")
    p.add_argument("--repair", action="store_true", help="re-index stray files, drop dangling rows")
    p = command("forward", _cmd_forward, "show store-and-forward queues; --retry re-queues failed rows")
    p.add_argument("--retry", metavar="REMOTE", help="re-queue the failed instances of this remote")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicom-node`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        print(f"dicom-node: config error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.func(settings, args)
    except OSError as exc:
        log.error("%s", exc)
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
