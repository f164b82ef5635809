"""Report stores: where a report's files go (``report_dir``).

``report_dir`` is a local directory (:class:`~otel_perfmon.storage.local.LocalReportStore`, the
default) or an fsspec URL (:class:`~otel_perfmon.storage.remote.FsspecReportStore`:
``s3://bucket/prefix`` with the ``s3`` extra, ``gs://`` with ``gcs``, ``az://`` with ``azure``,
``memory://`` for tests; ``file:///path`` is the local directory ``/path``). The application's
worker wraps a remote store in a local spool (:mod:`otel_perfmon.storage.spool`); retention is
:mod:`otel_perfmon.storage.retention`; the viewer mirrors a remote store into a local directory
(:mod:`otel_perfmon.storage.mirror`).

When ``report_dir`` is remote, what must stay on the host lives in :func:`local_state_dir`: the
default SQLite dedup file, the spool, the viewer's mirror.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from typing import Callable, Optional

from otel_perfmon.storage.base import SUFFIXES, ReportStore, StoredReport
from otel_perfmon.storage.local import LocalReportStore

#: The directory under the system temp directory (or ``$XDG_CACHE_HOME``) for the local state of
#: remote report stores.
LOCAL_DIR_NAME = "perfmon-local"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(report_dir: str) -> bool:
    """Whether ``report_dir`` is a URL (``scheme://…``) rather than a path."""
    return bool(_URL.match(str(report_dir)))


def is_remote(report_dir: str) -> bool:
    """Whether ``report_dir`` is a URL other than ``file://``."""
    return is_url(report_dir) and not str(report_dir).lower().startswith("file://")


def local_path(report_dir: str) -> str:
    """The absolute path of a local ``report_dir`` (a path or a ``file://`` URL)."""
    text = str(report_dir)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    return os.path.abspath(text)


def local_state_dir(report_dir: str) -> str:
    """Where this host keeps the state of ``report_dir`` (dedup SQLite file, spool, viewer
    mirror): ``report_dir`` itself when local; for a URL
    ``$XDG_CACHE_HOME/perfmon-local/<name>-<hash>`` when ``XDG_CACHE_HOME`` is set, else
    ``<system temp>/perfmon-local-<uid>/<name>-<hash>`` (the hash of the URL without
    credentials, so each store has its own). Not created here."""
    if not is_remote(report_dir):
        return local_path(report_dir)
    from otel_perfmon.storage.remote import display_url

    url = display_url(str(report_dir))
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9]+", "-", url.partition("://")[2]).strip("-")[:40] or "store"
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = os.path.join(cache, LOCAL_DIR_NAME) if cache and os.path.isabs(cache) else \
        os.path.join(tempfile.gettempdir(), f"{LOCAL_DIR_NAME}-{os.getuid() if hasattr(os, 'getuid') else 0}")
    return os.path.join(base, f"{name}-{digest}")


def display(report_dir: str) -> str:
    """``report_dir`` as logs and messages may show it (a URL without credentials)."""
    if not is_remote(report_dir):
        return local_path(report_dir)
    from otel_perfmon.storage.remote import display_url

    return display_url(str(report_dir))


def check_report_dir(report_dir: str) -> None:
    """Raise ValueError for a URL whose file system is unknown or not installed. No I/O."""
    if is_remote(report_dir):
        from otel_perfmon.storage.remote import check_url

        check_url(str(report_dir))


def open_report_store(report_dir: str) -> ReportStore:
    """The store of ``report_dir`` (no spool: for the CLI and the viewer). No I/O until used."""
    if not is_remote(report_dir):
        return LocalReportStore(local_path(report_dir))
    from otel_perfmon.storage.remote import FsspecReportStore

    return FsspecReportStore(str(report_dir))


def open_app_store(report_dir: str, count: Callable[[str, float], None],
                   on_spooled: Optional[Callable[[], None]] = None) -> ReportStore:
    """The application's store: :func:`open_report_store`, a remote one behind a local spool
    in ``<local_state_dir>/spool`` (``count(key, amount)``: the stats counters)."""
    store = open_report_store(report_dir)
    if not store.is_remote:
        return store
    from otel_perfmon.storage.spool import Spool, SpoolingReportStore, gauge_setter

    spool = Spool(os.path.join(local_state_dir(report_dir), "spool"))
    return SpoolingReportStore(store, spool, count, gauge_setter(count), on_spooled)


__all__ = ["LOCAL_DIR_NAME", "SUFFIXES", "LocalReportStore", "ReportStore", "StoredReport", "check_report_dir",
           "display", "is_remote", "is_url", "local_path", "local_state_dir", "open_app_store", "open_report_store"]
