"""Celery tasks: a real ``celery -A celery_app worker`` (examples/celery_app.py; prefork and
threads pools) on a real redis-server broker started here on a free loopback port.

A slow task (over ``task_threshold_seconds``, far under ``threshold_seconds``) gets a report
with a ``task`` object (name, id, queue, retries, redacted arguments), its CONSUMER span
carries ``perfmon.report.id``, a second slow run is deduplicated by service + task name, a
retried task reports its retry count, a fast task gets no report, and the secret keyword
arguments appear in no file the worker wrote.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import redis_server
from otel_perfmon.dedup import fingerprint
from otel_perfmon.testing import wait_until

pytest.importorskip("celery", reason="the celery extra (otel-perfmon[celery]) is not installed")
pytest.importorskip("opentelemetry.instrumentation.celery", reason="the celery extra is not installed")

from celery import Celery  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SECRET = "hunter2-secret"
TOKEN = "tok-5f0c1e9a-secret"
TASK_THRESHOLD = 0.3



@pytest.fixture(scope="module")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(str(tmp_path_factory.mktemp("celery-redis"))) as url:
        yield url


class Worker:
    """One ``celery worker`` process of examples/celery_app.py and the files it writes."""

    def __init__(self, broker: str, pool: str, tmp: Path) -> None:
        self.queue = f"perfmon-test-{pool}-{uuid.uuid4().hex[:8]}"
        self.report_dir = tmp / "reports"
        self.span_dir = tmp / "spans"
        self.log_path = tmp / "worker.log"
        env = dict(os.environ)
        env.update({
            "CELERY_BROKER_URL": broker, "CELERY_QUEUE": self.queue,
            "EXAMPLE_SPAN_DIR": str(self.span_dir), "OTEL_SERVICE_NAME": "celery-test",
            "OTEL_PERFMON_REPORT_DIR": str(self.report_dir),
            "OTEL_PERFMON_THRESHOLD_SECONDS": "30",  # requests: far above any task here
            "OTEL_PERFMON_TASK_THRESHOLD_SECONDS": str(TASK_THRESHOLD),
            "OTEL_PERFMON_INFLIGHT_MULTIPLE": "0",
            "PYTHONPATH": os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        })
        self._log = open(self.log_path, "wb")
        celery_bin = str(Path(sys.executable).parent / "celery")
        self.process = subprocess.Popen(
            [celery_bin, "-A", "celery_app", "worker", "--pool", pool, "--concurrency", "2", "-l", "info",
             "-n", f"{self.queue}@%h", "-Q", self.queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=str(EXAMPLES), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = Celery("perfmon-test-client", broker=broker)
        self.client.conf.broker_connection_retry_on_startup = True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"celery worker exited:\n{self.log()}")
            return " ready." in self.log()

        wait_until(ready, 60, 0.1, "the celery worker to be ready")

    def send(self, name: str, *args: Any, **kwargs: Any) -> str:
        return str(self.client.send_task(name, args=args, kwargs=kwargs, queue=self.queue).id)

    def spans(self) -> List[Dict[str, Any]]:
        found = []
        for path in glob.glob(str(self.span_dir / "spans-*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        try:
                            found.append(json.loads(line))
                        except ValueError:  # a line still being written
                            pass
        return found

    def task_span(self, task_id: str) -> Any:
        for span in self.spans():
            attributes = span.get("attributes") or {}
            if span.get("kind") == "SpanKind.CONSUMER" and attributes.get("messaging.message.id") == task_id:
                return span
        return None

    def reports(self) -> List[Dict[str, Any]]:
        found = []
        for path in glob.glob(str(self.report_dir / "*.json")):
            if "." in os.path.basename(path)[: -len(".json")]:
                continue  # not a report's JSON (e.g. <id>.speedscope.json)
            try:
                found.append(json.loads(Path(path).read_text(encoding="utf-8")))
            except ValueError:
                pass
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.client.close()
        self._log.close()


@pytest.fixture(params=["prefork", "threads"])
def worker(request: pytest.FixtureRequest, broker_url: str, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(broker_url, request.param, tmp_path)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _report_of(worker: Worker, task_id: str) -> Any:
    for report in worker.reports():
        if (report.get("task") or {}).get("id") == task_id:
            return report
    return None


def test_slow_task_report_linked_redacted_deduplicated(worker: Worker) -> None:
    slow_id = worker.send("tasks.rebuild_index", 7, password=SECRET, seconds=1.0, mode="full")
    fast_id = worker.send("tasks.add", 2, 3)

    report = wait_until(lambda: _report_of(worker, slow_id), 60, 0.1, "the slow task's report")
    task = report["task"]
    assert task["name"] == "tasks.rebuild_index"
    assert task["id"] == slow_id
    assert task["queue"] == worker.queue
    assert task["retries"] == 0
    assert task["state"] == "SUCCESS"
    assert task["args"] == ["7"]
    assert task["kwargs"] == {"password": "[REDACTED]", "seconds": "1.0", "mode": "'full'"}
    assert report["span_name"] == "run/tasks.rebuild_index"
    assert report["threshold_ms"] == TASK_THRESHOLD * 1000  # the task threshold, not the request one
    assert report["duration_ms"] > TASK_THRESHOLD * 1000
    assert report["service_name"] == "celery-test"
    assert report["fingerprint"] == fingerprint("celery-test", "FUNCTION", "run/tasks.rebuild_index")
    assert report["profile"]["sample_count"] > 0
    assert any(h["function"] in ("_checksum", "_burn") for h in report["profile"]["hotspots"])
    for suffix in ("html", "md"):
        text = (worker.report_dir / f"{report['report_id']}.{suffix}").read_text(encoding="utf-8")
        assert "tasks.rebuild_index" in text.replace("\\", "") and slow_id in text.replace("\\", "")

    # the CONSUMER span links to the report
    span = wait_until(lambda: worker.task_span(slow_id), 30, 0.1, "the slow task's span")
    assert span["attributes"]["perfmon.slow"] is True
    assert span["attributes"]["perfmon.report.id"] == report["report_id"]

    # the fast task ran, is not slow, and has no report
    fast_span = wait_until(lambda: worker.task_span(fast_id), 30, 0.1, "the fast task's span")
    assert "perfmon.slow" not in fast_span["attributes"]
    assert fast_span["attributes"]["celery.task_name"] == "tasks.add"

    # a second slow run of the same task: deduplicated into the same report (service + task name)
    again_id = worker.send("tasks.rebuild_index", 8, password=SECRET, seconds=0.8)
    again = wait_until(lambda: worker.task_span(again_id), 60, 0.1, "the second slow run's span")
    assert again["attributes"]["perfmon.report.id"] == report["report_id"]

    # a retried task: its second (slow) run reports retries=1; its secret keyword is redacted
    flaky_id = worker.send("tasks.flaky", 0.8, api_token=TOKEN)
    flaky = wait_until(lambda: _report_of(worker, flaky_id), 60, 0.1, "the retried task's report")
    assert flaky["task"]["name"] == "tasks.flaky"
    assert flaky["task"]["retries"] == 1
    assert flaky["task"]["kwargs"] == {"api_token": "[REDACTED]"}

    names = [(r.get("task") or {}).get("name") for r in worker.reports()]
    assert sorted(names) == ["tasks.flaky", "tasks.rebuild_index"], names

    worker.stop()  # flushes the files; then no output holds a secret
    outputs = [p for p in (worker.report_dir.rglob("*")) if p.is_file()] + list(worker.span_dir.rglob("*")) + \
        [worker.log_path]
    assert len(outputs) > 6
    for path in outputs:
        data = path.read_bytes()
        assert SECRET.encode() not in data and TOKEN.encode() not in data, path
