"""A local copy of a remote report store, for the viewer and ``otel-perfmon list``.

The viewer's pages read report files from a directory; for a remote ``report_dir`` that
directory is a mirror under :func:`otel_perfmon.storage.local_state_dir` (``…/viewer``), kept in
step by :meth:`ReportMirror.sync`: one listing of the store, then only the reports whose JSON's
ETag (or modification time and size) changed are downloaded (concurrently where the file system
can), each written locally by the same rule as a local report directory (temporaries, renamed
the JSON last); reports gone from the store are removed. Blocking I/O: the viewer's thread pool
or the CLI.
"""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Tuple

from otel_perfmon.storage.base import SUFFIXES, ReportStore, StoredReport, split_name
from otel_perfmon.storage.local import ensure_dir, remove_quietly, write_files_atomically

#: Reports downloaded per batch (one concurrent ``cat`` of their files).
BATCH = 64


class ReportMirror:
    """Mirror ``store`` into ``directory``. ``synced`` counts the reports downloaded so far."""

    def __init__(self, store: ReportStore, directory: str) -> None:
        self.store = store
        self.directory = directory
        self._lock = threading.Lock()
        self._etags: Dict[str, str] = {}
        self._first = True
        self.synced = 0

    def sync(self) -> int:
        """Bring the mirror up to date; returns how many reports were downloaded or removed.
        Raises OSError when the store fails (the mirror keeps what it had)."""
        with self._lock:
            listing = self.store.list_reports()
            ensure_dir(self.directory)
            changed = [r for rid, r in listing.items() if self._etags.get(rid) != r.etag]
            gone = set(self._etags) - set(listing)
            if self._first:  # files left by an earlier run that the store no longer has
                gone |= {parsed[0] for parsed in map(split_name, os.listdir(self.directory))
                         if parsed is not None and parsed[0] not in listing}
            for start in range(0, len(changed), BATCH):
                self._download(changed[start:start + BATCH])
            for report_id in gone:
                for suffix in SUFFIXES:
                    remove_quietly(os.path.join(self.directory, f"{report_id}.{suffix}"))
                self._etags.pop(report_id, None)
            self._first = False
            return len(changed) + len(gone)

    def _download(self, reports: List[StoredReport]) -> None:
        names = [(r.report_id, suffix) for r in reports for suffix in r.suffixes]
        read_many = getattr(self.store, "read_many", None)
        if callable(read_many):
            found: Dict[Tuple[str, str], bytes] = read_many(names)
        else:
            found = {}
            for report_id, suffix in names:
                data = self.store.read(report_id, suffix)
                if data is not None:
                    found[(report_id, suffix)] = data
        for report in reports:
            files = [(suffix, found[(report.report_id, suffix)].decode("utf-8", "replace"))
                     for suffix in report.suffixes if (report.report_id, suffix) in found]
            if not any(suffix == "json" for suffix, _ in files):
                continue  # deleted between the listing and the download: the next sync sees it
            write_files_atomically(self.directory, report.report_id, files)
            self._etags[report.report_id] = report.etag
            self.synced += 1
