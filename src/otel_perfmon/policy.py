"""Profiling policies: which eligible spans get a pyinstrument session.

A policy is pluggable like an OTel ``Sampler``: any object with

* ``should_profile(span) -> bool``: called on the request thread / event loop at span
  start with the SDK span (``span.name`` is the route key, e.g. ``"GET /items/<int:id>"``;
  ``span.attributes`` holds what the instrumentor set at start); must be cheap (no I/O, no
  blocking locks; every attribute read shows on a fast route) and must not raise;
* ``on_span_end(key: str, duration_seconds: float, profiled: bool, slow: bool) -> None``
  (``key`` is the span's name):
  called on the request thread at span end, same rules, for every profiled span and every
  span lasting at least the policy's optional ``span_end_min_seconds`` (default 0: all);
* optionally ``on_report(key: str, window_seconds: float) -> None``: called on a background
  thread when a slow span of ``key`` maps to a report (new or deduplicated);
* optionally, to spare the per-span call on the request path, ``explore_span_id_bound``
  (int) and ``wants_all_spans`` (bool, read per span): the processor then consults
  ``should_profile`` only for spans whose span id is below the bound, or while
  ``wants_all_spans`` is true. Span ids are uniform random 64-bit numbers, so
  ``rate × 2**64`` as the bound picks that fraction of spans, the way OTel's
  ``TraceIdRatioBased`` sampler compares trace ids with a bound; the decision is a property
  of the span, so ``should_profile`` can make the same comparison again;
* ``description`` (str), shown in logs.

Built in:

* ``"adaptive"`` (default): spends a bounded overhead budget on the spans that can become
  slow. See :class:`AdaptiveProfilePolicy`.
* ``"always"``: every eligible span. pyinstrument costs ~0.18 µs per Python function call
  plus 20–40 µs per start/stop (measured on this project's bench machine), i.e. 2.6–3.8×
  on fast and call-heavy routes.

Slow spans that were not profiled still get a call tree from the after-threshold stack
sampler (:mod:`otel_perfmon.profiling.sampler`).
"""

from __future__ import annotations

import time
from typing import Any, Dict

#: Fixed cost of one pyinstrument start + stop, seconds (bench: 20–40 µs).
PROFILE_FIXED_COST_SECONDS = 40e-6
#: Share of a profiled span's wall time that is profiler overhead, upper bound: call-heavy
#: code runs 2.6–3.8× slower under pyinstrument, so up to ~74 % of a profiled span is overhead.
PROFILE_COST_RATIO = 0.75


#: Span ids are uniform in [0, 2**64): ``rate * SPAN_ID_LIMIT`` as a bound selects ``rate`` of them.
SPAN_ID_LIMIT = 1 << 64


def span_id_bound(rate: float) -> int:
    """The span-id bound below which a fraction ``rate`` (0..1) of spans falls."""
    return int(max(0.0, min(1.0, rate)) * SPAN_ID_LIMIT)


def estimated_profiling_cost(duration_seconds: float) -> float:
    """Upper-bound estimate (seconds) of what profiling a span of this duration cost."""
    return PROFILE_FIXED_COST_SECONDS + PROFILE_COST_RATIO * duration_seconds


class AlwaysProfilePolicy:
    """Profile every eligible span. Called on the request thread; never raises."""

    description = "always"
    span_end_min_seconds = float("inf")  # on_span_end does nothing: called for profiled spans only

    def should_profile(self, span: Any) -> bool:
        return True

    def on_span_end(self, key: str, duration_seconds: float, profiled: bool, slow: bool) -> None:
        return None


class AdaptiveProfilePolicy:
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

    def __init__(self, threshold_seconds: float, budget: float = 0.005, explore_rate: float = 0.001,
                 candidate_ratio: float = 0.5, candidate_memory_seconds: float = 600.0) -> None:
        self.threshold_seconds = threshold_seconds
        self.budget = budget
        self.explore_rate = explore_rate
        self.candidate_seconds = candidate_ratio * threshold_seconds
        self.span_end_min_seconds = self.candidate_seconds  # shorter unprofiled spans teach nothing
        self.candidate_memory_seconds = candidate_memory_seconds
        self._capacity = max(budget * 60.0, PROFILE_FIXED_COST_SECONDS)
        self._tokens = 0.0  # the budget accrues from start-up: no burst of profiling at boot
        self._refilled_at = time.monotonic()
        self._candidate_until: Dict[str, float] = {}
        self._near_at: Dict[str, float] = {}
        self._reported_until: Dict[str, float] = {}
        self.explore_span_id_bound = span_id_bound(explore_rate)
        self.wants_all_spans = False  # True while some route is a candidate

    def should_profile(self, span: Any) -> bool:
        explored = span.context.span_id < self.explore_span_id_bound
        candidates = self._candidate_until
        if candidates:
            key, now = span.name, time.monotonic()
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
            key, now = span.name, time.monotonic()
        reported = self._reported_until.get(key)
        if reported is not None and now < reported:
            return False
        tokens = min(self._capacity, self._tokens + (now - self._refilled_at) * self.budget)
        self._tokens, self._refilled_at = tokens, now
        return tokens > 0

    def on_span_end(self, key: str, duration_seconds: float, profiled: bool, slow: bool) -> None:
        if duration_seconds >= self.candidate_seconds:
            now = time.monotonic()
            previous = self._near_at.get(key)
            if previous is not None and now - previous < self.candidate_memory_seconds:
                self._candidate_until[key] = now + self.candidate_memory_seconds
                self.wants_all_spans = True
            self._near_at[key] = now
        if profiled:
            self._tokens -= estimated_profiling_cost(duration_seconds)

    def on_report(self, key: str, window_seconds: float) -> None:
        if window_seconds > 0:
            self._reported_until[key] = time.monotonic() + window_seconds

    def is_candidate(self, key: str) -> bool:
        """True while ``key`` is a candidate route (for tests and diagnostics)."""
        until = self._candidate_until.get(key)
        return until is not None and time.monotonic() < until


_POLICIES = ("adaptive", "always")


def validate_policy(policy: Any) -> Any:
    """Return ``policy`` if it is a known name or a policy object; else ConfigurationError."""
    from otel_perfmon.errors import ConfigurationError

    if isinstance(policy, str):
        if policy.strip().lower() not in _POLICIES:
            raise ConfigurationError(
                f"profile_policy must be one of {list(_POLICIES)} or a policy object, got {policy!r}")
        return policy.strip().lower()
    if callable(getattr(policy, "should_profile", None)) and callable(getattr(policy, "on_span_end", None)):
        return policy
    raise ConfigurationError(
        f"profile_policy must be one of {list(_POLICIES)} or an object with should_profile() "
        f"and on_span_end(), got {policy!r}")


def make_policy(config: Any) -> Any:
    """The policy object for a validated config (a name is instantiated with its fields)."""
    policy = config.profile_policy
    if policy == "always":
        return AlwaysProfilePolicy()
    if policy == "adaptive":
        return AdaptiveProfilePolicy(config.threshold_seconds, budget=config.profile_budget,
                                     explore_rate=config.profile_explore_rate,
                                     candidate_ratio=config.profile_candidate_ratio)
    return policy
