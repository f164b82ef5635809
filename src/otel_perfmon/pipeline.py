"""The worker: what happens to a captured slow span. Runs on the ``otel-perfmon-worker`` thread only.

For each :class:`~otel_perfmon.report.model.CapturedSpan`: claim its fingerprint's report id
(usually done already by the watchdog), then

* a new report: build it (hotspots, call-tree text), write its three files, record the
  occurrence, notify the exporters once;
* a deduplicated occurrence: count it in the dedup store and, when its call tree is clearly
  better than the kept report's or the span is much slower (:func:`replacement`), rewrite the
  kept report under the same id (so the id in spans and messages stays valid), listing the
  version it replaces in ``earlier_versions``; the exporters hear of it once more only when it
  got much worse;
* an in-flight report (the span is still open): written under the claimed id, overwritten by
  the final report; the exporters hear of whichever comes first.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from otel_perfmon import metrics
from otel_perfmon.dedup import DedupStore, KeptVersion
from otel_perfmon.report.build import build_report, profile_quality
from otel_perfmon.report.capture import UNROUTED, fingerprint_route, span_fingerprint
from otel_perfmon.report.model import MAX_EARLIER_VERSIONS, CapturedSpan, Report
from otel_perfmon.report.render import update_report_json, write_report_files
from otel_perfmon.report.text import truncate
from otel_perfmon.stats import Stats, log_once
from otel_perfmon.storage import ReportStore, display, open_report_store, retention
from otel_perfmon.storage.spool import RETRY_INTERVAL_SECONDS

_logger = logging.getLogger(__name__)

#: A later occurrence replaces the kept report when it is at least this many times slower...
SLOWER_FACTOR = 2.0
#: ...or its coverage is higher by at least this much (0..1)...
BETTER_COVERAGE = 0.2
#: ...or it is a full pyinstrument profile where the kept one is not.
_FULL = "full"


def replacement(kept: Optional[KeptVersion], candidate: KeptVersion, followed_up: bool) -> Tuple[bool, bool]:
    """The rule for replacing a kept report, evaluated by the dedup store atomically:
    ``(replace, follow_up)``. A report without a call tree (mode ``none``) never holds the
    slot against one with a call tree; a follow-up notification goes out once per window, when
    the replacement is ``SLOWER_FACTOR`` × slower than the kept report."""
    if candidate.mode == "none":
        return False, False
    if kept is None or kept.mode == "none":
        return True, False
    slower = candidate.duration_ms >= SLOWER_FACTOR * kept.duration_ms and candidate.coverage >= 0.5
    better = (candidate.mode == _FULL and kept.mode != _FULL) or candidate.coverage >= kept.coverage + BETTER_COVERAGE
    if not (slower or better):
        return False, False
    return True, slower and not followed_up


#: At most this many distinct paths are listed on the shared ``[unrouted]`` report.
MAX_UNROUTED_PATHS = 50


def _read_paths(data: Optional[Dict[str, Any]]) -> List[str]:
    paths = (data or {}).get("unrouted_paths", [])
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _merged_paths(kept: List[str], new: List[str]) -> List[str]:
    merged = list(kept)
    for path in new:
        if path not in merged:
            merged.append(path)
    return merged[:MAX_UNROUTED_PATHS]


def _earlier_versions(data: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The ``earlier_versions`` of the report JSON ``data`` plus the version it holds
    (empty when the file could not be read)."""
    if data is None:
        return []
    try:
        earlier = [v for v in data.get("earlier_versions", []) if isinstance(v, dict)]
        profile = data.get("profile", {})
        replaced = {"trace_id": data["trace_id"], "span_id": data["span_id"], "duration_ms": data["duration_ms"],
                    "mode": profile.get("mode", "none"), "coverage": profile.get("coverage", 0.0),
                    "start_time": data["start_time"]}
    except (KeyError, TypeError, AttributeError):
        return []
    return (earlier + [replaced])[-MAX_EARLIER_VERSIONS:]


