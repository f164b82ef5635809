"""``PerfmonSpanProcessor``: the OTel SpanProcessor that profiles slow server spans.

Request path (``on_start`` / ``on_end``, called by the SDK on the request thread or event
loop): decide eligibility (local-root SERVER span, URL filters, profiling policy), record the
span in the open-span table the watchdog scans, start or stop a pyinstrument session, and for
a slow span capture the request data and enqueue it. Nothing there does I/O, renders, or
raises into the app.

Background: the watchdog sets ``perfmon.slow`` / ``perfmon.report.id`` / ``perfmon.report.url``
on spans that pass their threshold while still open (after asking the dedup store which
report they belong to); the worker builds, deduplicates, renders and writes reports, then
hands them to the exporters.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import threading
import time
from contextvars import ContextVar
from typing import Any, Dict, List, Optional

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, get_current_span

from otel_perfmon import attributes as attr
from otel_perfmon import metrics
from otel_perfmon.config import PerfmonConfig, compile_url_patterns
from otel_perfmon.dedup import Claim, DedupStore, fingerprint, open_store
from otel_perfmon.dispatch import BackgroundQueue, Dispatcher
from otel_perfmon.policy import SPAN_ID_LIMIT, estimated_profiling_cost, make_policy
from otel_perfmon.profiling import SpanProfile
from otel_perfmon.profiling import threads
from otel_perfmon.profiling.sampler import SpanTarget, StackSampler
from otel_perfmon.report.capture import (UrlFilter, find_request_headers, headers_from_attributes,
                                         headers_in_frames, http_info, select_headers)
from otel_perfmon.stats import Stats, log_once

_logger = logging.getLogger(__name__)

_SERVER = SpanKind.SERVER
_get_running_loop = asyncio._get_running_loop
_current_task = asyncio.current_task
get_ident = threading.get_ident

#: Set by ``@profile`` around the start of its span (through :func:`force_threshold`): its
#: threshold in seconds (<= 0: the configured one). Spans started while it is set are
#: profiled whatever their kind.
FORCED_THRESHOLD: ContextVar[Optional[float]] = ContextVar("otel_perfmon_forced_threshold", default=None)
#: True once ``@profile`` has started a span in this process: until then ``on_start`` skips
#: the ContextVar read for spans that are not server spans.
_forced_in_use = False


def force_threshold(threshold_seconds: float) -> Any:
    """Mark spans started from now on in this context as ``@profile`` spans with this threshold
    (seconds; <= 0: the configured one). Returns the token for ``FORCED_THRESHOLD.reset``."""
    global _forced_in_use
    _forced_in_use = True
    return FORCED_THRESHOLD.set(threshold_seconds)


def new_report_id(now: Optional[float] = None) -> str:
    """A sortable, file-name-safe id: ``20261122-095000-1a2b3c4d``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


# An open eligible span is a plain list in ``PerfmonSpanProcessor._tracked`` (span id -> entry):
# the cheapest mutable record to build on the request path, where an object with a __dict__
# and an __init__ cost ~10 µs more per request in wall time (cold caches; docs/performance.md,
# "The request path"). Its slots, as on_start builds it:
# [span, threshold (s), thread id, asyncio task or None, SpanProfile or None, _Tracked or None,
#  ended (bool), anyio worker thread id or None]
_SPAN, _THRESHOLD, _THREAD, _TASK, _PROFILE, _STATE, _ENDED, _WORKER = range(8)


def _start_seconds(span: Any) -> Optional[float]:
    """The span's start as ``time.time()`` seconds (the SDK stamps ``time.time_ns()``), or None."""
    start_ns = span.start_time if span is not None else None
    return start_ns / 1e9 if start_ns else None


