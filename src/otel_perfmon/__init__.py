"""otel-perfmon: OpenTelemetry-native slow-request profiler for Flask and FastAPI.

Usage::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from otel_perfmon import configure_perfmon

    trace.set_tracer_provider(TracerProvider())
    perfmon = configure_perfmon(app=app, threshold_seconds=0.5)

Every request slower than the threshold gets a report (``<id>.json``, ``.html``, ``.md`` in
``./perfmon-reports``) with its call tree, and its span gets ``perfmon.slow``,
``perfmon.report.id`` (and ``perfmon.report.url``) attributes.

Configuration (any field also as a keyword to ``configure_perfmon``)::

    export OTEL_PERFMON_THRESHOLD_SECONDS=0.5
    export OTEL_PERFMON_REPORT_DIR=/var/lib/myapp/perfmon
    export OTEL_PERFMON_DEDUP_STORE=sqlite          # memory | sqlite | redis://host:6379/0
    export OTEL_PERFMON_EXCLUDE_URLS=/health,/metrics
    export OTEL_PERFMON_REPORT_URL_TEMPLATE=https://perf.example.com/reports/{report_id}

docs/configuration.md lists every variable.
"""

from typing import Any

__all__ = [
    "ConfigurationError", "ExportResult", "Perfmon", "PerfmonConfig", "PerfmonSpanProcessor",
    "ReportExporter", "configure_perfmon", "profile", "__version__",
]

__version__ = "0.1.0"

_LAZY = {
    "ConfigurationError": "otel_perfmon.errors",
    "PerfmonConfig": "otel_perfmon.config",
    "ExportResult": "otel_perfmon.exporters.base",
    "ReportExporter": "otel_perfmon.exporters.base",
    "Perfmon": "otel_perfmon.api",
    "configure_perfmon": "otel_perfmon.api",
    "PerfmonSpanProcessor": "otel_perfmon.processor",
    "profile": "otel_perfmon.decorator",
}


def __getattr__(name: str) -> Any:
    # heavy imports (the OTel SDK, pyinstrument) stay lazy until first use.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otel_perfmon' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
