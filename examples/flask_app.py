"""Example Flask service profiled by otel-perfmon.

Run it under gunicorn (what ``make demo`` does)::

    OTEL_PERFMON_THRESHOLD_SECONDS=0.5 gunicorn -w 2 --chdir examples flask_app:app

Routes: ``/fast`` (instant), ``/cpu`` (CPU-bound, slow), ``/io`` (waits on I/O, slow),
``/items/<int:item_id>`` (parameterized: odd ids are slow), ``/health``.
``EXAMPLE_SLOW_SECONDS`` (default 1.2) sets how long the slow routes take.
"""

import hashlib
import os
import time

from flask import Flask, jsonify, request

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

SLOW_SECONDS = float(os.environ.get("EXAMPLE_SLOW_SECONDS", "1.2"))

setup_tracing("example-flask")
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


@app.get("/fast")
def fast():
    return jsonify(ok=True)


@app.get("/health")
def health():
    return "ok"


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


perfmon = configure_perfmon(app=app)
