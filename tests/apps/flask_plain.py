"""A plain Flask app for the zero-code tests: no OpenTelemetry or otel_perfmon code at all.

``APP_SLOW_SECONDS`` (default 0.6) sets how long ``/slow`` and odd ``/items/<id>`` take.
"""

import os
import time

from flask import Flask, jsonify, request

SLOW_SECONDS = float(os.environ.get("APP_SLOW_SECONDS", "0.6"))

app = Flask(__name__)


def wait_for_backend(seconds: float) -> None:
    time.sleep(seconds)


@app.get("/health")
def health():
    return "ok"


@app.get("/fast")
def fast():
    return jsonify(ok=True)


@app.get("/slow")
def slow():
    wait_for_backend(SLOW_SECONDS)
    return jsonify(ok=True)


@app.get("/items/<int:item_id>")
def item(item_id: int):
    if item_id % 2:
        wait_for_backend(SLOW_SECONDS)
    return jsonify(id=item_id, q=request.args.get("q"))


if __name__ == "__main__":  # `opentelemetry-instrument python flask_plain.py`
    app.run(host="127.0.0.1", port=int(os.environ["APP_PORT"]), threaded=True)
