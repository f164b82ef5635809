"""Flask: ``FlaskInstrumentor.instrument_app`` (extra ``otel-perfmon[flask]``)."""

from __future__ import annotations

from typing import Any, Optional


def instrument(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` with OTel's Flask instrumentor unless it already is."""
    from otel_perfmon.config import ConfigurationError

    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return False
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError as exc:
        raise ConfigurationError(
            f"app: Flask apps need opentelemetry-instrumentation-flask (pip install 'otel-perfmon[flask]'): {exc}"
        ) from None
    FlaskInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    return True
