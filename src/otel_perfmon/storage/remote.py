"""An fsspec file system as the report store: ``report_dir`` is a URL (``s3://bucket/prefix``,
``gs://…``, ``az://…``, ``memory://…``), opened with :func:`fsspec.core.url_to_fs`.

Each file is one object (a PUT replaces an object whole), written in the order every reader can
rely on: the HTML, Markdown and flame-graph files first, the JSON last, so a listed report has
all its files. Credentials and the endpoint come from the file system's own configuration (for
S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or a role, ``AWS_ENDPOINT_URL`` for MinIO and
other S3 servers, ``AWS_DEFAULT_REGION``); they never reach a log line, a report or an error
text (:func:`scrub`). Extras: ``s3`` (s3fs), ``gcs`` (gcsfs), ``azure`` (adlfs).

Every failure of the file system (unreachable, 5xx, denied) is raised as :class:`StoreError`
(an OSError) with a scrubbed message. Any background thread; the file system object is
re-made after a fork (s3fs's event loop does not survive one).
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

from otel_perfmon.storage.base import SUFFIXES, ReportStore, StoredReport, json_last, split_name

#: S3 time-outs and attempts: a store that does not answer must fail fast (the report then goes
#: to the local spool) rather than hold the worker for s3fs's default minute of retries.
S3_OPTIONS: Dict[str, Any] = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 20,
                                                "retries": {"max_attempts": 2, "mode": "standard"}}}
S3_RETRIES = 2
#: the extra that installs each protocol's fsspec implementation
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
          "adl": "azure"}
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY|ACCOUNT_KEY|CREDENTIAL|SAS)", re.IGNORECASE)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


class StoreError(OSError):
    """The remote store failed; the text is scrubbed of credentials."""


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment (what logs and pages show)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<report store>"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _secrets(extra: Iterable[str] = ()) -> List[str]:
    values = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]
    return sorted(set(values) | {v for v in extra if len(v) >= 6}, key=len, reverse=True)


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with URL user info and every credential-looking environment value (and
    ``extra``) replaced by ``[REDACTED]``."""
    text = _USERINFO.sub("[REDACTED]@", text)
    for value in _secrets(extra):
        text = text.replace(value, "[REDACTED]")
    return text


def protocol_of(url: str) -> str:
    return url.partition("://")[0].lower()


def check_url(url: str) -> None:
    """Raise ValueError when ``url`` names no installed fsspec file system (the message names
    the extra to install). No network."""
    protocol = protocol_of(url)
    extra = EXTRAS.get(protocol)
    hint = f"; pip install 'otel-perfmon[{extra}]'" if extra else ""
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"a report_dir URL needs fsspec{hint or ' (and its file system package)'}") from None
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise ValueError(f"the {protocol}:// file system is not installed{hint} ({exc})") from None
    except ValueError:
        raise ValueError(f"unknown file system protocol {protocol!r} (fsspec knows no such protocol)") from None


def _mtime(info: Dict[str, Any]) -> float:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "timeCreated"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


