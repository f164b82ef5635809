"""Retention: which reports to delete so the store stays within an age and a size.

:func:`plan` picks, oldest first (by the JSON's modification time: a kept report rewritten with a
better call tree counts from its rewrite), every report older than ``max_age_seconds``, then more
of the oldest until the rest fits in ``max_bytes`` (0 = no bound). :func:`apply` deletes each one's
files together (the JSON first, so it stops being listed at once) and releases its dedup entry
(``DedupStore.release(fingerprint, report_id)``, the fingerprint read from the JSON), so the route
can report again. Used by the worker (at most every :data:`INTERVAL_SECONDS`) and by
``otel-perfmon prune``. Blocking I/O: background threads and the CLI only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from otel_perfmon.dedup.base import DedupStore
from otel_perfmon.storage.base import ReportStore, StoredReport

#: The worker applies retention at most this often (seconds).
INTERVAL_SECONDS = 300.0


@dataclass(frozen=True)
class Deletion:
    """A report retention deletes: why (``age`` or ``size``), its bytes and its JSON's mtime."""

    report_id: str
    reason: str
    size: int
    mtime: float


def plan(reports: Dict[str, StoredReport], now: float, max_age_seconds: float, max_bytes: int) -> List[Deletion]:
    """The reports to delete, oldest first (see the module docstring). 0 disables a bound."""
    oldest_first = sorted(reports.values(), key=lambda r: (r.mtime, r.report_id))
    deletions: List[Deletion] = []
    kept: List[StoredReport] = []
    for report in oldest_first:
        if max_age_seconds > 0 and now - report.mtime > max_age_seconds:
            deletions.append(Deletion(report.report_id, "age", report.size, report.mtime))
        else:
            kept.append(report)
    if max_bytes > 0:
        total = sum(r.size for r in kept)
        for report in kept:
            if total <= max_bytes:
                break
            deletions.append(Deletion(report.report_id, "size", report.size, report.mtime))
            total -= report.size
    return deletions


def apply(store: ReportStore, deletions: List[Deletion], dedup: Optional[DedupStore] = None,
          on_deleted: Optional[Callable[[Deletion], None]] = None) -> int:
    """Delete ``deletions`` from ``store`` and release their dedup entries; returns the bytes
    freed. ``on_deleted`` is called after each one. Raises what the store raises (what was
    deleted before stays deleted)."""
    freed = 0
    for deletion in deletions:
        data = store.read_json(deletion.report_id)
        fingerprint = data.get("fingerprint") if data is not None else None
        freed += store.delete_report(deletion.report_id)
        if dedup is not None and isinstance(fingerprint, str) and fingerprint:
            dedup.release(fingerprint, deletion.report_id)
        if on_deleted is not None:
            on_deleted(deletion)
    return freed
