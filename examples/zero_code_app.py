"""A plain Flask service with no OpenTelemetry or otel-perfmon code: profiled with zero code.

Run it under the OpenTelemetry launcher (what ``collector-config/docker-compose.yaml`` does)::

    pip install "otel-perfmon[flask]" opentelemetry-distro opentelemetry-exporter-otlp-proto-http gunicorn
    OTEL_SERVICE_NAME=shop OTEL_PERFMON_THRESHOLD_SECONDS=0.5 \\
        opentelemetry-instrument gunicorn -w 2 --chdir examples zero_code_app:app

Routes: ``/fast`` (instant), ``/cpu`` (CPU-bound, slow), ``/io`` (waits on I/O, slow),
``/items/<int:item_id>`` (odd ids are slow), ``/health``. ``EXAMPLE_SLOW_SECONDS`` (default
1.2) sets how long the slow routes take.
"""

import hashlib
import os
import time

from flask import Flask, jsonify, request

SLOW_SECONDS = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "1.2"))

app = Flask(__name__)


def checksum_rows(rows: int) -> str:
    digest = hashlib.sha256()
    for row in range(rows):
        digest.update(f"row-{row}".encode())
    return digest.hexdigest()


def crunch_numbers(deadline: float) -> int:
    """CPU-bound work: many small Python calls until the deadline."""
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(500))
        checksum_rows(20)
    return total


def load_from_slow_backend(seconds: float) -> dict:
    """I/O-bound work: stands in for a slow database or HTTP call."""
    time.sleep(seconds)
    return {"rows": 3}


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
