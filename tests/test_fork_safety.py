"""Fork safety of the OTel SDK's metric pipeline: gunicorn ``--preload`` and Celery's prefork
pool fork their workers while the parent's PeriodicExportingMetricReader is exporting (it
holds its ``_export_lock``, which opentelemetry-sdk 1.45.1 does not reset in the child) over
a keep-alive connection the child inherits. Each worker must still export ``perfmon.*``
metrics, and no export may reach the receiver garbled (otel_perfmon.metrics' fork hooks).

A real gunicorn (2 preloaded workers) or ``celery worker --pool prefork`` (2 processes, real
redis-server broker), an app module written here, and a loopback OTLP/HTTP receiver that
keeps connections alive (HTTP/1.1, like an OTel Collector) and takes ``delay`` seconds per
metrics request. The app module's own fork hook (it runs before otel-perfmon's) waits until
an export is in progress, so every fork happens during one: shorter than
``FORK_EXPORT_WAIT_SECONDS`` (the fork waits it out) or longer (the child gets the locks of
an export that goes on in the parent only).

Each export is attributed to the process that sent it by the app's ``fork_safety.pid``
observable gauge (its callback returns ``os.getpid()`` when the reader collects), not by the
``process.pid`` resource attribute: a preloaded app creates its Resource in the parent, and
whether the SDK refreshes ``process.pid`` in the child depends on its version (1.45.1 does).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import EXAMPLES, free_port, gunicorn_argv, http_get, redis_server, run_server, stop_process
from otel_perfmon.metrics import FORK_EXPORT_WAIT_SECONDS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc: Linux")

DELAYS = [pytest.param(0.5, id="export-shorter-than-fork-wait"),
          pytest.param(FORK_EXPORT_WAIT_SECONDS + 1.0, id="export-longer-than-fork-wait")]

METRICS_SETUP = '''
import os, time
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=os.environ["METRICS_URL"]),
                                       export_interval_millis=50)
metrics.set_meter_provider(MeterProvider(resource=Resource.create({"service.name": "fork-safety"}),
                                         metric_readers=[reader]))
# the exporting process, read at each collection
metrics.get_meter("fork-safety").create_observable_gauge(
    "fork_safety.pid", callbacks=[lambda options: [Observation(os.getpid())]])
'''

FORK_DURING_EXPORT = '''
import otel_perfmon.metrics  # noqa: E402,F401  (its fork hooks are registered before this one)


def _wait_for_an_export():
    # before-fork hooks run in reverse order of registration: this one before otel-perfmon's
    deadline = time.monotonic() + 10
    while not reader._export_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.005)


os.register_at_fork(before=_wait_for_an_export)
'''

GUNICORN_APP = METRICS_SETUP + '''
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())

from zero_code_app import app  # noqa: E402
from otel_perfmon import configure_perfmon  # noqa: E402

configure_perfmon(app=app)
''' + FORK_DURING_EXPORT

CELERY_APP = METRICS_SETUP + '''
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())

from celery import Celery  # noqa: E402
from otel_perfmon import configure_perfmon  # noqa: E402

app = Celery("fork-safety", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(task_default_queue=os.environ["CELERY_QUEUE"], worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)
configure_perfmon(app=app)


@app.task(name="tasks.add")
def add(x, y):
    return x + y
''' + FORK_DURING_EXPORT


class SlowMetricsReceiver:
    """An OTLP/HTTP metrics receiver on loopback, HTTP/1.1 keep-alive, that answers each
    request after ``delay`` seconds. Records, per request, the exporting pid (the
    ``fork_safety.pid`` gauge) and the metric names; an error for each request it cannot
    parse and each connection that carries the exports of more than one process."""

    def __init__(self, delay: float):
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )

        self.seen = []
        self.errors = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                message = ExportMetricsServiceRequest()
                try:
                    message.ParseFromString(body)
                except Exception as exc:
                    with lock:
                        outer.errors.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                senders = getattr(self, "senders", set())  # of this connection (one handler per connection)
                self.senders = senders
                for rm in message.resource_metrics:
                    metrics = [m for sm in rm.scope_metrics for m in sm.metrics]
                    pids = {p.as_int for m in metrics if m.name == "fork_safety.pid" for p in m.gauge.data_points}
                    pid = pids.pop() if len(pids) == 1 else None
                    senders.add(pid)
                    with lock:
                        outer.seen.append((pid, {m.name for m in metrics}))
                        if len(senders) > 1:
                            outer.errors.append(f"one connection carries the exports of {sorted(senders, key=str)}")
                time.sleep(delay)
                payload = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def send_error(self, code, message=None, explain=None):
                with lock:
                    outer.errors.append(f"HTTP {code}: {message}")  # a garbled request line or header
                super().send_error(code, message, explain)

            def log_message(self, *args):
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pids_with_perfmon_metrics(self):
        return {pid for pid, names in list(self.seen) if any(n.startswith("perfmon.") for n in names)}

    def wait_for_perfmon_metrics(self, pids, timeout):
        """Poll until every pid of ``pids`` has sent ``perfmon.*`` metrics; AssertionError
        with what was received when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while not set(pids) <= self.pids_with_perfmon_metrics():
            if time.monotonic() >= deadline:
                counts = {}
                for pid, _names in list(self.seen):
                    counts[pid] = counts.get(pid, 0) + 1
                raise AssertionError(f"no perfmon.* metrics from {sorted(set(pids) - self.pids_with_perfmon_metrics())}"
                                     f" after {timeout} s; requests by pid: {counts}; errors: {self.errors[:5]}")
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return {int(x) for x in handle.read().split()}


