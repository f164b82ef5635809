"""Full and read-only disks during a report write (ENOSPC, EDQUOT, EROFS).

The file-system cases run on a small tmpfs the test mounts itself (root and a kernel that
lets this process mount); they are skipped with the reason otherwise. A failed write leaves
no report visible to ``otel-perfmon list`` or the viewer, no temporary behind, is counted
and logged once, never reaches the request, and writing resumes once the disk is usable.
"""

from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import os
import subprocess
import uuid

import pytest
from flask import Flask, request
from opentelemetry.sdk.trace import TracerProvider

from otel_perfmon import configure_perfmon
from otel_perfmon.cli.list import run_list
from otel_perfmon.report import render
from otel_perfmon.report.render import write_report_files
from otel_perfmon.testing import InMemoryReportExporter, wait_until
from otel_perfmon.viewer.index import ReportIndex
from viewer_reports import make_report

THRESHOLD = 0.1
FS_SIZE = "4m"


def _mount(target: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *options, target], capture_output=True, text=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB tmpfs mounted at ``tmp_path/disk``, unmounted afterwards."""
    target = str(tmp_path / "disk")
    os.mkdir(target)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        result = _mount(target, "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0700", "tmpfs")
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield target
    finally:
        _mount(target, "-o", "remount,rw")
        subprocess.run(["umount", "-l", target], capture_output=True, timeout=30)


def fill(directory: str) -> str:
    """Write a filler file in ``directory`` until the file system is full; returns its path."""
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            while True:
                try:
                    handle.write(chunk[:size])
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    with pytest.raises(OSError) as raised:
        with open(os.path.join(directory, "probe"), "wb") as probe:
            probe.write(b"x" * 8192)
    assert raised.value.errno == errno.ENOSPC
    os.unlink(os.path.join(directory, "probe"))
    return path


def listing(report_dir: str):
    """(exit code, stdout) of ``otel-perfmon list`` for ``report_dir``."""
    out, err = io.StringIO(), io.StringIO()
    code = run_list(argparse.Namespace(report_dir=report_dir, limit=50, dedup_store="none"), out, err)
    return code, out.getvalue()


def visible(report_dir: str):
    """Report ids the viewer index lists."""
    index = ReportIndex(report_dir, None, refresh_interval_seconds=0)
    return [r.report_id for r in index.query().items]


def leftovers(report_dir: str):
    return sorted(name for name in os.listdir(report_dir) if ".tmp-" in name)


def report_files(report_dir: str):
    return sorted(name for name in os.listdir(report_dir) if name.endswith((".json", ".html", ".md")))


def make_app():
    app = Flask("disk_faults")

    @app.get("/work")
    def work():
        import time

        deadline = time.monotonic() + float(request.args.get("s", "0"))
        while time.monotonic() < deadline:
            sum(range(200))
        return "ok"

    return app


@pytest.fixture
def perfmon_on(small_fs):
    report_dir = os.path.join(small_fs, "reports")
    os.mkdir(report_dir, 0o700)
    app = make_app()
    exporter = InMemoryReportExporter()
    handle = configure_perfmon(app=app, tracer_provider=TracerProvider(), threshold_seconds=THRESHOLD,
                               report_dir=report_dir, dedup_store="memory", exporters=[exporter],
                               profile_explore_rate=0.0)
    try:
        yield {"fs": small_fs, "dir": report_dir, "client": app.test_client(), "handle": handle,
               "exporter": exporter}
    finally:
        handle.shutdown(timeout_seconds=5)


def slow_request(env) -> None:
    response = env["client"].get(f"/work?s={THRESHOLD * 2.5}")
    assert response.status_code == 200 and response.data == b"ok"  # the failure never reaches the app


def settled(env, created: int, dropped: int):
    handle = env["handle"]
    handle.force_flush(5.0)
    return wait_until(lambda: (s := handle.stats())["reports_created"] >= created and s["reports_dropped"] >= dropped
                      and s, 20, message=f"{created} created / {dropped} dropped")


def background_errors(caplog):
    return [r for r in caplog.records if "background error" in r.getMessage()]


def test_full_disk_drops_the_report_then_writing_resumes(perfmon_on, caplog):
    caplog.set_level(logging.ERROR, logger="otel_perfmon")
    env = perfmon_on
    filler = fill(env["fs"])
    for attempt in range(2):
        slow_request(env)
        stats = settled(env, 0, attempt + 1)
        assert stats["reports_created"] == 0 and stats["internal_errors"] >= attempt + 1
    assert report_files(env["dir"]) == [] and leftovers(env["dir"]) == []
    assert visible(env["dir"]) == []
    assert listing(env["dir"]) == (0, f"no reports in {env['dir']}\n")
    assert env["exporter"].reports == []
    assert len(background_errors(caplog)) <= 1  # logged once per process, not per failure

    os.unlink(filler)  # space returns
    slow_request(env)
    stats = settled(env, 1, 2)
    assert stats["reports_created"] == 1
    report = wait_until(lambda: env["exporter"].reports, 10, message="the export")[0]
    assert sorted(report_files(env["dir"])) == sorted(os.path.basename(p) for p in report.files)
    assert leftovers(env["dir"]) == []
    assert visible(env["dir"]) == [report.report_id]
    code, out = listing(env["dir"])
    assert code == 0 and report.report_id in out
    with open(os.path.join(env["dir"], f"{report.report_id}.json"), encoding="utf-8") as handle:
        assert json.load(handle)["report_id"] == report.report_id


def test_read_only_remount_then_writable_again(perfmon_on):
    env = perfmon_on
    result = _mount(env["fs"], "-o", "remount,ro")
    if result.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {result.stderr.strip()}")
    with pytest.raises(OSError) as raised:
        open(os.path.join(env["dir"], "probe"), "w").close()
    assert raised.value.errno == errno.EROFS
    slow_request(env)
    stats = settled(env, 0, 1)
    assert stats["reports_created"] == 0
    assert report_files(env["dir"]) == [] and leftovers(env["dir"]) == []
    assert listing(env["dir"]) == (0, f"no reports in {env['dir']}\n")

    assert _mount(env["fs"], "-o", "remount,rw").returncode == 0
    slow_request(env)
    settled(env, 1, 1)
    report = wait_until(lambda: env["exporter"].reports, 10, message="the export")[0]
    assert visible(env["dir"]) == [report.report_id] and leftovers(env["dir"]) == []


def test_failed_rewrite_keeps_the_earlier_version(small_fs):
    """A kept report rewritten (a better call tree) on a full disk: the old files stay whole."""
    report_dir = os.path.join(small_fs, "reports")
    first = make_report(report_dir, 1_795_000_000.0, duration_ms=1200.0, with_session=False)
    write_report_files(first)
    before = {name: open(os.path.join(report_dir, name), "rb").read() for name in report_files(report_dir)}
    filler = fill(small_fs)
    better = make_report(report_dir, 1_795_000_100.0, duration_ms=5000.0, report_id=first.report_id)
    with pytest.raises(OSError) as raised:
        write_report_files(better)
    assert raised.value.errno == errno.ENOSPC
    after = {name: open(os.path.join(report_dir, name), "rb").read() for name in report_files(report_dir)}
    assert after == before and leftovers(report_dir) == []
    assert visible(report_dir) == [first.report_id]
    os.unlink(filler)
    write_report_files(better)
    data = json.loads(open(os.path.join(report_dir, f"{first.report_id}.json"), "rb").read())
    assert data["duration_ms"] == 5000.0 and leftovers(report_dir) == []


@pytest.mark.parametrize("failing", ["html", "md", "json"])
def test_quota_exceeded_mid_write_removes_the_temporaries(tmp_path, monkeypatch, failing):
    """EDQUOT (no quota on a tmpfs here: injected at the write of one file): nothing renamed."""
    report_dir = str(tmp_path / "reports")
    real_fdopen = os.fdopen

    class QuotaFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[: len(text) // 2])  # a partial temporary is on disk
            self.handle.flush()
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    opened = []

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        name = os.readlink(f"/proc/self/fd/{fd}")
        opened.append(name)
        return QuotaFile(handle) if f".{failing}.tmp-" in name else handle

    monkeypatch.setattr(render.os, "fdopen", fdopen)
    report = make_report(report_dir, 1_795_000_000.0, with_session=False)
    with pytest.raises(OSError) as raised:
        write_report_files(report)
    assert raised.value.errno == errno.EDQUOT
    assert os.listdir(report_dir) == []
    failing = "none"
    opened.clear()
    write_report_files(report)
    assert sorted(os.listdir(report_dir)) == sorted(os.path.basename(p) for p in report.files)
    assert [name.rsplit(".tmp-", 1)[0].rsplit(".", 1)[1] for name in opened] == ["html", "md", "json"]  # JSON last


def test_temporaries_and_corrupt_json_are_skipped(tmp_path, caplog):
    """What a crash mid-write or a foreign file leaves: never listed; a corrupt JSON logged once."""
    caplog.set_level(logging.WARNING, logger="otel_perfmon")
    report_dir = str(tmp_path / "reports")
    good = make_report(report_dir, 1_795_000_000.0, with_session=False)
    write_report_files(good)
    half = make_report(report_dir, 1_795_000_060.0, with_session=False)
    text = render.JsonRenderer().render(half)
    for name, body in ((f"{half.report_id}.json.tmp-4242", text[:200]),
                       (f"{half.report_id}.html.tmp-4242", "<html"),
                       ("20261202-000000-deadbeef.json", '{"report_id": "20261202-000000-dead'),
                       ("20261202-000001-deadbeef.json", "[1, 2]"),
                       (f"{uuid.uuid4().hex}.tmp-1", "x")):
        with open(os.path.join(report_dir, name), "w", encoding="utf-8") as handle:
            handle.write(body)
    index = ReportIndex(report_dir, None, refresh_interval_seconds=0)
    for _ in range(3):
        assert [r.report_id for r in index.query().items] == [good.report_id]
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 2 and all("deadbeef" in w for w in warnings)  # once each, not per scan
    code, out = listing(report_dir)
    assert code == 0 and good.report_id in out and half.report_id not in out and "deadbeef" not in out

    from otel_perfmon.viewer import create_app
    from test_viewer_security import asgi_request

    app = create_app(report_dir, dedup_store=None, refresh_interval_seconds=0)
    api = json.loads(asgi_request(app, "GET", "/api/reports").body)
    assert [r["report_id"] for r in api["reports"]] == [good.report_id]
    assert asgi_request(app, "GET", "/reports").status == 200
    assert asgi_request(app, "GET", "/reports/20261202-000000-deadbeef").status == 404
    assert asgi_request(app, "GET", f"/reports/{half.report_id}").status == 404