class _Tracked(SpanTarget):
    """State of one tracked span beyond its entry, created only when needed: the span passed
    its deadline (watchdog), a sync route asks for its thread (``run_sync``), or it ended slow.
    Kept in the entry's ``_STATE`` slot while the span is open (``on_end`` clears the slot, so
    the two never outlive the span as a reference cycle); also where the span runs
    (SpanTarget). What the request thread writes (profile, ended, worker thread) stays in the
    entry and is read through properties. ``started`` is ``time.time()`` seconds."""

    fired = False
    claim: Optional[Claim] = None
    sampling = False
    notified = False  # a report of this span went to the exporters (in-flight or final)

    def __init__(self, entry: List[Any]) -> None:
        self.entry = entry
        span = entry[_SPAN]
        self.span_id = span.context.span_id
        self.threshold_seconds = entry[_THRESHOLD]
        self.started = _start_seconds(span) or time.time()
        self.thread_id = entry[_THREAD]
        task = entry[_TASK]
        if task is not None:
            self.task, self.loop = task, task.get_loop()

    @property
    def span(self) -> Any:  # the SDK span; None once the worker has dropped it
        return self.entry[_SPAN]

    @span.setter
    def span(self, value: Any) -> None:
        self.entry[_SPAN] = value

    @property
    def ended(self) -> bool:
        return self.entry[_ENDED]

    @property
    def profile(self) -> Any:  # type: ignore[override]
        return self.entry[_PROFILE]

    @property
    def worker_thread_id(self) -> Optional[int]:  # type: ignore[override]
        return self.entry[_WORKER]

    @worker_thread_id.setter
    def worker_thread_id(self, value: Optional[int]) -> None:
        self.entry[_WORKER] = value


class _InFlight:
    """Watchdog item: the span is still open at ``inflight_multiple`` × its threshold."""

    __slots__ = ("tracked",)

    def __init__(self, tracked: _Tracked) -> None:
        self.tracked = tracked

    @property
    def ended(self) -> bool:
        return self.tracked.ended


class CapturedSpan:
    """What the request path hands to the worker for one slow span (plain data)."""

    __slots__ = ("tracked", "trace_id", "span_id", "span_name", "service_name", "start_ns", "end_ns",
                 "threshold_seconds", "interval_seconds", "http", "headers", "fingerprint", "profile",
                 "sampled", "mode")

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


def _service_name(span: Any) -> str:
    resource = getattr(span, "resource", None)
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name) if name else "unknown_service"


def span_fingerprint(span: Any) -> str:
    """Fingerprint of a span: service + method + route template (see :func:`dedup.fingerprint`)."""
    attributes = span.attributes or {}
    info = http_info(attributes, span.name)
    if info["method"] is None and not info["route"].startswith("/"):
        return fingerprint(_service_name(span), "FUNCTION", span.name)
    # requests that matched no route (404 scans...) share one fingerprint, not one per path
    route = info["route"] if attributes.get("http.route") else "[unrouted]"
    return fingerprint(_service_name(span), info["method"] or "", route)


