"""``otel-perfmon test-notifiers``: send a synthetic report through every configured exporter.

Reads ``OTEL_PERFMON_EXPORTERS`` and each exporter's variables (as ``configure_perfmon``
does), writes a synthetic report's files to a temporary directory (so zips can be attached),
exports it through each exporter in parallel and prints one line per exporter::

    webhook: ok
    slack: failed (HTTP 404 from hooks.slack.com: no_service)

Exit status: 0 when every exporter succeeded, 1 when one failed, 2 when none is configured
or the configuration is invalid (the message says which exporter and field).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, TextIO, Tuple

from otel_perfmon import environment_variables as ev
from otel_perfmon._options import parse_list
from otel_perfmon.report.ids import iso_utc, new_report_id

#: Extra time (s) granted beyond the export timeout before an exporter counts as hung.
GRACE_SECONDS = 5.0


def synthetic_report(report_dir: str, threshold_ms: float = 1000.0, url: Optional[str] = None,
                     report_id: Optional[str] = None) -> Any:
    """A plausible :class:`~otel_perfmon.report.model.Report` (route ``/otel-perfmon/test-notifiers``)
    whose json/html/md files are written to ``report_dir``. Raises OSError on write errors."""
    from otel_perfmon.report.build import host_info
    from otel_perfmon.report.model import Report
    from otel_perfmon.report.render import write_report_files

    now_ns = time.time_ns()
    if report_id is None:
        report_id = new_report_id(now_ns / 1e9)
    duration_ms = threshold_ms * 1.5
    report = Report(
        report_id=report_id, fingerprint="otel-perfmon-test-notifiers", trace_id=secrets.token_hex(16),
        span_id=secrets.token_hex(8), service_name="otel-perfmon-test", span_name="GET /otel-perfmon/test-notifiers",
        method="GET", route="/otel-perfmon/test-notifiers", path="/otel-perfmon/test-notifiers", query="",
        status_code=200, duration_ms=duration_ms, threshold_ms=threshold_ms,
        start_time=iso_utc(now_ns - int(duration_ms * 1e6)), end_time=iso_utc(now_ns),
        headers={"user-agent": "otel-perfmon test-notifiers"}, interval_seconds=0.001, sample_count=3,
        hotspots=[{"function": "synthetic_slow_query", "file": "otel_perfmon/test.py", "line": 1,
                   "self_ms": round(duration_ms * 0.8, 1), "percent": 80.0},
                  {"function": "synthetic_render", "file": "otel_perfmon/test.py", "line": 2,
                   "self_ms": round(duration_ms * 0.2, 1), "percent": 20.0}],
        call_tree_text=("This is a synthetic report sent by `otel-perfmon test-notifiers`.\n"
                        "synthetic_slow_query  80%\nsynthetic_render  20%\n"),
        host=host_info(), profile_mode="none", url=url, report_dir=report_dir)
    write_report_files(report)
    return report


def _label(exporter: Any, seen: Dict[str, int]) -> str:
    name = str(getattr(exporter, "name", None) or type(exporter).__name__)
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f"{name}#{seen[name]}"


def _why(exporter: Any, result: Any) -> str:
    reason = getattr(exporter, "last_error", None)
    if reason:
        return str(reason)
    return f"returned {getattr(result, 'name', result)!s}"


def export_all(exporters: List[Any], report: Any, timeout_seconds: float) -> List[Tuple[str, bool, str]]:
    """Export ``report`` through each exporter on its own daemon thread, at most
    ``timeout_seconds`` + 5 s in all; returns ``(label, ok, reason)`` in the given order."""
    from otel_perfmon.exporters.base import ExportResult

    seen: Dict[str, int] = {}
    labels = [_label(e, seen) for e in exporters]
    outcomes: Dict[int, Tuple[bool, str]] = {}

    def run(index: int, exporter: Any) -> None:
        try:
            result = exporter.export(report)
        except Exception as exc:
            scrub = getattr(exporter, "scrub", None)
            text = f"{type(exc).__name__}: {exc}"
            outcomes[index] = (False, scrub(text) if callable(scrub) else text)
            return
        outcomes[index] = (True, "") if result is ExportResult.SUCCESS else (False, _why(exporter, result))

    threads = [threading.Thread(target=run, args=(i, e), name=f"otel-perfmon-test-{labels[i]}", daemon=True)
               for i, e in enumerate(exporters)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_seconds + GRACE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [(labels[i], *outcomes.get(i, (False, f"no answer within {timeout_seconds + GRACE_SECONDS:g} s")))
            for i in range(len(exporters))]


def run_test_notifiers(environ: Optional[Mapping[str, str]] = None, stdout: Optional[TextIO] = None,
                       stderr: Optional[TextIO] = None) -> int:
    """Run the check with ``environ`` (default ``os.environ``); prints to ``stdout``/``stderr``.

    Returns the exit status (0 all ok, 1 a failure, 2 nothing configured or invalid config).
    Blocks for at most the export timeout + 5 s.
    """
    from otel_perfmon.config import config_from_env
    from otel_perfmon.errors import ConfigurationError
    from otel_perfmon.exporters.registry import build_exporters, validate_exporter_specs

    environ = os.environ if environ is None else environ
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    names = parse_list(environ.get(ev.OTEL_PERFMON_EXPORTERS, ""))
    if not names:
        print(f"no exporters configured: set {ev.OTEL_PERFMON_EXPORTERS} (e.g. webhook,slack,email) "
              "and their variables (see docs/exporters.md)", file=stderr)
        return 2
    try:
        exporters = build_exporters(validate_exporter_specs(names), environ)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return 2
    config = config_from_env(environ)
    tmpdir = tempfile.mkdtemp(prefix="otel-perfmon-test-")
    try:
        report = synthetic_report(os.path.join(tmpdir, "reports"), config.threshold_seconds * 1000.0)
        if config.report_url_template:
            report.url = config.report_url(report.report_id)
        timeout = max([config.export_timeout_seconds] +
                      [float(getattr(e, "timeout_seconds", 0) or 0) for e in exporters])
        results = export_all(exporters, report, timeout)
    finally:
        for exporter in exporters:
            try:
                exporter.shutdown()
            except Exception:
                continue
        shutil.rmtree(tmpdir, ignore_errors=True)
    for label, ok, reason in results:
        print(f"{label}: ok" if ok else f"{label}: failed ({reason})", file=stdout)
    stdout.flush()
    return 0 if all(ok for _label_, ok, _reason in results) else 1


def add_test_notifiers_command(commands: Any) -> None:
    """Add ``test-notifiers`` to an ``argparse`` subparsers object (from ``add_subparsers``)."""
    notifiers = commands.add_parser(
        "test-notifiers", help="send a synthetic report through the exporters configured by env vars",
        description="Send a synthetic report through every exporter configured by OTEL_PERFMON_* "
                    "environment variables; exit 0 when all succeeded, 1 on a failure, 2 when none "
                    "is configured or the configuration is invalid.")
    notifiers.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    return run_test_notifiers()
