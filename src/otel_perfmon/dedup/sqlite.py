"""SQLite dedup store (the default): ``<report_dir>/perfmon-dedup.sqlite3``.

Shared by every process on the host (gunicorn workers) and kept across restarts. Claims run
in ``BEGIN IMMEDIATE`` transactions (one writer at a time, WAL journal, 10 s busy timeout),
so N workers hitting the same slow route at once create exactly one report. The connection
is reopened after ``fork``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from otel_perfmon.dedup.base import (
    Claim,
    Decide,
    DedupEntry,
    DedupStore,
    KeptVersion,
    RouteStatsDelta,
    RouteStatsEntry,
    bucket_bound,
)

FILE_NAME = "perfmon-dedup.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    fingerprint TEXT PRIMARY KEY,
    report_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    worst_duration_ms REAL NOT NULL DEFAULT 0,
    last_trace_id TEXT,
    kept_duration_ms REAL NOT NULL DEFAULT 0,
    kept_mode TEXT NOT NULL DEFAULT '',
    kept_coverage REAL NOT NULL DEFAULT 0,
    followed_up INTEGER NOT NULL DEFAULT 0
)
"""
#: columns added after the first release, with their definitions (added to older files on open)
_ADDED_COLUMNS = (("kept_duration_ms", "REAL NOT NULL DEFAULT 0"), ("kept_mode", "TEXT NOT NULL DEFAULT ''"),
                  ("kept_coverage", "REAL NOT NULL DEFAULT 0"), ("followed_up", "INTEGER NOT NULL DEFAULT 0"))
