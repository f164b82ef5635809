"""The stack sampler: a call tree of the whole span for every slow span without a pyinstrument session.

One daemon thread (``otel-perfmon-sampler``) scans the open-span table
(:mod:`otel_perfmon.tracking`) and samples each open span that has no pyinstrument session
from its start: the first sample once the span is 3 × ``early_interval_seconds`` old
(default 0.01 s: 100 Hz, the rate of Sentry's profiler, 101 Hz, and of Pyroscope and Datadog,
~100 Hz), then every ``early_interval_seconds`` until the span passes its threshold, then every
``late_interval_seconds`` (default 0.005 s). The request path does nothing for it: a span that
ends within one interval was never looked at, and a fast span's samples are dropped with its
table entry. With ``early_interval_seconds = 0`` spans are sampled from their threshold on only
(``after_threshold`` reports, the behaviour before whole-span sampling).

A sample is the span's stack: its thread's (``sys._current_frames``) or, for an asyncio task,
the loop thread's while the task runs, else the task's coroutine chain ending in ``[await]``
(and, while a sync route runs in anyio's worker thread, that thread's stack under it). Frames
are named as pyinstrument names them (:func:`frame_identifier`, without reading locals), so
the samples become a pyinstrument ``Session`` drawn by pyinstrument's renderers.

Cost, bounded by structure:

* A sample re-reads only the frames that changed since the span's previous sample: frames
  are matched by identity and line from the leaf up, and the unchanged outer part of the
  stack is reused (a blocked request costs one lookup per sample, not a stack walk).
* ``budget`` (default 0.008: 0.8 % of one core, under the 1 % goal with room for jitter):
  after each pass the thread sleeps at least ``loop CPU time × (1 − budget) / budget``
  (the loop's CPU time includes waking up), so its CPU share stays within the budget
  whatever the number of open spans; with many spans the per-span interval grows, and each
  report states the mean interval it got. The loop CPU time is a moving average over about
  ``1 / BUDGET_SMOOTHING`` passes: the share holds over that many passes, and one costly pass
  (a first sample walking a deep stack, a collection by the garbage collector) does not
  leave a blind spot of 124 × its cost.
* A pass gives up the GIL (``time.sleep(0)``) after 0.25 ms of work, so no request waits
  much longer than that for one pass.
* At most ``MAX_RECORDS_PER_SPAN`` distinct consecutive stacks are kept per span.

Coverage: a sample stands for the time since the span's previous sample (the first: since the
span's start). When both samples show the same innermost frame (the same frame object: the
thread never left it in between) that is the whole gap; otherwise at most 4 × (the interval in
force + the interpreter's GIL switch interval, ``sys.getswitchinterval()``, which a sampler
thread may wait for while the request runs Python code), so a stall of the sampler is not
passed off as observed time. What the cap leaves of a gap on a thread (a thread span's, a sync
route's in its worker thread) goes to the deepest frame both samples share (the same frame
object: the thread was inside it all along), as that frame's own time: a request calling many
small functions keeps its coverage when the sampler stalls (a loaded machine), at the
granularity the samples can vouch for. The interval in force is the longest of the span's
interval, the budget's wait and the sleep the sampler took before this pass (its idle
back-off, when no span was due). The last sample also stands for the time after it until the
span's end, at most one interval in force (a span ends between two samples; in profilers whose
every sample weighs one interval, Sentry's and Datadog's, that time is counted the same way).
``coverage = covered seconds / span duration``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.session import Session

from otel_perfmon._fork import reset_after_fork
from otel_perfmon.profiling.sessions import session_from_records
from otel_perfmon.profiling.span_profile import trim_thread_stack

#: Distinct consecutive stacks kept per span (identical consecutive samples share a record).
MAX_RECORDS_PER_SPAN = 20_000
#: A span's first sample is taken once it is this many intervals old (30 ms by default): the
#: many requests of 10-30 ms (database-heavy routes) are never touched, and the first sample
#: still stands for the span's whole start (its weight cap below is 4 intervals and more).
FIRST_SAMPLE_INTERVALS = 3
#: A sample stands for at most this many intervals of the span's time (see coverage).
WEIGHT_CAP_INTERVALS = 4.0
#: A pass releases the GIL after holding it this long (seconds; the goal is 0.5 ms, and the OS
#: may preempt the thread while it holds the GIL).
MAX_GIL_HOLD_SECONDS = 0.00025
#: Weight of the latest pass in the moving average of the loop's CPU time the budget uses.
BUDGET_SMOOTHING = 0.1
#: Longest sleep while no open span is due, in units of the early interval or twice the late
#: one, whichever is longer (5 x 10 ms = 50 ms by default): the first sample of a span that
#: starts then comes at most this late (its weight is capped, so coverage shows it). In
#: intervals, so that scaling the intervals scales the whole schedule (bench/instructions.py
#: runs it 60x slower under valgrind).
MAX_IDLE_INTERVALS = 5

_pthread_cpu_clock = getattr(time, "pthread_getcpuclockid", None)


def _thread_cpu_seconds(thread_id: int) -> Optional[float]:
    """CPU time (s) used so far by the thread ``thread_id`` (a ``threading.get_ident()``), or None."""
    if _pthread_cpu_clock is None:
        return None
    try:
        return time.clock_gettime(_pthread_cpu_clock(thread_id))
    except (OSError, OverflowError, ValueError):
        return None


def frame_identifier(frame: Any) -> str:
    """pyinstrument's identifier of ``frame`` (function, file, first line, class, line: the
    format of ``pyinstrument.low_level.stat_profile.get_frame_info``), built from the code
    object and ``f_lineno`` only; the class is the one ``co_qualname`` names (Python 3.11+, as
    sentry-python's profiler does). Sampler thread, on other threads' frames.

    pyinstrument's own ``get_frame_info`` reads ``frame.f_locals`` (to find ``self`` or
    ``cls``), which on CPython 3.11 runs FastToLocals on the frame. On a frame that another
    thread is running, that segfaulted uvicorn workers under ``make soak`` (in
    ``_PyFrame_FastToLocalsWithError``, 3.11.7); pyinstrument itself only reads frames of the
    thread it runs in."""
    code = frame.f_code
    info = f"{code.co_name}\x00{code.co_filename}\x00{code.co_firstlineno}"
    qualname = getattr(code, "co_qualname", None)
    if qualname and "." in qualname:
        owner = qualname.rsplit(".", 1)[0]
        if not owner.endswith("<locals>"):
            info += "\x01c" + owner
    lineno = frame.f_lineno
    if lineno is not None:
        info += f"\x01l{lineno}"
    return info


def _thread_identifier(thread_id: int) -> str:
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    name = thread.name if thread is not None else "thread"
    return f"{name}\x00<thread>\x00{thread_id}"


def coroutine_frames(task: Any) -> List[Any]:
    """Frames of a suspended task's await chain, outermost first."""
    frames = []
    awaitable = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return frames


