"""In-process dedup store (``dedup_store="memory"``): a dict under a lock."""

from __future__ import annotations

import dataclasses
import threading
from typing import Dict, List, Optional, Tuple

from otel_perfmon.dedup.base import Claim, Decide, DedupEntry, DedupStore, KeptVersion


class MemoryDedupStore(DedupStore):
    """Fast, per process, forgotten on restart. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[str, DedupEntry] = {}

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
