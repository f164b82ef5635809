"""What flows from span end to the exporters: :class:`CapturedSpan` (request path -> worker)
and :class:`Report` (worker -> renderers and exporters), with its JSON form (schema_version 1)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA_VERSION = 1
#: At most this many earlier versions of a report are listed in ``earlier_versions``.
MAX_EARLIER_VERSIONS = 10


class CapturedSpan:
    """What the request path (or the watchdog, for an in-flight report) hands to the worker
    for one slow span: plain data, already redacted. Times are ns since the epoch.

    ``open_span`` is the :class:`~otel_perfmon.tracking.OpenSpan`; ``profile`` a stopped
    ``SpanProfile`` (mode ``full``) or None; ``samples`` the span's ``SpanSamples`` or, for an
    in-flight report, a ready ``Session``; ``mode`` one of ``full``, ``sampled``,
    ``after_threshold``, ``in_flight``, ``none``.
    """

    __slots__ = ("open_span", "trace_id", "span_id", "span_name", "service_name", "start_ns", "end_ns",
                 "threshold_seconds", "interval_seconds", "http", "headers", "profile", "samples", "mode",
                 "request", "task")

    def __init__(self, *, open_span: Any, trace_id: int, span_id: int, span_name: str, service_name: str,
                 start_ns: int, end_ns: int, threshold_seconds: float, interval_seconds: float,
                 http: Dict[str, Any], headers: Dict[str, str], profile: Any, samples: Any, mode: str) -> None:
        self.open_span = open_span
        self.trace_id = trace_id
        self.span_id = span_id
        self.span_name = span_name
        self.service_name = service_name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.threshold_seconds = threshold_seconds
        self.interval_seconds = interval_seconds
        self.http = http
        self.headers = headers
        self.profile = profile
        self.samples = samples
        self.mode = mode
        self.request: Optional[Dict[str, Any]] = None  # report/request.py, set by the caller
        self.task: Optional[Dict[str, Any]] = None  # report/task.py, for a task (CONSUMER) span

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


@dataclass
class Report:
    """One slow span's report. Built on the background worker; read by exporters.

    Durations are in milliseconds, times are ISO-8601 UTC strings, ids are lowercase hex.
    ``json_path``/``html_path``/``md_path``/``speedscope_path`` are set once the files are written.
    """

    report_id: str
    fingerprint: str
    trace_id: str
    span_id: str
    service_name: str
    span_name: str
    method: Optional[str]
    route: str
    path: Optional[str]
    query: str
    status_code: Optional[int]
    duration_ms: float
    threshold_ms: float
    start_time: str
    end_time: str
    headers: Dict[str, str]
    interval_seconds: float
    sample_count: int
    hotspots: List[Dict[str, Any]]
    call_tree_text: str
    host: Dict[str, Any]
    profile_mode: str = "full"
    coverage: float = 1.0
    url: Optional[str] = None
    report_dir: str = ""
    #: earlier contents of this report id that a better call tree replaced (newest last):
    #: dicts with trace_id, span_id, duration_ms, mode, coverage, start_time
    earlier_versions: List[Dict[str, Any]] = field(default_factory=list)
    #: the slow span's descendants in this process (report/spans.py rows), by start time
    spans: List[Dict[str, Any]] = field(default_factory=list)
    #: descendants left out past the cap (otel_perfmon.tracking.MAX_CHILD_SPANS)
    spans_dropped: int = 0
    #: repeated statements / outgoing URL templates (report/spans.py repeated_work)
    n_plus_one: List[Dict[str, Any]] = field(default_factory=list)
    #: for the shared report of requests that matched no route: the distinct paths seen
    unrouted_paths: List[str] = field(default_factory=list)
    #: report/request.py: the parameters the app parsed (scrubbed, capped), or None
    request: Optional[Dict[str, Any]] = None
    #: report/task.py: a task span's name, id, queue, retries and arguments (redacted), or None
    task: Optional[Dict[str, Any]] = None
    #: report/runtime.py: Python, versions, process, OTel resource, GC pauses during the span
    runtime: Dict[str, Any] = field(default_factory=dict)
    session: Any = field(default=None, repr=False, compare=False)
    #: set by report/render.py write_report_files: whether ``<id>.speedscope.json`` was written
    has_flame_graph: bool = field(default=False, compare=False)

    def _path(self, suffix: str) -> str:
        return os.path.join(self.report_dir, f"{self.report_id}.{suffix}")

    @property
    def json_path(self) -> str:
        return self._path("json")

    @property
    def html_path(self) -> str:
        return self._path("html")

    @property
    def md_path(self) -> str:
        return self._path("md")

    @property
    def speedscope_path(self) -> str:
        return self._path("speedscope.json")

    @property
    def has_samples(self) -> bool:
        """Whether the report has a session with samples (then it gets a speedscope file)."""
        return self.session is not None and bool(getattr(self.session, "frame_records", None))

    @property
    def files(self) -> List[str]:
        """Paths of the rendered files: json, html, md, and the speedscope.json when written."""
        return [self.json_path, self.html_path, self.md_path] + ([self.speedscope_path] if self.has_flame_graph else [])

    def to_dict(self) -> Dict[str, Any]:
        """The report JSON (schema_version 1, docs/report-schema.md)."""
        data: Dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "report_id": self.report_id,
            "fingerprint": self.fingerprint,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "service_name": self.service_name,
            "span_name": self.span_name,
            "http": {"method": self.method, "route": self.route, "path": self.path,
                     "query": self.query, "status_code": self.status_code},
            "duration_ms": self.duration_ms,
            "threshold_ms": self.threshold_ms,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "headers": dict(self.headers),
            "profile": {
                "mode": self.profile_mode,
                "coverage": self.coverage,
                "interval_seconds": self.interval_seconds,
                "sample_count": self.sample_count,
                "hotspots": [dict(h) for h in self.hotspots],
                "call_tree_text": self.call_tree_text,
            },
            "host": dict(self.host),
        }
        if self.url:
            data["report_url"] = self.url
        if self.earlier_versions:
            data["earlier_versions"] = [dict(v) for v in self.earlier_versions]
        data["spans"] = [dict(row) for row in self.spans]
        data["spans_dropped"] = self.spans_dropped
        data["n_plus_one"] = [dict(f) for f in self.n_plus_one]
        if self.runtime:
            data["runtime"] = dict(self.runtime)
        if self.request is not None:
            data["request"] = dict(self.request)
        if self.unrouted_paths:
            data["unrouted_paths"] = list(self.unrouted_paths)
        if self.task is not None:
            data["task"] = dict(self.task)
        return data

    def version(self) -> Dict[str, Any]:
        """This report's entry in a later version's ``earlier_versions``."""
        return {"trace_id": self.trace_id, "span_id": self.span_id, "duration_ms": self.duration_ms,
                "mode": self.profile_mode, "coverage": self.coverage, "start_time": self.start_time}

    def replace(self, **changes: Any) -> Report:
        return dataclasses.replace(self, **changes)
