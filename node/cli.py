"""The command line: ``dicom-node`` and its subcommands.

serve, migrate, import, check, forward, ls, delete, evict, echo, init, send, viewer.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, DicomSettings, HttpSettings, Settings, load
from .index.migrate import SchemaTooNew

log = logging.getLogger("node")


def setup_logging(level: str, *, tag: str = "") -> None:
    """Log to stderr at *level*; *tag* (a worker process's ``w2``) follows each logger's name."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s{'[' + tag + ']' if tag else ''}: %(message)s",
        stream=sys.stderr,
    )
    # pynetdicom narrates every PDU at INFO; our own association line says what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from .workers.supervisor import run

    return run(settings, log_level=args.log_level)


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_index
    from .index.migrate import migrate

    applied = migrate(open_index(settings))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _assemble(settings: Settings):
    """The node's context for a command that stores instances: forwarding remotes get outbox rows."""
    from .context import open_context
    from .index.outbox import install_hook

    ctx = open_context(settings)
    install_hook(ctx.ingest, [r.name for r in settings.remotes if r.forward])
    return ctx


def _cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from .importer import run_import

    ctx = _assemble(settings)
    ctx.store.hold()
    return run_import(ctx, args.paths, progress=not args.quiet)


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from .check import run_check
    from .deletion import finish_pending

    ctx = _assemble(settings)
    # Files of a deletion cut short by a crash have no rows: finish removing
    # them first, so that they are not reported (or re-indexed by --repair).
    finished = finish_pending(ctx)
    if finished:
        print(f"finished {finished} file removal(s) of an interrupted deletion")
    return run_check(ctx, repair=args.repair)


