"""The exporter interface, modelled on OTel SDK ``trace/export/__init__.py``."""

from __future__ import annotations

import enum
from typing import Any


class ExportResult(enum.Enum):
    """Outcome of one ``export`` call."""

    SUCCESS = 0
    FAILURE = 1


class ReportExporter:
    """Base class with no-op defaults; subclasses implement :meth:`export`.

    ``export`` is called on a background thread owned by otel-perfmon (one per exporter),
    with a :class:`~otel_perfmon.report.model.Report`. It may raise; the dispatcher
    catches, logs once and counts the failure. ``name`` labels the exporter in logs.
    """

    name = "exporter"

    def export(self, report: Any) -> ExportResult:
        """Export one report; returns SUCCESS or FAILURE. Runs on a background thread."""
        return ExportResult.SUCCESS

    def shutdown(self) -> None:
        """Release resources; called once from ``perfmon.shutdown()``."""
        return None

    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Finish buffered work within ``timeout_seconds`` (seconds); True when done."""
        return True
