"""Example Celery app profiled by otel-perfmon: slow tasks get a report like slow requests.

Run a worker (a redis-server on localhost, or set ``CELERY_BROKER_URL``)::

    OTEL_PERFMON_TASK_THRESHOLD_SECONDS=0.5 celery -A celery_app worker --workdir examples -l info
    # the threads pool:     ... worker --pool threads --concurrency 4
    # send tasks from another shell:
    cd examples && python -c "import celery_app; celery_app.rebuild_index.delay(7, password='x')"

The tasks: ``tasks.rebuild_index`` (CPU-bound, slow, takes a secret keyword argument that the
report shows as ``[REDACTED]``), ``tasks.add`` (instant), ``tasks.wait`` (sleeps ``seconds``),
``tasks.flaky`` (retried once, then CPU-bound).
The set-up is the two steps of any app: the OpenTelemetry SDK (``tracing_setup.py``) and
``configure_perfmon(app=app)``, which instruments Celery with OTel's ``CeleryInstrumentor``.
"""

import os
import time

from celery import Celery

from otel_perfmon import configure_perfmon
from tracing_setup import setup_tracing

setup_tracing("example-celery")

app = Celery("example", broker=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_default_queue=os.environ.get("CELERY_QUEUE", "celery"),
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

perfmon = configure_perfmon(app=app)


def _checksum(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total = (total * 31 + i) % 1_000_003
    return total


@app.task(name="tasks.rebuild_index")
def rebuild_index(shard: int, password: str = "", seconds: float = 1.0, mode: str = "full") -> int:
    """CPU-bound for ``seconds`` (slow under the default thresholds)."""
    return shard * _burn(seconds)


def _burn(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        _checksum(20_000)
        rounds += 1
    return rounds


@app.task(name="tasks.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="tasks.wait")
def wait(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task(name="tasks.flaky", bind=True, max_retries=3)
def flaky(self, seconds: float, api_token: str = "") -> int:
    """Fails its first run (retried a second later), then is CPU-bound for ``seconds``."""
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return _burn(seconds)
