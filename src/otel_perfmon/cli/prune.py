"""``otel-perfmon prune [--report-dir DIR|URL] [--max-age-seconds S] [--max-bytes N] [--dry-run]``:
apply retention now (the worker does it at most every 5 minutes).

Deletes, oldest first, the reports older than ``--max-age-seconds`` and then more of the oldest
until the rest fits in ``--max-bytes`` (defaults: ``retention_max_age_seconds`` /
``retention_max_bytes``, i.e. ``$OTEL_PERFMON_RETENTION_*`` or 30 days and 1 GiB; 0 = no bound),
all files of a report together, and releases each one's dedup entry so its route can report
again (:mod:`otel_perfmon.storage.retention`). Prints one line per report (``deleted`` or, with
``--dry-run``, ``would delete``, which changes nothing) and a summary. Exit 0; 2 when the
directory is missing or the store cannot be read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional, TextIO

from otel_perfmon._options import parse_float, parse_int
from otel_perfmon.cli._args import arg_type


def _non_negative_float(text: str) -> float:
    value = parse_float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number >= 0")
    return value


def _non_negative_int(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def add_prune_command(commands: Any, config: Optional[Any] = None) -> None:
    """Add ``prune`` to an ``argparse`` subparsers object; ``config`` gives the defaults."""
    if config is None:
        from otel_perfmon.config import config_from_env

        config = config_from_env()
    prune = commands.add_parser("prune", help="delete old reports now (retention)",
                                description="Delete the oldest reports past the retention age and size, "
                                            "releasing their dedup entries.")
    prune.add_argument("--report-dir", default=config.report_dir,
                       help="report directory or URL (s3://bucket/prefix); default $OTEL_PERFMON_REPORT_DIR "
                            "or ./perfmon-reports")
    prune.add_argument("--max-age-seconds", type=arg_type(_non_negative_float, "max age"),
                       default=float(config.retention_max_age_seconds),
                       help="delete reports older than this; 0: no age limit (default "
                            "$OTEL_PERFMON_RETENTION_MAX_AGE_SECONDS or 2592000 = 30 days)")
    prune.add_argument("--max-bytes", type=arg_type(_non_negative_int, "max bytes"),
                       default=int(config.retention_max_bytes),
                       help="then delete the oldest until the rest fits; 0: no size limit (default "
                            "$OTEL_PERFMON_RETENTION_MAX_BYTES or 1073741824 = 1 GiB)")
    prune.add_argument("--dedup-store", default=config.dedup_store,
                       help="where the deleted reports' dedup entries are released: sqlite, a redis:// URL, "
                            "or none (default: $OTEL_PERFMON_DEDUP_STORE or sqlite)")
    prune.add_argument("--dry-run", action="store_true", help="print what would be deleted; change nothing")
    prune.set_defaults(run=run_prune)


def _dedup(spec: Optional[str], report_dir: str) -> Any:
    """The dedup store to release entries in, or None (none, memory, or no SQLite file yet)."""
    if not spec or spec in ("none", "memory"):
        return None
    from otel_perfmon.dedup import open_store
    from otel_perfmon.storage import local_state_dir

    state = local_state_dir(report_dir)
    if spec == "sqlite":
        from otel_perfmon.dedup.sqlite import FILE_NAME

        if not os.path.isfile(os.path.join(state, FILE_NAME)):
            return None
    return open_store(spec, state)


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"


def run_prune(args: argparse.Namespace, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    """Apply retention to ``args.report_dir``; returns the exit code."""
    from otel_perfmon.storage import check_report_dir, display, is_remote, local_path, open_report_store, retention

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    report_dir = str(args.report_dir)
    where = display(report_dir)
    if is_remote(report_dir):
        try:
            check_report_dir(report_dir)
        except ValueError as exc:
            print(f"otel-perfmon prune: {where}: {exc}", file=stderr)
            return 2
    elif not os.path.isdir(local_path(report_dir)):
        print(f"otel-perfmon prune: report directory {where} does not exist", file=stderr)
        return 2
    store = open_report_store(report_dir)
    now = time.time()
    try:
        reports = store.list_reports()
    except OSError as exc:
        print(f"otel-perfmon prune: cannot list {where} ({exc})", file=stderr)
        return 2
    deletions = retention.plan(reports, now, args.max_age_seconds, args.max_bytes)
    verb = "would delete" if args.dry_run else "deleted"

    def show(d: retention.Deletion) -> None:
        print(f"{verb} {d.report_id}  {d.size:>10} bytes  age {_age(now - d.mtime):>8}  ({d.reason})", file=stdout)

    try:
        if args.dry_run:
            for deletion in deletions:
                show(deletion)
        else:
            try:
                dedup = _dedup(getattr(args, "dedup_store", None), report_dir)
            except Exception as exc:  # e.g. the redis extra is missing: delete without releasing
                print(f"otel-perfmon prune: dedup entries not released ({exc})", file=stderr)
                dedup = None
            try:
                retention.apply(store, deletions, dedup, on_deleted=show)
            finally:
                if dedup is not None:
                    dedup.close()
    except OSError as exc:
        print(f"otel-perfmon prune: {where}: {exc}", file=stderr)
        return 2
    freed = sum(d.size for d in deletions)
    kept = len(reports) - len(deletions)
    kept_bytes = sum(r.size for r in reports.values()) - freed
    print(f"{len(deletions)} report{'s' if len(deletions) != 1 else ''} ({freed} bytes) "
          f"{'would be ' if args.dry_run else ''}deleted from {where}; {kept} kept ({kept_bytes} bytes)", file=stdout)
    return 0
