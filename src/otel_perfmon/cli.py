"""The ``otel-perfmon`` command.

``otel-perfmon list [--report-dir DIR] [--limit N]``: the reports in a directory, newest first.
``otel-perfmon test-notifiers``: send a synthetic report through every exporter configured by
environment variables; one line per exporter, exit 0 when all succeeded (1 failure, 2 none/invalid).
``otel-perfmon serve [--report-dir DIR] [--host H] [--port P] [--auth-token T]``: the report viewer
(see :mod:`otel_perfmon.viewer`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Iterator, List, Optional, Sequence

from otel_perfmon.config import config_from_env
from otel_perfmon.report.ids import is_valid_report_id
from otel_perfmon.viewer.command import add_serve_command


def iter_reports(report_dir: str) -> Iterator[Dict[str, Any]]:
    """Parsed ``<id>.json`` reports of ``report_dir`` (unreadable files are skipped)."""
    try:
        names = os.listdir(report_dir)
    except FileNotFoundError:
        return
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext != ".json" or not is_valid_report_id(stem):
            continue
        try:
            with open(os.path.join(report_dir, name), encoding="utf-8") as handle:
                yield json.load(handle)
        except (OSError, ValueError):
            continue


def _list(args: argparse.Namespace) -> int:
    reports = sorted(iter_reports(args.report_dir), key=lambda r: r.get("start_time", ""), reverse=True)
    if not reports:
        print(f"no reports in {os.path.abspath(args.report_dir)}")
        return 0
    print(f"{'start (UTC)':27}  {'ms':>9}  {'method':6}  {'route':40}  report id")
    for report in reports[: args.limit]:
        http = report.get("http", {})
        route = str(http.get("route", "")).encode("unicode_escape").decode("ascii")[:40]
        print(f"{report.get('start_time', ''):27}  {report.get('duration_ms', 0):9.1f}  "
              f"{str(http.get('method') or ''):6}  {route:40}  {report.get('report_id')}")
    return 0


def _test_notifiers(args: argparse.Namespace) -> int:
    from otel_perfmon.exporters.check import run_test_notifiers

    return run_test_notifiers()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-perfmon", description="otel-perfmon reports and tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list reports, newest first")
    listing.add_argument("--report-dir", default=config_from_env().report_dir,
                         help="report directory (default: $OTEL_PERFMON_REPORT_DIR or ./perfmon-reports)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    listing.set_defaults(run=_list)
    notifiers = commands.add_parser(
        "test-notifiers", help="send a synthetic report through the exporters configured by env vars")
    notifiers.set_defaults(run=_test_notifiers)
    add_serve_command(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
