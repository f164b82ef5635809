"""The report object handed to renderers and exporters, and its JSON form (schema_version 1)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

SCHEMA_VERSION = 1


@dataclass
class Report:
    """One slow span's report. Built on the background worker; read by exporters.

    Durations are in milliseconds, times are ISO-8601 UTC strings, ids are lowercase hex.
    ``json_path``/``html_path``/``md_path`` are set once the files are written.
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
    session: Any = field(default=None, repr=False, compare=False)

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
    def files(self) -> List[str]:
        """Paths of the rendered files: json, html, md."""
        return [self.json_path, self.html_path, self.md_path]

    def to_dict(self) -> Dict[str, Any]:
        """The report JSON (DESIGN.md schema_version 1)."""
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
        return data

    def replace(self, **changes: Any) -> "Report":
        return dataclasses.replace(self, **changes)
