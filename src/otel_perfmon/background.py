"""The background side of one processor, assembled in data-flow order, with its lifecycle.

Built once at configure time by :class:`~otel_perfmon.processor.PerfmonSpanProcessor`: the
dedup store and the report store, the stack sampler thread, the watchdog
(:mod:`otel_perfmon.slow`), the worker (:mod:`otel_perfmon.pipeline`), every route's numbers
(:mod:`otel_perfmon.route_stats`), the spool retry of a remote report store, and one thread per
exporter (:mod:`otel_perfmon.dispatch`). Nothing here runs on the request path but
:meth:`Background.submit` (a bounded queue put) and the ``running`` checks; flush and shutdown
are bounded. Threads start lazily (:meth:`ensure_started`) and again after fork.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from otel_perfmon.config import PerfmonConfig
from otel_perfmon.dedup import DedupStore, open_store
from otel_perfmon.dispatch import BackgroundQueue, Dispatcher
from otel_perfmon.pipeline import ReportPipeline, SpoolRetry
from otel_perfmon.policy import ProfilePolicy
from otel_perfmon.profiling.sampler import StackSampler
from otel_perfmon.route_stats import RouteStats
from otel_perfmon.slow import SlowSpans
from otel_perfmon.stats import Stats
from otel_perfmon.storage import is_remote, local_path, local_state_dir, open_app_store
from otel_perfmon.tracking import OpenSpan


class Background:
    """Everything of one processor that runs on otel-perfmon's own threads.

    ``tracked`` is the open-span table the sampler and the watchdog read; ``store`` a dedup
    store to use instead of the one ``config.dedup_store`` names. Raises ConfigurationError for
    an unknown store name or a bad report_dir (configure time)."""

    def __init__(self, config: PerfmonConfig, stats: Stats, policy: ProfilePolicy, tracked: Dict[int, OpenSpan],
                 exporters: List[Any], store: Optional[DedupStore], capture: Any, redact: Any) -> None:
        self.stats = stats
        # a URL (s3://...) or a local directory; the dedup SQLite file and the spool of a remote
        # store stay on this host (storage.local_state_dir)
        self.report_dir = config.report_dir if is_remote(config.report_dir) else local_path(config.report_dir)
        self.store = store if store is not None else open_store(config.dedup_store, local_state_dir(self.report_dir))
        self.report_store = open_app_store(self.report_dir, stats.incr, lambda: self.spool_retry.request())
        self.dispatcher = Dispatcher(exporters, config.export_timeout_seconds, config.queue_size, stats)
        self.sampler = StackSampler(tracked, config.sampler_early_interval_seconds, config.sampler_interval_seconds,
                                    config.sampler_budget, stats)
        self.worker = BackgroundQueue("otel-perfmon-worker", self._process, config.queue_size,
                                      on_drop=self._dropped, on_error=self.error)
        self.submit = self.worker.submit  # the request path's one call into the background
        # every tracked span's duration per route, flushed to the store by the watchdog
        self.route_stats = RouteStats(self.store, config.route_stats_interval_seconds, on_error=self.error)
        self.slow = SlowSpans(tracked, config, self.store, self.sampler, policy.on_report, self.submit, self.error,
                              capture, redact)
        self.watchdog = self.slow.watchdog
        self.route_stats.attach(self.watchdog.schedule)
        self.pipeline = ReportPipeline(config, self.store, self.slow.claim, policy.on_report,
                                       self.dispatcher.dispatch, stats, self.report_dir, self.report_store)
        # a remote store's spool is retried from the watchdog and uploaded on the worker
        self.spool_retry = SpoolRetry(self.pipeline.retry_spool,
                                      lambda: bool(getattr(self.report_store, "pending", False)))
        if self.report_store.is_remote:
            self.spool_retry.attach(self.watchdog.schedule, self.submit)

    @property
    def running(self) -> bool:
        """True once the watchdog and sampler threads run in this process (cheap: two reads)."""
        return self.watchdog.running and self.sampler.running

    def ensure_started(self) -> None:
        """Start the watchdog and the sampler (the first tracked span, and after fork)."""
        self.watchdog.ensure_started()
        self.sampler.ensure_started()

    def _process(self, item: Any) -> None:  # worker thread
        if isinstance(item, SpoolRetry):
            item.run()
        else:
            self.pipeline.process(item)

    def _dropped(self, item: Any) -> None:
        if not isinstance(item, SpoolRetry):  # a dropped retry: the next spooled report asks again
            self.stats.dropped()

    def error(self, exc: BaseException) -> None:
        """Count and log once an error of a background thread."""
        self.stats.error(f"background:{type(exc).__name__}", "background error: %r", exc)

    def force_flush(self, timeout_seconds: float) -> bool:
        """Wait until queued reports are written and exported (seconds); True when all were."""
        deadline = time.monotonic() + timeout_seconds
        ok = self.worker.flush(timeout_seconds)
        ok = self.route_stats.flush_quietly() and ok  # the partial interval's route numbers
        return self.dispatcher.flush(max(0.0, deadline - time.monotonic())) and ok

    def shutdown(self, timeout_seconds: float) -> None:
        """Stop the threads, export what is queued within ``timeout_seconds``, close the store."""
        deadline = time.monotonic() + timeout_seconds
        self.watchdog.close(0.5)
        self.sampler.close()
        self.worker.close(max(0.0, deadline - time.monotonic()))
        self.dispatcher.close(max(0.0, deadline - time.monotonic()))
        self.route_stats.flush_quietly()  # the last partial interval (the watchdog is closed)
        try:
            self.store.close()
        except Exception as exc:
            self.error(exc)
