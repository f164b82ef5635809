"""Celery: ``CeleryInstrumentor().instrument(tracer_provider=...)`` (extra ``otel-perfmon[celery]``).

Usage, in the module that creates the Celery app (it is imported by the worker, and by every
process that sends tasks)::

    from celery import Celery
    from otel_perfmon import configure_perfmon

    app = Celery("orders", broker="redis://localhost:6379/0")
    # ... the OpenTelemetry SDK set-up (TracerProvider, exporters) ...
    perfmon = configure_perfmon(app=app, task_threshold_seconds=5.0)

OTel's Celery instrumentation is process-wide (it connects to Celery's task signals), so
``app=`` instruments Celery unless the instrumentor already ran (for example under
``opentelemetry-instrument``). Each task run is a ``run/<task name>`` CONSUMER span, the local
root of its trace in the worker; otel-perfmon tracks it like a request, with
``task_threshold_seconds`` (env ``OTEL_PERFMON_TASK_THRESHOLD_SECONDS``, default the request
threshold). A slow task's report has a ``task`` object: name, id, queue, retries and the
arguments (reprs, secret-looking names redacted; see :mod:`otel_perfmon.report.task`).
Reports are deduplicated by service + task name.

Pools: ``prefork`` (the default) forks its children after the module is imported; the
tracer provider's and otel-perfmon's background threads are restarted in each child.
``threads``, ``solo`` and ``gevent``/``eventlet`` run the tasks in the worker process itself.
"""

from __future__ import annotations

from typing import Any, Optional

from otel_perfmon.integrations import instrument_globally


def is_celery_app(app: Any) -> bool:
    """True for a ``celery.Celery`` application (or a subclass)."""
    return any(cls.__module__.split(".")[0] == "celery" and cls.__name__ == "Celery" for cls in type(app).__mro__)


def instrument(app: Any, tracer_provider: Optional[Any]) -> bool:
    """Instrument Celery with OTel's ``CeleryInstrumentor`` unless it already is.

    Returns True when this call instrumented it. Raises ConfigurationError naming the extra
    when ``opentelemetry-instrumentation-celery`` is missing.
    """
    return instrument_globally(tracer_provider, "opentelemetry.instrumentation.celery", "CeleryInstrumentor",
                               "celery") is not None
