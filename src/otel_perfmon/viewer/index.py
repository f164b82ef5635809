"""An in-memory index of a report directory, refreshed incrementally from file mtimes.

The viewer never lists a directory or parses JSON per request: :class:`ReportIndex` keeps one
small :class:`ReportSummary` per ``<report_id>.json`` (no call tree) and a newest-first list.
:meth:`ReportIndex.refresh` runs at most once per ``refresh_interval_seconds``. Report files
are written by rename (``os.replace``), which changes the directory's mtime, so a refresh
first compares that mtime: unchanged (and settled for over 2 s) means one ``stat`` and done.
Otherwise, and at least every ``FULL_SCAN_INTERVAL_SECONDS``, it scans the directory (one
``scandir`` + ``stat`` per JSON file) and parses only files that are new or whose mtime/size
changed. Queries are an in-memory filter + sort + slice (numbers: ``make bench-viewer``).
Occurrence counts come from the dedup store and are re-read on every refresh.

A remote ``report_dir`` (``s3://…``) is indexed through a local mirror
(:class:`otel_perfmon.storage.mirror.ReportMirror`, see :func:`remote_index_dir`): a sync (one
listing; only reports whose ETag or modification time changed are downloaded) brings it up to
date, and the index scans the mirror as above. The first scan and a forced refresh (a report id
not known yet) sync inline; a refresh on the interval starts the sync on a daemon thread
(``otel-perfmon-viewer-sync``, one at a time) and scans the mirror as it is, so a page never waits
for a listing of the store (seconds for 10,000 reports); the next refresh after a sync sees
what it brought.

All methods are thread-safe (Starlette runs sync endpoints in a thread pool).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from otel_perfmon.dedup.base import DedupEntry, DedupStore, RouteStatsEntry
from otel_perfmon.report.ids import is_valid_report_id

_logger = logging.getLogger(__name__)

#: Largest report JSON the index parses (bigger files are skipped with a warning).
MAX_REPORT_JSON_BYTES = 64 * 1024 * 1024
SORT_KEYS = ("time", "duration")
#: ``/routes`` orders: last seen, slowest (p95), most called, most slow requests.
ROUTE_SORT_KEYS = ("recent", "p95", "count", "slow")
#: A full directory scan happens at least this often, even when the directory mtime is unchanged.
FULL_SCAN_INTERVAL_SECONDS = 30.0
#: A directory mtime younger than this is not trusted (a rename in the same clock tick as
#: the previous scan would leave it unchanged).
_MTIME_SETTLE_NS = 2_000_000_000


def parse_time(value: Any) -> Optional[float]:
    """Seconds since the epoch of an ISO-8601 string (``Z`` or offset; naive means UTC),
    or ``None`` when it does not parse."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def format_time(seconds: Optional[float]) -> str:
    """``YYYY-MM-DD HH:MM:SSZ`` (UTC) of epoch seconds, or ``""`` for ``None``."""
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@functools.lru_cache(maxsize=64)
def _glob(pattern: str) -> Callable[[str], Any]:
    return re.compile(fnmatch.translate(pattern)).match


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0  # NaN sorts badly


def json_object(value: Any) -> Dict[str, Any]:
    """``value`` if it is a JSON object (dict), else ``{}``: malformed reports still load."""
    return value if isinstance(value, dict) else {}


