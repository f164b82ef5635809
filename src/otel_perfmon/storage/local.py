"""A report directory on the local file system (the default store).

Files are written to temporary names (``<id>.<ext>.tmp-<pid>``, mode 0600, in a 0700
directory) and renamed only once every one of them is complete, the JSON last: a failed write
(a full disk, a quota, a read-only file system) removes its temporaries and leaves the
directory as it was, an earlier version of the report intact. Readers list ``<id>.json`` only.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from otel_perfmon.storage.base import SUFFIXES, ReportStore, StoredReport, json_last, split_name


def ensure_dir(path: str) -> None:
    """Create ``path`` with mode 0700 if missing (parents too)."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def temporary_name(path: str) -> str:
    """The name ``path`` is written under before its rename: ``<path>.tmp-<pid>``."""
    return f"{path}.tmp-{os.getpid()}"


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temporary(path: str, text: str) -> str:
    """Write ``text`` to ``path``'s temporary name (0600); returns that name. On failure
    (ENOSPC, EDQUOT, EROFS...) the partial temporary is removed and the error re-raised."""
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        remove_quietly(tmp)
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BaseException:
        remove_quietly(tmp)
        raise
    return tmp


def write_files_atomically(directory: str, report_id: str, files: Sequence[Tuple[str, str]]) -> List[str]:
    """The local writing rule (see the module docstring); returns the suffixes written in
    ``files`` order, after removing the report's files of other suffixes."""
    ensure_dir(directory)
    written: List[Tuple[str, str]] = []
    done: List[str] = []
    try:
        for suffix, text in json_last(files):
            path = os.path.join(directory, f"{report_id}.{suffix}")
            written.append((write_temporary(path, text), path))
        while written:
            tmp, path = written[0]
            os.replace(tmp, path)
            written.pop(0)
            done.append(path)
    finally:
        for tmp, _ in written:
            remove_quietly(tmp)
    names = {os.path.basename(path) for path in done}
    for suffix in SUFFIXES:
        if f"{report_id}.{suffix}" not in names:  # the speedscope file of an earlier version
            remove_quietly(os.path.join(directory, f"{report_id}.{suffix}"))
    return [suffix for suffix, _ in files if f"{report_id}.{suffix}" in names]


class LocalReportStore(ReportStore):
    """``report_dir`` as a directory (created 0700 on the first write)."""

    is_remote = False

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.location = self.directory

    def url(self, report_id: str, suffix: str) -> str:
        return os.path.join(self.directory, f"{report_id}.{suffix}")

    def write_report(self, report_id: str, files: Sequence[Tuple[str, str]]) -> List[str]:
        return write_files_atomically(self.directory, report_id, files)

    def write_file(self, report_id: str, suffix: str, text: str) -> None:
        path = os.path.join(self.directory, f"{report_id}.{suffix}")
        tmp = write_temporary(path, text)
        try:
            os.replace(tmp, path)
        finally:
            remove_quietly(tmp)

    def read(self, report_id: str, suffix: str) -> Optional[bytes]:
        try:
            with open(os.path.join(self.directory, f"{report_id}.{suffix}"), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def list_reports(self) -> Dict[str, StoredReport]:
        sizes: Dict[str, int] = {}
        found: Dict[str, List[str]] = {}
        json_stat: Dict[str, os.stat_result] = {}
        try:
            entries = os.scandir(self.directory)
        except FileNotFoundError:
            return {}
        with entries:
            for entry in entries:
                parsed = split_name(entry.name)
                if parsed is None:
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                report_id, suffix = parsed
                sizes[report_id] = sizes.get(report_id, 0) + st.st_size
                found.setdefault(report_id, []).append(suffix)
                if suffix == "json":
                    json_stat[report_id] = st
        return {rid: StoredReport(rid, sizes[rid], st.st_mtime, f"{st.st_mtime_ns}-{st.st_size}", st.st_size,
                                  tuple(sorted(found[rid])))
                for rid, st in json_stat.items()}

    def delete_report(self, report_id: str) -> int:
        freed = 0
        for suffix in ("json",) + tuple(s for s in SUFFIXES if s != "json"):
            path = os.path.join(self.directory, f"{report_id}.{suffix}")
            try:
                size = os.stat(path, follow_symlinks=False).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            freed += size
        return freed
