"""Deduplication: one report per fingerprint per window, shared through a store.

Stores: ``memory`` (this process), ``sqlite`` (a file in report_dir shared by every process
on the host; the default) and ``redis://`` (shared by hosts). All are called from
otel-perfmon's background threads only (the watchdog and the worker), never the request path.
"""

from __future__ import annotations

import hashlib
from typing import Any

from otel_perfmon.dedup.base import Claim, DedupEntry, DedupStore


def fingerprint(service_name: str, method: str, route: str) -> str:
    """16 hex chars identifying service + method + route template (not the concrete path)."""
    key = "\n".join((service_name, (method or "").upper(), route))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def open_store(spec: str, report_dir: str) -> DedupStore:
    """The store named by the ``dedup_store`` config value. Connections open lazily."""
    if spec == "memory":
        from otel_perfmon.dedup.memory import MemoryDedupStore

        return MemoryDedupStore()
    if spec == "sqlite":
        from otel_perfmon.dedup.sqlite import SqliteDedupStore

        return SqliteDedupStore.in_report_dir(report_dir)
    from otel_perfmon.dedup.redis import RedisDedupStore

    return RedisDedupStore(spec)


__all__ = ["Claim", "DedupEntry", "DedupStore", "fingerprint", "open_store"]
