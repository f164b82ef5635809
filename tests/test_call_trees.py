"""The first slow request of a cold route is explained: real gunicorn and uvicorn servers.

examples/culprits.py: each route spends CULPRIT s in one culprit (CPU loop, blocking wait,
``await`` of a slow coroutine, a sync route in anyio's worker thread), then RENDER s in
``render_page``. With the default configuration (no pyinstrument session: exploration off so
the stack sampler is what is tested), the one report of each cold route must be a call tree
of the whole span (coverage >= 0.9) in which the culprit holds about its real share. No
timing assertions: the shares are checked with wide bounds around CULPRIT / (CULPRIT + RENDER).
"""

from __future__ import annotations

import re

import pytest

from conftest import free_port, gunicorn_argv, http_get, read_reports, run_server, uvicorn_argv, wait_until

THRESHOLD = 0.3
CULPRIT = 0.6
RENDER = 0.3
SHARE = CULPRIT / (CULPRIT + RENDER)  # 0.67
_LINE = re.compile(r"^[\s│├└─]*(\d+\.\d+)\s+(?:\[\w+\]\s+)?([\w.<>]+)")


def subtree_seconds(call_tree_text: str, function: str) -> float:
    """Seconds of the largest node named ``function`` (with its children) in pyinstrument's text tree."""
    found = 0.0
    for line in call_tree_text.splitlines():
        match = _LINE.match(line)
        if match and match.group(2).split(".")[-1] == function:
            found = max(found, float(match.group(1)))
    return found


def env(workdir):
    return {"OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
            "OTEL_PERFMON_PROFILE_EXPLORE_RATE": "0", "EXAMPLE_CULPRIT_SECONDS": str(CULPRIT),
            "EXAMPLE_RENDER_SECONDS": str(RENDER)}


def check_report(report, culprit):
    profile = report["profile"]
    assert profile["mode"] == "sampled", profile["mode"]
    assert profile["coverage"] >= 0.9, (report["http"]["route"], profile["coverage"])
    assert profile["sample_count"] >= 5, profile
    seconds = report["duration_ms"] / 1000.0
    share = subtree_seconds(profile["call_tree_text"], culprit) / seconds
    assert SHARE - 0.15 <= share <= SHARE + 0.15, (report["http"]["route"], culprit, share, profile["call_tree_text"])
    assert subtree_seconds(profile["call_tree_text"], "render_page") / seconds >= (1 - SHARE) - 0.15
    assert "CPU time: 0.000" not in profile["call_tree_text"]


def serve_and_collect(argv, workdir, port, paths):
    with run_server(argv, env(workdir), port, workdir["log"]) as server:
        for path in paths:
            assert http_get(server.url(path))[0] == 200
        wait_until(lambda: len(read_reports(workdir["reports"])) >= len(paths), 30, message="one report per route")
        log = server.log()
    assert "pyinstrument: the timer" not in log  # pyinstrument's own warning never reaches stderr
    return {r["http"]["route"]: r for r in read_reports(workdir["reports"])}


def test_flask_under_gunicorn_cold_routes_are_explained(workdir):
    port = free_port()
    reports = serve_and_collect(gunicorn_argv("culprits:flask_app", port), workdir, port, ["/cpu", "/sleepy"])
    check_report(reports["/cpu"], "slow_query_cpu")
    check_report(reports["/sleepy"], "slow_upstream")
    # CPU time is measured for a request thread: the CPU route used it, the sleeping one barely
    assert "CPU time: n/a" not in reports["/cpu"]["profile"]["call_tree_text"]


@pytest.mark.parametrize("paths", [["/cpu", "/sleepy", "/awaiting", "/sync-cpu"]])
def test_fastapi_under_uvicorn_cold_routes_are_explained(workdir, paths):
    port = free_port()
    reports = serve_and_collect(uvicorn_argv("culprits:fastapi_app", port), workdir, port, paths)
    check_report(reports["/cpu"], "slow_query_cpu")
    check_report(reports["/sleepy"], "slow_upstream")
    check_report(reports["/awaiting"], "slow_await")
    check_report(reports["/sync-cpu"], "slow_query_cpu")
