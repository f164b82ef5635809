"""The profiling-policy interface: which eligible spans get a pyinstrument session.

Pluggable like an OTel ``Sampler``. :class:`ProfilePolicy` gives every optional member a
default, so a policy overrides only what it needs:

* ``should_profile(span) -> bool``: called on the request thread / event loop at span start
  with the SDK span (``span.name`` is the route key, e.g. ``"GET /items/<int:id>"``;
  ``span.attributes`` holds what the instrumentor set at start). Must be cheap (no I/O, no
  blocking locks: every attribute read shows on a fast route) and must not raise.
* ``on_span_end(key, duration_seconds, profiled, slow)``: request thread at span end, same
  rules; called for every profiled span and every span lasting at least
  ``span_end_min_seconds`` (``key`` is the span's name).
* ``on_report(key, window_seconds)``: a background thread, when a slow span of ``key`` maps
  to a report (new or deduplicated).
* ``explore_span_id_bound`` (int) and ``wants_all_spans`` (bool, read per span): the
  processor consults ``should_profile`` only for spans whose span id is below the bound, or
  while ``wants_all_spans`` is true. Span ids are uniform random 64-bit numbers, so
  ``rate × 2**64`` picks that fraction of spans, the way OTel's ``TraceIdRatioBased``
  sampler compares trace ids with a bound. The defaults consult the policy for every span.
* ``description`` (str), shown in logs.

Objects that do not subclass :class:`ProfilePolicy` but have ``should_profile`` and
``on_span_end`` are accepted too: :func:`as_policy` reads their optional members once.
"""

from __future__ import annotations

from typing import Any

from otel_perfmon.errors import ConfigurationError

#: Span ids are uniform in [0, 2**64): ``rate * SPAN_ID_LIMIT`` as a bound selects ``rate`` of them.
SPAN_ID_LIMIT = 1 << 64
#: Fixed cost of one pyinstrument start + stop, seconds (this project's bench: 20–40 µs).
PROFILE_FIXED_COST_SECONDS = 40e-6
#: Share of a profiled span's wall time that is profiler overhead, upper bound: call-heavy
#: code runs 2.6–3.8× slower under pyinstrument, so up to ~74 % of a profiled span is overhead.
PROFILE_COST_RATIO = 0.75


def span_id_bound(rate: float) -> int:
    """The span-id bound below which a fraction ``rate`` (0..1) of spans falls."""
    return int(max(0.0, min(1.0, rate)) * SPAN_ID_LIMIT)


def estimated_profiling_cost(duration_seconds: float) -> float:
    """Upper-bound estimate (seconds) of what profiling a span of ``duration_seconds`` cost."""
    return PROFILE_FIXED_COST_SECONDS + PROFILE_COST_RATIO * duration_seconds


class ProfilePolicy:
    """Base class with a default for every member: profiles nothing, learns nothing."""

    description = "policy"
    #: unprofiled spans shorter than this (seconds) are not shown to ``on_span_end``
    span_end_min_seconds: float = 0.0
    explore_span_id_bound: int = SPAN_ID_LIMIT
    wants_all_spans: bool = True

    @classmethod
    def from_config(cls, config: Any) -> ProfilePolicy:
        """Build the policy named in a validated ``PerfmonConfig`` (default: no arguments)."""
        return cls()

    def should_profile(self, span: Any) -> bool:
        """True to give ``span`` a pyinstrument session. Request thread; never raises."""
        return False

    def on_span_end(self, key: str, duration_seconds: float, profiled: bool, slow: bool) -> None:
        """Feedback at span end (request thread). Default: nothing."""
        return None

    def on_report(self, key: str, window_seconds: float) -> None:
        """A slow span of ``key`` maps to a report for ``window_seconds`` (background thread)."""
        return None


class _ObjectPolicy(ProfilePolicy):
    """A duck-typed policy object seen through the base interface (members bound once)."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.should_profile = policy.should_profile  # type: ignore[method-assign]
        self.on_span_end = policy.on_span_end  # type: ignore[method-assign]
        on_report = getattr(policy, "on_report", None)
        if callable(on_report):
            self.on_report = on_report  # type: ignore[method-assign]
        self.span_end_min_seconds = float(getattr(policy, "span_end_min_seconds", 0.0))
        self.description = str(getattr(policy, "description", type(policy).__name__))
        if hasattr(policy, "wants_all_spans"):
            self.explore_span_id_bound = int(getattr(policy, "explore_span_id_bound", SPAN_ID_LIMIT))

    @property
    def wants_all_spans(self) -> bool:  # read per span, only for spans above the bound
        return bool(getattr(self.policy, "wants_all_spans", True))

    @wants_all_spans.setter
    def wants_all_spans(self, value: bool) -> None:
        self.policy.wants_all_spans = value


def as_policy(policy: Any) -> ProfilePolicy:
    """``policy`` as a :class:`ProfilePolicy`; raises ConfigurationError naming
    ``profile_policy`` when it lacks ``should_profile`` or ``on_span_end``."""
    if isinstance(policy, ProfilePolicy):
        return policy
    if callable(getattr(policy, "should_profile", None)) and callable(getattr(policy, "on_span_end", None)):
        return _ObjectPolicy(policy)
    raise ConfigurationError(f"profile_policy must be an object with should_profile() and on_span_end(), "
                             f"got {policy!r}")
