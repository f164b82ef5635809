"""FastAPI: ``FastAPIInstrumentor.instrument_app`` (extra ``otel-perfmon[fastapi]``).

Sync ``def`` routes run in anyio's worker threads; :mod:`otel_perfmon.profiling.threads`
profiles those threads so their work appears in the report's call tree.
"""

from __future__ import annotations

from typing import Any, Optional

from otel_perfmon.integrations import instrument_with


def instrument(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument ``app`` with OTel's FastAPI instrumentor unless it already is."""
    return instrument_with(app, tracer_provider, "opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor",
                           "fastapi")
