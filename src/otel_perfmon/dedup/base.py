"""The dedup store interface."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple


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
    #: what the report file holds now (see :class:`KeptVersion`); 0 / "" before it is written
    kept_duration_ms: float = 0.0
    kept_mode: str = ""
    kept_coverage: float = 0.0
    #: True once a follow-up notification was sent for this window
    followed_up: bool = False

    @property
    def kept(self) -> Optional[KeptVersion]:
        return KeptVersion(self.kept_duration_ms, self.kept_mode, self.kept_coverage) if self.kept_mode else None


@dataclass(frozen=True)
class KeptVersion:
    """What a fingerprint's report file holds: its span's duration (ms), profile mode and coverage (0..1)."""

    duration_ms: float
    mode: str
    coverage: float


#: ``decide(kept, candidate, followed_up) -> (replace, follow_up)``: the pipeline's rule
#: (otel_perfmon.pipeline.replacement), evaluated by the store inside its transaction.
Decide = Callable[[Optional[KeptVersion], KeptVersion, bool], Tuple[bool, bool]]


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

    @classmethod
    def from_spec(cls, spec: str, report_dir: str) -> DedupStore:
        """Build the store named by the ``dedup_store`` value ``spec`` (a name or a URL);
        ``report_dir`` is the report directory (a path). Configure time. Default: ``cls()``."""
        return cls()

    def set_kept(self, fingerprint: str, report_id: str, version: KeptVersion) -> None:
        """Record what ``report_id``'s files hold now (after the worker wrote them).
        Default: nothing (such a store keeps the first report for the whole window)."""
        return None

    def replace_kept(self, fingerprint: str, report_id: str, candidate: KeptVersion,
                     decide: Decide) -> Tuple[bool, bool]:
        """Atomically: ``decide(kept, candidate, followed_up)``; when it says replace, record
        ``candidate`` as kept (and the follow-up as sent when it says so). Returns
        ``(replace, follow_up)``. Default: never replace."""
        return False, False

    def close(self) -> None:
        return None
