"""``configure_perfmon()`` and the handle it returns."""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from opentelemetry import trace

from otel_perfmon.config import PerfmonConfig, resolve_config
from otel_perfmon.errors import ConfigurationError
from otel_perfmon.processor import PerfmonSpanProcessor

_logger = logging.getLogger(__name__)
_lock = threading.RLock()
#: id(provider) -> (provider, Perfmon); the provider is kept so its id is not reused.
_by_provider: Dict[int, Tuple[Any, Perfmon]] = {}
#: handles waiting for the app to set the global TracerProvider.
_pending: List[Perfmon] = []
_current: Optional[Perfmon] = None


def _is_sdk_provider(provider: Any) -> bool:
    return callable(getattr(provider, "add_span_processor", None))


class Perfmon:
    """Handle returned by :func:`configure_perfmon`. Methods are safe from any thread."""

    def __init__(self, config: PerfmonConfig, exporters: List[Any]) -> None:
        self.config = config
        self.processor = PerfmonSpanProcessor(config, exporters)
        self.tracer_provider: Any = None

    @property
    def report_dir(self) -> str:
        """Absolute path of the report directory."""
        return self.processor.report_dir

    @property
    def store(self) -> Any:
        """The dedup store (memory, SQLite or Redis)."""
        return self.processor.store

    @property
    def attached(self) -> bool:
        """True once the processor is added to an SDK TracerProvider."""
        return self.tracer_provider is not None

    def _attach(self, provider: Any) -> None:
        provider.add_span_processor(self.processor)
        self.tracer_provider = provider
        _by_provider[id(provider)] = (provider, self)

    def force_flush(self, timeout_seconds: float = 5.0) -> bool:
        """Block up to ``timeout_seconds`` (s) until every queued report is written and exported.

        Returns True when everything finished in time. Call from app code, not from a hook.
        """
        return self.processor.force_flush(int(timeout_seconds * 1000))

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Stop profiling, export what is queued, close the store; returns within about
        ``timeout_seconds`` (s) even when an exporter hangs. Idempotent."""
        global _current
        with _lock:
            for key, (_provider, handle) in list(_by_provider.items()):
                if handle is self:
                    del _by_provider[key]
            if self in _pending:
                _pending.remove(self)
            if _current is self:
                _current = None
        self.processor.shutdown(timeout_seconds)

    def stats(self) -> Dict[str, int]:
        """Counters: spans_started, spans_profiled, slow_spans, reports_created,
        reports_deduplicated, reports_dropped, export_failures, internal_errors; plus
        profiled_fraction (0..1) and profiling_seconds_estimate (seconds, an upper bound)."""
        return self.processor.stats_snapshot()


def _install_set_provider_hook() -> None:
    original = trace.set_tracer_provider
    if getattr(original, "__otel_perfmon_hook__", False):
        return

    def set_tracer_provider(tracer_provider: Any) -> None:
        original(tracer_provider)
        _attach_pending()

    set_tracer_provider.__otel_perfmon_hook__ = True  # type: ignore[attr-defined]
    set_tracer_provider.__doc__ = original.__doc__
    trace.set_tracer_provider = set_tracer_provider


def _attach_pending() -> None:
    """Attach waiting handles once the global provider is an SDK TracerProvider."""
    provider = trace.get_tracer_provider()
    if not _is_sdk_provider(provider):
        return
    with _lock:
        while _pending:
            handle = _pending.pop(0)
            if id(provider) in _by_provider:
                _logger.warning("otel-perfmon: a handle is already attached to the TracerProvider; "
                                "a second configure_perfmon() before set_tracer_provider() was ignored")
                continue
            handle._attach(provider)


def current() -> Optional[Perfmon]:
    """The most recently configured handle still running, or None."""
    return _current


def configure_perfmon(app: Any = None, tracer_provider: Any = None, config: Optional[PerfmonConfig] = None,
                      **overrides: Any) -> Perfmon:
    """Add otel-perfmon to a TracerProvider and (optionally) instrument a Flask/FastAPI app.

    Without ``app``, in a Django project (settings configured, called before
    ``get_wsgi_application()`` / ``get_asgi_application()``), Django is instrumented with
    OTel's ``DjangoInstrumentor`` unless it already is.

    ``tracer_provider`` defaults to the global one; if the app has not set it yet, the
    processor is attached when ``opentelemetry.trace.set_tracer_provider`` is called.
    ``config`` fields that differ from their defaults win over ``OTEL_PERFMON_*`` env vars;
    keyword ``overrides`` (any PerfmonConfig field) win over both.

    Idempotent per tracer provider: a second call returns the first handle (and instruments
    ``app`` if given). Raises :class:`ConfigurationError` naming the field for invalid
    explicit values, an unknown exporter, or a provider that is not an SDK TracerProvider.
    Call it from app start-up code (it may create the report directory).
    """
    global _current
    from otel_perfmon.exporters.registry import build_exporters
    from otel_perfmon.integrations import django, instrument_app
    from otel_perfmon.profiling import threads

    resolved = resolve_config(config, overrides)
    if tracer_provider is not None and not _is_sdk_provider(tracer_provider):
        raise ConfigurationError(
            "tracer_provider must be an SDK TracerProvider (with add_span_processor), "
            f"got {type(tracer_provider).__name__}")
    with _lock:
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        existing = _by_provider.get(id(provider), (None, None))[1] if _is_sdk_provider(provider) else \
            (_pending[0] if _pending else None)
        if existing is not None:
            if existing.config != resolved:
                _logger.warning("otel-perfmon: configure_perfmon() called again for the same TracerProvider; "
                                "keeping the first configuration")
            handle = existing
        else:
            handle = Perfmon(resolved, build_exporters(resolved.exporters,
                                                       timeout_seconds=resolved.export_timeout_seconds))
            if _is_sdk_provider(provider):
                handle._attach(provider)
            else:
                _pending.append(handle)
                _install_set_provider_hook()
            if resolved.enabled:
                threads.install()
            _current = handle
    if app is not None and resolved.enabled:
        instrument_app(app, handle.tracer_provider)
    elif resolved.enabled:
        django.instrument(handle.tracer_provider)  # a Django project: before get_wsgi/asgi_application()
    return handle
