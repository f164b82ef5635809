"""The report store interface: where a report's files live (a local directory, an object store).

A report is ``<report_id>.json`` plus ``<report_id>.html``, ``<report_id>.md`` and, when it was
sampled, ``<report_id>.speedscope.json``. The JSON is what every reader lists, so every store
writes it last: a reader never sees a report whose other files are missing. Methods may block on
I/O: call them from otel-perfmon's background threads (or a CLI / the viewer), never the request
path.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from otel_perfmon.report.ids import is_valid_report_id

#: Every file suffix a report may have (``<report_id>.<suffix>``), the JSON last.
SUFFIXES: Tuple[str, ...] = ("html", "md", "speedscope.json", "json")


def split_name(name: str) -> Optional[Tuple[str, str]]:
    """``(report_id, suffix)`` of a report file's base name, or None for any other name
    (temporaries, the dedup database, foreign files)."""
    for suffix in ("speedscope.json", "json", "html", "md"):
        end = "." + suffix
        if name.endswith(end):
            report_id = name[:-len(end)]
            if suffix == "json" and report_id.endswith(".speedscope"):
                return None
            return (report_id, suffix) if is_valid_report_id(report_id) else None
    return None


def json_last(files: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """``files`` (suffix, text) in write order: every other file first, the JSON last."""
    return sorted(files, key=lambda item: item[0] == "json")


@dataclass(frozen=True)
class StoredReport:
    """One report as a listing sees it: ``size`` is the bytes of all its files, ``mtime`` the
    JSON's modification time (epoch seconds), ``etag`` the JSON's version tag (an object
    store's ETag, or ``"<mtime_ns>-<size>"`` locally), ``suffixes`` the files present."""

    report_id: str
    size: int
    mtime: float
    etag: str
    json_size: int
    suffixes: Tuple[str, ...]


class ReportStore(abc.ABC):
    """Where the report files are written and read. ``location`` is what logs and messages show
    (never credentials); ``is_remote`` is False for a local directory."""

    location: str = ""
    is_remote: bool = False

    @abc.abstractmethod
    def write_report(self, report_id: str, files: Sequence[Tuple[str, str]]) -> List[str]:
        """Write ``files`` (``(suffix, text)``) of ``report_id``, the JSON last, and remove the
        report's files of other suffixes (the flame graph of an earlier version). Returns the
        suffixes written, in ``files`` order. Raises OSError when the store fails (nothing of a
        failed write is visible to a reader: the JSON is not replaced)."""

    @abc.abstractmethod
    def read(self, report_id: str, suffix: str) -> Optional[bytes]:
        """The content of ``<report_id>.<suffix>``, or None when it does not exist. Raises
        OSError when the store fails."""

    @abc.abstractmethod
    def list_reports(self) -> Dict[str, StoredReport]:
        """Every report with a JSON file, by id. Raises OSError when the store fails."""

    @abc.abstractmethod
    def delete_report(self, report_id: str) -> int:
        """Remove every file of ``report_id`` (the JSON first, so it stops being listed);
        returns the bytes freed. Raises OSError when the store fails."""

    def write_file(self, report_id: str, suffix: str, text: str) -> None:
        """Replace one file of a report (atomically where the store can). Default: through
        :meth:`write_report` is not used, as it would remove the other files."""
        raise NotImplementedError

    def total_bytes(self) -> int:
        """The bytes of every report's files."""
        return sum(r.size for r in self.list_reports().values())

    def url(self, report_id: str, suffix: str) -> str:
        """Where ``<report_id>.<suffix>`` is (a path or a URL without credentials)."""
        return f"{self.location.rstrip('/')}/{report_id}.{suffix}"

    def read_json(self, report_id: str) -> Optional[Dict[str, Any]]:
        """The report JSON as a dict, or None when missing, unreadable or not an object."""
        try:
            raw = self.read(report_id, "json")
            data = json.loads(raw) if raw is not None else None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def update_json(self, report_id: str, change: Callable[[Dict[str, Any]], bool]) -> bool:
        """Apply ``change`` to the report JSON (it returns True when it changed the dict) and
        rewrite that file alone. False when missing, unreadable or unchanged. Raises OSError
        on a failed write."""
        data = self.read_json(report_id)
        if data is None or not change(data):
            return False
        self.write_file(report_id, "json", json.dumps(data, indent=2, ensure_ascii=True) + "\n")
        return True

    def close(self) -> None:
        return None
