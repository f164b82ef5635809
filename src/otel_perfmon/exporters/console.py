"""``console`` exporter: one line per report to stderr.

Usage::

    configure_perfmon(exporters=["console"])
    # or: export OTEL_PERFMON_EXPORTERS=console
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

from otel_perfmon.exporters.base import ExportResult, ReportExporter


class ConsoleExporter(ReportExporter):
    """Writes ``perfmon: slow GET /route 1234.5 ms > 1000.0 ms trace=… report=<path>``.

    ``stream`` defaults to ``sys.stderr`` looked up at export time. Runs on a background thread.
    """

    name = "console"

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self._stream = stream

    def export(self, report: Any) -> ExportResult:
        stream = self._stream or sys.stderr
        line = (f"perfmon: slow {report.method} {report.route} {report.duration_ms:.1f} ms "
                f"> {report.threshold_ms:.1f} ms trace={report.trace_id} span={report.span_id} "
                f"report={report.json_path}")
        # request-derived text may hold control characters; keep it one line.
        stream.write(line.encode("unicode_escape", "backslashreplace").decode("ascii") + "\n")
        stream.flush()
        return ExportResult.SUCCESS
