"""A plain Flask service with no OpenTelemetry or otel-perfmon code: profiled with zero code.

Run it under the OpenTelemetry launcher (what ``collector-config/docker-compose.yaml`` does)::

    pip install "./otel-perfmon[flask]" opentelemetry-distro opentelemetry-exporter-otlp-proto-http gunicorn
    OTEL_SERVICE_NAME=shop OTEL_PERFMON_THRESHOLD_SECONDS=0.5 \\
        opentelemetry-instrument gunicorn -w 2 --chdir examples zero_code_app:app

Routes: ``/fast`` (instant), ``/cpu`` (CPU-bound, slow), ``/io`` (waits on I/O, slow),
``/items/<int:item_id>`` (odd ids are slow), ``/health``. ``flask_app.py`` serves the same
routes with an explicit ``configure_perfmon()`` set-up.
"""

import time

from flask import Flask, jsonify, request

from workloads import SLOW_SECONDS, crunch_numbers, load_from_slow_backend

app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.get("/fast")
def fast():
    return jsonify(ok=True)


@app.get("/cpu")
def cpu():
    return jsonify(total=crunch_numbers(time.monotonic() + SLOW_SECONDS))


@app.get("/io")
def io():
    return jsonify(load_from_slow_backend(SLOW_SECONDS))


@app.get("/items/<int:item_id>")
def item(item_id: int):
    if item_id % 2:
        load_from_slow_backend(SLOW_SECONDS)
    return jsonify(id=item_id, q=request.args.get("q"))