def _cmd_forward(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_context
    from .remotes.forward_admin import run_forward

    return run_forward(open_context(settings), retry=args.retry)


def _cmd_ls(settings: Settings, args: argparse.Namespace) -> int:
    from .admin.listing import OPTION_KEYS, run_ls
    from .context import open_context

    open_context(settings)
    options = {name: getattr(args, name) for name in OPTION_KEYS}
    return run_ls(args.what, options, args.key, limit=args.limit, as_json=args.json)


def _cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    from .admin.delete import run_delete
    from .context import open_context

    return run_delete(open_context(settings), args.uids, yes=args.yes)


def _cmd_evict(settings: Settings, args: argparse.Namespace) -> int:
    from .cache.eviction import run_evict
    from .context import open_context

    return run_evict(open_context(settings), dry_run=args.dry_run)


def _cmd_echo(settings: Settings, args: argparse.Namespace) -> int:
    from .remotes.echo import echo

    # Our own line names the failure; pynetdicom's would repeat it less clearly.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    names = args.remotes or [r.name for r in settings.remotes]
    if not names:
        print("dicom-node echo: no remotes configured", file=sys.stderr)
        return 2
    remotes = []
    for name in names:
        remote = settings.remote_by_name(name)
        if remote is None:
            known = ", ".join(r.name for r in settings.remotes) or "none configured"
            print(f"dicom-node echo: no remote named {name!r} (known: {known})", file=sys.stderr)
            return 2
        remotes.append(remote)
    failed = 0
    for remote in remotes:
        result = echo(remote, settings.dicom.ae_title, args.timeout)
        print(result, file=sys.stdout if result.ok else sys.stderr)
        failed += not result.ok
    return 1 if failed else 0


def _cmd_init(args: argparse.Namespace) -> int:
    from .admin.initdir import run_init

    return run_init(
        args.dir,
        ae_title=args.ae_title,
        dicom_host=args.dicom_host,
        dicom_port=args.dicom_port,
        http_port=args.http_port,
    )


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from .context import open_context
    from .dimse import wire
    from .remotes.send_admin import send_command

    # The sending path as `serve` runs it (the stored bytes streamed, the wire layer's hooks).
    wire.install(fast_path=settings.dicom.fast_path)
    return send_command(open_context(settings), args.remote, args.uids, wait=not args.no_wait)


def _cmd_viewer(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from .viewer import ViewerError, install, installed

    target = settings.http.viewer_path
    if args.action == "status":
        found = installed(target)
        print(f"{found['package']} {found['version']} in {target}" if found else f"no viewer in {target}")
        return 0 if found else 1
    try:
        tarball = Path(args.tarball) if args.tarball else None
        marker = install(target, version=args.ohif_version, tarball=tarball)
    except ViewerError as exc:
        print(f"dicom-node: viewer not installed: {exc}", file=sys.stderr)
        return 1
    print(f"installed {marker['package']} {marker['version']} into {target}; served at /viewer/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicom-node", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicom-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help_: str, *, config: bool = True, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, **kwargs)
        if config:
            p.add_argument("--config", help="config file (default: $DICOM_NODE_CONFIG or ./config.toml)")
        p.add_argument("--log-level", default="INFO")
        p.set_defaults(func=func, needs_config=config)
        return p

    command("serve", _cmd_serve, "run the DIMSE and HTTP servers (SIGHUP reloads the remotes and the ACL)")
    command("migrate", _cmd_migrate, "apply pending index migrations")
    p = command("import", _cmd_import, "store DICOM files and folders (recursive)")
    p.add_argument("paths", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p = command("check", _cmd_check, "check that index and files agree")
    p.add_argument("--repair", action="store_true", help="re-index stray files, drop dangling rows")
    p = command("forward", _cmd_forward, "show store-and-forward queues; --retry re-queues failed rows")
    p.add_argument("--retry", metavar="REMOTE", help="re-queue the failed instances of this remote")

    p = command(
        "ls",
        _cmd_ls,
        "list patients, studies or series held here (C-FIND matching: * ? wildcards, date ranges)",
        epilog="examples: dicom-node ls --name 'DOE*' --date 20240101-20240131; "
        "dicom-node ls series --study 1.2.3; dicom-node ls -k StudyDescription='*HEAD*'",
    )
    p.add_argument("what", nargs="?", choices=("patients", "studies", "series"), default="studies")
    p.add_argument("-n", "--name", help="PatientName, e.g. 'DOE^J*' (case-insensitive)")
    p.add_argument("-i", "--patient-id", help="PatientID")
    p.add_argument("-d", "--date", help="StudyDate: YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either end open)")
    p.add_argument("-a", "--accession", help="AccessionNumber")
    p.add_argument("-m", "--modality", help="a modality in the study (Modality for series)")
    p.add_argument("-s", "--study", help="StudyInstanceUID (a backslash-separated list matches any)")
    p.add_argument(
        "-k",
        "--key",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any matching key, as findscu takes it: Keyword=value or gggg,eeee=value",
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many rows (default 100; 0 = all)")
    p.add_argument("--json", action="store_true", help="print the matches as JSON")

    p = command("delete", _cmd_delete, "delete studies, series or instances by UID (files, rows, archives)")
    p.add_argument("uids", nargs="+", metavar="UID", help="a Study, Series or SOP Instance UID")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    p = command(
        "evict",
        _cmd_evict,
        "run one eviction pass now ([storage].max_bytes, max_age_days): studies with a copy elsewhere",
    )
    p.add_argument("--dry-run", action="store_true", help="only list the studies that would be evicted")

    p = command("echo", _cmd_echo, "C-ECHO configured remotes by name (all of them when none is named)")
    p.add_argument("remotes", nargs="*", metavar="REMOTE", help="a remote's name in the config")
    p.add_argument("--timeout", type=_positive, default=10.0, help="seconds per step (default 10)")

    p = command(
        "init", _cmd_init, "write a commented config.toml and the storage folders into DIR", config=False
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder to set up (default: .)")
    p.add_argument("--ae-title", default=DicomSettings.ae_title, help="this node's AE title")
    p.add_argument("--dicom-host", default=DicomSettings.host, help="address the DIMSE port listens on")
    p.add_argument("--dicom-port", type=int, default=DicomSettings.port, help="DIMSE port")
    p.add_argument("--http-port", type=int, default=HttpSettings.port, help="HTTP port")

    p = command("send", _cmd_send, "C-STORE stored studies, series or instances to a remote (a job)")
    p.add_argument("remote", metavar="REMOTE", help="the remote's name in the config")
    p.add_argument("uids", metavar="UID", nargs="+", help="Study, Series or SOP Instance UIDs")
    p.add_argument(
        "--no-wait", action="store_true", help="only queue the job (a running node sends it); do not wait"
    )
    from .viewer import DEFAULT_VERSION

    p = command("viewer", _cmd_viewer, "install the OHIF viewer served at /viewer/ (from the npm registry)")
    p.add_argument("action", choices=["install", "status"])
    p.add_argument(
        "--ohif-version", default=DEFAULT_VERSION, help=f"@ohif/app version (default {DEFAULT_VERSION})"
    )
    p.add_argument("--tarball", help="install from this @ohif/app tarball (npm pack) instead of the registry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dicom-node`` console script."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if not args.needs_config:
            return args.func(args)
        settings = load(args.config)
    except ConfigError as exc:
        print(f"dicom-node: config error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"dicom-node: {exc}", file=sys.stderr)
        return 1
    try:
        return args.func(settings, args)
    except SchemaTooNew as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        log.error("%s", exc)
        return 1