def wait_for_children(pid, count, timeout, process):
    deadline = time.monotonic() + timeout
    while True:
        found = children(pid)
        if len(found) == count:
            return found
        if process.poll() is not None or time.monotonic() >= deadline:
            raise AssertionError(f"{count} child processes of {pid}: {sorted(found)} (exit code {process.poll()})")
        time.sleep(0.05)


@pytest.mark.parametrize("delay", DELAYS)
def test_preloaded_gunicorn_workers_export_perfmon_metrics(workdir, tmp_path, delay):
    (tmp_path / "fork_app.py").write_text(GUNICORN_APP)
    receiver = SlowMetricsReceiver(delay)
    port = free_port()
    env = {"METRICS_URL": receiver.url, "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,process",
           "PYTHONPATH": os.pathsep.join([EXAMPLES, str(tmp_path)]), "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
           "OTEL_PERFMON_THRESHOLD_SECONDS": "0.1", "EXAMPLE_SLOW_SECONDS": "0.2"}
    try:
        with run_server(gunicorn_argv("fork_app:app", port, workers=2, extra=["--preload"]), env, port,
                        workdir["log"], cwd=str(tmp_path)) as server:
            workers = wait_for_children(server.process.pid, 2, 30, server.process)
            for _ in range(6):
                assert http_get(server.url("/io"))[0] == 200
            receiver.wait_for_perfmon_metrics(workers | {server.process.pid}, 30)  # the master's too
            assert not receiver.errors, receiver.errors[:5]
    finally:
        receiver.close()


@pytest.mark.parametrize("delay", DELAYS)
def test_celery_prefork_processes_export_perfmon_metrics(tmp_path, delay):
    pytest.importorskip("celery", reason="the celery extra (otel-perfmon[celery]) is not installed")
    import subprocess

    (tmp_path / "fork_celery_app.py").write_text(CELERY_APP)
    receiver = SlowMetricsReceiver(delay)
    log_path = tmp_path / "worker.log"
    with redis_server(str(tmp_path)) as broker:
        env = dict(os.environ)
        env.update({"METRICS_URL": receiver.url, "CELERY_BROKER_URL": broker, "CELERY_QUEUE": "fork-safety",
                    "PYTHONPATH": os.pathsep.join([EXAMPLES, str(tmp_path)]),
                    "OTEL_PERFMON_REPORT_DIR": str(tmp_path / "reports")})
        celery_bin = str(Path(sys.executable).parent / "celery")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [celery_bin, "-A", "fork_celery_app", "worker", "--pool", "prefork", "--concurrency", "2",
                 "-l", "warning", "-n", f"fork-safety-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
                 "--without-heartbeat"], cwd=str(tmp_path), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            pool = wait_for_children(process.pid, 2, 60, process)
            receiver.wait_for_perfmon_metrics(pool | {process.pid}, 30)
            assert not receiver.errors, receiver.errors[:5]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ncelery worker log:\n{log_path.read_text(errors='replace')}") from None
        finally:
            stop_process(process, 30.0)
            receiver.close()