class FsspecReportStore(ReportStore):
    """``url``'s file system and root. ``storage_options`` go to the file system (defaults for
    S3: :data:`S3_OPTIONS`)."""

    is_remote = True

    def __init__(self, url: str, storage_options: Optional[Dict[str, Any]] = None) -> None:
        self.url_text = url
        self.location = display_url(url)
        self._options = dict(storage_options or {})
        self._lock = threading.Lock()
        self._fs: Any = None
        self._root = ""
        self._pid = 0

    # --- the file system ------------------------------------------------------------------
    def _filesystem(self) -> Tuple[Any, str]:
        with self._lock:
            if self._fs is None or self._pid != os.getpid():
                import fsspec.core

                options = dict(self._options)
                protocol = protocol_of(self.url_text)
                if protocol in ("s3", "s3a"):
                    for key, value in S3_OPTIONS.items():
                        options.setdefault(key, value)
                    options.setdefault("skip_instance_cache", True)
                fs, root = fsspec.core.url_to_fs(self.url_text, **options)
                if protocol in ("s3", "s3a"):
                    fs.retries = S3_RETRIES
                self._fs, self._root, self._pid = fs, root.rstrip("/"), os.getpid()
            return self._fs, self._root

    def _path(self, report_id: str, suffix: str) -> str:
        return f"{self._filesystem()[1]}/{report_id}.{suffix}"

    def _error(self, what: str, exc: BaseException) -> StoreError:
        text = scrub(f"{what} {self.location}: {type(exc).__name__}: {exc}",
                     [str(v) for v in self._options.values() if isinstance(v, str)])
        return StoreError(getattr(exc, "errno", None) or 5, text)

    # --- ReportStore ----------------------------------------------------------------------
    def write_report(self, report_id: str, files: Sequence[Tuple[str, str]]) -> List[str]:
        try:
            fs, _ = self._filesystem()
            for suffix, text in json_last(files):
                fs.pipe_file(self._path(report_id, suffix), text.encode("utf-8"))
            written = {suffix for suffix, _ in files}
            stale = [self._path(report_id, s) for s in SUFFIXES if s not in written]
            existing = [p for p in stale if fs.exists(p)]
            if existing:
                fs.rm(existing)
        except Exception as exc:
            raise self._error("cannot write a report to", exc) from None
        return [suffix for suffix, _ in files]

    def write_file(self, report_id: str, suffix: str, text: str) -> None:
        try:
            fs, _ = self._filesystem()
            fs.pipe_file(self._path(report_id, suffix), text.encode("utf-8"))
        except Exception as exc:
            raise self._error("cannot write a report file to", exc) from None

    def read(self, report_id: str, suffix: str) -> Optional[bytes]:
        try:
            fs, _ = self._filesystem()
            data = fs.cat_file(self._path(report_id, suffix))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error("cannot read", exc) from None
        return bytes(data)

    def read_many(self, names: Sequence[Tuple[str, str]]) -> Dict[Tuple[str, str], bytes]:
        """Several files at once (concurrently where the file system can); missing ones are
        left out."""
        if not names:
            return {}
        try:
            fs, _ = self._filesystem()
            paths = {self._path(rid, suffix): (rid, suffix) for rid, suffix in names}
            found = fs.cat(list(paths), on_error="omit")
        except Exception as exc:
            raise self._error("cannot read", exc) from None
        out: Dict[Tuple[str, str], bytes] = {}
        for path, data in found.items():
            key = paths.get(path)
            if key is not None and isinstance(data, bytes):
                out[key] = data
        return out

    def list_reports(self) -> Dict[str, StoredReport]:
        try:
            fs, root = self._filesystem()
            fs.invalidate_cache(root)
            try:
                infos = fs.ls(root, detail=True)
            except FileNotFoundError:
                return {}
        except Exception as exc:
            raise self._error("cannot list", exc) from None
        sizes: Dict[str, int] = {}
        found: Dict[str, List[str]] = {}
        json_info: Dict[str, Dict[str, Any]] = {}
        for info in infos:
            if not isinstance(info, dict) or info.get("type", "file") != "file":
                continue
            parsed = split_name(str(info.get("name", "")).rstrip("/").rpartition("/")[2])
            if parsed is None:
                continue
            report_id, suffix = parsed
            size = int(info.get("size") or 0)
            sizes[report_id] = sizes.get(report_id, 0) + size
            found.setdefault(report_id, []).append(suffix)
            if suffix == "json":
                json_info[report_id] = info
        reports = {}
        for rid, info in json_info.items():
            mtime = _mtime(info)
            size = int(info.get("size") or 0)
            etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or f"{mtime}-{size}")
            reports[rid] = StoredReport(rid, sizes[rid], mtime, etag.strip('"'), size, tuple(sorted(found[rid])))
        return reports

    def delete_report(self, report_id: str) -> int:
        try:
            fs, root = self._filesystem()
            fs.invalidate_cache(root)
            freed = 0
            for suffix in ("json",) + tuple(s for s in SUFFIXES if s != "json"):
                path = self._path(report_id, suffix)
                try:
                    size = int(fs.info(path).get("size") or 0)
                except FileNotFoundError:
                    continue
                fs.rm_file(path)
                freed += size
        except Exception as exc:
            raise self._error("cannot delete a report from", exc) from None
        return freed
