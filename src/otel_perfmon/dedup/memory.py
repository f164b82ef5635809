"""In-process dedup store (``dedup_store="memory"``): a dict under a lock."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from otel_perfmon.dedup.base import (
    Claim,
    Decide,
    DedupEntry,
    DedupStore,
    KeptVersion,
    RouteStatsDelta,
    RouteStatsEntry,
    bucket_bound,
)


class MemoryDedupStore(DedupStore):
    """Fast, per process, forgotten on restart. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[str, DedupEntry] = {}
        #: fingerprint -> [service, method, route, count, slow, max_ms, first_seen, last_seen, {bucket: count}]
        self._routes: Dict[str, List[Any]] = {}

    def claim(self, fingerprint: str, candidate_id: str, now: float, window_seconds: float) -> Claim:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and window_seconds > 0 and now - entry.created_at < window_seconds:
                return Claim(entry.report_id, False)
            self._entries[fingerprint] = DedupEntry(fingerprint, candidate_id, now, now, 0, 0.0, None)
            return Claim(candidate_id, True)

    def record_occurrence(self, fingerprint: str, report_id: str, duration_ms: float,
                          trace_id: str, now: float) -> None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None or entry.report_id != report_id:
                return
            self._entries[fingerprint] = dataclasses.replace(
                entry, count=entry.count + 1, last_seen=max(entry.last_seen, now),
                worst_duration_ms=max(entry.worst_duration_ms, duration_ms), last_trace_id=trace_id)

    def release(self, fingerprint: str, report_id: str) -> None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and entry.report_id == report_id:
                del self._entries[fingerprint]

    def set_kept(self, fingerprint: str, report_id: str, version: KeptVersion) -> None:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and entry.report_id == report_id:
                self._entries[fingerprint] = dataclasses.replace(
                    entry, kept_duration_ms=version.duration_ms, kept_mode=version.mode, kept_coverage=version.coverage)

    def replace_kept(self, fingerprint: str, report_id: str, candidate: KeptVersion,
                     decide: Decide) -> Tuple[bool, bool]:
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None or entry.report_id != report_id:
                return False, False
            replace, follow_up = decide(entry.kept, candidate, entry.followed_up)
            if replace:
                self._entries[fingerprint] = dataclasses.replace(
                    entry, kept_duration_ms=candidate.duration_ms, kept_mode=candidate.mode,
                    kept_coverage=candidate.coverage, followed_up=entry.followed_up or follow_up)
            return replace, follow_up and replace

    def get(self, fingerprint: str) -> Optional[DedupEntry]:
        with self._lock:
            return self._entries.get(fingerprint)

    def entries(self) -> List[DedupEntry]:
        with self._lock:
            return list(self._entries.values())

    def add_route_stats(self, deltas: Sequence[RouteStatsDelta], now: float) -> None:
        with self._lock:
            for d in deltas:
                row = self._routes.get(d.fingerprint)
                if row is None:
                    row = self._routes[d.fingerprint] = [d.service_name, d.method, d.route, 0, 0, 0.0, now, now, {}]
                row[3] += d.count
                row[4] += d.slow
                row[5] = max(row[5], d.max_ms)
                row[7] = max(row[7], now)
                buckets: Dict[str, int] = row[8]
                for key, count in d.buckets:
                    buckets[key] = buckets.get(key, 0) + count

    def route_stats(self) -> List[RouteStatsEntry]:
        with self._lock:
            rows = [(fingerprint, list(row), dict(row[8])) for fingerprint, row in self._routes.items()]
        return [RouteStatsEntry(fingerprint, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                                tuple(sorted((bucket_bound(k), c) for k, c in buckets.items())))
                for fingerprint, row, buckets in rows]
