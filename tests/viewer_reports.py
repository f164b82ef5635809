"""Real report files for the viewer tests and benchmark: Report objects rendered through
``otel_perfmon.report.render.write_report_files`` (the same code the worker runs)."""

from __future__ import annotations

import os
import secrets
import time
from typing import Any, Dict, List, Optional

from otel_perfmon.dedup import fingerprint
from otel_perfmon.report.build import call_tree_text, host_info, hotspots
from otel_perfmon.report.ids import iso_utc, new_report_id
from otel_perfmon.report.model import Report
from otel_perfmon.report.render import write_report_files

_SESSION: List[Any] = []


def _busy(n: int) -> int:
    return sum(i * i for i in range(n))


def _load_rows(ms: float) -> int:
    deadline = time.perf_counter() + ms / 1000.0
    total = 0
    while time.perf_counter() < deadline:
        total += _busy(2000)
    return total


def profile_session() -> Any:
    """One real pyinstrument session (~60 ms of CPU in ``_load_rows``), made once per process."""
    if not _SESSION:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
        _load_rows(60)
        profiler.stop()
        _SESSION.append(profiler.last_session)
    return _SESSION[0]


def iso(seconds: float) -> str:
    return iso_utc(round(seconds * 1e9))


def make_report(report_dir: str, start: float, duration_ms: float = 1500.0, route: str = "/items/<int:item_id>",
                method: str = "GET", service: str = "shop", headers: Optional[Dict[str, str]] = None,
                report_id: Optional[str] = None, with_session: bool = True, status_code: int = 200,
                path: Optional[str] = None, profile_mode: str = "full", coverage: float = 1.0) -> Report:
    """A Report of a slow span that started at ``start`` (epoch seconds); not written."""
    session = profile_session() if with_session else None
    rid = report_id or new_report_id(start)
    return Report(
        report_id=rid, fingerprint=fingerprint(service, method, route), trace_id=secrets.token_hex(16),
        span_id=secrets.token_hex(8), service_name=service, span_name=f"{method} {route}", method=method,
        route=route, path=path or route.replace("<int:item_id>", "7"), query="a=1", status_code=status_code,
        duration_ms=duration_ms, threshold_ms=1000.0, start_time=iso(start), end_time=iso(start + duration_ms / 1000),
        headers=headers if headers is not None else {"x-request-id": secrets.token_hex(6),
                                                     "authorization": "[REDACTED]", "user-agent": "pytest"},
        interval_seconds=0.001, sample_count=60 if session else 0,
        hotspots=hotspots(session) if session else [{"function": "load_rows", "file": "app/db.py", "line": 42,
                                                      "self_ms": duration_ms * 0.5, "percent": 50.0}],
        call_tree_text=call_tree_text(session) if session else "load_rows  app/db.py:42\n" * 40,
        host=host_info(), profile_mode=profile_mode, coverage=coverage, report_dir=report_dir, session=session)


def write(report: Report) -> Report:
    write_report_files(report)
    return report


def set_mtime(report: Report, seconds: float) -> None:
    for path in report.files:
        os.utime(path, (seconds, seconds))
