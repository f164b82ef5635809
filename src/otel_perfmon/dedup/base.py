"""The dedup store interface."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class Claim:
    """Answer of :meth:`DedupStore.claim`: the report id that holds this fingerprint's
    profile, and whether the caller owns it (must create the report) or it already exists."""

    report_id: str
    is_new: bool


@dataclass(frozen=True)
class DedupEntry:
    """What the store knows of one fingerprint. Times are seconds since the epoch."""

    fingerprint: str
    report_id: str
    created_at: float
    last_seen: float
    count: int
    worst_duration_ms: float
    last_trace_id: Optional[str]


class DedupStore(abc.ABC):
    """Abstract store. Methods may block on I/O: call them from background threads only."""

    @abc.abstractmethod
    def claim(self, fingerprint: str, candidate_id: str, now: float, window_seconds: float) -> Claim:
        """Atomically: the report id of ``fingerprint`` created within ``window_seconds`` of
        ``now`` (``is_new=False``), else record ``candidate_id`` as its report (``is_new=True``).
        A window of 0 disables dedup: every claim is new."""
        ...

    @abc.abstractmethod
    def record_occurrence(self, fingerprint: str, report_id: str, duration_ms: float,
                          trace_id: str, now: float) -> None:
        """Count one slow span for ``fingerprint``: count, last seen, worst duration, last trace."""
        ...

    @abc.abstractmethod
    def release(self, fingerprint: str, report_id: str) -> None:
        """Forget a claim whose report could not be written, so the next slow span retries."""
        ...

    @abc.abstractmethod
    def get(self, fingerprint: str) -> Optional[DedupEntry]:
        ...

    @abc.abstractmethod
    def entries(self) -> List[DedupEntry]:
        ...

    def close(self) -> None:
        return None