def _fraction(value: Any) -> Optional[float]:
    """A number in 0..1 as float; ``None`` for anything else (missing, bool, NaN, out of range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if 0.0 <= number <= 1.0 else None


def dedup_reader(spec: Optional[str], report_dir: str) -> Optional[Callable[[], Iterable[DedupEntry]]]:
    """A callable returning the dedup store's entries (for :class:`ReportIndex`), or ``None``
    for no counts.

    ``sqlite`` is opened only once its file exists (a reader never creates it); ``memory``
    lives in another process, so it gives no counts. The callable may raise (a down Redis).
    """
    if not spec or spec in ("none", "memory"):
        return None
    from otel_perfmon.dedup import open_store

    if spec == "sqlite":
        from otel_perfmon.dedup.sqlite import FILE_NAME

        path = os.path.join(report_dir, FILE_NAME)
        opened: List[DedupStore] = []

        def read() -> Iterable[DedupEntry]:
            if not opened:
                if not os.path.isfile(path):
                    return []
                opened.append(open_store("sqlite", report_dir))
            return opened[0].entries()

        return read
    return open_store(spec, report_dir).entries


def route_stats_reader(spec: Optional[str], report_dir: str) -> Optional[Callable[[], Iterable[RouteStatsEntry]]]:
    """A callable returning the store's per-route numbers of every request (see
    :meth:`DedupStore.route_stats`), or ``None``; opened like :func:`dedup_reader`."""
    if not spec or spec in ("none", "memory"):
        return None
    from otel_perfmon.dedup import open_store

    if spec == "sqlite":
        from otel_perfmon.dedup.sqlite import FILE_NAME

        path = os.path.join(report_dir, FILE_NAME)
        opened: List[DedupStore] = []

        def read() -> Iterable[RouteStatsEntry]:
            if not opened:
                if not os.path.isfile(path):
                    return []
                opened.append(open_store("sqlite", report_dir))
            return opened[0].route_stats()

        return read
    return open_store(spec, report_dir).route_stats


def remote_index_dir(report_dir: str) -> Tuple[str, Optional[Callable[[], int]]]:
    """``(directory to index, sync)``: for a local ``report_dir`` (a path or ``file://``) the
    directory and None; for a remote one (``s3://bucket/prefix``) its local mirror under
    :func:`otel_perfmon.storage.local_state_dir` and the mirror's ``sync`` (see
    :meth:`ReportIndex.attach_source`). No I/O."""
    from otel_perfmon.storage import is_remote, local_path, local_state_dir, open_report_store

    if not is_remote(report_dir):
        return local_path(report_dir), None
    from otel_perfmon.storage.mirror import ReportMirror

    mirror = ReportMirror(open_report_store(report_dir), os.path.join(local_state_dir(report_dir), "viewer"))
    return mirror.directory, mirror.sync


@dataclass(frozen=True)
class ReportSummary:
    """The listed fields of one report (its JSON minus headers and profile).

    Durations in milliseconds; ``start_ts`` in seconds since the epoch (the file's mtime when
    ``start_time`` does not parse); ``start_time`` as written in the report.
    """

    report_id: str
    fingerprint: str
    service_name: str
    span_name: str
    method: str
    route: str
    path: str
    status_code: Optional[int]
    duration_ms: float
    threshold_ms: float
    trace_id: str
    span_id: str
    start_time: str
    start_ts: float
    #: ``profile.mode`` (``full``, ``sampled``, ``after_threshold``, ``in_flight``, ``none``; ``""`` if absent).
    mode: str = ""
    #: ``profile.coverage``: share (0-1) of the span the samples cover; ``None`` if absent.
    coverage: Optional[float] = None

    @classmethod
    def from_json(cls, data: Dict[str, Any], report_id: str, mtime: float) -> ReportSummary:
        """Build from a parsed report JSON; missing or mistyped fields become empty values."""
        http = json_object(data.get("http"))
        profile = json_object(data.get("profile"))
        mode = profile.get("mode")
        status = http.get("status_code")
        start_ts = parse_time(data.get("start_time"))
        coverage = profile.get("coverage")
        return cls(
            report_id=report_id,
            fingerprint=_text(data.get("fingerprint")),
            service_name=_text(data.get("service_name")),
            span_name=_text(data.get("span_name")),
            method=_text(http.get("method")).upper(),
            route=_text(http.get("route")),
            path=_text(http.get("path")),
            status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
            duration_ms=_number(data.get("duration_ms")),
            threshold_ms=_number(data.get("threshold_ms")),
            trace_id=_text(data.get("trace_id")),
            span_id=_text(data.get("span_id")),
            start_time=_text(data.get("start_time")),
            start_ts=start_ts if start_ts is not None else mtime,
            mode=mode if isinstance(mode, str) else "",
            coverage=_fraction(coverage),
        )


@dataclass(frozen=True)
class ReportFilter:
    """Filters of the list page and ``GET /api/reports``; empty fields match everything.

    ``route`` matches exactly, or as a shell glob when it contains ``*``. ``method`` is
    case-insensitive. ``since``/``until`` are inclusive bounds in epoch seconds.
    """

    service: str = ""
    route: str = ""
    method: str = ""
    trace_id: str = ""
    since: Optional[float] = None
    until: Optional[float] = None

    def matches(self, report: ReportSummary) -> bool:
        if self.service and report.service_name != self.service:
            return False
        if self.method and report.method != self.method.upper():
            return False
        if self.trace_id and report.trace_id != self.trace_id.lower():
            return False
        if self.route:
            if "*" in self.route:
                if not _glob(self.route)(report.route):
                    return False
            elif report.route != self.route:
                return False
        if self.since is not None and report.start_ts < self.since:
            return False
        if self.until is not None and report.start_ts > self.until:
            return False
        return True

    @property
    def active(self) -> bool:
        return bool(self.service or self.route or self.method or self.trace_id
                    or self.since is not None or self.until is not None)


@dataclass(frozen=True)
class Page:
    """One page of query results: ``items`` plus ``total`` matches, 1-based ``page``."""

    items: List[ReportSummary]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class RouteGroup:
    """All reports of one service + method + route, with dedup occurrence totals."""

    service_name: str
    method: str
    route: str
    reports: int
    occurrences: int
    worst_duration_ms: float
    last_seen: float
    #: the fingerprint of its newest report
    fingerprint: str = ""


@dataclass(frozen=True)
class RouteRow:
    """One row of ``/routes``: a route's reports (``group``, None when none was slow) and its
    numbers of every request from the store (``stats``, None when it has none)."""

    service_name: str
    method: str
    route: str
    fingerprint: str
    group: Optional[RouteGroup]
    stats: Optional[RouteStatsEntry]

    @property
    def last_seen(self) -> float:
        return max(self.group.last_seen if self.group else 0.0, self.stats.last_seen if self.stats else 0.0)

    def sort_key(self, sort: str) -> Tuple[float, float]:
        """Descending key of ``sort`` (one of ROUTE_SORT_KEYS), ties by last seen."""
        stats = self.stats
        if sort == "p95":
            value = stats.p95_ms if stats else 0.0
        elif sort == "count":
            value = float(stats.count) if stats else 0.0
        elif sort == "slow":
            value = float(stats.slow) if stats else float(self.group.occurrences if self.group else 0)
        else:
            value = self.last_seen
        return value, self.last_seen


@dataclass
class _Snapshot:
    """Immutable once published; the cached views are computed lazily (idempotent, so a race
    between two threads only computes one twice)."""

    by_id: Dict[str, ReportSummary] = field(default_factory=dict)
    newest_first: Tuple[ReportSummary, ...] = ()
    dedup: Dict[str, DedupEntry] = field(default_factory=dict)
    cache: Dict[str, Any] = field(default_factory=dict)
    #: fingerprint -> the store's numbers of every request of that route
    routes: Dict[str, RouteStatsEntry] = field(default_factory=dict)

    def slowest_first(self) -> Tuple[ReportSummary, ...]:
        if "slowest" not in self.cache:
            self.cache["slowest"] = tuple(sorted(self.newest_first, key=lambda r: (r.duration_ms, r.start_ts),
                                                 reverse=True))
        slowest: Tuple[ReportSummary, ...] = self.cache["slowest"]
        return slowest

    def facet(self, name: str) -> List[str]:
        """Sorted distinct values of ``service_name``, ``method`` or ``route``."""
        if name not in self.cache:
            self.cache[name] = sorted({getattr(r, name) for r in self.newest_first} - {""})
        values: List[str] = self.cache[name]
        return values


class ReportIndex:
    """Index of ``report_dir``. ``dedup_entries`` returns the dedup store's entries for
    occurrence counts (``None``: no counts); it may block on I/O and may raise.

    ``refresh_interval_seconds`` bounds how stale a listing may be (0: rescan on every query).
    Thread-safe. Methods that refresh do blocking file I/O: call them from a worker thread
    (Starlette runs the sync endpoints in its thread pool), not on an event loop. They never
    raise for unreadable files (skipped, logged once per file); they raise ``OSError`` only if
    ``report_dir`` exists but cannot be listed.
    """

    def __init__(self, report_dir: str, dedup_entries: Optional[Callable[[], Iterable[DedupEntry]]] = None,
                 refresh_interval_seconds: float = 2.0,
                 route_stats: Optional[Callable[[], Iterable[RouteStatsEntry]]] = None) -> None:
        self.report_dir = os.path.abspath(report_dir)
        self.refresh_interval_seconds = refresh_interval_seconds
        self._dedup_entries = dedup_entries
        self._route_stats = route_stats
        self._lock = threading.Lock()
        self._stats: Dict[str, Tuple[int, int]] = {}
        self._failed: Dict[str, Tuple[int, int]] = {}
        self._snapshot = _Snapshot()
        self._last_refresh = float("-inf")
        self._last_full_scan = float("-inf")
        self._dir_mtime_ns: Optional[int] = None
        self._warned: Set[str] = set()
        self.last_scan_seconds = 0.0
        #: the mirror's sync of a remote report_dir, or None
        self._sync: Optional[Callable[[], Any]] = None
        self._sync_lock = threading.Lock()  # one sync at a time (inline or background)
        self._sync_thread: Optional[threading.Thread] = None
        self._synced_once = False
        self._mirror_changed = False  # a background sync ended since the last scan began
        self._last_forced = float("-inf")

    def attach_source(self, sync: Optional[Callable[[], Any]],
                      dedup_entries: Optional[Callable[[], Iterable[DedupEntry]]] = None,
                      route_stats: Optional[Callable[[], Iterable[RouteStatsEntry]]] = None) -> None:
        """Index a remote store through its mirror: ``sync()`` brings the mirror up to date
        (inline for the first scan and forced refreshes, else on a background thread; it may
        raise: warned once, the previous listing stays); also sets the dedup and route-stats
        readers (a remote report_dir keeps them elsewhere than the mirror)."""
        self._sync = sync
        self._synced_once = False
        self._dedup_entries = dedup_entries
        self._route_stats = route_stats
        self._last_refresh = float("-inf")

    # --- refresh -----------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Rescan if the interval passed (or ``force``); parse new and changed files only."""
        if self._fresh(force):
            return
        with self._lock:
            if self._fresh(force):
                return
            self._mirror_changed = False
            started = time.perf_counter()
            self._rescan(force)
            self._last_refresh = time.monotonic()
            self.last_scan_seconds = time.perf_counter() - started

    def _fresh(self, force: bool) -> bool:
        return (not force and not self._mirror_changed
                and time.monotonic() - self._last_refresh < self.refresh_interval_seconds)

    def _run_sync(self) -> None:
        """Sync the mirror of a remote store once (any thread; serialised)."""
        sync = self._sync
        if sync is None:
            return
        with self._sync_lock:
            try:
                sync()
            except Exception as exc:  # an unreachable bucket must not break the viewer
                self._warn_once("<report store>", "cannot list the report store (%s)", exc)
            self._synced_once = True

    def _sync_in_background(self) -> None:
        self._run_sync()
        self._mirror_changed = True  # the next query scans what the sync brought

    def _start_sync(self, inline: bool) -> None:
        """Bring a remote store's mirror up to date: now, or on the sync thread if none runs."""
        if inline or not self._synced_once:
            self._run_sync()
            return
        thread = self._sync_thread
        if thread is not None and thread.is_alive():
            return
        self._sync_thread = threading.Thread(target=self._sync_in_background, name="otel-perfmon-viewer-sync",
                                             daemon=True)
        self._sync_thread.start()

    def wait_for_sync(self, timeout: Optional[float] = None) -> bool:
        """Wait until no background sync runs (tests, benchmarks); True if none does."""
        thread = self._sync_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _rescan(self, force: bool = False) -> None:
        old = self._snapshot
        if self._sync is not None:
            self._start_sync(inline=force)
        try:
            dir_mtime_ns: Optional[int] = os.stat(self.report_dir).st_mtime_ns
        except FileNotFoundError:
            dir_mtime_ns = None
        if (dir_mtime_ns is not None and dir_mtime_ns == self._dir_mtime_ns
                and time.time_ns() - dir_mtime_ns > _MTIME_SETTLE_NS
                and time.monotonic() - self._last_full_scan < FULL_SCAN_INTERVAL_SECONDS):
            self._snapshot = _Snapshot(old.by_id, old.newest_first, self._read_dedup(old.dedup), old.cache,
                                       self._read_routes(old.routes))
            return
        self._dir_mtime_ns = dir_mtime_ns  # taken before the scan: a change during it rescans
        self._last_full_scan = time.monotonic()
        by_id: Dict[str, ReportSummary] = {}
        stats: Dict[str, Tuple[int, int]] = {}
        failed: Dict[str, Tuple[int, int]] = {}
        changed = False
        try:
            entries = os.scandir(self.report_dir)
        except FileNotFoundError:
            entries = None
        if entries is not None:
            with entries:
                for entry in entries:
                    name = entry.name
                    if not name.endswith(".json"):
                        continue
                    report_id = name[:-5]
                    if not is_valid_report_id(report_id):
                        continue
                    try:
                        if not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    key = (st.st_mtime_ns, st.st_size)
                    previous = old.by_id.get(report_id)
                    if previous is not None and self._stats.get(report_id) == key:
                        by_id[report_id], stats[report_id] = previous, key
                        continue
                    if self._failed.get(report_id) == key:
                        failed[report_id] = key  # still the same unreadable file
                        continue
                    summary = self._parse(entry.path, report_id, st.st_size, st.st_mtime)
                    if summary is not None:
                        by_id[report_id], stats[report_id] = summary, key
                        changed = True
                    else:
                        failed[report_id] = key
        changed = changed or len(by_id) != len(old.by_id)
        newest = (tuple(sorted(by_id.values(), key=lambda r: (r.start_ts, r.report_id), reverse=True))
                  if changed else old.newest_first)
        self._stats, self._failed = stats, failed
        self._snapshot = _Snapshot(by_id, newest, self._read_dedup(old.dedup), {} if changed else old.cache,
                                   self._read_routes(old.routes))

    def _parse(self, path: str, report_id: str, size: int, mtime: float) -> Optional[ReportSummary]:
        if size > MAX_REPORT_JSON_BYTES:
            self._warn_once(path, "larger than %d bytes", MAX_REPORT_JSON_BYTES)
            return None
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError) as exc:
            self._warn_once(path, "unreadable (%s)", exc)
            return None
        if not isinstance(data, dict):
            self._warn_once(path, "not a JSON object")
            return None
        return ReportSummary.from_json(data, report_id, mtime)

    def _warn_once(self, path: str, message: str, *args: Any) -> None:
        if path not in self._warned:
            self._warned.add(path)
            _logger.warning("otel-perfmon viewer: skipping %s: " + message, path, *args)

    def _read_dedup(self, previous: Dict[str, DedupEntry]) -> Dict[str, DedupEntry]:
        if self._dedup_entries is None:
            return {}
        try:
            return {entry.report_id: entry for entry in self._dedup_entries()}
        except Exception as exc:  # a down Redis or a locked file must not break the viewer
            self._warn_once("<dedup store>", "cannot read occurrence counts (%s)", exc)
            return previous

    def _read_routes(self, previous: Dict[str, RouteStatsEntry]) -> Dict[str, RouteStatsEntry]:
        if self._route_stats is None:
            return {}
        try:
            return {entry.fingerprint: entry for entry in self._route_stats()}
        except Exception as exc:  # a down Redis or a locked file must not break the viewer
            self._warn_once("<route stats>", "cannot read route numbers (%s)", exc)
            return previous

    # --- queries -----------------------------------------------------------------------
    def __len__(self) -> int:
        self.refresh()
        return len(self._snapshot.by_id)

    def get(self, report_id: str) -> Optional[ReportSummary]:
        """The summary of ``report_id``, rescanning once if it is unknown (a new report)."""
        self.refresh()
        summary = self._snapshot.by_id.get(report_id)
        if summary is None and is_valid_report_id(report_id) and (os.path.isfile(
                os.path.join(self.report_dir, report_id + ".json")) or (
                self._sync is not None and time.monotonic() - self._last_forced >= 1.0)):
            self._last_forced = time.monotonic()  # a remote store: at most one listing a second for unknown ids
            self.refresh(force=True)
            summary = self._snapshot.by_id.get(report_id)
        return summary

    def dedup_entry(self, report_id: str) -> Optional[DedupEntry]:
        """The dedup store's entry whose current report is ``report_id`` (counts, last seen)."""
        return self._snapshot.dedup.get(report_id)

    def query(self, flt: ReportFilter = ReportFilter(), sort: str = "time", descending: bool = True,
              page: int = 1, per_page: int = 50) -> Page:
        """Matching reports sorted by ``sort`` (``time`` or ``duration``), one page of them.

        ``page`` is 1-based and clamped to the last page. Raises ``ValueError`` for an
        unknown ``sort`` or ``per_page`` < 1.
        """
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {SORT_KEYS}, got {sort!r}")
        if per_page < 1:
            raise ValueError(f"per_page must be >= 1, got {per_page}")
        self.refresh()
        snapshot = self._snapshot
        rows: Sequence[ReportSummary] = snapshot.slowest_first() if sort == "duration" else snapshot.newest_first
        if flt.active:
            rows = [r for r in rows if flt.matches(r)]
        if not descending:
            rows = rows[::-1]
        total = len(rows)
        pages = max(1, -(-total // per_page))
        page = min(max(1, page), pages)
        start = (page - 1) * per_page
        return Page(list(rows[start:start + per_page]), total, page, per_page)

    def services(self) -> List[str]:
        """Distinct service names, sorted (for the filter form)."""
        return self._snapshot.facet("service_name")

    def methods(self) -> List[str]:
        """Distinct HTTP methods, sorted."""
        return self._snapshot.facet("method")

    def routes(self) -> List[str]:
        """Distinct route templates, sorted."""
        return self._snapshot.facet("route")

    def route_groups(self) -> List[RouteGroup]:
        """One :class:`RouteGroup` per service + method + route, most recently seen first."""
        self.refresh()
        snapshot = self._snapshot
        groups: Dict[Tuple[str, str, str], List[Any]] = {}
        for r in snapshot.newest_first:
            key = (r.service_name, r.method, r.route)
            entry = snapshot.dedup.get(r.report_id)
            count = entry.count if entry is not None else 1
            last = max(r.start_ts, entry.last_seen if entry is not None else 0.0)
            worst = max(r.duration_ms, entry.worst_duration_ms if entry is not None else 0.0)
            group = groups.get(key)
            if group is None:
                groups[key] = [1, count, worst, last, r.fingerprint]
            else:
                group[0] += 1
                group[1] += count
                group[2] = max(group[2], worst)
                group[3] = max(group[3], last)
        result = [RouteGroup(k[0], k[1], k[2], *v) for k, v in groups.items()]
        result.sort(key=lambda g: g.last_seen, reverse=True)
        return result

    def route_table(self, sort: str = "recent", service: str = "") -> List[RouteRow]:
        """One :class:`RouteRow` per route that has reports or numbers (joined by fingerprint),
        of ``service`` (all when empty), sorted by ``sort`` (ROUTE_SORT_KEYS), largest first.
        Raises ``ValueError`` for an unknown ``sort``."""
        if sort not in ROUTE_SORT_KEYS:
            raise ValueError(f"sort must be one of {ROUTE_SORT_KEYS}, got {sort!r}")
        groups = self.route_groups()
        stats = dict(self._snapshot.routes)
        rows = []
        for g in groups:
            entry = stats.pop(g.fingerprint, None) if g.fingerprint else None
            rows.append(RouteRow(g.service_name, g.method, g.route, g.fingerprint, g, entry))
        rows.extend(RouteRow(e.service_name, e.method, e.route, e.fingerprint, None, e) for e in stats.values())
        if service:
            rows = [r for r in rows if r.service_name == service]
        rows.sort(key=lambda r: r.sort_key(sort), reverse=True)
        return rows

    def route_services(self) -> List[str]:
        """Distinct service names of the reports and the route numbers, sorted."""
        return sorted(set(self.services()) | {e.service_name for e in self._snapshot.routes.values()} - {""})

