"""``PerfmonSpanProcessor``: the OTel SpanProcessor. Its hooks run on the request thread.

``on_start`` / ``on_end`` are called by the SDK for every span, on the request thread or the
event loop; they decide eligibility (local-root SERVER spans and ``@profile`` spans, URL
filters, the profiling policy), keep the open-span table (:mod:`otel_perfmon.tracking`),
start and stop pyinstrument sessions, and for a slow span capture the request data (redacted)
and queue it. Nothing here does I/O, renders, or raises into the app. Everything else runs
on otel-perfmon's own threads and lives in its own module, in the order data flows:
the stack sampler (:mod:`otel_perfmon.profiling.sampler`), the watchdog
(:mod:`otel_perfmon.slow`), the worker (:mod:`otel_perfmon.pipeline`) and one thread per
exporter (:mod:`otel_perfmon.dispatch`).

The fast path, measured (docs/performance.md, "The request path"): a span that is neither
profiled nor slow costs one :class:`OpenSpan`, one dict insert and pop, and no clock read,
lock or ContextVar; the policy is consulted only for spans below its span-id bound or while it
asks for every span. The bench smoke test pins that ``should_profile`` is not called otherwise.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
from typing import Any, Dict, List, Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_perfmon import metrics, tracking
from otel_perfmon.background import Background
from otel_perfmon.config import PerfmonConfig, compile_url_patterns
from otel_perfmon.dedup import DedupStore
from otel_perfmon.policy import build_policy, estimated_profiling_cost
from otel_perfmon.profiling import SpanProfile, threads
from otel_perfmon.report.capture import UrlFilter, capture_slow_span, span_fingerprint
from otel_perfmon.report.runtime import install_gc_hook
from otel_perfmon.route_stats import BOUNDS_SECONDS, SLOW_OFFSET
from otel_perfmon.stats import Stats, log_once
from otel_perfmon.tracking import FORCED_THRESHOLD, MAX_CHILD_SPANS, OpenSpan, force_threshold, target_for_context

_logger = logging.getLogger(__name__)

__all__ = ["FORCED_THRESHOLD", "PerfmonSpanProcessor", "force_threshold", "span_fingerprint"]

_SERVER = SpanKind.SERVER
_CONSUMER = SpanKind.CONSUMER
_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
_get_ident = threading.get_ident
_bucket = bisect.bisect_left


class PerfmonSpanProcessor(SpanProcessor):
    """Profiles eligible spans and reports the slow ones. Add it with
    ``tracer_provider.add_span_processor(...)``, or let ``configure_perfmon`` do it.

    ``config`` must be validated (``resolve_config``); ``exporters`` are built exporter
    instances; ``store`` defaults to the one ``config.dedup_store`` names. Raises
    ConfigurationError for an unknown store or policy name. Hooks never raise; errors are
    logged once and counted in ``stats``.
    """

    def __init__(self, config: PerfmonConfig, exporters: Optional[List[Any]] = None,
                 store: Optional[DedupStore] = None) -> None:
        self.config = config
        self.stats = Stats()
        metrics.register(self.stats)  # perfmon.* instruments on the global MeterProvider
        self._active = config.enabled  # False when disabled or shut down: the hooks return at once
        self._threshold = config.threshold_seconds
        task_threshold = config.task_threshold_seconds
        self._task_threshold = task_threshold if task_threshold is not None else config.threshold_seconds
        self._policy = policy = build_policy(config)
        self._should_profile = policy.should_profile  # bound once: called per span
        self._on_span_end = policy.on_span_end
        self._consult_below = policy.explore_span_id_bound
        self._span_end_min = policy.span_end_min_seconds  # shorter unprofiled spans teach the policy nothing
        self._count_started = self.stats.started_counter().__next__
        self._url_filter = UrlFilter(compile_url_patterns("include_urls", config.include_urls),
                                     compile_url_patterns("exclude_urls", config.exclude_urls))
        self._capture = frozenset(h.lower() for h in config.capture_headers)
        self._redact = frozenset(h.lower() for h in config.redact_headers)
        self._tracked: Dict[int, OpenSpan] = {}
        # trace id -> its outermost tracked span, while any tracked span of the trace is open
        # (counted in its ``tracked_open``)
        self._roots: Dict[int, OpenSpan] = {}
        self.background = bg = Background(config, self.stats, policy, self._tracked, exporters or [], store,
                                          self._capture, self._redact)
        self._submit = bg.submit
        self._watchdog = bg.watchdog
        self._route_rows = bg.route_stats.rows
        self._new_route_row = bg.route_stats.new_row
        # the parts other modules and tests reach through the processor
        self.report_dir, self.store, self.report_store = bg.report_dir, bg.store, bg.report_store
        self.dispatcher, self.slow, self.pipeline = bg.dispatcher, bg.slow, bg.pipeline
        self.route_stats = bg.route_stats
        self._shutdown = False
        threads.add_span_tracker(self)
        install_gc_hook()  # GC pauses for the reports' runtime block (report/runtime.py)

    # ------------------------------------------------------------------ request path
    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        """SDK hook, request thread / event loop: track an eligible span (a few µs), maybe
        start its profiler. Never raises (errors are logged once and counted)."""
        if not self._active:
            return
        try:
            kind = span.kind
            if kind is _SERVER or kind is _CONSUMER:  # a request, or a task (Celery's run/<task>)
                parent = span.parent
                if parent is not None and parent.is_valid and not parent.is_remote:
                    return
                if kind is _SERVER and self._url_filter.active and \
                        not self._url_filter.allows(span.attributes or {}, span.name):
                    return  # URL filters are for requests; tasks are not filtered by them
                threshold = self._threshold if kind is _SERVER else self._task_threshold
            elif tracking.forced_in_use:  # an @profile span: any kind, any parent
                forced = FORCED_THRESHOLD.get()
                if forced is None:
                    return
                threshold = forced if forced > 0 else self._threshold
            else:
                return
            self._count_started()
            loop = _get_running_loop()
            open_span = OpenSpan(span, threshold, _get_ident(), _current_task(loop) if loop is not None else None)
            context = span.context
            span_id = context.span_id
            self._tracked[span_id] = open_span
            self._roots.setdefault(context.trace_id, open_span).tracked_open += 1
            if span_id < self._consult_below or self._policy.wants_all_spans:
                try:  # a failing policy costs the span its profiler, not its watchdog or report
                    if self._should_profile(span):
                        open_span.profile = self._start_profile(span)
                except Exception:
                    self._hook_error("should_profile")
            if not self.background.running:
                self.background.ensure_started()
            elif threshold < self._threshold:  # the watchdog may sleep past this deadline
                self._watchdog.wake()
        except Exception:
            self._hook_error("on_start")

    def _start_profile(self, span: Span) -> Optional[SpanProfile]:
        profile = SpanProfile(self.config.profile_interval_seconds)
        try:
            profile.start(span.name)
        except Exception:
            # e.g. an @profile coroutine inside an already-profiled task: pyinstrument allows
            # one async-context profiler per task. The span is still sampled and reported.
            log_once(_logger, "profile-start", "could not start a profiler for %s", span.name)
            return None
        self.stats.incr("spans_profiled")
        return profile

    def on_end(self, span: ReadableSpan) -> None:
        """SDK hook, request thread / event loop: stop the profiler; for a slow span capture the
        request data (redacted) and enqueue it (~70 µs). Never raises, never blocks on I/O."""
        try:
            context = span.context
            root = self._roots.get(context.trace_id)
            if root is None:
                return  # a span of a trace with no tracked span open here: this one lookup
            open_span = self._tracked.pop(context.span_id, None)
            if open_span is None:  # a child span, kept by reference for the root's report
                if not root.ended:
                    children = root.children
                    if children is None:
                        root.children = [span]
                    elif len(children) < MAX_CHILD_SPANS:
                        children.append(span)
                    else:
                        root.children_dropped += 1
                return
            root.tracked_open -= 1
            if not root.tracked_open:
                del self._roots[context.trace_id]
            open_span.ended = True
            profile = open_span.profile
            if profile is not None and profile.thread_id != _get_ident():
                log_once(_logger, "profile-thread", "span %s ended on another thread than it started; "
                         "its profile is discarded", span.name, exc_info=False)
                profile = None
            elif profile is not None:
                profile.stop()
            duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
            slow = duration > open_span.threshold_seconds
            row = self._route_rows.get(span.name) or self._new_route_row(span)  # route_stats.py
            row[_bucket(BOUNDS_SECONDS, duration) + SLOW_OFFSET * slow] += 1
            if duration > row[-1]:
                row[-1] = duration
            if profile is not None:
                self._on_span_end(span.name, duration, True, slow)
                self.stats.incr("profiling_seconds_estimate", estimated_profiling_cost(duration))
            elif duration >= self._span_end_min:
                self._on_span_end(span.name, duration, False, slow)
            if not slow:
                return
            self.stats.incr("slow_spans")
            self._submit(capture_slow_span(open_span, span, profile, self.config, self._capture, self._redact))
        except Exception:
            self._hook_error("on_end")

    # ------------------------------------------------------------------ plumbing
    def target_for_context(self) -> Optional[OpenSpan]:
        """The open span the calling context runs under (``run_sync`` wrapper, event loop)."""
        return target_for_context(self._tracked)

    def stats_snapshot(self) -> Dict[str, Any]:
        """``stats()``: see :meth:`otel_perfmon.stats.Stats.report`."""
        return self.stats.report()

    def _hook_error(self, hook: str) -> None:
        self.stats.error(f"hook:{hook}", "error in %s (the request is unaffected)", hook)

    # ------------------------------------------------------------------ lifecycle
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until queued reports are written and exported; ``timeout_millis`` in ms."""
        return self.background.force_flush(timeout_millis / 1000.0)

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Stop the threads, export what is queued within ``timeout_seconds``, close the store.

        Also called (without arguments) by the TracerProvider at its shutdown. Idempotent.
        """
        if self._shutdown:
            return
        self._shutdown = True
        self._active = False
        threads.remove_span_tracker(self)
        self.background.shutdown(timeout_seconds)
