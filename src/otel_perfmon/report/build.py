"""Build a :class:`Report` from a captured span: hotspots and the call-tree text.

Runs on the background worker only (tree building and rendering cost milliseconds).
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any, Dict, List, Optional

from pyinstrument.renderers import ConsoleRenderer

from otel_perfmon.report.ids import iso_utc
from otel_perfmon.report.model import Report

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
    totals: Dict[tuple, float] = {}
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


def call_tree_text(session: Any) -> str:
    """pyinstrument's plain-text call tree (no colour), or ``""`` for an empty session."""
    if session is None or not session.frame_records:
        return ""
    return ConsoleRenderer(unicode=True, color=False, show_all=False).render(session)


_HOST: Optional[Dict[str, Any]] = None


def host_info() -> Dict[str, Any]:
    """Hostname, pid and Python version of this process."""
    global _HOST
    if _HOST is None or _HOST["pid"] != os.getpid():
        _HOST = {"hostname": socket.gethostname(), "pid": os.getpid(),
                 "python_version": platform.python_version()}
    return dict(_HOST)


def build_report(captured: Any, report_id: str, report_dir: str, url: Optional[str]) -> Report:
    """Turn a :class:`~otel_perfmon.processor.CapturedSpan` into a Report (no I/O)."""
    session = captured.profile.session() if captured.profile is not None else captured.sampled
    info = captured.http
    duration_s = (captured.end_ns - captured.start_ns) / 1e9
    return Report(
        report_id=report_id,
        fingerprint=captured.fingerprint,
        trace_id=f"{captured.trace_id:032x}",
        span_id=f"{captured.span_id:016x}",
        service_name=captured.service_name,
        span_name=captured.span_name,
        method=info["method"],
        route=info["route"],
        path=info["path"],
        query=info["query"],
        status_code=info["status_code"],
        duration_ms=round((captured.end_ns - captured.start_ns) / 1e6, 3),
        threshold_ms=round(captured.threshold_seconds * 1000.0, 3),
        start_time=iso_utc(captured.start_ns),
        end_time=iso_utc(captured.end_ns),
        headers=dict(captured.headers),
        interval_seconds=captured.interval_seconds,
        sample_count=len(session.frame_records) if session is not None else 0,
        hotspots=hotspots(session),
        call_tree_text=call_tree_text(session),
        host=host_info(),
        profile_mode=captured.mode if session is not None else "none",
        coverage=round(min(1.0, session.duration / duration_s), 3) if session is not None and duration_s > 0 else 0.0,
        url=url,
        report_dir=report_dir,
        session=session,
    )
