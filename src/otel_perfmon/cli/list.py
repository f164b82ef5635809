"""``otel-perfmon list``: the reports of a directory, newest first, one line each.

Rows come from the viewer's :class:`~otel_perfmon.viewer.index.ReportIndex` (no Starlette
needed), occurrence counts from the dedup store when it can be read, as in the viewer.
A report directory that does not exist (or is not a directory) is an error: exit 2 with
the path on stderr. An existing directory without reports prints ``no reports in DIR``.
``--report-dir`` may be a remote store's URL (``s3://bucket/prefix``): it is listed through
the viewer's local mirror (an unreachable store: exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, TextIO

from otel_perfmon._options import parse_positive_int
from otel_perfmon.cli._args import arg_type

DEFAULT_LIMIT = 50

_HEADER = (f"{'start (UTC)':27}  {'ms':>9}  {'method':6}  {'route':40}  {'service':20}  "
           f"{'mode':15}  {'coverage':>8}  {'count':>5}  report id")


def add_list_command(commands: Any, config: Optional[Any] = None) -> None:
    """Add ``list`` to an ``argparse`` subparsers object (from ``add_subparsers``);
    ``config`` gives the report_dir and dedup_store defaults (default: from the environment)."""
    if config is None:
        from otel_perfmon.config import config_from_env

        config = config_from_env()
    listing = commands.add_parser("list", help="list reports, newest first",
                                  description="List the reports of a directory, newest first.")
    listing.add_argument("--report-dir", default=config.report_dir,
                         help="report directory or URL (s3://bucket/prefix); default $OTEL_PERFMON_REPORT_DIR "
                              "or ./perfmon-reports")
    listing.add_argument("--limit", type=arg_type(parse_positive_int, "limit"), default=DEFAULT_LIMIT,
                         help=f"at most this many rows (default {DEFAULT_LIMIT})")
    listing.add_argument("--dedup-store", default=config.dedup_store,
                         help="where occurrence counts are read: sqlite, a redis:// URL, or none "
                              "(default: $OTEL_PERFMON_DEDUP_STORE or sqlite)")
    listing.set_defaults(run=run_list)


def _cell(text: Any, width: int) -> str:
    """One column of text: control and non-ASCII characters escaped, cut to ``width``."""
    return str(text or "").encode("unicode_escape").decode("ascii")[:width]


def _coverage(value: Optional[float]) -> str:
    return "" if value is None else f"{value * 100:.0f} %"


def run_list(args: argparse.Namespace, stdout: Optional[TextIO] = None, stderr: Optional[TextIO] = None) -> int:
    """Print the newest ``args.limit`` reports of ``args.report_dir``; returns the exit code
    (0, or 2 when the directory is missing or cannot be read)."""
    from otel_perfmon.storage import check_report_dir, display, is_remote, local_path, local_state_dir
    from otel_perfmon.viewer.index import ReportIndex, dedup_reader, remote_index_dir

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    source = str(args.report_dir)
    if is_remote(source):
        report_dir = display(source)
        try:
            check_report_dir(source)
            directory, sync = remote_index_dir(source)
            if sync is not None:
                sync()
        except (ValueError, OSError) as exc:
            print(f"otel-perfmon list: cannot read report store {report_dir} ({exc})", file=stderr)
            return 2
    else:
        report_dir = directory = local_path(source)
        if not os.path.isdir(report_dir):
            reason = "is not a directory" if os.path.exists(report_dir) else "does not exist"
            print(f"otel-perfmon list: report directory {report_dir} {reason}", file=stderr)
            return 2
    try:
        counts = dedup_reader(getattr(args, "dedup_store", None), local_state_dir(source))
    except Exception as exc:  # e.g. the redis extra is missing: list without counts
        print(f"otel-perfmon list: no occurrence counts ({exc})", file=stderr)
        counts = None
    index = ReportIndex(directory, counts, refresh_interval_seconds=0)
    try:
        page = index.query(per_page=args.limit)
    except OSError as exc:
        print(f"otel-perfmon list: cannot read report directory {report_dir} ({exc})", file=stderr)
        return 2
    if not page.items:
        print(f"no reports in {report_dir}", file=stdout)
        return 0
    print(_HEADER, file=stdout)
    for r in page.items:
        entry = index.dedup_entry(r.report_id)
        print(f"{_cell(r.start_time, 27):27}  {r.duration_ms:9.1f}  {_cell(r.method, 6):6}  "
              f"{_cell(r.route, 40):40}  {_cell(r.service_name, 20):20}  {_cell(r.mode, 15):15}  "
              f"{_coverage(r.coverage):>8}  {entry.count if entry else '':>5}  {r.report_id}", file=stdout)
    hidden = page.total - len(page.items)
    if hidden > 0:
        print(f"({hidden} older report{'s' if hidden > 1 else ''} not shown; --limit {page.total} shows all)",
              file=stdout)
    return 0
