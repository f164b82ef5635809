"""The stack sampler's accounting (explicit times, no clock) and one real sampler thread.

What a sample stands for decides ``profile.coverage``: the gap since the previous sample,
whole when the innermost frame did not change, else capped by the interval in force; the
last sample also stands for the time until the span's end, at most one interval.
"""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from otel_perfmon.profiling.sampler import WEIGHT_CAP_INTERVALS, SpanSamples, StackSampler
from otel_perfmon.stats import Stats
from otel_perfmon.tracking import OpenSpan

A, B = ["root\x00m.py\x001", "a\x00m.py\x002"], ["root\x00m.py\x001", "b\x00m.py\x003"]


def test_a_sample_stands_for_the_gap_since_the_previous_one_whole_while_its_leaf_is_unchanged():
    leaf = object()
    samples = SpanSamples(span_start=100.0, from_threshold=False)
    samples.add(A, 100.03, 0.01, leaf)  # the first sample stands for the span's start
    samples.add(A, 100.53, 0.01, leaf)  # the same frame object: the thread never left it
    assert samples.sample_count == 2
    assert abs(samples.covered_seconds - 0.53) < 1e-9
    assert len(samples.records) == 1 and abs(samples.records[0][1] - 0.53) < 1e-9


def test_a_changed_leaf_caps_the_gap_so_a_stall_of_the_sampler_is_not_observed_time():
    samples = SpanSamples(span_start=100.0, from_threshold=False)
    samples.add(A, 100.01, 0.01, object())
    samples.add(B, 101.01, 0.01, object())  # 1 s later, another frame: the sampler stalled
    cap = WEIGHT_CAP_INTERVALS * (0.01 + sys.getswitchinterval())
    assert abs(samples.records[1][1] - cap) < 1e-9
    assert samples.covered_seconds < 0.1


def test_the_last_sample_stands_for_the_tail_until_the_span_end_at_most_one_interval():
    samples = SpanSamples(span_start=100.0, from_threshold=False)
    leaf = object()
    samples.add(A, 100.03, 0.01, leaf)
    samples.add(A, 100.90, 0.04, leaf)
    assert abs(samples.tail_seconds(100.93) - 0.03) < 1e-9  # ended 30 ms after the last sample
    assert abs(samples.tail_seconds(101.50) - 0.04) < 1e-9  # at most the interval in force
    assert samples.tail_seconds(None) == 0.0  # still open: no tail
    assert abs(samples.covered_until(100.93) - 0.93) < 1e-9
    session = samples.session("GET /x", end_time=100.93)
    assert abs(sum(seconds for _stack, seconds in session.frame_records) - 0.93) < 1e-9
    assert abs(session.duration - 0.93) < 1e-9
    # session() does not change the samples: asked twice, the same tail
    assert abs(samples.session("GET /x", end_time=100.93).duration - 0.93) < 1e-9
    assert abs(samples.covered_seconds - 0.90) < 1e-9


def test_what_the_cap_leaves_goes_to_the_deepest_frame_the_thread_never_left():
    """Real frames of this thread: ``outer`` stays on the stack while ``inner`` is called
    twice (two frame objects), and the sampler stalls 1 s between the two samples."""
    samples = SpanSamples(span_start=100.0, from_threshold=False)
    thread_id = threading.get_ident()
    taken = []

    def inner() -> None:
        frame = sys._getframe()
        taken.append((samples.thread_stack(frame, thread_id), frame, samples.common))

    def outer() -> None:
        inner()
        inner()

    outer()
    (first, leaf1, _), (second, leaf2, common) = taken
    assert leaf1 is not leaf2 and first[-1] == second[-1]  # two calls of inner, one identifier
    assert second[common - 1].startswith("outer\x00")  # the deepest frame both samples share
    samples.add(first, 100.01, 0.01, leaf1, 0)
    samples.add(second, 101.01, 0.01, leaf2, common)
    cap = WEIGHT_CAP_INTERVALS * (0.01 + sys.getswitchinterval())
    assert abs(samples.covered_seconds - 1.01) < 1e-9  # the whole stall is accounted for...
    by_stack = {tuple(stack): seconds for stack, seconds in samples.records}
    assert abs(by_stack[tuple(second)] - cap) < 1e-9  # ...inner only for what the cap allows
    assert abs(by_stack[tuple(second[:common])] - (1.0 - cap)) < 1e-9  # the rest is outer's own time
    assert samples.sample_count == 2
    samples.forget_frames()