class ReportPipeline:
    """The handler of the worker queue (:meth:`process`). ``claim(open_span) -> Claim`` is
    :meth:`otel_perfmon.slow.SlowSpans.claim`; ``dispatch(report)`` hands a report to the
    exporters (:class:`otel_perfmon.dispatch.Dispatcher`). ``report_store`` is where the files
    go (default: the local directory ``report_dir``); retention (``retention_max_age_seconds``,
    ``retention_max_bytes``) is applied to it at most every
    :data:`otel_perfmon.storage.retention.INTERVAL_SECONDS`, after a report."""

    def __init__(self, config: Any, store: DedupStore, claim: Callable[[Any], Any],
                 on_report: Callable[[str, float], None], dispatch: Callable[[Report], None], stats: Stats,
                 report_dir: str, report_store: Optional[ReportStore] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._store = store
        self._claim = claim
        self._on_report = on_report
        self._dispatch = dispatch
        self._stats = stats
        self.report_dir = report_dir
        self.report_store = report_store if report_store is not None else open_report_store(report_dir)
        self._clock = clock
        self._next_retention = clock()  # the first report applies it

    def process(self, captured: CapturedSpan) -> None:
        """Handle one captured span (worker thread; raises what the store or the disk raise,
        which the queue counts as an internal error), then apply retention when it is due."""
        try:
            self._process(captured)
        finally:
            if self._clock() >= self._next_retention:
                self.apply_retention()

    def retry_spool(self) -> int:
        """Upload the spooled reports of a remote store (worker thread); returns how many."""
        flush = getattr(self.report_store, "flush", None)
        return int(flush(force=True)) if callable(flush) and getattr(self.report_store, "pending", False) else 0

    def apply_retention(self) -> int:
        """Delete the reports past ``retention_max_age_seconds`` / ``retention_max_bytes``
        (oldest first) and release their dedup entries; returns how many. A failing store is
        logged once (and retried at the next interval), never raised. Worker thread."""
        self._next_retention = self._clock() + retention.INTERVAL_SECONDS
        max_age = float(getattr(self._config, "retention_max_age_seconds", 0) or 0)
        max_bytes = int(getattr(self._config, "retention_max_bytes", 0) or 0)
        if max_age <= 0 and max_bytes <= 0:
            return 0
        try:
            deletions = retention.plan(self.report_store.list_reports(), time.time(), max_age, max_bytes)
            retention.apply(self.report_store, deletions, self._store)
        except Exception as exc:
            log_once(_logger, f"retention:{type(exc).__name__}", "retention of %s failed (%s); retried later",
                     display(self.report_dir), exc, exc_info=False)
            return 0
        return len(deletions)

    def _process(self, captured: CapturedSpan) -> None:
        open_span = captured.open_span
        in_flight = captured.mode == "in_flight"
        if in_flight and open_span.ended:
            return  # the final report of the span is queued (or written) and supersedes this one
        claim = self._claim(open_span)
        fingerprint = span_fingerprint(open_span.span)
        window = self._config.dedup_window_seconds
        trace_id = f"{captured.trace_id:032x}"
        duration_ms = captured.duration_ms
        if not in_flight:
            self._on_report(captured.span_name, window)
            metrics.record_slow_span(duration_ms, captured.http)
        if not claim.is_new:
            self._stats.incr("reports_deduplicated")
            self._store.record_occurrence(fingerprint, claim.report_id, duration_ms, trace_id, time.time())
            if not self._maybe_replace(captured, claim.report_id, fingerprint) and self._is_unrouted(captured):
                self._note_unrouted_path(claim.report_id, captured.http.get("path"))
            return
        first = not open_span.notified  # only this thread reads and sets it
        try:
            report = self._write(captured, claim.report_id, fingerprint, [])
        except Exception:
            if first:
                self._stats.incr("reports_dropped")
            if not in_flight:
                self._store.release(fingerprint, claim.report_id)
            raise
        if not in_flight:
            self._store.record_occurrence(fingerprint, claim.report_id, duration_ms, trace_id, time.time())
            self._store.set_kept(fingerprint, claim.report_id, self._version(report))
            open_span.samples = None  # the sampled stacks are in the files now
        if first:
            open_span.notified = True
            self._stats.incr("reports_created")
            self._dispatch(report)

    def _write(self, captured: CapturedSpan, report_id: str, fingerprint: str,
               earlier: List[Dict[str, Any]]) -> Report:
        report = self._build(captured, report_id, fingerprint)
        report.earlier_versions = earlier
        write_report_files(report, self.report_store)
        report.session = None  # the exporters get the rendered files, not the raw samples
        return report

    @staticmethod
    def _is_unrouted(captured: CapturedSpan) -> bool:
        return fingerprint_route(captured.open_span.span)[1] == UNROUTED

    def _build(self, captured: CapturedSpan, report_id: str, fingerprint: str) -> Report:
        report = build_report(captured, report_id, self.report_dir, self._config.report_url(report_id), fingerprint)
        if self._is_unrouted(captured):
            # one report for every request that matched no route: it reads [unrouted] and lists
            # the paths (a scanner's /wp-admin/x.php is one of them, not the report's title)
            report.route = UNROUTED
            report.unrouted_paths = [truncate(report.path)] if report.path else []
        return report

    def _note_unrouted_path(self, report_id: str, path: Optional[str]) -> None:
        # a deduplicated unrouted request: add its path to the shared report's list (JSON only)
        if not path:
            return
        path = truncate(path)

        def add(data: Dict[str, Any]) -> bool:
            paths = data.get("unrouted_paths")
            if not isinstance(paths, list) or path in paths or len(paths) >= MAX_UNROUTED_PATHS:
                return False
            paths.append(path)
            return True

        update_report_json(self.report_store, report_id, add)

    @staticmethod
    def _version(report: Report) -> KeptVersion:
        return KeptVersion(report.duration_ms, report.profile_mode, report.coverage)

    def _maybe_replace(self, captured: CapturedSpan, report_id: str, fingerprint: str) -> bool:
        # a deduplicated occurrence: rewrite the kept report if this one explains it better
        mode, coverage = profile_quality(captured)
        candidate = KeptVersion(round(captured.duration_ms, 3), mode, coverage)
        replace, follow_up = self._store.replace_kept(fingerprint, report_id, candidate, replacement)
        if not replace:
            return False
        report = self._build(captured, report_id, fingerprint)
        kept = self.report_store.read_json(report_id)
        report.earlier_versions = _earlier_versions(kept)
        if report.unrouted_paths:
            report.unrouted_paths = _merged_paths(_read_paths(kept), report.unrouted_paths)
        try:
            write_report_files(report, self.report_store)
        finally:
            report.session = None
        self._stats.incr("reports_replaced")
        if follow_up:
            self._dispatch(report)
        return True


class SpoolRetry:
    """The retry of a remote store's spool: requested (any background thread) when a report was
    spooled, due on the watchdog ``RETRY_INTERVAL_SECONDS`` later (:meth:`fire`), run on the
    worker (:meth:`run`): one pending per process. ``schedule(deadline, item)`` is the
    watchdog's, ``submit(item) -> bool`` the worker queue's; both are attached after
    construction (:meth:`attach`), as the store that asks for retries is built first."""

    ended = False  # what the watchdog checks before firing

    def __init__(self, pipeline_retry: Callable[[], int], pending: Callable[[], bool]) -> None:
        self._retry, self._pending = pipeline_retry, pending
        self._schedule: Optional[Callable[[float, Any], None]] = None
        self._submit: Optional[Callable[[Any], bool]] = None
        self._pid = 0  # the process whose watchdog holds the pending item

    def attach(self, schedule: Callable[[float, Any], None], submit: Callable[[Any], bool]) -> None:
        self._schedule, self._submit = schedule, submit
        if self._pending():  # reports spooled by an earlier run
            self.request()

    def request(self) -> None:
        """Ask for a retry (a no-op while one is pending in this process)."""
        if self._schedule is not None and self._pid != os.getpid():
            self._pid = os.getpid()
            self._schedule(time.time() + RETRY_INTERVAL_SECONDS, self)

    def fire(self) -> None:
        """Watchdog thread: hand the upload to the worker."""
        self._pid = 0
        if self._submit is not None and not self._submit(self):
            self._pid = 0  # the queue was full: the next spooled report asks again

    def run(self) -> None:
        """Worker thread: upload the spool; ask again while reports remain."""
        self._retry()
        if self._pending():
            self.request()