class PerfmonSpanProcessor(SpanProcessor):
    """Profiles eligible spans and reports the slow ones. Add it with
    ``tracer_provider.add_span_processor(...)``, or let ``configure_perfmon`` do it.

    ``config`` must be validated (``resolve_config``). ``exporters`` are built exporter
    instances. Hooks never raise; errors are logged once and counted in ``stats``.
    """

    def __init__(self, config: PerfmonConfig, exporters: Optional[list] = None,
                 store: Optional[DedupStore] = None) -> None:
        from otel_perfmon.watchdog import Watchdog

        self.config = config
        self.stats = Stats()
        metrics.register(self.stats)  # perfmon.* instruments on the global MeterProvider
        self._active = config.enabled  # False when disabled or shut down: the hooks return at once
        self._threshold = config.threshold_seconds
        self._interval = config.profile_interval_seconds
        self._policy = make_policy(config)
        self._on_report = getattr(self._policy, "on_report", None)
        self._should_profile = self._policy.should_profile  # bound once: called per span
        # policies that say which spans they need to see (policy.py) are not called for the rest
        self._consult_below = getattr(self._policy, "explore_span_id_bound", SPAN_ID_LIMIT) \
            if hasattr(self._policy, "wants_all_spans") else SPAN_ID_LIMIT
        self._on_span_end = self._policy.on_span_end
        # unprofiled spans shorter than this are not shown to the policy (AdaptiveProfilePolicy
        # only learns from spans near the threshold); policies without the attribute see all
        self._span_end_min = float(getattr(self._policy, "span_end_min_seconds", 0.0))
        self._count_started = self.stats.started_counter().__next__
        self._sampler = StackSampler(config.sampler_interval_seconds)
        self._inflight_multiple = config.inflight_multiple
        self._url_filter = UrlFilter(compile_url_patterns("include_urls", config.include_urls),
                                     compile_url_patterns("exclude_urls", config.exclude_urls))
        self._capture = frozenset(h.lower() for h in config.capture_headers)
        self._redact = frozenset(h.lower() for h in config.redact_headers)
        self.report_dir = os.path.abspath(config.report_dir)
        self.store = store if store is not None else open_store(config.dedup_store, self.report_dir)
        self._tracked: Dict[int, List[Any]] = {}  # span id -> entry (see _SPAN...)
        self._claim_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._watchdog = Watchdog(self._scan, self._on_deadline, self._background_error,
                                  idle_wait_seconds=self._threshold / 2)
        self._worker = BackgroundQueue("otel-perfmon-worker", self._process, config.queue_size,
                                       on_drop=self._dropped, on_error=self._background_error)
        self.dispatcher = Dispatcher(exporters or [], config.export_timeout_seconds,
                                     config.queue_size, self.stats)
        self._shutdown = False
        threads.add_span_tracker(self)

    # ------------------------------------------------------------------ request path
    # Both hooks run on every span the SDK records, on the request thread or event loop, where
    # caches are cold: every attribute read and call shows in wall-clock time (docs/performance.md).
    # So, for a span that is neither profiled nor slow, they read no clock, take no lock, set
    # no ContextVar and build one list.
    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        """SDK hook, request thread / event loop: track an eligible span (a few µs), maybe
        start its profiler. Never raises (errors are logged once and counted)."""
        if not self._active:
            return
        try:
            if span.kind is _SERVER:
                parent = span.parent
                if parent is not None and parent.is_valid and not parent.is_remote:
                    return
                if self._url_filter.active and not self._url_filter.allows(span.attributes or {}, span.name):
                    return
                threshold = self._threshold
            elif _forced_in_use:  # an @profile span: any kind, any parent
                threshold = FORCED_THRESHOLD.get()
                if threshold is None:
                    return
                if threshold <= 0:
                    threshold = self._threshold
            else:
                return
            self._count_started()
            loop = _get_running_loop()
            entry = [span, threshold, get_ident(), _current_task(loop) if loop is not None else None,
                     None, None, False, None]
            span_id = span.context.span_id
            self._tracked[span_id] = entry
            if span_id < self._consult_below or self._policy.wants_all_spans:
                try:  # a failing policy costs the span its profiler, not its watchdog or report
                    if self._should_profile(span):
                        entry[_PROFILE] = self._start_profile(span)
                except Exception:
                    self._hook_error("should_profile")
            if not self._watchdog.running:
                self._watchdog.ensure_started()
            elif threshold < self._threshold:  # the watchdog may sleep past this deadline
                self._watchdog.wake()
        except Exception:
            self._hook_error("on_start")

    def _start_profile(self, span: Span) -> Optional[SpanProfile]:
        profile = SpanProfile(self._interval)
        try:
            profile.start(span.name)
        except Exception:
            # e.g. an @profile coroutine inside an already-profiled task: pyinstrument allows
            # one async-context profiler per task. The span is still timed and reported.
            log_once(_logger, "profile-start", "could not start a profiler for %s", span.name)
            return None
        self.stats.incr("spans_profiled")
        return profile

    def _stop_profile(self, profile: SpanProfile, span: ReadableSpan) -> Optional[SpanProfile]:
        if profile.thread_id != threading.get_ident():
            log_once(_logger, "profile-thread", "span %s ended on another thread than it started; "
                     "its profile is discarded", span.name, exc_info=False)
            return None
        profile.stop()
        return profile

    def _state_of(self, entry: List[Any]) -> _Tracked:
        """The entry's _Tracked state, created on first use (any thread but the request path's
        fast case; the lock makes the watchdog and a run_sync lookup agree on one object)."""
        state = entry[_STATE]
        if state is None:
            with self._state_lock:
                state = entry[_STATE]
                if state is None:
                    state = entry[_STATE] = _Tracked(entry)
        return state

    def on_end(self, span: ReadableSpan) -> None:
        """SDK hook, request thread / event loop: stop the profiler; for a slow span capture the
        request data (redacted) and enqueue it (~70 µs). Never raises, never blocks on I/O."""
        try:
            entry = self._tracked.pop(span.context.span_id, None)
            if entry is None:
                return
            entry[_ENDED] = True  # before reading _STATE: see _on_deadline
            # the common case (no profiler, no background state, a short span) costs no call
            tracked = entry[_STATE]
            if tracked is not None:
                entry[_STATE] = None  # the state keeps the entry; the entry lets go of the state
            sampled = self._sampler.stop(tracked.span_id) if tracked is not None and tracked.sampling else None
            profile = entry[_PROFILE]
            if profile is not None:
                profile = self._stop_profile(profile, span)
            start_ns, end_ns = span.start_time or 0, span.end_time or 0
            duration = (end_ns - start_ns) / 1e9
            slow = duration > entry[_THRESHOLD]
            if profile is not None:
                self._on_span_end(span.name, duration, True, slow)
                self.stats.incr("profiling_seconds_estimate", estimated_profiling_cost(duration))
            elif duration >= self._span_end_min:
                self._on_span_end(span.name, duration, False, slow)
            if not slow:
                return
            self.stats.incr("slow_spans")
            if tracked is None:
                tracked = self._state_of(entry)
                entry[_STATE] = None
            attributes = span.attributes or {}
            pairs = find_request_headers()
            if pairs is None:
                pairs = headers_from_attributes(attributes)
            captured = CapturedSpan(
                tracked=tracked, trace_id=span.context.trace_id, span_id=span.context.span_id,
                span_name=span.name, service_name=_service_name(span), start_ns=start_ns, end_ns=end_ns,
                threshold_seconds=tracked.threshold_seconds,
                interval_seconds=self._interval if profile is not None else self.config.sampler_interval_seconds,
                http=http_info(attributes, span.name), headers=select_headers(pairs, self._capture, self._redact),
                fingerprint=None, profile=profile, sampled=sampled,
                mode="full" if profile is not None else ("after_threshold" if sampled is not None else "none"))
            self._worker.submit(captured)
        except Exception:
            self._hook_error("on_end")

    # ------------------------------------------------------------------ background
    def _claim(self, tracked: _Tracked) -> Claim:
        with self._claim_lock:
            if tracked.claim is None:
                now = time.time()
                tracked.claim = self.store.claim(span_fingerprint(tracked.span), new_report_id(now),
                                                 now, self.config.dedup_window_seconds)
            return tracked.claim

    def link_attributes(self, report_id: str) -> Dict[str, Any]:
        """The ``perfmon.*`` attributes that link a slow span to ``report_id``."""
        values: Dict[str, Any] = {attr.PERFMON_SLOW: True, attr.PERFMON_REPORT_ID: report_id}
        url = self.config.report_url(report_id)
        if url:
            values[attr.PERFMON_REPORT_URL] = url
        return values

    def _scan(self, now: float) -> float:
        # watchdog thread: fire the open spans whose deadline (time.time() s) has passed;
        # returns the earliest deadline still ahead (inf if none).
        next_deadline = math.inf
        for entry in list(self._tracked.values()):
            tracked = entry[_STATE]
            if entry[_ENDED] or (tracked is not None and tracked.fired):
                continue
            started = _start_seconds(entry[_SPAN])
            if started is None:
                continue
            deadline = started + entry[_THRESHOLD]
            if deadline > now:
                next_deadline = min(next_deadline, deadline)
                continue
            tracked = self._state_of(entry)
            if tracked.fired:
                continue
            tracked.fired = True
            try:
                self._on_deadline(tracked)
            except Exception as exc:
                self._background_error(exc)
        return next_deadline

    def _on_deadline(self, item: Any) -> None:
        # watchdog thread: the span is still open and has just become slow (or, for an
        # _InFlight item, is still open at inflight_multiple x its threshold).
        if isinstance(item, _InFlight):
            self._report_in_flight(item.tracked)
            return
        tracked = item
        span = tracked.span
        if span is None or tracked.ended:
            return
        claim = self._claim(tracked)
        if self._on_report is not None:
            self._on_report(span.name, self.config.dedup_window_seconds)
        if tracked.ended or not span.is_recording():
            return
        span.set_attributes(self.link_attributes(claim.report_id))
        if not claim.is_new:
            return  # the route's report exists: no call tree is needed
        if tracked.profile is None:
            tracked.sampling = True
            self._sampler.start(tracked.span_id, tracked, span.name)
            # on_end sets _ENDED before it reads the state: if it ended meanwhile, it may have
            # missed the sampler, so stop it here (a second stop is a no-op)
            if tracked.ended:
                self._sampler.stop(tracked.span_id)
        if self._inflight_multiple > 0:
            self._watchdog.schedule(tracked.started + self._inflight_multiple * tracked.threshold_seconds,
                                    _InFlight(tracked))

    def _report_in_flight(self, tracked: _Tracked) -> None:
        # watchdog thread: an early report of a request that is still running (maybe stuck).
        span = tracked.span
        if tracked.ended or span is None:
            return
        sampled = self._sampler.snapshot(tracked.span_id) if tracked.sampling else None
        if sampled is None:
            sampled = self._sampler.one_shot(tracked, span.name)
        attributes = dict(span.attributes or {})
        pairs = headers_in_frames(tracked.frames())
        if pairs is None:
            pairs = headers_from_attributes(attributes)
        self._worker.submit(CapturedSpan(
            tracked=tracked, trace_id=span.context.trace_id, span_id=span.context.span_id,
            span_name=span.name, service_name=_service_name(span), start_ns=span.start_time or 0,
            end_ns=time.time_ns(), threshold_seconds=tracked.threshold_seconds,
            interval_seconds=self.config.sampler_interval_seconds, http=http_info(attributes, span.name),
            headers=select_headers(pairs, self._capture, self._redact), fingerprint=None, profile=None,
            sampled=sampled, mode="in_flight"))

    def _process(self, captured: CapturedSpan) -> None:
        # worker thread: dedup decision, build, render, write, dispatch.
        from otel_perfmon.report.build import build_report
        from otel_perfmon.report.render import write_report_files

        tracked = captured.tracked
        in_flight = captured.mode == "in_flight"
        if in_flight and tracked.ended:
            return  # the final report of the span is queued (or written) and supersedes this one
        claim = self._claim(tracked)
        captured.fingerprint = span_fingerprint(tracked.span)
        if self._on_report is not None and not in_flight:
            self._on_report(captured.span_name, self.config.dedup_window_seconds)
        if not in_flight:
            tracked.span = None  # type: ignore[assignment]  # drop the SDK span reference early
        duration_ms = (captured.end_ns - captured.start_ns) / 1e6
        trace_id = f"{captured.trace_id:032x}"
        if not in_flight:
            metrics.record_slow_span(duration_ms, captured.http)
        if not claim.is_new:
            self.stats.incr("reports_deduplicated")
            self.store.record_occurrence(captured.fingerprint, claim.report_id, duration_ms, trace_id, time.time())
            return
        # an in-flight report is written under the claimed id, then overwritten by the final
        # report when the span ends; exporters hear of it once, at the first of the two written
        # (only this worker thread reads and sets ``notified``).
        first = not tracked.notified
        try:
            report = build_report(captured, claim.report_id, self.report_dir, self.config.report_url(claim.report_id))
            write_report_files(report)
        except Exception:
            if first:
                self.stats.incr("reports_dropped")
            if not in_flight:
                self.store.release(captured.fingerprint, claim.report_id)
            raise
        if not in_flight:
            self.store.record_occurrence(captured.fingerprint, claim.report_id, duration_ms, trace_id, time.time())
        if first:
            tracked.notified = True
            self.stats.incr("reports_created")
            report.session = None  # the exporters get the rendered files, not the raw samples
            self.dispatcher.dispatch(report)

    def target_for_context(self) -> Optional[_Tracked]:
        """The tracked span the calling context runs under, or None: the current OTel span,
        its parent, or else the innermost open tracked span of the same trace (on this task
        when several tasks have one). Called by the
        ``run_sync`` wrapper (profiling/threads.py) on the event loop; cheap when nothing is
        tracked."""
        tracked = self._tracked
        if not tracked:
            return None
        span = get_current_span()
        context = span.get_span_context()
        found = tracked.get(context.span_id)
        if found is None:
            parent = getattr(span, "parent", None)
            found = tracked.get(parent.span_id) if parent is not None else None
        if found is None and context.is_valid:
            # deeper nesting: the open tracked spans of this trace, on this task when that tells
            # them apart, innermost (latest started) first, as for nested @profile spans
            candidates = []
            for entry in list(tracked.values()):
                entry_span = entry[_SPAN]
                if not entry[_ENDED] and entry_span is not None and entry_span.context.trace_id == context.trace_id:
                    candidates.append(entry)
            if len(candidates) > 1:
                task = _current_task() if _get_running_loop() is not None else None
                candidates = [e for e in candidates if e[_TASK] is task] or candidates
            if candidates:
                found = max(candidates, key=lambda e: _start_seconds(e[_SPAN]) or 0.0)
        if found is not None and found[_ENDED]:
            return None
        return self._state_of(found) if found is not None else None

    def stats_snapshot(self) -> Dict[str, Any]:
        """``stats()``: the counters plus ``profiled_fraction`` (profiled / started spans) and
        ``profiling_seconds_estimate`` (upper-bound estimate of the time profiling cost, s)."""
        values: Dict[str, Any] = self.stats.snapshot()
        values["profiled_fraction"] = self.stats.profiled_fraction(values)
        values["profiling_seconds_estimate"] = round(values["profiling_seconds_estimate"], 6)
        return values

    def _dropped(self, captured: Any) -> None:
        self.stats.incr("reports_dropped")
        log_once(_logger, "queue-full", "report queue full or closed; slow span reports are being dropped",
                 exc_info=False)

    def _background_error(self, exc: BaseException) -> None:
        self.stats.incr("internal_errors")
        log_once(_logger, f"background:{type(exc).__name__}", "background error: %r", exc)

    def _hook_error(self, hook: str) -> None:
        self.stats.incr("internal_errors")
        log_once(_logger, f"hook:{hook}", "error in %s (the request is unaffected)", hook)

    # ------------------------------------------------------------------ lifecycle
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until queued reports are written and exported; ``timeout_millis`` in ms."""
        deadline = time.monotonic() + timeout_millis / 1000.0
        ok = self._worker.flush(timeout_millis / 1000.0)
        return self.dispatcher.flush(max(0.0, deadline - time.monotonic())) and ok

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Stop the threads, export what is queued within ``timeout_seconds``, close the store.

        Also called (without arguments) by the TracerProvider at its shutdown. Idempotent.
        """
        if self._shutdown:
            return
        self._shutdown = True
        self._active = False
        threads.remove_span_tracker(self)
        deadline = time.monotonic() + timeout_seconds
        self._watchdog.close(0.5)
        self._sampler.close()
        self._worker.close(max(0.0, deadline - time.monotonic()))
        self.dispatcher.close(max(0.0, deadline - time.monotonic()))
        try:
            self.store.close()
        except Exception:
            self._hook_error("shutdown")
