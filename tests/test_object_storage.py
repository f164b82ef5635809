"""Reports beyond one host: an ``s3://`` report_dir against a real S3 API server on loopback.

moto's server mode (``moto_server``) runs as a subprocess the tests start, stop and restart;
s3fs talks to it exactly as to a bucket (endpoint from ``AWS_ENDPOINT_URL``, fake credentials
from the usual variables). Two app servers (gunicorn + Flask, uvicorn + FastAPI: the example
apps configured by environment) share Redis for dedup and one bucket for reports; the viewer
and ``otel-perfmon list`` read the bucket; an outage of the S3 server spools the reports locally
and they are uploaded once it is back; retention deletes by age and size and releases the dedup
entries; ``prune --dry-run`` changes nothing. No credential reaches a report, a log or an error.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
import uuid
from contextlib import contextmanager
from typing import Dict, Iterator, List

import pytest

from conftest import BIN, free_port, gunicorn_argv, http_get, redis_server, run_server, uvicorn_argv, wait_until

pytest.importorskip("s3fs", reason="the s3 extra (s3fs) is not installed")
MOTO = shutil.which("moto_server") or os.path.join(BIN, "moto_server")
if not os.path.exists(MOTO):
    pytest.skip("moto_server (moto[server]) is not installed", allow_module_level=True)

THRESHOLD = 0.25
SLOW = 0.5
KEY_ID = "AKIAPERFMONTEST0001"
SECRET = "perfmon-fake-secret-" + uuid.uuid4().hex  # must never appear in any output


class MotoServer:
    """``moto_server -H 127.0.0.1 -p <port>``; restarts on the same port (with an empty state,
    as moto keeps its buckets in memory)."""

    def __init__(self, port: int, log_path: str) -> None:
        self.port, self.log_path = port, log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            assert self.process is not None and self.process.poll() is None, "moto_server exited"
            try:
                return http_get(self.url + "/moto-api/", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(up, 30, 0.1, "moto_server to answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


def s3_env(moto: MotoServer, root: str) -> Dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto.url, "XDG_CACHE_HOME": os.path.join(root, "cache"),
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@pytest.fixture
def s3(tmp_path, monkeypatch) -> Iterator[Dict[str, object]]:
    moto = MotoServer(free_port(), str(tmp_path / "moto.log"))
    moto.start()
    env = s3_env(moto, str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = "perfmon-" + uuid.uuid4().hex[:8]

    def make_bucket() -> None:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)

    make_bucket()
    try:
        yield {"moto": moto, "env": env, "bucket": bucket, "url": f"s3://{bucket}/reports", "make_bucket": make_bucket,
               "root": str(tmp_path)}
    finally:
        moto.stop()


def bucket_files(url: str) -> Dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    root = url[len("s3://"):]
    try:
        names = fs.ls(root, detail=False, refresh=True)
    except FileNotFoundError:
        return {}
    return {name.rpartition("/")[2]: fs.cat_file(name) for name in names}


def bucket_reports(url: str) -> List[dict]:
    files = bucket_files(url)
    return [json.loads(body) for name, body in files.items()
            if name.endswith(".json") and not name.endswith(".speedscope.json")]


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        blob = text if isinstance(text, bytes) else str(text).encode()
        assert SECRET.encode() not in blob


# ----------------------------------------------------------------------------------------------
def test_two_app_servers_one_bucket_one_report_per_fingerprint_and_the_viewer_reads_it(s3, tmp_path):
    """gunicorn (Flask, 2 workers) and uvicorn (FastAPI) as two replicas of service "shop": Redis
    dedups across them, every report lands in the bucket once, the viewer and list read it."""
    url = str(s3["url"])
    with redis_server(str(tmp_path)) as redis_url:
        common = {**s3["env"], "OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "EXAMPLE_SLOW_SECONDS": str(SLOW),
                  "OTEL_PERFMON_REPORT_DIR": url, "OTEL_PERFMON_DEDUP_STORE": redis_url,
                  "OTEL_SERVICE_NAME": "shop", "OTEL_PERFMON_INFLIGHT_MULTIPLE": "0",
                  "OTEL_PERFMON_REPORT_URL_TEMPLATE": "http://viewer.example/reports/{report_id}"}
        gport, uport = free_port(), free_port()
        with run_server(gunicorn_argv("flask_app:app", gport), common, gport, str(tmp_path / "g.log")) as flask, \
                run_server(uvicorn_argv("fastapi_app:app", uport), common, uport, str(tmp_path / "u.log")) as fast:
            paths = ["/io", "/cpu", "/items/1", "/items/3"]
            jobs = [(server, path) for server in (flask, fast) for path in paths for _ in range(2)]
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda job: http_get(job[0].url(job[1]))[0], jobs))
            assert statuses == [200] * len(jobs)

            def all_routes() -> bool:
                return {r["http"]["route"] for r in bucket_reports(url)} >= {"/io", "/cpu"} and \
                    len(bucket_reports(url)) >= 4
            wait_until(all_routes, 60, 0.25, "the reports in the bucket")
            logs = flask.log() + fast.log()
        reports = bucket_reports(url)
        fingerprints = [r["fingerprint"] for r in reports]
        assert len(fingerprints) == len(set(fingerprints)), "one report per fingerprint across both servers"
        assert {(r["http"]["method"], r["http"]["route"]) for r in reports} == {
            ("GET", "/io"), ("GET", "/cpu"), ("GET", "/items/<int:item_id>"), ("GET", "/items/{item_id}")}
        files = bucket_files(url)
        for r in reports:
            assert {f"{r['report_id']}.html", f"{r['report_id']}.md"} <= set(files)
        assert_no_secret(logs, *files.values())

        # the viewer over the bucket (create_app), with Redis for the occurrence counts
        from starlette.testclient import TestClient

        from otel_perfmon.viewer import create_app

        client = TestClient(create_app(url, dedup_store=redis_url, refresh_interval_seconds=0))
        listed = client.get("/api/reports?per_page=100").json()
        assert sorted(item["report_id"] for item in listed["reports"]) == sorted(r["report_id"] for r in reports)
        io = next(item for item in listed["reports"] if item["route"] == "/io")
        assert io["occurrences"] == 4  # 2 requests x 2 servers, one report
        page = client.get(f"/reports/{io['report_id']}")
        assert page.status_code == 200 and "/io" in page.text
        assert client.get(f"/api/reports/{io['report_id']}").json()["fingerprint"] == io["fingerprint"]
        assert client.get("/reports/20991231-000000-deadbeef").status_code == 404

        # otel-perfmon list --report-dir s3://...
        listing = subprocess.run([os.path.join(BIN, "otel-perfmon"), "list", "--report-dir", url,
                                  "--dedup-store", redis_url], capture_output=True, text=True, timeout=60,
                                 env={**os.environ, **s3["env"]})
        assert listing.returncode == 0, listing.stderr
        assert all(r["report_id"] in listing.stdout for r in reports)
        assert_no_secret(listing.stdout, listing.stderr)

        # otel-perfmon serve --report-dir s3://... (a subprocess, as deployed)
        vport = free_port()
        serve = [os.path.join(BIN, "otel-perfmon"), "serve", "--report-dir", url, "--port", str(vport),
                 "--dedup-store", redis_url, "--log-level", "warning"]
        with run_server(serve, s3["env"], vport, str(tmp_path / "viewer.log"), health_path="/healthz") as viewer:
            status, body = http_get(viewer.url("/api/reports?per_page=100"))
            assert status == 200 and json.loads(body)["total"] == len(reports)
            status, body = http_get(viewer.url(f"/reports/{io['report_id']}"))
            assert status == 200 and b"/io" in body
            assert_no_secret(viewer.log())

        # a report that appears later is picked up by the next refresh (listing + ETag)
        from otel_perfmon.report.render import write_report_files
        from otel_perfmon.storage import open_report_store
        from viewer_reports import make_report

        late = make_report(url, time.time(), with_session=False)
        write_report_files(late, open_report_store(url))
        assert client.get(f"/reports/{late.report_id}").status_code == 200
        assert client.get("/api/reports?per_page=100").json()["total"] == len(reports) + 1


def test_an_s3_outage_spools_reports_and_uploads_them_when_it_is_back(s3, tmp_path):
    """The S3 server stops: requests take their own time, reports go to the local spool (counted);
    it restarts: the spool is uploaded by the background retry, none lost."""
    from flask import Flask

    from otel_perfmon import configure_perfmon
    from otel_perfmon.storage import local_state_dir

    url = str(s3["url"])
    app = Flask("outage")

    @app.get("/slow/<int:n>")
    def slow(n: int) -> str:
        time.sleep(SLOW)
        return "ok"

    from opentelemetry.sdk.trace import TracerProvider

    perfmon = configure_perfmon(app=app, tracer_provider=TracerProvider(), threshold_seconds=THRESHOLD,
                                report_dir=url, dedup_store="memory", dedup_window_seconds=0,
                                inflight_multiple=0)
    client = app.test_client()
    try:
        assert client.get("/slow/0").status_code == 200
        assert perfmon.force_flush(30)
        assert len(bucket_reports(url)) == 1
        spool = os.path.join(local_state_dir(url), "spool")
        assert spool.startswith(str(s3["root"]))  # under XDG_CACHE_HOME

        s3["moto"].stop()
        durations = []
        for n in range(1, 6):
            started = time.monotonic()
            assert client.get(f"/slow/{n}").status_code == 200
            durations.append(time.monotonic() - started)
        assert max(durations) < SLOW + 0.5, durations  # the app never waits for the store
        assert perfmon.force_flush(60)
        stats = perfmon.stats()
        assert stats["spool_reports"] == 5 and stats["spool_bytes"] > 0, stats
        assert stats["upload_failures"] >= 1 and stats["spool_dropped"] == 0
        assert stats["reports_created"] == 6 and stats["reports_dropped"] == 0
        assert len(os.listdir(spool)) == 5

        s3["moto"].start()  # moto starts empty: the bucket is made again
        s3["make_bucket"]()
        wait_until(lambda: len(bucket_reports(url)) == 5, 60, 0.25, "the spooled reports to be uploaded")
        wait_until(lambda: perfmon.stats()["spool_reports"] == 0, 30, 0.1, "the spool gauge")
        assert os.listdir(spool) == []
        files = bucket_files(url)
        for r in bucket_reports(url):
            assert {f"{r['report_id']}.html", f"{r['report_id']}.md"} <= set(files)
        assert_no_secret(*files.values())
    finally:
        perfmon.shutdown(timeout_seconds=5)


def test_errors_of_the_store_carry_no_credentials(s3, caplog):
    from otel_perfmon.storage.remote import FsspecReportStore, StoreError

    store = FsspecReportStore(f"s3://{KEY_ID}:{SECRET}@no-such-bucket-{uuid.uuid4().hex[:6]}/x")
    s3["moto"].stop()
    with pytest.raises(StoreError) as raised:
        store.write_report("20261202-000000-0a0b0c0d", [("json", "{}")])
    assert_no_secret(str(raised.value), store.location, caplog.text)
    assert KEY_ID not in store.location


# ----------------------------------------------------------------------------------------------
@contextmanager
def dedup_entries(redis_url: str, reports) -> Iterator[object]:
    from otel_perfmon.dedup import open_store

    store = open_store(redis_url, "/nonexistent")
    for report in reports:
        assert store.claim(report.fingerprint, report.report_id, time.time(), 864000).is_new
    try:
        yield store
    finally:
        store.close()


def test_retention_by_size_and_prune_dry_run_on_the_bucket(s3, tmp_path):
    from otel_perfmon.report.render import write_report_files
    from otel_perfmon.storage import open_report_store, retention
    from viewer_reports import make_report

    url = str(s3["url"])
    store = open_report_store(url)
    reports = []
    for i in range(4):
        report = make_report(url, time.time() - 100 + i, route=f"/r{i}", with_session=False)
        write_report_files(report, store)
        reports.append(report)
        wait_until(lambda r=report: r.report_id in store.list_reports(), 10, 0.05, "listed")
        if i < 3:  # S3 times have one-second steps: order the objects' modification times
            first = store.list_reports()[report.report_id].mtime
            wait_until(lambda f=first: time.time() >= f + 1.05, 3, 0.05, "the next second")
    listing = store.list_reports()
    sizes = [listing[r.report_id].size for r in reports]
    keep_two = sizes[2] + sizes[3]
    env = {**os.environ, **s3["env"]}
    with redis_server(str(tmp_path)) as redis_url, dedup_entries(redis_url, reports) as dedup:
        before = bucket_files(url)
        dry = subprocess.run([os.path.join(BIN, "otel-perfmon"), "prune", "--report-dir", url,
                              "--max-bytes", str(keep_two), "--max-age-seconds", "0", "--dedup-store", redis_url,
                              "--dry-run"], capture_output=True, text=True, timeout=60, env=env)
        assert dry.returncode == 0, dry.stderr
        assert [line.split()[2] for line in dry.stdout.splitlines() if line.startswith("would delete")] == \
            [reports[0].report_id, reports[1].report_id]
        assert bucket_files(url) == before  # nothing changed
        assert all(dedup.get(r.fingerprint) is not None for r in reports)

        real = subprocess.run([os.path.join(BIN, "otel-perfmon"), "prune", "--report-dir", url,
                               "--max-bytes", str(keep_two), "--max-age-seconds", "0", "--dedup-store", redis_url],
                              capture_output=True, text=True, timeout=60, env=env)
        assert real.returncode == 0, real.stderr
        assert [line.split()[1] for line in real.stdout.splitlines() if line.startswith("deleted")] == \
            [reports[0].report_id, reports[1].report_id]
        left = bucket_files(url)
        assert not any(name.startswith((reports[0].report_id, reports[1].report_id)) for name in left)
        assert {f"{reports[2].report_id}.json", f"{reports[3].report_id}.html"} <= set(left)
        # the deleted reports' routes can report again; the kept ones are still deduplicated
        assert dedup.get(reports[0].fingerprint) is None and dedup.get(reports[1].fingerprint) is None
        assert dedup.get(reports[2].fingerprint) is not None
        assert_no_secret(dry.stdout, dry.stderr, real.stdout, real.stderr)

    # by age, on the same store (its listing's times, so no clock games with S3)
    listing = store.list_reports()
    newest = max(r.mtime for r in listing.values())
    assert retention.plan(listing, newest + 10, max_age_seconds=20, max_bytes=0) == []
    planned = retention.plan(listing, listing[reports[2].report_id].mtime + 20.5, 20, 0)  # r3 is >= 1 s younger
    assert [d.report_id for d in planned] == [reports[2].report_id] and planned[0].reason == "age"
    retention.apply(store, planned)
    assert sorted(store.list_reports()) == [reports[3].report_id]


def test_the_worker_applies_retention_to_a_local_directory_and_releases_the_route(tmp_path):
    """Reports last written 40 days ago go at the worker's first report (max age 30 days); their
    dedup entries are released, so their route reports again."""
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon
    from otel_perfmon.dedup.sqlite import SqliteDedupStore
    from otel_perfmon.report.render import write_report_files
    from viewer_reports import make_report, set_mtime

    report_dir = str(tmp_path / "reports")
    old = [make_report(report_dir, time.time() - 40 * 86400, route=f"/old{i}", with_session=False) for i in range(2)]
    recent = make_report(report_dir, time.time() - 3600, route="/recent", with_session=False)
    sqlite = SqliteDedupStore.in_report_dir(report_dir)
    for report in old + [recent]:
        write_report_files(report)
        sqlite.claim(report.fingerprint, report.report_id, time.time(), 864000)
    for report in old:
        set_mtime(report, time.time() - 40 * 86400)
    sqlite.close()

    app = Flask("retention")

    @app.get("/slow")
    def slow() -> str:
        time.sleep(SLOW)
        return "ok"

    perfmon = configure_perfmon(app=app, tracer_provider=TracerProvider(), threshold_seconds=THRESHOLD,
                                report_dir=report_dir, inflight_multiple=0)
    try:
        assert app.test_client().get("/slow").status_code == 200
        assert perfmon.force_flush(30)
        names = os.listdir(report_dir)
        assert not any(name.startswith(r.report_id) for r in old for name in names)
        assert f"{recent.report_id}.json" in names and f"{recent.report_id}.html" in names
        assert all(perfmon.store.get(r.fingerprint) is None for r in old)
        assert perfmon.store.get(recent.fingerprint) is not None
    finally:
        perfmon.shutdown(timeout_seconds=5)


def test_prune_on_a_missing_directory_and_a_dry_run_locally(tmp_path):
    from otel_perfmon.cli import main
    from otel_perfmon.report.render import write_report_files
    from viewer_reports import make_report, set_mtime

    assert main(["prune", "--report-dir", str(tmp_path / "missing")]) == 2
    report_dir = str(tmp_path / "reports")
    old = make_report(report_dir, time.time() - 90 * 86400, with_session=False)
    write_report_files(old)
    set_mtime(old, time.time() - 90 * 86400)
    before = sorted(os.listdir(report_dir))
    assert main(["prune", "--report-dir", report_dir, "--dry-run"]) == 0
    assert sorted(os.listdir(report_dir)) == before
    assert main(["prune", "--report-dir", report_dir]) == 0
    assert os.listdir(report_dir) == []
