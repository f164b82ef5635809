"""Report exporters: the interface and the built-in exporters (one file each).

An exporter is any object with ``export(report) -> ExportResult``, ``shutdown()`` and
``force_flush(timeout_seconds=...) -> bool`` (the shape of OTel's ``SpanExporter``).
Exporters run on otel-perfmon's background threads, never on the request path, after the
report files are written. Notifiers (webhook, Slack, e-mail, ...) are exporters too.
"""

from otel_perfmon.exporters.base import ExportResult, ReportExporter

__all__ = ["ExportResult", "ReportExporter"]
