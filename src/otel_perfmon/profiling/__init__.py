"""Profiling: one pyinstrument session per span, plus worker-thread sessions of sync routes."""

from otel_perfmon.profiling.span_profile import SpanProfile

__all__ = ["SpanProfile"]
