"""FastAPI: ``FastAPIInstrumentor.instrument_app`` (extra ``otel-perfmon[fastapi]``).

Sync ``def`` routes run in anyio's worker threads; :mod:`otel_perfmon.profiling.threads`
profiles those threads so their work appears in the report's call tree.
"""

from __future__ import annotations

from typing import Any, Optional


def instrument(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` with OTel's FastAPI instrumentor unless it already is."""
    from otel_perfmon.config import ConfigurationError

    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        return False
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError as exc:
        raise ConfigurationError(
            f"app: FastAPI apps need opentelemetry-instrumentation-fastapi (pip install 'otel-perfmon[fastapi]'): {exc}"
        ) from None
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    return True
