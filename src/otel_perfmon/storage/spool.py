"""The local spool: reports kept on this host while the remote store fails, uploaded when it
answers again.

:class:`SpoolingReportStore` wraps a remote store. A write that fails (unreachable, 5xx, denied)
puts the report's files into the spool directory instead and succeeds: the report is not lost
and the app is not told. The spool is bounded (:data:`MAX_SPOOL_BYTES`, :data:`MAX_SPOOL_REPORTS`):
past a bound the oldest entries are dropped first and counted (``spool_dropped``). Entries are
uploaded oldest first by :meth:`SpoolingReportStore.flush`, which the worker calls before its
next write and every :data:`RETRY_INTERVAL_SECONDS` while the spool is not empty (a timer item
on the watchdog hands the worker a retry; nothing runs on the request path).

One entry is a directory ``<spool>/<time_ns>-<pid>-<report_id>[.partial]/`` holding the files
``<report_id>.<suffix>``; it is filled under a temporary name and renamed, so a crash leaves no
half entry (temporaries older than an hour are removed). A ``.partial`` entry is a rewrite of
some files of a report (the JSON of a deduplicated unrouted request): uploaded file by file,
without removing the report's other files. Several processes of a host share one spool (an
upload twice is harmless: a PUT is idempotent and entries are uploaded in time order).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from otel_perfmon.storage.base import ReportStore, StoredReport, split_name
from otel_perfmon.storage.local import ensure_dir, write_files_atomically

#: Bounds of the spool of one host (all its processes): bytes of files, and entries.
MAX_SPOOL_BYTES = 256 * 1024 * 1024
MAX_SPOOL_REPORTS = 2000
#: While reports are spooled, the worker retries the upload at most this often (seconds).
RETRY_INTERVAL_SECONDS = 5.0
_STALE_TEMPORARY_SECONDS = 3600.0


@dataclass(frozen=True)
class SpoolEntry:
    name: str
    path: str
    report_id: str
    partial: bool
    size: int


class Spool:
    """The spool directory (created 0700 on the first entry)."""

    def __init__(self, directory: str, max_bytes: int = MAX_SPOOL_BYTES, max_reports: int = MAX_SPOOL_REPORTS) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_reports = max_reports

    def entries(self) -> List[SpoolEntry]:
        """Complete entries, oldest first."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        found = []
        now = time.time()
        for name in names:
            path = os.path.join(self.directory, name)
            if name.startswith(".tmp-"):
                try:
                    if now - os.stat(path).st_mtime > _STALE_TEMPORARY_SECONDS:
                        shutil.rmtree(path, ignore_errors=True)
                except OSError:
                    pass
                continue
            stem, dot, kind = name.partition(".")
            parts = stem.split("-", 2)
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            size = 0
            try:
                for child in os.scandir(path):
                    size += child.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed meanwhile (uploaded by another process)
            found.append(SpoolEntry(name, path, parts[2], kind == "partial", size))
        return found

    def put(self, report_id: str, files: Sequence[Tuple[str, str]], partial: bool = False) -> int:
        """Add an entry; returns how many old entries were dropped to stay within the bounds.
        Raises OSError when the local disk fails too."""
        ensure_dir(self.directory)
        tmp = os.path.join(self.directory, f".tmp-{uuid.uuid4().hex}")
        os.mkdir(tmp, 0o700)
        try:
            write_files_atomically(tmp, report_id, files)
            final = f"{time.time_ns():020d}-{os.getpid()}-{report_id}" + (".partial" if partial else "")
            os.rename(tmp, os.path.join(self.directory, final))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.enforce_bounds()

    def enforce_bounds(self) -> int:
        entries = self.entries()
        total = sum(e.size for e in entries)
        dropped = 0
        while entries and (len(entries) > self.max_reports or total > self.max_bytes):
            oldest = entries.pop(0)
            shutil.rmtree(oldest.path, ignore_errors=True)
            total -= oldest.size
            dropped += 1
        return dropped

    @staticmethod
    def files(entry: SpoolEntry) -> List[Tuple[str, str]]:
        """``(suffix, text)`` of an entry's files, the JSON last."""
        out = []
        for name in sorted(os.listdir(entry.path)):
            parsed = split_name(name)
            if parsed is None or parsed[0] != entry.report_id:
                continue
            with open(os.path.join(entry.path, name), encoding="utf-8") as handle:
                out.append((parsed[1], handle.read()))
        return sorted(out, key=lambda item: item[0] == "json")

    @staticmethod
    def remove(entry: SpoolEntry) -> None:
        shutil.rmtree(entry.path, ignore_errors=True)

    def newest(self, report_id: str, suffix: str) -> Optional[bytes]:
        """The file of the newest entry of ``report_id`` that has ``suffix``, or None."""
        for entry in reversed(self.entries()):
            if entry.report_id != report_id:
                continue
            try:
                with open(os.path.join(entry.path, f"{report_id}.{suffix}"), "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                if not entry.partial:
                    return None  # a whole version without that file
        return None


class SpoolingReportStore(ReportStore):
    """``remote`` with ``spool`` behind it. ``count(key, amount)`` records ``upload_failures``
    and ``spool_dropped``; ``gauge(key, value)`` sets ``spool_reports`` and ``spool_bytes``.
    ``on_spooled()`` is called after a report was spooled (to schedule a retry)."""

    is_remote = True

    def __init__(self, remote: ReportStore, spool: Spool, count: Callable[[str, float], None],
                 gauge: Callable[[str, float], None], on_spooled: Optional[Callable[[], None]] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.spool = spool
        self.location = remote.location
        self._count = count
        self._gauge = gauge
        self.on_spooled = on_spooled
        self._clock = clock
        self._lock = threading.RLock()
        self._failed_at: Optional[float] = None  # the last failed upload (monotonic)
        self._pending: Optional[bool] = None  # whether the spool holds entries (None: not looked yet)

    def url(self, report_id: str, suffix: str) -> str:
        return self.remote.url(report_id, suffix)

    @property
    def pending(self) -> bool:
        """Whether spooled reports wait for an upload (this process's last look)."""
        if self._pending is None:
            self._pending = bool(self.spool.entries())
            self._update_gauges()
        return self._pending

    def _update_gauges(self, entries: Optional[List[SpoolEntry]] = None) -> None:
        entries = self.spool.entries() if entries is None else entries
        self._gauge("spool_reports", len(entries))
        self._gauge("spool_bytes", sum(e.size for e in entries))

    def _failed(self) -> None:
        self._count("upload_failures", 1)
        self._failed_at = self._clock()

    def flush(self, force: bool = False) -> int:
        """Upload spooled entries oldest first, stopping at the first failure; returns how
        many were uploaded. Unless ``force``, does nothing within :data:`RETRY_INTERVAL_SECONDS`
        of a failed upload. Raises nothing for the remote store's failures."""
        with self._lock:
            if not force and self._failed_at is not None and \
                    self._clock() - self._failed_at < RETRY_INTERVAL_SECONDS:
                return 0
            uploaded = 0
            entries = self.spool.entries()
            for entry in entries:
                try:
                    files = self.spool.files(entry)
                except OSError:
                    continue  # uploaded and removed by another process meanwhile
                try:
                    if entry.partial:
                        for suffix, text in files:
                            self.remote.write_file(entry.report_id, suffix, text)
                    elif files:
                        self.remote.write_report(entry.report_id, files)
                except OSError:
                    self._failed()
                    break
                self.spool.remove(entry)
                uploaded += 1
            else:
                self._failed_at = None
            remaining = self.spool.entries() if uploaded or entries else []
            self._pending = bool(remaining)
            self._update_gauges(remaining)
            return uploaded

    def _spool(self, report_id: str, files: Sequence[Tuple[str, str]], partial: bool) -> None:
        dropped = self.spool.put(report_id, files, partial)
        if dropped:
            self._count("spool_dropped", dropped)
        self._pending = True
        self._update_gauges()
        if self.on_spooled is not None:
            self.on_spooled()

    def _remote_or_spool(self, report_id: str, files: Sequence[Tuple[str, str]], partial: bool) -> None:
        with self._lock:
            if self.pending:
                self.flush()
            if not self._pending:
                try:
                    if partial:
                        for suffix, text in files:
                            self.remote.write_file(report_id, suffix, text)
                    else:
                        self.remote.write_report(report_id, files)
                    return
                except OSError:
                    self._failed()
            self._spool(report_id, files, partial)

    def write_report(self, report_id: str, files: Sequence[Tuple[str, str]]) -> List[str]:
        self._remote_or_spool(report_id, files, partial=False)
        return [suffix for suffix, _ in files]

    def write_file(self, report_id: str, suffix: str, text: str) -> None:
        self._remote_or_spool(report_id, [(suffix, text)], partial=True)

    def read(self, report_id: str, suffix: str) -> Optional[bytes]:
        if self.pending:
            spooled = self.spool.newest(report_id, suffix)
            if spooled is not None:
                return spooled
        return self.remote.read(report_id, suffix)

    def list_reports(self) -> Dict[str, StoredReport]:
        return self.remote.list_reports()

    def delete_report(self, report_id: str) -> int:
        return self.remote.delete_report(report_id)

    def close(self) -> None:
        self.remote.close()


def gauge_setter(incr: Callable[[str, float], None]) -> Callable[[str, float], None]:
    """A ``gauge(key, value)`` over a counter's ``incr(key, amount)``: adds the difference to
    the value it set last (the counters have no setter)."""
    last: Dict[str, float] = {}
    lock = threading.Lock()

    def gauge(key: str, value: float) -> None:
        with lock:
            delta = value - last.get(key, 0)
            last[key] = value
        if delta:
            incr(key, delta)

    return gauge


__all__ = ["MAX_SPOOL_BYTES", "MAX_SPOOL_REPORTS", "RETRY_INTERVAL_SECONDS", "Spool", "SpoolEntry",
           "SpoolingReportStore", "gauge_setter"]

