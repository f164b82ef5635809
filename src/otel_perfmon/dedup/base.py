"""The dedup store interface."""

from __future__ import annotations

import abc
import bisect
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple


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


def _bucket_bounds_ms() -> Tuple[float, ...]:
    steps = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)  # ten per decade (R10), ~25 % apart
    bounds = [round(step * 10 ** power, 6) for power in range(5) for step in steps]
    return tuple(b for b in bounds if b < 60_000.0) + (60_000.0,)


#: Upper bounds (ms, inclusive) of a route histogram's buckets: ten per decade from 1 ms to
#: 60 s (1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8, 10, ...), then one overflow bucket above.
ROUTE_BUCKET_BOUNDS_MS: Tuple[float, ...] = _bucket_bounds_ms()
#: The upper bound of the last bucket of a route's histogram (durations above the largest bound).
OVERFLOW_BUCKET = "+Inf"


def bucket_key(bound_ms: float) -> str:
    """A bucket's key in the stores: its upper bound in ms as short decimal text (``"1.25"``,
    ``"60000"``), or :data:`OVERFLOW_BUCKET`."""
    return OVERFLOW_BUCKET if math.isinf(bound_ms) else format(bound_ms, "g")


@dataclass(frozen=True)
class RouteStatsDelta:
    """What one process counted for one route since its previous flush (see
    :mod:`otel_perfmon.route_stats`): requests, slow ones, the largest duration (ms, 0 when
    it did not grow) and the histogram's non-zero buckets as ``(upper bound, count)``, the
    bound a decimal number of ms as text (``"1.25"``) or :data:`OVERFLOW_BUCKET`."""

    fingerprint: str
    service_name: str
    method: str
    route: str
    count: int
    slow: int
    max_ms: float
    buckets: Tuple[Tuple[str, int], ...]


@dataclass(frozen=True)
class RouteStatsEntry:
    """A route's numbers as the store holds them: every process's deltas added up.
    ``buckets`` are ``(upper bound in ms, count)`` sorted by bound, the last one ``inf``
    for durations above the largest bound. Times are seconds since the epoch."""

    fingerprint: str
    service_name: str
    method: str
    route: str
    count: int
    slow: int
    max_ms: float
    first_seen: float
    last_seen: float
    buckets: Tuple[Tuple[float, int], ...]

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0 < q <= 1) in ms, interpolated linearly within its bucket
        (from the previous bucket's bound to its own, capped at :attr:`max_ms`); 0 without
        requests. Exact to within the width of the bucket the true value falls in."""
        return percentile_ms(self.buckets, q, self.max_ms)

    @property
    def p50_ms(self) -> float:
        return self.percentile(0.50)

    @property
    def p95_ms(self) -> float:
        return self.percentile(0.95)

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99)


_BOUNDS_SET = frozenset(ROUTE_BUCKET_BOUNDS_MS)


def bucket_bound(text: str) -> float:
    """The upper bound (ms) a store's bucket key names: a number, or ``inf`` for
    :data:`OVERFLOW_BUCKET`. Raises ValueError for anything else."""
    value = float(text)
    if math.isnan(value):
        raise ValueError(f"not a bucket bound: {text!r}")
    return value


def percentile_ms(buckets: Sequence[Tuple[float, int]], q: float, max_ms: float) -> float:
    """See :meth:`RouteStatsEntry.percentile`; ``buckets`` sorted by bound."""
    total = sum(count for _, count in buckets if count > 0)
    if total <= 0:
        return 0.0
    rank = min(max(q, 0.0), 1.0) * total
    seen = 0
    previous = 0.0
    for bound, count in buckets:
        if count <= 0:
            continue
        if seen + count >= rank:
            if bound in _BOUNDS_SET or math.isinf(bound):  # starts at the scheme's bound below (stored sparse)
                index = bisect.bisect_left(ROUTE_BUCKET_BOUNDS_MS, bound)
                lower = ROUTE_BUCKET_BOUNDS_MS[index - 1] if index > 0 else 0.0
            else:  # a bound of another scheme: from the previous bucket's
                lower = previous
            upper = bound if math.isfinite(bound) else max_ms
            if max_ms > 0:
                upper = min(upper, max_ms)
            lower = min(lower, upper)
            return lower + (upper - lower) * max(rank - seen, 0.0) / count
        seen += count
        previous = bound
    return max_ms


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

    def add_route_stats(self, deltas: Sequence[RouteStatsDelta], now: float) -> None:
        """Add one process's per-route counts (all of them at once, atomically where the
        store can) to what the store holds; ``now`` is the flush time. Called every few
        seconds from the watchdog thread. Default: nothing (a store without route stats)."""
        return None

    def route_stats(self) -> List[RouteStatsEntry]:
        """Every route's added-up numbers (the viewer's ``/routes``). Default: none."""
        return []

    def close(self) -> None:
        return None
