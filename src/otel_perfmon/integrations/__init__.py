"""Framework integrations: instrument a Flask or FastAPI app with OTel's own instrumentor."""

from __future__ import annotations

from typing import Any, Optional


def instrument_app(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` unless already instrumented; True when this call instrumented it.

    Raises ConfigurationError for an app that is neither Flask nor FastAPI/Starlette, or when
    the matching ``opentelemetry-instrumentation-*`` package is missing (install the extra).
    """
    from otel_perfmon.config import ConfigurationError

    modules = {cls.__module__.split(".")[0] for cls in type(app).__mro__}
    if "flask" in modules:
        from otel_perfmon.integrations import flask

        return flask.instrument(app, tracer_provider)
    if "fastapi" in modules or "starlette" in modules:
        from otel_perfmon.integrations import fastapi

        return fastapi.instrument(app, tracer_provider)
    raise ConfigurationError(f"app must be a Flask or FastAPI application, got {type(app).__name__}")
