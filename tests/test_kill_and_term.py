"""Killed and terminated servers: ``kill -9`` mid-write leaves no corrupt report, SIGTERM
writes the queued reports within ``shutdown_timeout_seconds`` (gunicorn and uvicorn, whose
re-raised SIGTERM skips atexit), even with a hung exporter.

Real gunicorn and uvicorn servers of examples/flask_app.py and examples/fastapi_app.py, a
loopback webhook receiver (slow, or hanging), real signals.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import BIN, free_port, gunicorn_argv, http_get, run_server, uvicorn_argv, wait_until
from notify_support import HANG, RecordingServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc: Linux")

SHUTDOWN_TIMEOUT = 2.0
#: time to exit beyond shutdown_timeout: interpreter and gunicorn master teardown (generous)
MARGIN = 8.0


def env_for(workdir, **extra):
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": "0.1", "EXAMPLE_SLOW_SECONDS": "0.3",
           "OTEL_PERFMON_REPORT_DIR": workdir["reports"], "OTEL_PERFMON_DEDUP_WINDOW_SECONDS": "0",
           "OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT), "OTEL_PERFMON_DEDUP_STORE": "sqlite"}
    env.update(extra)
    return env


def report_jsons(report_dir):
    return [p for p in glob.glob(os.path.join(report_dir, "*.json"))
            if "." not in os.path.basename(p)[:-len(".json")]]


def check_every_json_parses_and_lists(report_dir):
    """Every *.json parses (temporaries are *.tmp-<pid>); the index and ``otel-perfmon list`` work."""
    from otel_perfmon.viewer.index import ReportIndex

    for path in glob.glob(os.path.join(report_dir, "*.json")):
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    ids = {os.path.basename(p)[:-5] for p in report_jsons(report_dir)}
    listed = {r.report_id for r in ReportIndex(report_dir, None, refresh_interval_seconds=0)
              .query(per_page=10000).items}
    assert listed == ids
    cli = subprocess.run([os.path.join(BIN, "otel-perfmon"), "list", "--report-dir", report_dir],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    return ids


def burst(server, path, n, workers=16):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: http_get(server.url(f"{path}?n={i}"), timeout=30)[0], range(n)))


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


def kill_while_writing(report_dir, pid, deadline_seconds=20.0):
    """SIGKILL ``pid`` as soon as one of its report temporaries exists (mid-write); True if seen."""
    deadline = time.monotonic() + deadline_seconds
    suffix = f".tmp-{pid}"
    while time.monotonic() < deadline:
        try:
            names = os.listdir(report_dir)
        except FileNotFoundError:
            names = []
        if any(name.endswith(suffix) for name in names):
            _kill(pid)
            return True
    _kill(pid)
    return False


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it exited on its own meanwhile (gunicorn recycled it): nothing to kill
        pass


def test_kill_9_of_a_gunicorn_worker_and_of_uvicorn_mid_write_leaves_no_corrupt_report(workdir):
    port = free_port()
    env = env_for(workdir)
    with run_server(gunicorn_argv("flask_app:app", port, workers=2, extra=["-k", "gthread", "--threads", "8"]),
                    env, port, workdir["log"]) as server:
        burst(server, "/io", 4)  # the workers are up and have written reports
        killed = []
        for _round in range(2):
            victims = children(server.process.pid)
            assert victims
            load = threading.Thread(target=burst, args=(server, "/cpu", 24))
            load.start()
            killed.append(kill_while_writing(workdir["reports"], victims[0]))
            load.join(60)
            wait_until(lambda: len(children(server.process.pid)) == 2, 30, message="gunicorn to respawn")
        assert all(status == 200 for status in burst(server, "/fast", 8))
    ids = check_every_json_parses_and_lists(workdir["reports"])
    assert len(ids) >= 4
    print(f"gunicorn: killed mid-write (a temporary existed) {killed}; {len(ids)} reports")

    port = free_port()
    with run_server(uvicorn_argv("fastapi_app:app", port), env, port, workdir["log"]) as server:
        assert burst(server, "/sync-io", 3) == [200] * 3
        wait_until(lambda: len(report_jsons(workdir["reports"])) == len(ids) + 3, 20, message="uvicorn's reports")
        load = threading.Thread(target=burst, args=(server, "/sync-cpu", 12))
        load.start()
        seen = kill_while_writing(workdir["reports"], server.process.pid)
        load.join(60)
        server.process.wait(10)
        assert server.process.returncode == -signal.SIGKILL
    ids_after = check_every_json_parses_and_lists(workdir["reports"])
    assert len(ids_after) >= len(ids) + 3
    print(f"uvicorn: killed mid-write {seen}; leftover temporaries "
          f"{len([n for n in os.listdir(workdir['reports']) if '.tmp-' in n])}")


def _terminate_and_time(server):
    started = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(timeout=SHUTDOWN_TIMEOUT + MARGIN + 20)
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_sigterm_writes_queued_reports_and_delivers_them(workdir, kind):
    delay = threading.Event()

    def slow_receiver(_index, _request):
        delay.wait(0.05)  # a slow receiver: 50 ms a message, the backlog drains at shutdown
        return 200

    n = 16
    with RecordingServer(slow_receiver) as receiver:
        port = free_port()
        env = env_for(workdir, OTEL_PERFMON_EXPORTERS="webhook", OTEL_PERFMON_WEBHOOK_URL=receiver.url(),
                      OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS="10")
        argv = gunicorn_argv("flask_app:app", port, workers=1, extra=["-k", "gthread", "--threads", "16",
                                                                       "--graceful-timeout", "30"]) \
            if kind == "gunicorn" else uvicorn_argv("fastapi_app:app", port)
        path = "/io" if kind == "gunicorn" else "/sync-io"
        with run_server(argv, env, port, workdir["log"]) as server:
            statuses = burst(server, path, n)
            assert statuses == [200] * n
            took = _terminate_and_time(server)
            code = server.process.returncode
        written = report_jsons(workdir["reports"])
        assert len(written) == n, server.log()
        assert len(receiver.received()) == n
    check_every_json_parses_and_lists(workdir["reports"])
    assert took < 10 + MARGIN
    if kind == "uvicorn":
        assert code == -signal.SIGTERM  # uvicorn re-raised the signal: atexit never ran
    print(f"{kind}: {n} reports written and delivered after SIGTERM in {took:.2f} s (exit {code})")


@pytest.mark.parametrize("kind", ["gunicorn", "uvicorn"])
def test_sigterm_with_a_hung_exporter_exits_within_the_bound(workdir, kind):
    with RecordingServer(lambda _i, _r: HANG) as receiver:
        port = free_port()
        env = env_for(workdir, OTEL_PERFMON_EXPORTERS="webhook", OTEL_PERFMON_WEBHOOK_URL=receiver.url())
        argv = gunicorn_argv("flask_app:app", port, workers=1, extra=["-k", "gthread", "--threads", "8",
                                                                       "--graceful-timeout", "30"]) \
            if kind == "gunicorn" else uvicorn_argv("fastapi_app:app", port)
        with run_server(argv, env, port, workdir["log"]) as server:
            assert burst(server, "/io", 6) == [200] * 6
            wait_until(lambda: receiver.received(), 10, message="the exporter to hang in the receiver")
            took = _terminate_and_time(server)
        assert len(report_jsons(workdir["reports"])) == 6
    assert took < SHUTDOWN_TIMEOUT + MARGIN
    print(f"{kind}: exit with a hung exporter in {took:.2f} s (shutdown_timeout {SHUTDOWN_TIMEOUT} s)")
