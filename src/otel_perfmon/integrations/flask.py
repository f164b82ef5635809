"""Flask: ``FlaskInstrumentor.instrument_app`` (extra ``otel-perfmon[flask]``)."""

from __future__ import annotations

from typing import Any, Optional

from otel_perfmon.integrations import instrument_with


def instrument(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` with OTel's Flask instrumentor unless it already is."""
    return instrument_with(app, tracer_provider, "opentelemetry.instrumentation.flask", "FlaskInstrumentor", "flask")
