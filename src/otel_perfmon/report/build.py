"""Build a :class:`Report` from a captured span: hotspots and the call-tree text.

Runs on the background worker only (tree building and rendering cost milliseconds).
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any, Dict, List, Optional, Tuple

from pyinstrument.renderers import ConsoleRenderer

from otel_perfmon.profiling.sampler import SpanSamples
from otel_perfmon.report.ids import iso_utc
from otel_perfmon.report.model import CapturedSpan, Report
from otel_perfmon.report.runtime import runtime_info
from otel_perfmon.report.spans import child_spans, repeated_work

TOP_HOTSPOTS = 10


def hotspots(session: Any, limit: int = TOP_HOTSPOTS) -> List[Dict[str, Any]]:
    """Top self-time frames of a pyinstrument session, aggregated by function/file/line.

    Synthetic frames (``[await]``, ``[self]``...) give their time to the real frame above
    them, so time an ``async def`` spent awaiting is charged to that function.
    Returns dicts with ``function``, ``file``, ``line``, ``self_ms``, ``percent``.
    """
    root = session.root_frame() if session is not None else None
    if root is None:
        return []
    total = root.time or 0.0
    totals: Dict[Tuple[str, str, int], float] = {}
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        if frame.is_synthetic:  # already inside the parent's total_self_time
            continue
        key = (frame.function, frame.file_path_short or frame.file_path or "", frame.line_no or 0)
        totals[key] = totals.get(key, 0.0) + frame.total_self_time
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:limit]
    return [
        {"function": fn, "file": path, "line": line, "self_ms": round(seconds * 1000.0, 3),
         "percent": round(100.0 * seconds / total, 1) if total else 0.0}
        for (fn, path, line), seconds in ranked if seconds > 0
    ]


def call_tree_text(session: Any, cpu_known: bool = True) -> str:
    """pyinstrument's plain-text call tree (no colour), or ``""`` for an empty session.
    ``cpu_known=False`` (stack samples of an event loop's task) prints ``CPU time: n/a``
    instead of pyinstrument's 0."""
    if session is None or not session.frame_records:
        return ""
    text = ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)
    if not cpu_known:
        text = text.replace(f"CPU time: {session.cpu_time:.3f}", "CPU time: n/a", 1)
    return text


_HOST: Optional[Dict[str, Any]] = None


def host_info() -> Dict[str, Any]:
    """Hostname, pid and Python version of this process."""
    global _HOST
    if _HOST is None or _HOST["pid"] != os.getpid():
        _HOST = {"hostname": socket.gethostname(), "pid": os.getpid(),
                 "python_version": platform.python_version()}
    return dict(_HOST)


def _profile_of(captured: CapturedSpan) -> Tuple[Any, int, float, float, bool]:
    """(session, sample count, interval s, covered seconds, CPU time known) of a captured span."""
    duration = (captured.end_ns - captured.start_ns) / 1e9
    if captured.profile is not None:
        session = captured.profile.session()
        count = len(session.frame_records) if session is not None else 0
        covered = min(session.duration, duration) if session is not None else 0.0
        return session, count, captured.interval_seconds, covered, True
    samples = captured.samples
    if isinstance(samples, SpanSamples):
        end_time = captured.end_ns / 1e9
        session = samples.session(captured.span_name, end_time=end_time)
        covered = samples.covered_until(end_time)
        interval = covered / samples.sample_count if samples.sample_count else captured.interval_seconds
        return session, samples.sample_count, interval, covered, samples.cpu_seconds is not None
    if samples is not None:  # a one-sample Session (in-flight report of a span not sampled yet)
        return samples, len(samples.frame_records), captured.interval_seconds, min(samples.duration, duration), False
    return None, 0, captured.interval_seconds, 0.0, True


def profile_quality(captured: CapturedSpan) -> Tuple[str, float]:
    """(mode, coverage) that :func:`build_report` would give ``captured``, without building
    the call tree (cheap: the worker asks this of every deduplicated occurrence)."""
    duration = (captured.end_ns - captured.start_ns) / 1e9
    samples = captured.samples
    if captured.profile is None and isinstance(samples, SpanSamples):
        if not samples.sample_count or duration <= 0:
            return "none", 0.0
        return captured.mode, round(min(1.0, samples.covered_until(captured.end_ns / 1e9) / duration), 3)
    session, _count, _interval, covered, _cpu = _profile_of(captured)
    if session is None or duration <= 0:
        return "none", 0.0
    return captured.mode, round(min(1.0, covered / duration), 3)


def build_report(captured: CapturedSpan, report_id: str, report_dir: str, url: Optional[str],
                 fingerprint: str) -> Report:
    """Turn a captured span into a Report (tree building, no I/O). Background worker."""
    session, count, interval, covered, cpu_known = _profile_of(captured)
    open_span = captured.open_span
    rows, dropped = child_spans(getattr(open_span, "children", None), captured.start_ns,
                                getattr(open_span, "children_dropped", 0))
    info = captured.http
    duration_s = (captured.end_ns - captured.start_ns) / 1e9
    return Report(
        report_id=report_id,
        fingerprint=fingerprint,
        trace_id=f"{captured.trace_id:032x}",
        span_id=f"{captured.span_id:016x}",
        service_name=captured.service_name,
        span_name=captured.span_name,
        method=info["method"],
        route=info["route"],
        path=info["path"],
        query=info["query"],
        status_code=info["status_code"],
        duration_ms=round(duration_s * 1000.0, 3),
        threshold_ms=round(captured.threshold_seconds * 1000.0, 3),
        start_time=iso_utc(captured.start_ns),
        end_time=iso_utc(captured.end_ns),
        headers=dict(captured.headers),
        interval_seconds=round(interval, 6) if interval > 0 else captured.interval_seconds,
        sample_count=count if session is not None else 0,
        hotspots=hotspots(session),
        call_tree_text=call_tree_text(session, cpu_known),
        host=host_info(),
        profile_mode=captured.mode if session is not None else "none",
        coverage=round(min(1.0, covered / duration_s), 3) if session is not None and duration_s > 0 else 0.0,
        url=url,
        report_dir=report_dir,
        spans=rows,
        spans_dropped=dropped,
        request=captured.request,
        task=captured.task,
        n_plus_one=repeated_work(rows),
        runtime=runtime_info(getattr(getattr(getattr(open_span, "span", None), "resource", None), "attributes", None),
                             captured.start_ns / 1e9, captured.end_ns / 1e9),
        session=session,
    )
