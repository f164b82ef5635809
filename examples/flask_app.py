"""Example Flask service profiled by otel-perfmon, set up in code.

Run it under gunicorn (what ``make demo`` does)::

    OTEL_PERFMON_THRESHOLD_SECONDS=0.5 gunicorn -w 2 --chdir examples flask_app:app

The routes are those of ``zero_code_app.py`` (a plain Flask app): ``/fast`` (instant),
``/cpu`` (CPU-bound, slow), ``/io`` (waits on I/O, slow), ``/items/<int:item_id>``
(parameterized: odd ids are slow), ``/health``. This file adds the two set-up steps a user
writes: the OpenTelemetry SDK (``tracing_setup.py``) and ``configure_perfmon(app=app)``.
"""

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

setup_tracing("example-flask")

from zero_code_app import app  # noqa: E402  (the routes; the tracer provider is set first)

perfmon = configure_perfmon(app=app)
