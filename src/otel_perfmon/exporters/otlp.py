"""``otlp`` exporter: every new report becomes an OTel log record (event ``perfmon.report``).

Usage::

    configure_perfmon(exporters=["otlp"])
    # or, with zero code:
    export OTEL_PERFMON_EXPORTERS=otlp

The record carries the slow span's trace id and span id (so a backend links it to the trace),
severity WARN, a one-line body, and these attributes:

=============================  =====================================================
``perfmon.report.id``          the report id (string)
``perfmon.report.url``         the report link, when ``report_url_template`` is set
``perfmon.report.file``        path of the HTML report on the host that wrote it
``http.route``                 route template, e.g. ``/items/<int:item_id>``
``http.request.method``        e.g. ``GET``
``url.path``                   the request path (when known)
``http.response.status_code``  (when known)
``perfmon.duration_ms``        span duration in milliseconds (double)
``perfmon.threshold_ms``       the threshold it passed, in milliseconds (double)
``perfmon.hotspots``           top self-time frames, ``"func (file:line) 640.0 ms 51.8%"``
``perfmon.fingerprint``        the dedup fingerprint (service + method + route)
=============================  =====================================================

Deduplicated occurrences do not produce records (one event per report).

Where it goes: through the app's LoggerProvider when one is set globally
(``opentelemetry._logs.set_logger_provider``; ``opentelemetry-instrument`` always sets one, and
``OTEL_LOGS_EXPORTER`` picks its exporter), else through an OTLP/HTTP log exporter of its own
that honours the standard variables::

    export OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318        # or ..._LOGS_ENDPOINT
    export OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20xyz
    export OTEL_EXPORTER_OTLP_TIMEOUT=10

(package ``opentelemetry-exporter-otlp-proto-http``, in the ``all`` extra). Its resource is the
global TracerProvider's, so ``service.name`` matches the spans. Needs opentelemetry-api/sdk
1.35 or newer (log records with an event name and a span context).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, cast

from otel_perfmon import attributes as attr
from otel_perfmon.exporters.base import ExportResult, ReportExporter
from otel_perfmon.stats import log_once

_logger = logging.getLogger(__name__)

#: Event name of every report record.
EVENT_NAME = "perfmon.report"
ATTR_REPORT_FILE = "perfmon.report.file"
ATTR_DURATION_MS = "perfmon.duration_ms"
ATTR_THRESHOLD_MS = "perfmon.threshold_ms"
ATTR_HOTSPOTS = "perfmon.hotspots"
ATTR_FINGERPRINT = "perfmon.fingerprint"
#: Instrumentation scope (logger name) of the records.
SCOPE_NAME = "otel_perfmon"


def _is_real_provider(provider: Any) -> bool:
    """True for a LoggerProvider the app set (not the API's proxy / no-op placeholders)."""
    if provider is None:
        return False
    return type(provider).__name__ not in ("ProxyLoggerProvider", "NoOpLoggerProvider")


def format_hotspot(hotspot: Mapping[str, Any]) -> str:
    """``"load_rows (app/db.py:42) 640.0 ms 51.8%"`` from one report hotspot dict."""
    return (f"{hotspot.get('function', '?')} ({hotspot.get('file', '?')}:{hotspot.get('line', 0)}) "
            f"{float(hotspot.get('self_ms', 0.0)):.1f} ms {float(hotspot.get('percent', 0.0)):.1f}%")


def report_attributes(report: Any, max_hotspots: int = 5) -> Dict[str, Any]:
    """The log-record attributes of ``report`` (see the module docstring); no I/O."""
    values: Dict[str, Any] = {
        attr.PERFMON_REPORT_ID: report.report_id,
        ATTR_REPORT_FILE: report.html_path,
        "http.route": report.route,
        ATTR_DURATION_MS: float(report.duration_ms),
        ATTR_THRESHOLD_MS: float(report.threshold_ms),
        ATTR_HOTSPOTS: [format_hotspot(h) for h in (report.hotspots or [])[:max_hotspots]],
    }
    if getattr(report, "url", None):
        values[attr.PERFMON_REPORT_URL] = report.url
    if report.method:
        values["http.request.method"] = report.method
    if getattr(report, "path", None):
        values["url.path"] = report.path
    if getattr(report, "status_code", None) is not None:
        values["http.response.status_code"] = int(report.status_code)
    if getattr(report, "fingerprint", None):
        values[ATTR_FINGERPRINT] = report.fingerprint
    if not values[ATTR_HOTSPOTS]:
        del values[ATTR_HOTSPOTS]
    return values


class _RecordingExporter:
    """Wraps an SDK log exporter and remembers whether its last ``export`` succeeded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last_ok = False

    def export(self, batch: Any) -> Any:
        self.last_ok = False
        result = self.inner.export(batch)
        self.last_ok = getattr(result, "name", "") == "SUCCESS"
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self.inner, "force_flush", None)
        return bool(flush(timeout_millis)) if flush else True

    def shutdown(self) -> None:
        self.inner.shutdown()


class OtlpReportExporter(ReportExporter):
    """Emits each report as a ``perfmon.report`` OTel log record (see the module docstring).

    ``logger_provider``: an explicit LoggerProvider (default: the global one when the app set
    one, else a private OTLP/HTTP pipeline). ``endpoint`` (full URL, e.g.
    ``http://collector:4318/v1/logs``), ``headers`` and ``timeout_seconds`` (s) configure the
    private pipeline only; unset, the ``OTEL_EXPORTER_OTLP_*`` variables apply.
    ``max_hotspots`` limits ``perfmon.hotspots``.

    ``export`` runs on otel-perfmon's exporter thread. It returns FAILURE when the private
    pipeline's request fails or no pipeline can be built (no LoggerProvider set and no
    ``opentelemetry-exporter-otlp-proto-http``); through the app's provider it returns SUCCESS
    once the record is handed to that provider's processors. It raises RuntimeError only when
    the installed OpenTelemetry API is older than 1.35 (the dispatcher logs it once and counts
    an export failure). The constructor raises ConfigurationError for invalid options.
    """

    name = "otlp"

    def __init__(self, logger_provider: Any = None, endpoint: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None, timeout_seconds: Optional[float] = None,
                 max_hotspots: int = 5) -> None:
        from otel_perfmon.errors import ConfigurationError

        if isinstance(max_hotspots, bool) or not isinstance(max_hotspots, int) or max_hotspots < 0:
            raise ConfigurationError(f"exporters: otlp: max_hotspots must be an int >= 0, got {max_hotspots!r}")
        if timeout_seconds is not None and (isinstance(timeout_seconds, bool) or
                                            not isinstance(timeout_seconds, (int, float)) or timeout_seconds <= 0):
            raise ConfigurationError(f"exporters: otlp: timeout_seconds must be > 0, got {timeout_seconds!r}")
        self._explicit = logger_provider
        self._endpoint = endpoint
        self._headers = dict(headers) if headers else None
        self._timeout = timeout_seconds
        self._max_hotspots = max_hotspots
        self._lock = threading.Lock()
        self._own_provider: Any = None
        self._own_exporter: Optional[_RecordingExporter] = None
        self._used: List[Any] = []  # providers we emitted through (for force_flush)
        self._loggers: Dict[int, Any] = {}

    # ------------------------------------------------------------------ pipeline
    def _app_provider(self) -> Any:
        if self._explicit is not None:
            return self._explicit
        from opentelemetry._logs import get_logger_provider

        provider = get_logger_provider()
        return provider if _is_real_provider(provider) else None

    def _private_provider(self, report: Any) -> Any:
        with self._lock:
            if self._own_provider is None:
                from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
                from opentelemetry.sdk._logs import LoggerProvider
                from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

                kwargs: Dict[str, Any] = {}
                if self._endpoint:
                    kwargs["endpoint"] = self._endpoint
                if self._headers:
                    kwargs["headers"] = self._headers
                if self._timeout:
                    kwargs["timeout"] = float(self._timeout)
                exporter = _RecordingExporter(OTLPLogExporter(**kwargs))
                provider = LoggerProvider(resource=self._resource(report), shutdown_on_exit=False)
                # synchronous: we already run on our own exporter thread, and the result is honest.
                # cast: a duck-typed LogRecordExporter (the SDK's base class was renamed across releases).
                provider.add_log_record_processor(SimpleLogRecordProcessor(cast(Any, exporter)))
                self._own_provider, self._own_exporter = provider, exporter
            return self._own_provider

    @staticmethod
    def _resource(report: Any) -> Any:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource

        resource = getattr(trace.get_tracer_provider(), "resource", None)
        if isinstance(resource, Resource):
            return resource
        service = getattr(report, "service_name", None)
        return Resource.create({"service.name": service} if service else {})

    def _logger_for(self, provider: Any) -> Any:
        logger = self._loggers.get(id(provider))
        if logger is None:
            from otel_perfmon import __version__

            logger = provider.get_logger(SCOPE_NAME, __version__)
            if "event_name" not in inspect.signature(logger.emit).parameters:
                raise RuntimeError("the otlp exporter needs opentelemetry-api/sdk >= 1.35 "
                                   "(log records with an event name)")
            self._loggers[id(provider)] = logger
            if provider not in self._used:
                self._used.append(provider)
        return logger

    # ------------------------------------------------------------------ interface
    def export(self, report: Any) -> ExportResult:
        """Emit one ``perfmon.report`` record for ``report`` (background thread); see the class."""
        try:
            from opentelemetry import trace
            from opentelemetry._logs import SeverityNumber

            provider = self._app_provider()
            private = provider is None
            if private:
                provider = self._private_provider(report)
            span_context = trace.SpanContext(
                trace_id=int(report.trace_id, 16), span_id=int(report.span_id, 16), is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
            duration = f"{float(report.duration_ms):.1f} ms > {float(report.threshold_ms):.1f} ms"
            body = f"slow {report.method or ''} {report.route}: {duration}, report {report.report_id}"
            body = body.replace("  ", " ")
            self._logger_for(provider).emit(
                timestamp=time.time_ns(), context=context, severity_number=SeverityNumber.WARN,
                severity_text="WARN", body=body, attributes=report_attributes(report, self._max_hotspots),
                event_name=EVENT_NAME)
        except ImportError:
            log_once(_logger, "otlp-import", "the otlp exporter needs a LoggerProvider set by the app or "
                     "the opentelemetry-exporter-otlp-proto-http package")
            return ExportResult.FAILURE
        if private:
            return ExportResult.SUCCESS if self._own_exporter is not None and self._own_exporter.last_ok \
                else ExportResult.FAILURE
        return ExportResult.SUCCESS

    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Flush the providers this exporter emitted through, within ``timeout_seconds`` (s)."""
        deadline = time.monotonic() + timeout_seconds
        ok = True
        for provider in list(self._used):
            flush = getattr(provider, "force_flush", None)
            if flush is None:
                continue
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            ok = bool(flush(remaining_ms)) and ok
        return ok

    def shutdown(self) -> None:
        """Shut down the private pipeline (the app's LoggerProvider is left to the app)."""
        with self._lock:
            provider, self._own_provider = self._own_provider, None
        if provider is not None:
            provider.shutdown()
