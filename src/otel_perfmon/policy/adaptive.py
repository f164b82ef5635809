"""``profile_policy="adaptive"`` (the default): profile the routes that can become slow,
within an overhead budget. Request-thread methods are lock-free and cheap; see the class."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict

from otel_perfmon.policy.base import PROFILE_FIXED_COST_SECONDS, ProfilePolicy, estimated_profiling_cost, span_id_bound


class AdaptiveProfilePolicy(ProfilePolicy):
    """Profile the routes that can become slow, within an overhead budget.

    * A route (span name) is a *candidate* for ``candidate_memory_seconds`` once two of its
      spans within that time took at least ``candidate_ratio`` × ``threshold_seconds`` (one
      outlier, a GC pause, is not enough); candidates are profiled.
    * Other routes are profiled at ``explore_rate`` (a probability per span, drawn from the
      span id like OTel's ``TraceIdRatioBased`` sampler), so a route's first slow request can
      still get a full profile.
    * A route whose report exists (new or deduplicated, told by ``on_report``) is not
      profiled again within the dedup window: no new report would come of it.
    * All profiling draws on a token bucket refilled at ``budget`` seconds of estimated
      profiling cost per wall-clock second (``estimated_profiling_cost``), starting empty and
      holding at most a minute's worth; when it is empty, nothing is profiled.

    Bookkeeping is lock-free (GIL-atomic dict and float updates, approximate under races).
    With no candidate route, the processor consults it for ``explore_rate`` of the spans only
    (``explore_span_id_bound``, ``wants_all_spans``).
    """

    description = "adaptive"

    @classmethod
    def from_config(cls, config: Any) -> AdaptiveProfilePolicy:
        """Built from ``threshold_seconds``, ``profile_budget``, ``profile_explore_rate`` and
        ``profile_candidate_ratio`` of a validated config."""
        return cls(config.threshold_seconds, budget=config.profile_budget,
                   explore_rate=config.profile_explore_rate, candidate_ratio=config.profile_candidate_ratio)

    def __init__(self, threshold_seconds: float, budget: float = 0.005, explore_rate: float = 0.001,
                 candidate_ratio: float = 0.5, candidate_memory_seconds: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # seconds, monotonic; a FakeClock in tests (otel_perfmon.testing)
        self.threshold_seconds = threshold_seconds
        self.budget = budget
        self.explore_rate = explore_rate
        self.candidate_seconds = candidate_ratio * threshold_seconds
        self.span_end_min_seconds = self.candidate_seconds  # shorter unprofiled spans teach nothing
        self.candidate_memory_seconds = candidate_memory_seconds
        self._capacity = max(budget * 60.0, PROFILE_FIXED_COST_SECONDS)
        self._tokens = 0.0  # the budget accrues from start-up: no burst of profiling at boot
        self._refilled_at = self._clock()
        self._candidate_until: Dict[str, float] = {}
        self._near_at: Dict[str, float] = {}
        self._reported_until: Dict[str, float] = {}
        self.explore_span_id_bound = span_id_bound(explore_rate)
        self.wants_all_spans = False  # True while some route is a candidate

    def should_profile(self, span: Any) -> bool:
        explored = span.context.span_id < self.explore_span_id_bound
        candidates = self._candidate_until
        if candidates:
            key, now = span.name, self._clock()
            until = candidates.get(key)
            if until is not None and now >= until:
                # expired: the dict empties again when all have (unless renewed meanwhile)
                if candidates.get(key) == until:
                    candidates.pop(key, None)
                    self.wants_all_spans = bool(candidates)
                until = None
            if until is None and not explored:
                return False
        elif not explored:
            return False
        else:
            key, now = span.name, self._clock()
        reported = self._reported_until.get(key)
        if reported is not None and now < reported:
            return False
        tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * self.budget)
        self._tokens, self._refilled_at = tokens, now
        return tokens > 0

    def on_span_end(self, key: str, duration_seconds: float, profiled: bool, slow: bool) -> None:
        if duration_seconds >= self.candidate_seconds:
            now = self._clock()
            previous = self._near_at.get(key)
            if previous is not None and now - previous < self.candidate_memory_seconds:
                self._candidate_until[key] = now + self.candidate_memory_seconds
                self.wants_all_spans = True
            self._near_at[key] = now
        if profiled:
            self._tokens -= estimated_profiling_cost(duration_seconds)

    def on_report(self, key: str, window_seconds: float) -> None:
        if window_seconds > 0:
            self._reported_until[key] = self._clock() + window_seconds

    def is_candidate(self, key: str) -> bool:
        """True while ``key`` is a candidate route (for tests and diagnostics)."""
        until = self._candidate_until.get(key)
        return until is not None and self._clock() < until