#: Per-route numbers of every request (otel_perfmon.route_stats), added to older files on open too:
#: one row per fingerprint, one row per non-empty histogram bucket (its upper bound in ms as text).
_ROUTE_STATS_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS route_stats (
    fingerprint TEXT PRIMARY KEY,
    service_name TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    slow INTEGER NOT NULL DEFAULT 0,
    max_ms REAL NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
)
""", """
CREATE TABLE IF NOT EXISTS route_stats_buckets (
    fingerprint TEXT NOT NULL,
    le_ms TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (fingerprint, le_ms)
)
""")
_COLUMNS = ("fingerprint, report_id, created_at, last_seen, count, worst_duration_ms, last_trace_id, "
            "kept_duration_ms, kept_mode, kept_coverage, followed_up")


class SqliteDedupStore(DedupStore):
    """Thread-safe within a process (one lock), exact across processes (SQLite locking)."""

    def __init__(self, path: str, busy_timeout_seconds: float = 10.0) -> None:
        self.path = path
        self._timeout = busy_timeout_seconds
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = 0

    @classmethod
    def in_report_dir(cls, report_dir: str) -> SqliteDedupStore:
        return cls(os.path.join(report_dir, FILE_NAME))

    @classmethod
    def from_spec(cls, spec: str, report_dir: str) -> SqliteDedupStore:
        """``dedup_store="sqlite"``: the file ``perfmon-dedup.sqlite3`` in ``report_dir``."""
        return cls.in_report_dir(report_dir)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
            # switching to WAL needs a moment alone with the file and can answer "database is
            # locked" without waiting when several processes open it at once: retry until the timeout.
            deadline = time.monotonic() + self._timeout
            while True:
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.execute(_SCHEMA)
                    for statement in _ROUTE_STATS_SCHEMA:
                        conn.execute(statement)
                    present = {row[1] for row in conn.execute("PRAGMA table_info(fingerprints)")}
                    for name, definition in _ADDED_COLUMNS:
                        if name not in present:
                            conn.execute(f"ALTER TABLE fingerprints ADD COLUMN {name} {definition}")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        conn.close()
                        raise
                    time.sleep(0.01)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def claim(self, fingerprint: str, candidate_id: str, now: float, window_seconds: float) -> Claim:
        with self._transaction() as conn:
            row = conn.execute("SELECT report_id, created_at FROM fingerprints WHERE fingerprint = ?",
                               (fingerprint,)).fetchone()
            if row is not None and window_seconds > 0 and now - row[1] < window_seconds:
                return Claim(row[0], False)
            conn.execute(
                "INSERT OR REPLACE INTO fingerprints (fingerprint, report_id, created_at, last_seen) "
                "VALUES (?, ?, ?, ?)", (fingerprint, candidate_id, now, now))
            return Claim(candidate_id, True)

    def record_occurrence(self, fingerprint: str, report_id: str, duration_ms: float,
                          trace_id: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE fingerprints SET count = count + 1, last_seen = MAX(last_seen, ?), "
                "worst_duration_ms = MAX(worst_duration_ms, ?), last_trace_id = ? "
                "WHERE fingerprint = ? AND report_id = ?",
                (now, duration_ms, trace_id, fingerprint, report_id))

    def release(self, fingerprint: str, report_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM fingerprints WHERE fingerprint = ? AND report_id = ?",
                         (fingerprint, report_id))

    def set_kept(self, fingerprint: str, report_id: str, version: KeptVersion) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE fingerprints SET kept_duration_ms = ?, kept_mode = ?, kept_coverage = ? "
                         "WHERE fingerprint = ? AND report_id = ?",
                         (version.duration_ms, version.mode, version.coverage, fingerprint, report_id))

    def replace_kept(self, fingerprint: str, report_id: str, candidate: KeptVersion,
                     decide: Decide) -> Tuple[bool, bool]:
        with self._transaction() as conn:
            row = conn.execute("SELECT kept_duration_ms, kept_mode, kept_coverage, followed_up FROM fingerprints "
                               "WHERE fingerprint = ? AND report_id = ?", (fingerprint, report_id)).fetchone()
            if row is None:
                return False, False
            kept = KeptVersion(row[0], row[1], row[2]) if row[1] else None
            replace, follow_up = decide(kept, candidate, bool(row[3]))
            if not replace:
                return False, False
            conn.execute("UPDATE fingerprints SET kept_duration_ms = ?, kept_mode = ?, kept_coverage = ?, "
                         "followed_up = MAX(followed_up, ?) WHERE fingerprint = ? AND report_id = ?",
                         (candidate.duration_ms, candidate.mode, candidate.coverage, int(follow_up),
                          fingerprint, report_id))
            return True, follow_up

    def get(self, fingerprint: str) -> Optional[DedupEntry]:
        with self._lock:
            row = self._connection().execute(
                "SELECT " + _COLUMNS + " FROM fingerprints WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return self._entry(row) if row else None

    def entries(self) -> List[DedupEntry]:
        with self._lock:
            rows = self._connection().execute("SELECT " + _COLUMNS + " FROM fingerprints").fetchall()
        return [self._entry(row) for row in rows]

    def add_route_stats(self, deltas: Sequence[RouteStatsDelta], now: float) -> None:
        if not deltas:
            return
        with self._transaction() as conn:  # one transaction: every process's flush adds up exactly
            conn.executemany(
                "INSERT INTO route_stats (fingerprint, service_name, method, route, count, slow, max_ms, "
                "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET "
                "count = count + excluded.count, slow = slow + excluded.slow, max_ms = MAX(max_ms, excluded.max_ms), "
                "last_seen = MAX(last_seen, excluded.last_seen)",
                [(d.fingerprint, d.service_name, d.method, d.route, d.count, d.slow, d.max_ms, now, now)
                 for d in deltas])
            conn.executemany(
                "INSERT INTO route_stats_buckets (fingerprint, le_ms, count) VALUES (?, ?, ?) "
                "ON CONFLICT (fingerprint, le_ms) DO UPDATE SET count = count + excluded.count",
                [(d.fingerprint, key, count) for d in deltas for key, count in d.buckets])

    def route_stats(self) -> List[RouteStatsEntry]:
        with self._lock:
            conn = self._connection()
            rows = conn.execute("SELECT fingerprint, service_name, method, route, count, slow, max_ms, first_seen, "
                                "last_seen FROM route_stats").fetchall()
            bucket_rows = conn.execute("SELECT fingerprint, le_ms, count FROM route_stats_buckets").fetchall()
        buckets: Dict[str, List[Tuple[float, int]]] = {}
        for fingerprint, key, count in bucket_rows:
            try:
                buckets.setdefault(fingerprint, []).append((bucket_bound(key), int(count)))
            except ValueError:
                continue
        return [RouteStatsEntry(row[0], row[1], row[2], row[3], int(row[4]), int(row[5]), float(row[6]), float(row[7]),
                                float(row[8]), tuple(sorted(buckets.get(row[0], ())))) for row in rows]

    @staticmethod
    def _entry(row: Tuple[Any, ...]) -> DedupEntry:
        return DedupEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                          bool(row[10]))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
