"""Deduplication: one report per fingerprint per window, shared through a store.

Stores: ``memory`` (this process), ``sqlite`` (a file in report_dir shared by every process
on the host; the default) and ``redis://`` (shared by hosts). All are called from
otel-perfmon's background threads only (the watchdog and the worker), never the request path.
"""

from __future__ import annotations

import hashlib

from otel_perfmon import _plugins
from otel_perfmon.dedup.base import Claim, DedupEntry, DedupStore, KeptVersion, RouteStatsDelta, RouteStatsEntry


def fingerprint(service_name: str, method: str, route: str) -> str:
    """16 hex chars identifying service + method + route template (not the concrete path)."""
    key = "\n".join((service_name, (method or "").upper(), route))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def open_store(spec: str, report_dir: str) -> DedupStore:
    """The store named by the ``dedup_store`` config value: a name (``memory``, ``sqlite``, an
    ``otel_perfmon.dedup_stores`` entry point) or a URL whose scheme names it (``redis://``).
    Connections open lazily. Configure time; raises ConfigurationError for an unknown name."""
    name = spec.partition("://")[0] if "://" in spec else spec
    store: DedupStore = _plugins.load(_plugins.DEDUP_STORES, name).from_spec(spec, report_dir)
    return store


__all__ = ["Claim", "DedupEntry", "DedupStore", "KeptVersion", "RouteStatsDelta", "RouteStatsEntry", "fingerprint",
           "open_store"]
