"""Profiling policies: which eligible spans get a pyinstrument session (see :mod:`.base`).

Built in: ``"adaptive"`` (default, :class:`AdaptiveProfilePolicy`: a bounded overhead budget
spent on the routes that can become slow) and ``"always"`` (:class:`AlwaysProfilePolicy`).
Third-party policies register under the entry-point group ``otel_perfmon.profile_policies``.
Slow spans that were not profiled still get a call tree from the stack sampler
(:mod:`otel_perfmon.profiling.sampler`).
"""

from __future__ import annotations

from typing import Any

from otel_perfmon import _plugins
from otel_perfmon.policy.adaptive import AdaptiveProfilePolicy
from otel_perfmon.policy.always import AlwaysProfilePolicy
from otel_perfmon.policy.base import SPAN_ID_LIMIT, ProfilePolicy, as_policy, estimated_profiling_cost, span_id_bound


def build_policy(config: Any) -> ProfilePolicy:
    """The policy of a validated config: a name is built by its class's ``from_config``,
    an object is used as it is. Configure time; raises ConfigurationError."""
    spec = config.profile_policy
    if isinstance(spec, str):
        return as_policy(_plugins.load(_plugins.PROFILE_POLICIES, spec).from_config(config))
    return as_policy(spec)


__all__ = ["AdaptiveProfilePolicy", "AlwaysProfilePolicy", "ProfilePolicy", "SPAN_ID_LIMIT", "as_policy",
           "build_policy", "estimated_profiling_cost", "span_id_bound"]