class SpanSamples:
    """The stack samples of one span. Written by the sampler thread only; read by the
    watchdog (in-flight snapshot) and the worker (the report) through :meth:`session`.
    Times are ``time.time()`` seconds."""

    __slots__ = ("span_start", "records", "sample_count", "covered_seconds", "last_at", "last_leaf", "last_interval",
                 "common",
                 "from_threshold", "cpu_first", "cpu_last", "full", "_frames", "_lines", "_ids", "_pos", "_thread",
                 "_chain_key", "_chain_ids", "_awaiting")

    def __init__(self, span_start: float, from_threshold: bool, first_at: Optional[float] = None) -> None:
        """``first_at``: what the first sample stands for starts there (default the span's start;
        for samples taken only from the threshold on, the moment the span passed it)."""
        self.span_start = span_start
        self.records: List[List[Any]] = []  # [stack (pyinstrument identifiers), seconds]
        self.sample_count = 0
        self.covered_seconds = 0.0
        self.last_at = span_start if first_at is None else first_at
        self.last_leaf: Any = None  # the innermost frame of the previous sample
        self.last_interval = 0.0  # the interval in force at the previous sample (s)
        #: length of the latest thread stack's prefix (identifiers) whose frames are the same
        #: frame objects as in the previous thread stack (0: none)
        self.common = 0
        self.from_threshold = from_threshold  # first sampled after the threshold (no early sampling)
        self.cpu_first: Optional[float] = None
        self.cpu_last: Optional[float] = None
        self.full = False
        # the previous thread stack, for reuse: frames (root first), their lines, their ids
        # (ids[0] is the thread's root identifier, ids[k + 1] belongs to frames[k]), and
        # id(frame) -> index
        self._frames: List[Any] = []
        self._lines: List[int] = []
        self._ids: List[str] = []
        self._pos: Dict[int, int] = {}
        self._thread = 0
        # the previous coroutine chain (a suspended task): its (frame, line) key, ids, ids + [await]
        self._chain_key: Tuple[Tuple[Any, int], ...] = ()
        self._chain_ids: List[str] = []
        self._awaiting: List[str] = []

    def chain_ids(self, chain: List[Any]) -> List[str]:
        """pyinstrument identifiers of a suspended task's await chain (outermost first); the
        previous list itself when the chain is the same frames at the same lines (no
        allocation: a task waiting on one await costs a tuple compare per sample)."""
        key = tuple((frame, frame.f_lineno) for frame in chain)
        if key != self._chain_key:
            self._chain_key = key
            self._chain_ids = [frame_identifier(frame) for frame in chain]
            self._awaiting = []
        return self._chain_ids

    def awaiting(self, prefix: List[str]) -> List[str]:
        """``prefix`` (the list :meth:`chain_ids` returned) ``+ [await]``: the same list object
        while the chain does not change, so identical samples share one record."""
        if not self._awaiting:
            self._awaiting = prefix + [AWAIT_FRAME_IDENTIFIER]
        return self._awaiting

    def thread_stack(self, leaf: Any, thread_id: int) -> List[str]:
        """pyinstrument identifiers from the thread's root to ``leaf``, reusing the unchanged
        outer frames of the previous call (matched by frame identity and line). Returns the
        previous list object itself when nothing changed."""
        frames, lines, pos = self._frames, self._lines, self._pos
        if thread_id != self._thread:
            frames.clear()
            lines.clear()
            pos.clear()
            self._thread = thread_id
        new = []
        keep = common = -1
        frame = leaf
        while frame is not None:
            index = pos.get(id(frame))
            if index is not None and frames[index] is frame:
                if common < 0:
                    common = index  # the deepest frame still on the stack since the previous call
                if lines[index] == frame.f_lineno:
                    keep = index
                    break
            new.append(frame)
            frame = frame.f_back
        self.common = common + 2 if common >= 0 else 0  # ids[0] is the thread, ids[k + 1] frames[k]
        if not new and keep == len(frames) - 1 and self._ids:
            return self._ids
        for index in range(keep + 1, len(frames)):
            pos.pop(id(frames[index]), None)
        del frames[keep + 1:]
        del lines[keep + 1:]
        ids = self._ids[:keep + 2] if keep >= 0 else [_thread_identifier(thread_id)]
        for frame in reversed(new):
            pos[id(frame)] = len(frames)
            frames.append(frame)
            lines.append(frame.f_lineno)
            ids.append(frame_identifier(frame))
        self._ids = ids
        return ids

    def add(self, stack: List[str], now: float, interval: float, leaf: Any = None, common: int = 0) -> None:
        """Record ``stack`` (innermost frame ``leaf``) as seen at ``now``; it stands for the
        time since the previous sample, capped unless ``leaf`` is the previous sample's leaf;
        what the cap leaves goes to ``stack[:common]``, the frames that were on the stack all
        along (0: none; see the module docstring; ``interval`` is the interval in force, s)."""
        gap = max(now - self.last_at, 0.0)
        if leaf is None or leaf is not self.last_leaf:
            capped = min(gap, WEIGHT_CAP_INTERVALS * (interval + sys.getswitchinterval()))
            if common and self.sample_count and gap > capped:
                self._record(stack[:common], gap - capped)  # inside these frames all along
            gap = capped
        self.last_at = now
        self.last_leaf = leaf
        self.last_interval = interval
        self.sample_count += 1
        self._record(stack, gap)

    def _record(self, stack: List[str], weight: float) -> None:
        self.covered_seconds += weight
        records = self.records
        if records and (records[-1][0] is stack or records[-1][0] == stack):
            records[-1][1] += weight
        elif len(records) < MAX_RECORDS_PER_SPAN:
            records.append([stack, weight])
        else:
            self.full = True

    def forget_frames(self) -> None:
        """Drop the references to the sampled thread's frames (their locals stay alive otherwise)."""
        self._frames, self._lines, self._pos = [], [], {}
        self.last_leaf = None
        self._chain_key = ()

    @property
    def cpu_seconds(self) -> Optional[float]:
        """CPU time of the span's thread between its first and last sample (s), or None."""
        if self.cpu_first is None or self.cpu_last is None:
            return None
        return max(0.0, self.cpu_last - self.cpu_first)

    def tail_seconds(self, end_time: Optional[float]) -> float:
        """What the last sample also stands for after it (s): the time until ``end_time``
        (the span's end, ``time.time()`` seconds; None: no end yet, 0), at most the interval in
        force at that sample."""
        if end_time is None or not self.sample_count:
            return 0.0
        return min(max(end_time - self.last_at, 0.0), self.last_interval)

    def covered_until(self, end_time: Optional[float]) -> float:
        """Seconds of the span the samples stand for, the tail until ``end_time`` included."""
        return self.covered_seconds + self.tail_seconds(end_time)

    def session(self, description: str, end_time: Optional[float] = None) -> Optional[Session]:
        """The samples so far as a pyinstrument Session (None without samples); ``end_time``
        (the span's end, ``time.time()`` seconds) adds the last sample's tail. Any thread."""
        records = [[list(stack), seconds] for stack, seconds in list(self.records)]
        count = self.sample_count
        if not records or not count:
            return None
        tail = self.tail_seconds(end_time)
        records[-1][1] += tail
        end = max(self.last_at, end_time or self.last_at)
        return session_from_records([(stack, seconds) for stack, seconds in records], start_time=self.span_start,
                                    duration_seconds=max(end - self.span_start, 0.0),
                                    interval_seconds=(self.covered_seconds + tail) / count, description=description,
                                    cpu_time_seconds=self.cpu_seconds, sample_count=count)


