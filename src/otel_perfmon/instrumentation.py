"""Zero-code otel-perfmon: the ``perfmon`` instrumentor for ``opentelemetry-instrument``.

Usage (the app never imports otel_perfmon)::

    pip install ./otel-perfmon opentelemetry-distro opentelemetry-exporter-otlp-proto-http \\
        opentelemetry-instrumentation-flask          # or -fastapi
    export OTEL_SERVICE_NAME=shop
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318
    export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
    export OTEL_PERFMON_THRESHOLD_SECONDS=0.5
    opentelemetry-instrument gunicorn -w 4 app:app     # or: uvicorn app:app, python app.py

The launcher runs the SDK configurator first (TracerProvider, MeterProvider, LoggerProvider
from the ``OTEL_*`` variables), then every ``opentelemetry_instrumentor`` entry point; ours
calls :func:`otel_perfmon.configure_perfmon` with no arguments, so it is configured only by the
``OTEL_PERFMON_*`` variables (docs/configuration.md), and adds its SpanProcessor to that provider
(or to the one the app sets later). OTel's Flask / FastAPI instrumentors create the SERVER
spans. gunicorn imports the app in the master and forks the workers; otel-perfmon's
threads start lazily and again in each worker (``os.register_at_fork``). At interpreter exit
the queued reports are flushed (within ``OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS``) before the
launcher's LoggerProvider and MeterProvider shut down, so the last ``perfmon.report`` events
are not lost.

Configuration::

    export OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=perfmon   # turn it off (the launcher skips it)
    export OTEL_PERFMON_ENABLED=false                      # or: loaded, but profiles nothing
    export OTEL_PERFMON_EXPORTERS=otlp                     # reports as OTLP log events too

The instrumentor declares no instrumented library (``instrumentation_dependencies`` is
empty), so it loads whether or not Flask or FastAPI is installed, and it never lets an
exception reach the launcher (which would abort the instrumentors after it): failures are
logged and otel-perfmon stays off.
"""

from __future__ import annotations

import atexit
import logging
from typing import Any, Collection, Optional

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

_logger = logging.getLogger(__name__)

def _flush_at_exit() -> None:
    """atexit (main thread, at interpreter exit): write and export the queued reports within
    ``shutdown_timeout_seconds`` (the deadline :func:`otel_perfmon.api.shutdown_at_exit`
    shares with every other exit hook); never raises."""
    if PerfmonInstrumentor.handle is None:
        return
    try:
        from otel_perfmon.api import shutdown_at_exit

        shutdown_at_exit()
    except Exception:
        _logger.exception("otel-perfmon: flush at exit failed")


class PerfmonInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``opentelemetry_instrumentor: perfmon``.

    ``instrument()`` (called by the launcher with no arguments, in the process that starts
    the app, before the app is imported) configures otel-perfmon from ``OTEL_PERFMON_*``;
    ``uninstrument()`` shuts it down. Neither raises. The handle is ``handle`` (or None when
    configuration failed).
    """

    handle: Optional[Any] = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """No instrumented library: load whatever frameworks are installed."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        try:
            from otel_perfmon.api import configure_perfmon

            tracer_provider = kwargs.get("tracer_provider")
            handle = configure_perfmon(tracer_provider=tracer_provider)
            type(self).handle = handle
            # atexit runs last-registered first: this flush runs before the configurator's
            # LoggerProvider / MeterProvider shut down, so reports still queued at exit
            # reach the app's pipelines (the otlp exporter) instead of a closed provider.
            atexit.register(_flush_at_exit)
            _logger.debug("otel-perfmon: configured by opentelemetry-instrument (%s)",
                          handle.config)
        except Exception:  # never into the launcher: it would abort the other instrumentors
            _logger.exception("otel-perfmon: zero-code set-up failed; profiling is off")

    def _uninstrument(self, **kwargs: Any) -> None:
        handle, type(self).handle = type(self).handle, None
        if handle is None:
            return
        try:
            handle.shutdown(float(kwargs.get("timeout_seconds", 5.0)))
        except Exception:
            _logger.exception("otel-perfmon: shutdown failed")
