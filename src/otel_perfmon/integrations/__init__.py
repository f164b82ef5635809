"""Framework integrations: instrument a Flask or FastAPI app, a Celery app, or Django, with OTel's own
instrumentor."""

from __future__ import annotations

import importlib
from typing import Any, Optional


def _instrumentor_class(module: str, instrumentor: str, extra: str, field: str = "app") -> Any:
    """The instrumentor class; ConfigurationError naming the extra when its package is missing."""
    from otel_perfmon.errors import ConfigurationError

    try:
        return getattr(importlib.import_module(module), instrumentor)
    except ImportError as exc:
        raise ConfigurationError(
            f"{field}: needs {module.replace('.', '-').replace('_', '-')} "
            f"(pip install 'otel-perfmon[{extra}]'): {exc}") from None


def instrument_globally(tracer_provider: Optional[Any], module: str, instrumentor: str, extra: str,
                        field: str = "app") -> Optional[Any]:
    """``<instrumentor>().instrument(tracer_provider=...)`` (a process-wide instrumentor such as
    Celery's or Django's) unless it already ran; returns the instrumentor when this call
    instrumented, else None. Raises ConfigurationError naming the extra when it is missing."""
    instance = _instrumentor_class(module, instrumentor, extra, field)()  # a singleton (BaseInstrumentor)
    if instance.is_instrumented_by_opentelemetry:
        return None
    instance.instrument(tracer_provider=tracer_provider)
    return instance


def instrument_with(app: Any, tracer_provider: Optional[Any], module: str, instrumentor: str, extra: str) -> bool:
    """``<instrumentor>.instrument_app(app, tracer_provider=...)`` unless ``app`` already is.

    Returns True when this call instrumented the app. Raises ConfigurationError naming the
    extra to install when the instrumentation package is missing.
    """
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return False
    _instrumentor_class(module, instrumentor, extra).instrument_app(app, tracer_provider=tracer_provider)
    return True


def instrument_app(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` unless already instrumented; True when this call instrumented it.

    Raises ConfigurationError for an app that is neither Flask, FastAPI/Starlette nor Celery, or when
    the matching ``opentelemetry-instrumentation-*`` package is missing (install the extra).
    """
    from otel_perfmon.errors import ConfigurationError

    modules = {cls.__module__.split(".")[0] for cls in type(app).__mro__}
    if "flask" in modules:
        from otel_perfmon.integrations import flask

        return flask.instrument(app, tracer_provider)
    if "fastapi" in modules or "starlette" in modules:
        from otel_perfmon.integrations import fastapi

        return fastapi.instrument(app, tracer_provider)
    if "celery" in modules:
        from otel_perfmon.integrations import celery

        if celery.is_celery_app(app):
            return celery.instrument(app, tracer_provider)
    if "django" in modules:
        raise ConfigurationError("a Django application is instrumented by configure_perfmon() without app=, "
                                 "called before get_wsgi_application() / get_asgi_application()")
    raise ConfigurationError(f"app must be a Flask, FastAPI or Celery application, got {type(app).__name__}")
