"""``configure_perfmon()`` and the handle it returns."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from opentelemetry import trace

from otel_perfmon._fork import reset_locks_after_fork
from otel_perfmon.config import PerfmonConfig, resolve_config
from otel_perfmon.dedup import DedupStore, open_store
from otel_perfmon.dedup.memory import MemoryDedupStore
from otel_perfmon.dedup.resilient import ResilientStore
from otel_perfmon.errors import ConfigurationError
from otel_perfmon.processor import PerfmonSpanProcessor
from otel_perfmon.stats import log_once

_logger = logging.getLogger(__name__)
_stats_logger = logging.getLogger("otel_perfmon.processor")
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
        store = _open_store(config)
        self.processor = PerfmonSpanProcessor(config, exporters, store=store)
        if isinstance(store, ResilientStore):
            store.bind(self._store_error)
        # locks whose modules register no after-fork reset (dispatch, watchdog, sampler, stats do)
        reset_locks_after_fork(self.processor.slow, "_claim_lock")
        reset_locks_after_fork(store.inner if isinstance(store, ResilientStore) else store, "_lock")
        self.tracer_provider: Any = None

    def _store_error(self, exc: BaseException) -> None:
        # the dedup store's backend failed one operation (watchdog / worker thread)
        stats = self.processor.stats
        stats.incr("dedup_store_errors")
        log_once(_stats_logger, f"dedup-store:{type(exc).__name__}",
                 "dedup store %s unavailable (%r): claiming in this process and replaying when it answers",
                 self.config.dedup_store.split("@")[-1], exc, exc_info=False)

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
        _install_exit_hooks()

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


def _open_store(config: PerfmonConfig) -> DedupStore:
    # every shared store is wrapped: a down or locked backend never costs a report (dedup/resilient.py)
    store = open_store(config.dedup_store, os.path.abspath(config.report_dir))
    return store if isinstance(store, MemoryDedupStore) else ResilientStore(store)


# ---------------------------------------------------------------------------------- process exit
#: monotonic deadline of the exit shutdown once it started (one budget for every handle)
_exit_deadline: Optional[float] = None


def shutdown_at_exit() -> None:
    """Shut every attached handle down within its ``shutdown_timeout_seconds`` (one shared
    deadline: the largest of them). Runs at interpreter exit (atexit: gunicorn's SIGTERM and
    ``sys.exit``) and after uvicorn's shutdown when uvicorn is about to re-raise a signal.
    Idempotent (a second call shares the first one's deadline); never raises."""
    global _exit_deadline
    with _lock:
        handles = [handle for _provider, handle in _by_provider.values()]
    if not handles:
        return
    if _exit_deadline is None:
        _exit_deadline = time.monotonic() + max(h.config.shutdown_timeout_seconds for h in handles)
    for handle in handles:
        try:
            handle.shutdown(max(0.0, _exit_deadline - time.monotonic()))
        except Exception:
            _logger.exception("otel-perfmon: shutdown at exit failed")


def _install_exit_hooks() -> None:
    """atexit, registered (again) after the TracerProvider's own, so it runs before it (atexit
    is last-in first-out) and before the launcher's Logger/MeterProvider shut down; and a
    wrapper of uvicorn's ``Server.shutdown`` when uvicorn is imported (see
    :func:`_hook_uvicorn`). Called with ``_lock`` held."""
    atexit.unregister(shutdown_at_exit)
    atexit.register(shutdown_at_exit)
    _hook_uvicorn()


def _hook_uvicorn() -> None:
    """uvicorn (0.29+) restores the signal handlers after its graceful shutdown and re-raises
    SIGTERM/SIGINT, so the process dies of the signal and atexit never runs. Its
    ``Server.shutdown`` (connections closed, tasks done, lifespan shut down) is the last code
    that runs: after it, when a captured signal is about to be re-raised, the handles are shut
    down within their ``shutdown_timeout_seconds``. A server stopped without a signal (in a
    test, a programmatic ``should_exit``) is left alone: atexit covers the process's end."""
    server_module = sys.modules.get("uvicorn.server")
    server_class = getattr(server_module, "Server", None)
    original = getattr(server_class, "shutdown", None)
    if original is None or getattr(original, "__otel_perfmon_hook__", False):
        return

    async def shutdown(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await original(self, *args, **kwargs)
        finally:
            if getattr(self, "_captured_signals", None):
                shutdown_at_exit()  # blocks the (finished) loop for at most the timeout

    shutdown.__otel_perfmon_hook__ = True  # type: ignore[attr-defined]
    shutdown.__doc__ = original.__doc__
    server_class.shutdown = shutdown  # type: ignore[union-attr]


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