class StackSampler:
    """Samples the open spans of ``table`` (span id -> OpenSpan) on one daemon thread,
    started by :meth:`ensure_started` (cheap check: ``running``) and again after fork.

    ``early_interval_seconds`` (0 = not before the threshold), ``late_interval_seconds`` and
    ``budget`` (0..1 of one core; 0 = never sample) as in the module docstring. ``stats``
    (a :class:`~otel_perfmon.stats.Stats`) receives ``sampler_passes``, ``sampler_samples``,
    ``sampler_cpu_seconds`` and ``sampler_max_pass_seconds``.
    """

    def __init__(self, table: Dict[int, Any], early_interval_seconds: float, late_interval_seconds: float,
                 budget: float, stats: Any) -> None:
        self._table = table
        self.early_interval_seconds = early_interval_seconds
        self.late_interval_seconds = late_interval_seconds
        self.budget = budget
        self._stats = stats
        self._closed = False
        #: longest sleep while no open span is due (s)
        self.max_idle_wait_seconds = MAX_IDLE_INTERVALS * max(early_interval_seconds, 2 * late_interval_seconds)
        self._least_wait = 0.0  # the sleep the budget imposed after the last pass (s)
        self._last_wait = 0.0  # the sleep before the current pass (s)
        self._reset()
        reset_after_fork(self)

    def _reset(self) -> None:
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        # True once started (or when there is nothing to start): the request path checks this
        self.running = self.budget <= 0

    def ensure_started(self) -> None:
        """Start the thread if it is not running. Any thread; cheap after the first call."""
        with self._lock:
            if self._thread is None and not self._closed and self.budget > 0:
                self._thread = threading.Thread(target=self._run, name="otel-perfmon-sampler", daemon=True)
                self._thread.start()
            self.running = True

    def _run(self) -> None:
        idle_wait = self.early_interval_seconds or self.late_interval_seconds
        cpu_before = time.thread_time()
        cpu_average: Optional[float] = None
        while not self._closed:
            sampled, wake_at, longest = self._pass()
            # the whole loop's CPU time, waking up included (a Python thread's wake-up costs
            # tens of µs on a VM, as much as a pass): that is what the budget bounds
            now_cpu = time.thread_time()
            cpu, cpu_before = now_cpu - cpu_before, now_cpu
            stats = self._stats
            stats.incr("sampler_passes")
            stats.incr("sampler_cpu_seconds", cpu)
            # stay within the budget: this loop's CPU time is at most `budget` of (loop + sleep),
            # on average over the last ~1 / BUDGET_SMOOTHING passes
            cpu_average = cpu if cpu_average is None else cpu_average + BUDGET_SMOOTHING * (cpu - cpu_average)
            least = self._least_wait = cpu_average * (1.0 - self.budget) / self.budget
            if sampled:
                stats.incr("sampler_samples", sampled)
                stats.set_max("sampler_max_pass_seconds", longest)
                idle_wait = self.early_interval_seconds or self.late_interval_seconds
                wait = max(least, min(wake_at - time.time(), idle_wait))
            else:
                # nothing was due: fast requests only, or none. Back off (up to max_idle_wait_seconds,
                # 50 ms by default), so a server of fast requests does not pay a wake-up per
                # interval; a span that turns out long gets its first sample that much later, and
                # its weight says so.
                idle_wait = min(idle_wait * 2, self.max_idle_wait_seconds)
                wait = max(least, idle_wait)
            self._last_wait = max(wait, 0.0)
            time.sleep(self._last_wait)  # cheaper than an Event's timed wait; close() waits for it

    def _pass(self) -> tuple[int, float, float]:
        """Sample every due span once. Returns (samples taken, earliest next due time, longest
        stretch in seconds the GIL was held without a break)."""
        early, late = self.early_interval_seconds, self.late_interval_seconds
        now = time.time()
        wake_at = now + self.max_idle_wait_seconds
        frames: Optional[Dict[int, Any]] = None
        sampled = 0
        held_since = time.perf_counter()
        longest = 0.0
        for entry in list(self._table.values()):
            if entry.ended or entry.profile is not None:
                continue
            start = entry.started
            if now >= start + entry.threshold_seconds:
                interval = late
            elif early > 0:
                interval = early
            else:
                wake_at = min(wake_at, start + entry.threshold_seconds)
                continue
            samples = entry.samples
            due = samples.last_at + interval if samples is not None else \
                start + min(FIRST_SAMPLE_INTERVALS * interval, entry.threshold_seconds)
            if due > now:
                wake_at = min(wake_at, due)
                continue
            if samples is None:
                from_threshold = early <= 0
                samples = entry.samples = SpanSamples(
                    start, from_threshold, first_at=start + entry.threshold_seconds if from_threshold else None)
            elif samples.full:
                continue
            if frames is None:
                frames = sys._current_frames()
            if self._sample(entry, samples, frames, now, max(interval, self._least_wait, self._last_wait)):
                sampled += 1
            wake_at = min(wake_at, now + interval)
            held = time.perf_counter() - held_since
            if held > MAX_GIL_HOLD_SECONDS:
                longest = max(longest, held)
                frames = None
                time.sleep(0)  # let the request threads run; frames are read afresh after
                held_since = time.perf_counter()
                now = time.time()
        longest = max(longest, time.perf_counter() - held_since)
        return sampled, wake_at, longest

    def _sample(self, entry: Any, samples: SpanSamples, frames: Dict[int, Any], now: float,
                interval: float) -> bool:
        found = self._stack(entry, samples, frames)
        if found is None:
            return False
        stack, leaf, common = found
        samples.add(stack, now, interval, leaf, common)
        if entry.task is None:
            cpu = _thread_cpu_seconds(entry.thread_id)
            if samples.cpu_first is None:
                samples.cpu_first = cpu
            samples.cpu_last = cpu
        return True

    @staticmethod
    def _stack(entry: Any, samples: SpanSamples, frames: Dict[int, Any]) -> Optional[Tuple[List[str], Any, int]]:
        """The span's current stack (pyinstrument identifiers), its innermost frame and the
        length of the stack's prefix on the thread all along since the previous sample (a
        thread span's only; 0 otherwise), or None if it is gone."""
        thread_id = entry.thread_id
        frame = frames.get(thread_id)
        task = entry.task
        if task is None:
            return (samples.thread_stack(frame, thread_id), frame, samples.common) if frame is not None else None
        if task.done():
            return None
        if frame is not None and asyncio.current_task(task.get_loop()) is task:
            return samples.thread_stack(frame, thread_id), frame, 0
        chain = coroutine_frames(task)
        if not chain:
            return None
        prefix = samples.chain_ids(chain)
        worker = entry.worker_thread_id
        worker_frame = frames.get(worker) if worker is not None else None
        if worker is not None and worker_frame is not None:  # a sync route: the work is in anyio's worker thread
            ids = samples.thread_stack(worker_frame, worker)
            trimmed = trim_thread_stack(ids)
            shared = samples.common - (len(ids) - len(trimmed))  # of the trimmed part: still the same call
            return prefix + trimmed, worker_frame, len(prefix) + shared if shared > 0 else 0
        return samples.awaiting(prefix), chain[-1], 0

    def one_shot(self, entry: Any, description: str) -> Optional[Session]:
        """A single-sample Session of ``entry``'s current stack (in-flight reports of spans
        the sampler has not reached). Background threads."""
        samples = SpanSamples(time.time(), from_threshold=True)
        found = self._stack(entry, samples, sys._current_frames())
        samples.forget_frames()
        if found is None:
            return None
        samples.add(found[0], time.time() + self.late_interval_seconds, self.late_interval_seconds)
        return samples.session(description)

    def close(self) -> None:
        """Stop the thread: it exits at its next wake-up (within ``max_idle_wait_seconds`` or
        the budget's wait); waits up to 1 s for it. Idempotent."""
        self._closed = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
