"""A dedup store that outlives its backend: :class:`ResilientStore` (wraps ``sqlite`` and ``redis://``).

``configure_perfmon()`` wraps every store but ``memory`` in it. What it does while the backend
is down (Redis refused or unreachable, SQLite ``database is locked`` beyond its busy timeout, a
disk error):

* every call to the backend runs on a short-lived daemon thread and is waited for at most
  :data:`CALL_TIMEOUT_SECONDS` (a process's first call, which connects, at most
  :data:`FIRST_CALL_TIMEOUT_SECONDS`), so a black-holed host or a locked file never holds the
  watchdog or the worker longer than that;
* a failed or timed-out call opens the breaker: for :data:`RETRY_SECONDS` the backend is not
  asked at all, and no new call is made while a timed-out one is still running;
* meanwhile a route whose shared report this process saw within the window is counted
  against that report; other claims are made in a per-process memory store (:class:`MemoryDedupStore`), so the
  report is still written under an id and linked from its span, and slow spans of the same
  route in this process are still deduplicated; occurrence counts, kept versions and
  releases are queued (at most :data:`MAX_PENDING`);
* the first call that succeeds again replays the queue in order: a local claim is claimed in
  the backend with its own id and time; if another process or host claimed the fingerprint
  meanwhile, the local report stays as a report file of its own and its occurrences, those
  recorded after the replay included, are counted against the shared report (so the counts per
  route stay exact);
* each operation the backend did not do when asked is counted in ``dedup_store_errors`` (and
  logged once per kind of error); nothing is lost but operations beyond :data:`MAX_PENDING`.

Thread-safe: one lock serialises the calls of this process (the watchdog's and the worker's).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from otel_perfmon._fork import reset_after_fork
from otel_perfmon.dedup.base import Claim, Decide, DedupEntry, DedupStore, KeptVersion
from otel_perfmon.dedup.memory import MemoryDedupStore

_logger = logging.getLogger("otel_perfmon.processor")

#: Longest wait (s) for one backend call before the claim is made in this process.
CALL_TIMEOUT_SECONDS = 2.0
#: Longest wait (s) for a process's first successful call: it also connects (a TCP connection
#: to Redis, opening and creating the SQLite tables), which a saturated host can stretch past
#: CALL_TIMEOUT_SECONDS (measured: up to 3.2 s under `make soak`, the client import included).
FIRST_CALL_TIMEOUT_SECONDS = 10.0
#: After a failure the backend is left alone this long (s) before it is asked again.
RETRY_SECONDS = 1.0
#: Most operations kept for replay while the backend is down; later ones are lost (counted).
MAX_PENDING = 10000


class _Op:
    """A backend operation kept for replay; ``done``/``result`` are set when a call that timed
    out completes late (so it is not replayed twice)."""

    __slots__ = ("kind", "args", "done", "result")

    def __init__(self, kind: str, args: Tuple[Any, ...]) -> None:
        self.kind, self.args = kind, args
        self.done = False
        self.result: Any = None


class BackendUnavailable(Exception):
    """The breaker is open (a recent failure, or a timed-out call still running)."""


class ResilientStore(DedupStore):
    """Wraps ``inner``; ``on_error(exc)`` counts one failed operation (``dedup_store_errors``)."""

    def __init__(self, inner: DedupStore, call_timeout_seconds: float = CALL_TIMEOUT_SECONDS,
                 retry_seconds: float = RETRY_SECONDS,
                 on_error: Optional[Callable[[BaseException], None]] = None) -> None:
        self.inner = inner
        self._call_timeout = call_timeout_seconds
        self._retry = retry_seconds
        self._on_error = on_error
        self._lock = threading.RLock()
        self._fallback = MemoryDedupStore()
        self._local: Dict[str, str] = {}   # fingerprint -> report id claimed in this process while down
        self._known: Dict[str, Tuple[str, float]] = {}  # fingerprint -> (shared report id, when seen)
        self._pending: List[_Op] = []
        self._down_until = 0.0
        self._running: Optional[threading.Thread] = None  # a timed-out call still running
        self._connected = False  # a call succeeded in this process
        # local report id -> the shared report that holds its route (found by a replay)
        self._remap: Dict[str, str] = {}
        #: operations the backend did not do when asked (also counted through ``on_error``)
        self.errors = 0
        reset_after_fork(self, "_after_fork")

    def _after_fork(self) -> None:
        # in a forked child: the parent's call threads are gone; their locks may be held
        self._lock = threading.RLock()
        self._fallback._lock = threading.Lock()
        self._running = None
        self._connected = False

    def bind(self, on_error: Callable[[BaseException], None]) -> None:
        """Count failures through ``on_error`` (the processor's ``dedup_store_errors``)."""
        self._on_error = on_error

    @property
    def degraded(self) -> bool:
        """True while claims are made in this process (operations are waiting for replay)."""
        with self._lock:
            return bool(self._pending or self._local)

    # ------------------------------------------------------------------ backend calls
    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if not isinstance(exc, BackendUnavailable):  # a skipped call does not push the retry back
            self._down_until = time.monotonic() + self._retry
        if self._on_error is not None:
            try:
                self._on_error(exc)
            except Exception:
                pass

    def _bounded(self, func: Callable[..., Any], args: Tuple[Any, ...], op: Optional[_Op] = None) -> Any:
        running = self._running
        if (running is not None and running.is_alive()) or time.monotonic() < self._down_until:
            raise BackendUnavailable("dedup store unavailable (retrying shortly)")
        outcome: List[Any] = []
        finished = threading.Event()

        def call() -> None:
            try:
                outcome.append((True, func(*args)))
            except BaseException as exc:  # handed to the waiting thread
                outcome.append((False, exc))
            finished.set()
            if op is not None and outcome[0][0]:
                op.done, op.result = True, outcome[0][1]

        thread = threading.Thread(target=call, name="otel-perfmon-dedup-call", daemon=True)
        thread.start()
        timeout = self._call_timeout if self._connected else max(self._call_timeout, FIRST_CALL_TIMEOUT_SECONDS)
        if not finished.wait(timeout):
            self._running = thread
            raise TimeoutError(f"dedup store did not answer within {timeout} s")
        ok, value = outcome[0]
        if not ok:
            raise value
        self._connected = True
        return value

    def _try(self, name: str, args: Tuple[Any, ...], op: Optional[_Op] = None) -> Tuple[bool, Any]:
        # (True, result) from the backend, or (False, None) after counting the failure
        try:
            if self._pending:
                self._replay()
            return True, self._bounded(getattr(self.inner, name), args, op)
        except Exception as exc:
            self._failed(exc)
            return False, None

    def _queue(self, op: _Op) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.append(op)

    def _replay(self) -> None:
        # the backend may be back: apply the queued operations in order (raises on a failure,
        # leaving the rest queued)
        remap = self._remap
        while self._pending:
            op = self._pending[0]
            if op.kind == "claim":
                fingerprint, local_id, created, window = op.args
                claim = op.result if op.done else self._bounded(self.inner.claim, op.args, op)
                if claim.report_id != local_id:
                    if len(remap) >= MAX_PENDING:
                        remap.clear()
                    remap[local_id] = claim.report_id  # another process's report holds the route
                if self._local.get(fingerprint) == local_id:
                    del self._local[fingerprint]
                    self._fallback.release(fingerprint, local_id)
            elif not op.done:
                args = list(op.args)
                args[1] = remap.get(args[1], args[1])
                if op.kind in ("record_occurrence", "add_route_stats") or args[1] == op.args[1]:
                    # (a kept version or a release is of its own file: not carried over to another report)
                    self._bounded(getattr(self.inner, op.kind), tuple(args), op)
            self._pending.pop(0)

    # ------------------------------------------------------------------ DedupStore
    def claim(self, fingerprint: str, candidate_id: str, now: float, window_seconds: float) -> Claim:
        with self._lock:
            args = (fingerprint, candidate_id, now, window_seconds)
            op = _Op("claim", args)
            ok, claim = self._try("claim", args, op)  # replays the queue first (a local claim included)
            if ok:
                if len(self._known) >= MAX_PENDING:
                    self._known.clear()
                self._known[fingerprint] = (claim.report_id, now)
                return claim  # type: ignore[no-any-return]
            known = self._known.get(fingerprint)
            if fingerprint not in self._local and known is not None and window_seconds > 0 \
                    and now - known[1] < window_seconds:
                return Claim(known[0], False)  # the shared report this process last saw: no duplicate
            claim = self._fallback.claim(*args)
            if claim.is_new:
                self._local[fingerprint] = claim.report_id
                self._queue(op)
            return claim

    def _is_local(self, fingerprint: str, report_id: str) -> bool:
        return self._local.get(fingerprint) == report_id

    def record_occurrence(self, fingerprint: str, report_id: str, duration_ms: float,
                          trace_id: str, now: float) -> None:
        with self._lock:
            # a local report whose route another process's report holds: counted against that one
            args = (fingerprint, self._remap.get(report_id, report_id), duration_ms, trace_id, now)
            op = _Op("record_occurrence", args)
            if self._is_local(fingerprint, report_id):
                self._fallback.record_occurrence(*args)
            elif self._try("record_occurrence", args, op)[0]:
                return
            self._queue(op)

    def release(self, fingerprint: str, report_id: str) -> None:
        with self._lock:
            if self._is_local(fingerprint, report_id):
                self._fallback.release(fingerprint, report_id)
                del self._local[fingerprint]
                # the report was never written: forget its queued claim and updates
                self._pending = [op for op in self._pending if op.args[1] != report_id]
                return
            op = _Op("release", (fingerprint, report_id))
            if not self._try("release", op.args, op)[0]:
                self._queue(op)

    def set_kept(self, fingerprint: str, report_id: str, version: KeptVersion) -> None:
        with self._lock:
            op = _Op("set_kept", (fingerprint, report_id, version))
            if self._is_local(fingerprint, report_id):
                self._fallback.set_kept(fingerprint, report_id, version)
            elif self._try("set_kept", op.args, op)[0]:
                return
            self._queue(op)

    def replace_kept(self, fingerprint: str, report_id: str, candidate: KeptVersion,
                     decide: Decide) -> Tuple[bool, bool]:
        with self._lock:
            if self._is_local(fingerprint, report_id):
                replace, follow_up = self._fallback.replace_kept(fingerprint, report_id, candidate, decide)
                if replace:
                    self._queue(_Op("set_kept", (fingerprint, report_id, candidate)))
                return replace, follow_up
            ok, answer = self._try("replace_kept", (fingerprint, report_id, candidate, decide))
            return answer if ok else (False, False)  # while down the kept report stays

    def get(self, fingerprint: str) -> Optional[DedupEntry]:
        with self._lock:
            ok, entry = self._try("get", (fingerprint,))
            return entry if ok else self._fallback.get(fingerprint)

    def entries(self) -> List[DedupEntry]:
        with self._lock:
            ok, found = self._try("entries", ())
            local = self._fallback.entries()
            if not ok:
                return local
            shared = {entry.fingerprint for entry in found}
            return list(found) + [entry for entry in local if entry.fingerprint not in shared]

    def __getattr__(self, name: str) -> Any:
        # anything else a store offers (e.g. route statistics) is the backend's, unwrapped
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add_route_stats(self, deltas: Any, now: float) -> None:
        """The backend's; while it is down the deltas (additive) are queued and replayed."""
        with self._lock:
            op = _Op("add_route_stats", (deltas, now))
            if not self._try("add_route_stats", op.args, op)[0]:
                self._queue(op)

    def route_stats(self, *args: Any, **kwargs: Any) -> Any:
        """The backend's (raises what it raises)."""
        inner: Any = self.inner
        return inner.route_stats(*args, **kwargs)

    def close(self) -> None:
        """One last bounded replay, then close the backend."""
        with self._lock:
            if self._pending:
                try:
                    self._down_until = 0.0
                    self._replay()
                except Exception as exc:
                    self._failed(exc)
                    _logger.warning("otel-perfmon: %d dedup store operation(s) could not be replayed at "
                                    "shutdown", len(self._pending))
            running = self._running
            if running is not None and running.is_alive():
                return  # the backend is stuck in a call: closing it under that call could crash
        self.inner.close()
