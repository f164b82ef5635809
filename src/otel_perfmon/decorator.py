"""``@profile``: profile one function under its own span, through the same report pipeline."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar, overload

from opentelemetry import trace

from otel_perfmon.errors import ConfigurationError
from otel_perfmon.tracking import FORCED_THRESHOLD, force_threshold

F = TypeVar("F", bound=Callable[..., Any])


def _tracer() -> trace.Tracer:
    from otel_perfmon.api import current

    handle = current()
    provider = handle.tracer_provider if handle is not None and handle.tracer_provider is not None else None
    return trace.get_tracer("otel_perfmon", tracer_provider=provider)


def _start_span(name: str, func: Callable[..., Any], threshold: float) -> Any:
    token = force_threshold(threshold)
    try:
        return _tracer().start_span(name, attributes={"code.function": func.__qualname__,
                                                      "code.namespace": func.__module__})
    finally:
        FORCED_THRESHOLD.reset(token)


@overload
def profile(func: F) -> F: ...
@overload
def profile(*, threshold_seconds: Optional[float] = None, name: Optional[str] = None) -> Callable[[F], F]: ...


def profile(func: Any = None, *, threshold_seconds: Optional[float] = None, name: Optional[str] = None) -> Any:
    """Profile ``func`` (sync or ``async def``) under its own span named ``name`` (default:
    the function's qualified name); a call slower than ``threshold_seconds`` (default: the
    configured threshold) gets a report like a slow request.

    Usable as ``@profile`` or ``@profile(threshold_seconds=0.2)``. Keeps ``__name__`` and the
    signature; return values and exceptions pass through unchanged (the exception is also
    recorded on the span). Without ``configure_perfmon`` it only creates the span.
    Raises :class:`ConfigurationError` at decoration time for a non-positive threshold.
    """
    if threshold_seconds is not None and (isinstance(threshold_seconds, bool)
                                          or not isinstance(threshold_seconds, (int, float))
                                          or threshold_seconds <= 0):
        raise ConfigurationError(f"threshold_seconds must be a number > 0, got {threshold_seconds!r}")
    threshold = float(threshold_seconds) if threshold_seconds is not None else -1.0

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                span = _start_span(span_name, fn, threshold)
                with trace.use_span(span, end_on_exit=True):
                    return await fn(*args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            span = _start_span(span_name, fn, threshold)
            with trace.use_span(span, end_on_exit=True):
                return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]

    if func is not None:
        if not callable(func):
            raise ConfigurationError(f"profile: expected a function, got {func!r}")
        return decorate(func)
    return decorate
