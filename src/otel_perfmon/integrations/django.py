"""Django: ``DjangoInstrumentor().instrument(tracer_provider=...)`` (extra ``otel-perfmon[django]``).

Usage, in ``wsgi.py`` (or ``asgi.py``), before the application is built::

    import os
    from django.core.wsgi import get_wsgi_application
    from otel_perfmon import configure_perfmon

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    # ... the OpenTelemetry SDK set-up (TracerProvider, exporters) ...
    perfmon = configure_perfmon()          # instruments Django: adds OTel's middleware
    application = get_wsgi_application()   # or get_asgi_application()

OTel's Django instrumentation works by inserting its middleware into ``settings.MIDDLEWARE``,
so it must run before ``get_wsgi_application()`` / ``get_asgi_application()`` load the
middleware; after that it has no effect. :func:`configure_perfmon` calls :func:`instrument`
with no app: it instruments Django when Django is imported, its settings are configured (or
``DJANGO_SETTINGS_MODULE`` is set) and the instrumentor has not run yet. Under
``opentelemetry-instrument`` the instrumentor's own entry point does it.

The SERVER span's ``http.route`` is Django's route template, which has no leading slash
(``items/<int:item_id>``); URL globs such as ``/items/*`` match it as well (see
``UrlFilter.allows``). Under ASGI, ``def`` views run in asgiref's thread executor:
:mod:`otel_perfmon.profiling.threads` samples (or profiles) that thread for the span.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Optional

from otel_perfmon.integrations import instrument_globally


def settings_ready() -> bool:
    """True when Django is imported and its settings are configured or can be (``DJANGO_SETTINGS_MODULE``).

    Never imports Django: a process that has not imported it is not a Django app.
    """
    if "django" not in sys.modules:
        return False
    try:
        settings = importlib.import_module("django.conf").settings
    except Exception:  # a broken or partial Django install is not ours to report
        return False
    return bool(settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"))


def instrument(tracer_provider: Optional[Any]) -> bool:
    """Instrument Django with OTel's ``DjangoInstrumentor`` unless it already is.

    Returns True when this call instrumented it; False when Django is not in use (see
    :func:`settings_ready`) or already instrumented. Raises ConfigurationError naming the
    extra when ``opentelemetry-instrumentation-django`` is missing.
    """
    if not settings_ready():
        return False
    instrumentor = instrument_globally(tracer_provider, "opentelemetry.instrumentation.django", "DjangoInstrumentor",
                                       "django", field="Django")
    if instrumentor is None:
        return False
    _use_async_capable_middleware(importlib.import_module("django.conf").settings,
                                  getattr(instrumentor, "_opentelemetry_middleware", None))
    return True


#: The dotted path of :data:`PerfmonDjangoMiddleware` (put in ``settings.MIDDLEWARE``).
MIDDLEWARE_PATH = __name__ + ".PerfmonDjangoMiddleware"


def _use_async_capable_middleware(settings: Any, otel_path: Optional[str]) -> None:
    """Replace OTel's middleware in ``settings.MIDDLEWARE`` by its async-capable subclass."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if not otel_path or otel_path not in middleware:
        return
    middleware[middleware.index(otel_path)] = MIDDLEWARE_PATH
    settings.MIDDLEWARE = middleware


def _build_middleware() -> Any:
    """OTel's ``_DjangoMiddleware``, able to run on the event loop under ASGI.

    OTel's middleware is sync-only, so under ASGI Django runs it (and the span's start and end)
    in asgiref's thread executor, a thread hop each way per request, while ``async def`` views
    run on the event loop in another task: the span's thread only waits. This subclass is
    also async-capable: under ASGI its ``process_request`` / ``process_response`` (span start
    and end, no I/O) run in the request's own task, so async views are profiled with their
    task and ``def`` views in asgiref's worker thread (see :mod:`otel_perfmon.profiling.threads`).
    Under WSGI it is OTel's middleware unchanged. Only used when configure_perfmon() instruments
    Django itself, which passes no request/response hooks (user hooks may touch the ORM).
    """
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction

    base = importlib.import_module("opentelemetry.instrumentation.django.middleware.otel_middleware")._DjangoMiddleware

    class PerfmonDjangoMiddleware(base):  # type: ignore[misc,valid-type]
        sync_capable = True
        async_capable = True

        def __init__(self, get_response: Any) -> None:
            super().__init__(get_response)
            self._is_async = iscoroutinefunction(get_response)
            if self._is_async:
                markcoroutinefunction(self)
                process_view: Any = super().process_view

                async def process_view_async(request: Any, view_func: Any, *args: Any, **kwargs: Any) -> Any:
                    return process_view(request, view_func, *args, **kwargs)  # sets http.route; no I/O

                self.process_view = process_view_async

        def __call__(self, request: Any) -> Any:
            if self._is_async:
                return self.__acall__(request)
            return super().__call__(request)

        async def __acall__(self, request: Any) -> Any:
            scope = getattr(request, "scope", None)  # noqa: F841  (capture finds the headers in this frame)
            self.process_request(request)
            response = await self.get_response(request)
            return self.process_response(request, response)

    PerfmonDjangoMiddleware.__module__ = __name__
    PerfmonDjangoMiddleware.__qualname__ = "PerfmonDjangoMiddleware"
    return PerfmonDjangoMiddleware


def __getattr__(name: str) -> Any:
    # PerfmonDjangoMiddleware is built on first access (Django's import_string), so importing
    # this module never imports Django or OTel's instrumentation.
    if name == "PerfmonDjangoMiddleware":
        cls = _build_middleware()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

