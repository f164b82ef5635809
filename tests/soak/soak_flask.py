"""Soak app, Flask (gunicorn): ``/r0`` .. ``/r9`` sleep ``?slow=`` seconds (default: none) and
answer this worker's pid. See soak_common.py."""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request
from soak_common import EXCLUDED, ROUTES, mark, setup_tracing, slow_seconds, stats_payload

from otel_perfmon import configure_perfmon

setup_tracing()
app = Flask(__name__)


def route() -> str:
    seconds = slow_seconds(request.args.get("slow"))
    mark(bool(seconds))
    if seconds:
        time.sleep(seconds)
    return str(os.getpid())


for path in ROUTES:
    app.add_url_rule(path, path, route)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/perfmon-stats")
def perfmon_stats():
    return jsonify(stats_payload(perfmon))


perfmon = configure_perfmon(app=app, exclude_urls=EXCLUDED)
