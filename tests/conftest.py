"""Shared fixtures: free ports, real server subprocesses (gunicorn / uvicorn), exported spans."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import pytest

from otel_perfmon.testing import wait_until  # noqa: F401  (tests import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: Optional[Dict[str, str]] = None, timeout: float = 30.0):
    """(status, body bytes) of a GET; HTTP errors return their status too."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """A server subprocess on 127.0.0.1:<port>; ``url(path)`` builds request URLs."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: str) -> None:
        self.process, self.port, self.log_path = process, port, log_path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


def stop_process(process: subprocess.Popen, grace_seconds: float = 10.0, group: bool = False) -> None:
    """SIGTERM ``process`` (its whole process group if ``group``), SIGKILL after ``grace_seconds``."""
    if process.poll() is not None:
        return
    terminate = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    terminate(signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        terminate(signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def run_server(argv: List[str], env: Dict[str, str], port: int, log_path: str, cwd: str = EXAMPLES,
               health_path: str = "/health", timeout: float = 60.0) -> Iterator[Server]:
    """Start ``argv``, wait until ``health_path`` answers 200 (deadline ``timeout``), yield,
    then stop it with SIGTERM (SIGKILL after 20 s)."""
    full_env = dict(os.environ)
    full_env.update(env)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, port, log_path)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            return http_get(server.url(health_path), timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout, 0.1, f"{argv[0]} to serve {health_path}")
        yield server
    finally:
        stop_process(process, 20.0, group=True)


def gunicorn_argv(module: str, port: int, workers: int = 2, extra: Optional[List[str]] = None) -> List[str]:
    return [os.path.join(BIN, "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "5", "--log-level", "warning", *(extra or []), module]


def uvicorn_argv(module: str, port: int, extra: Optional[List[str]] = None) -> List[str]:
    return [os.path.join(BIN, "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", *(extra or []), module]


def read_spans(span_dir: str) -> List[dict]:
    """Spans written by examples/tracing_setup.py (SDK ConsoleSpanExporter, JSON lines)."""
    spans = []
    for path in glob.glob(os.path.join(span_dir, "spans-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    spans.append(json.loads(line))
    return spans


def read_reports(report_dir: str) -> List[dict]:
    """The report JSON files (``<report_id>.json``; ids have no dot) of ``report_dir``."""
    reports = []
    for path in sorted(glob.glob(os.path.join(report_dir, "*.json"))):
        if "." in os.path.basename(path)[: -len(".json")]:
            continue  # not a report's JSON (e.g. <id>.speedscope.json)
        with open(path, encoding="utf-8") as handle:
            reports.append(json.load(handle))
    return reports


@pytest.fixture
def workdir(tmp_path):
    """A fresh directory with ``reports/`` and ``spans/`` paths (not created)."""
    return {"root": str(tmp_path), "reports": str(tmp_path / "reports"), "spans": str(tmp_path / "spans"),
            "log": str(tmp_path / "server.log")}


@contextmanager
def redis_server(workdir: str) -> Iterator[str]:
    """A real redis-server on a free loopback port (no persistence), yielding its redis:// URL;
    stopped on exit. Skips the test when redis-server or the redis package is missing."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found (make test installs it with apt-get install redis-server)")
    redis = pytest.importorskip("redis", reason="the redis Python package (extra otel-perfmon[redis]) is not installed")
    port = free_port()
    log_path = os.path.join(workdir, "redis.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)

    def ready() -> bool:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                raise AssertionError(f"redis-server exited: {handle.read()}")
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        wait_until(ready, 15, 0.05, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop_process(process)