def _busy_culprit(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(100))


def test_a_real_sampler_thread_covers_a_running_span_and_stays_within_its_budget():
    stop, started = threading.Event(), threading.Event()
    holder = {}

    def request() -> None:
        holder["thread_id"] = threading.get_ident()
        started.set()
        _busy_culprit(stop)

    worker = threading.Thread(target=request, name="request", daemon=True)
    worker.start()
    started.wait(5)
    span = types.SimpleNamespace(start_time=time.time_ns())
    entry = OpenSpan(span, threshold_seconds=10.0, thread_id=holder["thread_id"], task=None)
    stats = Stats()
    sampler = StackSampler({1: entry}, early_interval_seconds=0.01, late_interval_seconds=0.005, budget=0.008,
                           stats=stats)
    sampler.ensure_started()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and (entry.samples is None or entry.samples.sample_count < 10):
            time.sleep(0.01)
        cpu_before, wall_before = stats.snapshot().get("sampler_cpu_seconds", 0.0), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - wall_before < 1.0:
            time.sleep(0.05)
        cpu = stats.snapshot().get("sampler_cpu_seconds", 0.0) - cpu_before
        wall = time.monotonic() - wall_before
        ended = time.time()
    finally:
        sampler.close()
        stop.set()
        worker.join(5)
    samples = entry.samples
    assert samples is not None and samples.sample_count >= 10
    assert samples.covered_until(ended) / (ended - samples.span_start) >= 0.9
    assert any("_busy_culprit" in frame for stack, _ in samples.records for frame in stack)
    # the budget bounds the loop's CPU time on average (a loose bound: the VM's noise is not tested here)
    assert cpu / wall <= 0.008 * 3, (cpu, wall)


class _Shop:
    def checkout(self):
        return sys._getframe()

    @classmethod
    def load(cls):
        return sys._getframe()


def test_frame_identifiers_match_pyinstrument_without_reading_locals():
    """The sampler names other threads' frames without ``f_locals`` (on CPython 3.11 reading
    them runs FastToLocals on a running frame: segfaults under load); the names are
    pyinstrument's, so its renderers group them the same way."""
    from pyinstrument.low_level.stat_profile import get_frame_info

    from otel_perfmon.profiling.sampler import frame_identifier

    def nested():
        return sys._getframe()

    frames = [sys._getframe(), nested(), _Shop().checkout(), _Shop.load()]
    for frame in frames:
        ours, theirs = frame_identifier(frame), get_frame_info(frame)
        if sys.version_info >= (3, 11) or "\x01c" not in theirs:
            assert ours == theirs, (ours, theirs)
        else:  # before 3.11 there is no co_qualname: no class name
            assert ours == theirs.replace("\x01c_Shop", "")
    assert "\x01c_Shop" in get_frame_info(frames[2])


def test_the_idle_back_off_is_counted_in_intervals_so_scaling_them_scales_the_schedule():
    # an idle sampler (no open span) backs off to its cap: 5 early intervals, 50 ms by default;
    # bench/instructions.py scales every interval by valgrind's slowdown and relies on this
    default = StackSampler({}, early_interval_seconds=0.01, late_interval_seconds=0.005, budget=0.008, stats=Stats())
    scaled = StackSampler({}, early_interval_seconds=0.6, late_interval_seconds=0.3, budget=0.008, stats=Stats())
    after_threshold = StackSampler({}, early_interval_seconds=0.0, late_interval_seconds=0.005, budget=0.008,
                                   stats=Stats())
    assert default.max_idle_wait_seconds == pytest.approx(0.05)
    assert scaled.max_idle_wait_seconds == pytest.approx(60 * default.max_idle_wait_seconds)
    assert after_threshold.max_idle_wait_seconds == pytest.approx(0.05)
    # the cap bounds where a pass looks ahead when nothing is due
    sampled, wake_at, _ = scaled._pass()
    assert sampled == 0 and wake_at - time.time() <= scaled.max_idle_wait_seconds
    assert wake_at - time.time() > default.max_idle_wait_seconds
