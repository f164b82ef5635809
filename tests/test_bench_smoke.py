"""Smoke test of the benchmark package: ``bench/run.py --quick`` sections run to the end and print
every variant, every route, the slow-request check, the call-tree quality rows and the goals (no
timing assertions)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "bench", "run.py")
VARIANTS = ("bare", "otel", "otel_b", "perfmon_default", "perfmon_always", "raw_pyinstrument")
ROUTES = ("fast", "calls", "io", "slow")

pytest.importorskip("flask")
pytest.importorskip("werkzeug")
pytest.importorskip("opentelemetry.instrumentation.flask")


def _has_fastapi() -> bool:
    try:
        import fastapi  # noqa: F401
        import opentelemetry.instrumentation.fastapi  # noqa: F401
    except ImportError:
        return False
    return True


def _check_table(text: str, title: str, routes=ROUTES) -> None:
    table = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    header = table.splitlines()[2]
    for variant in VARIANTS:
        assert variant in header, header
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for route in routes:
        assert route in rows, table
        assert rows[route].count("µs") == len(VARIANTS), rows[route]


@pytest.mark.timeout(300)
def test_quick_bench_prints_all_variants_and_routes(tmp_path):
    output = tmp_path / "results.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    fastapi = _has_fastapi()
    argv = [sys.executable, RUN, "--quick", "--only", "inprocess,memory", "--rss-requests", "500",
            "--rss-warmup", "100", "--output", str(output)] + ([] if fastapi else ["--no-fastapi"])
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    _check_table(text, "In-process flask")
    if fastapi:
        _check_table(text, "In-process fastapi")
    assert "default profile_policy at run time" in text
    assert "## Slow requests" in text and "slow spans link to a report with a call tree" in text
    assert "## Memory" in text and "VmHWM" in text
    goals = text.split("## Goals", 1)[1]
    assert "every slow request has a report with a call tree" in goals
    assert "RSS growth" in goals
    assert all(line.startswith(("- PASS", "- MISS", "- info")) for line in goals.strip().splitlines())
    assert "A/A control: otel_b ÷ otel" in goals
    assert output.read_text(encoding="utf-8") == text.rstrip("\n") + "\n"
    assert "## Machine" in text and "CPU" in text and "Python" in text


@pytest.mark.timeout(300)
def test_quick_bench_under_load_interleaves_variants_in_one_gunicorn(tmp_path):
    """The under-load phases with real gunicorn servers: one process hosting every variant under
    a rotating load (server-side timings per variant), and the per-variant throughput windows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    argv = [sys.executable, RUN, "--quick", "--only", "inprocess,load", "--no-fastapi", "--rounds", "1",
            "--requests", "2", "--warmup", "5", "--output", str(tmp_path / "results.md")]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    _check_table(text, "Under load, gunicorn, interleaved (flask)", routes=("fast", "calls", "io"))
    windows = text.split("## Under load, throughput windows: gunicorn (flask)", 1)[1].split("\n## ", 1)[0]
    for variant in VARIANTS:
        assert f"| {variant} " in windows.replace("|  ", "| "), windows
    goals = text.split("## Goals", 1)[1]
    for route in ("fast", "calls", "io"):
        assert f"default ≤ 1.03 × otel, gunicorn, interleaved (flask), {route}:" in goals
        assert f"always ≤ 1.05 × raw pyinstrument, gunicorn, interleaved (flask), {route}:" in goals


WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8000/fast
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.10ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  950.00us
     75%    1.20ms
     90%    1.50ms
     99%    2.50ms
  7000 requests in 2.00s, 1.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:   3500.25
Transfer/sec:    500.00KB
"""


def test_parse_wrk_output():
    sys.path.insert(0, ROOT)
    try:
        from bench.load import parse_wrk
    finally:
        sys.path.remove(ROOT)
    parsed = parse_wrk(WRK_OUTPUT)
    assert parsed == {"rps": 3500.25, "p50_ms": pytest.approx(0.95), "p99_ms": 2.5, "errors": 4.0}


@pytest.mark.timeout(120)
def test_quick_call_tree_quality_has_a_report_per_case(tmp_path):
    """``--only quality``: one row per (framework, case, variant), each with a report; a goal
    line per case (PASS or MISS: no timing assertion)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    fastapi = _has_fastapi()
    argv = [sys.executable, RUN, "--quick", "--only", "quality", "--output", str(tmp_path / "results.md")] + \
        ([] if fastapi else ["--no-fastapi"])
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    table = text.split("## Call-tree quality", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]]
            for line in table.splitlines()[4:] if line.startswith("| ")]
    cases = {"flask": 2, "fastapi": 4} if fastapi else {"flask": 2}
    assert len(rows) == 2 * sum(cases.values()), table
    for framework, count in cases.items():
        mine = [row for row in rows if row[0] == framework]
        assert len(mine) == 2 * count and {row[3] for row in mine} == {"default", "always"}, table
    for row in rows:
        assert row[4] not in ("no report", "none"), row  # profile.mode: a report with a profile
        assert int(row[6]) > 0, row  # sample_count
    goals = text.split("## Goals", 1)[1].strip().splitlines()
    assert len(goals) == sum(cases.values()) and all(line.startswith(("- PASS", "- MISS")) for line in goals)


@pytest.mark.timeout(120)
def test_quick_frameworks_section_measures_django_and_celery(tmp_path):
    """``--only frameworks``: a table per framework (otel, otel_b, perfmon_default on the fast and
    calls routes), an OTel span per call, and the goal lines (PASS or MISS: no timing assertion)."""
    pytest.importorskip("django")
    pytest.importorskip("celery")
    pytest.importorskip("opentelemetry.instrumentation.django")
    pytest.importorskip("opentelemetry.instrumentation.celery")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    argv = [sys.executable, RUN, "--quick", "--only", "frameworks", "--output", str(tmp_path / "results.md")]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    for title, span in (("Django request", "SERVER 'GET fast'"), ("Celery task", "CONSUMER 'run/bench.fast'")):
        table = text.split(f"## Frameworks: {title}", 1)[1].split("\n## ", 1)[0]
        assert all(v in table.splitlines()[2] for v in ("otel", "otel_b", "perfmon_default")), table
        rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
        for route in ("fast", "calls"):
            assert rows[route].count("µs") == 3, rows[route]
        assert span in table, table
    goals = text.split("## Goals", 1)[1].strip().splitlines()
    assert all(line.startswith(("- PASS", "- MISS", "- info")) for line in goals)
    for phase in ("django", "celery"):
        assert any(line.startswith(f"- PASS  {phase}: every call produces an OTel span") for line in goals), goals
        for route in ("fast", "calls"):
            assert any(f"default ≤ 1.03 × otel, {phase}, {route}:" in line for line in goals), goals
