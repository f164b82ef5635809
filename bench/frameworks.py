"""Frameworks section (``bench/run.py --only frameworks``): a Django request and a Celery task,
``perfmon_default`` against OTel alone, in-process, variants taking turns one request (task) at a
time in shuffled order, with the ``otel_b`` A/A control, as the Flask / FastAPI in-process section.

* Django: the minimal project :mod:`bench.django_settings` (no database), its WSGI handler called
  directly with a werkzeug-built environ (:class:`bench.inprocess.WsgiDriver`, as Flask's app is
  called), views ``/fast`` and ``/calls`` (20,000 small calls); OTel's ``DjangoInstrumentor``.
* Celery: tasks ``bench.fast`` and ``bench.calls`` (the same work) run eagerly in this process by
  ``task.apply()``; ``CeleryInstrumentor`` opens and closes a CONSUMER span on the task's
  ``task_prerun`` / ``task_postrun`` signals (checked: one span per task, below).

Variants: ``otel`` (its own ``TracerProvider`` + ``BatchSpanProcessor`` + null exporter, as
:mod:`bench.apps` builds them), ``otel_b`` (an identical provider: the A/A control) and
``perfmon_default`` (``otel`` + ``configure_perfmon`` with the package defaults: threshold 1 s,
a temp ``report_dir``). Ratios are against ``otel`` (:func:`bench.common.summarize_turns`).

Why one process and a swapped tracer, not one subprocess per variant: both instrumentors are
process-global (Django's middleware class holds one tracer, ``_DjangoMiddleware._tracer``;
Celery's instrumentor is a singleton whose signal handlers use ``self._tracer``), and the only
thing their ``tracer_provider`` argument decides is that tracer. Each variant's tracer is taken
from its own provider (the instrumentor is instrumented with it, the tracer kept, then
uninstrumented; the last instrumentation stays), and before each request the bench puts the
variant's tracer in place (one attribute store, outside the timed region). One provider per
variant in one process is then what :mod:`bench.apps` does for Flask. Separate processes were
rejected: identical processes differ by up to 4 % in time per request (memory layout, hash seed;
docs/performance.md), more than the 3 % goal, and wall-clock turns across processes would add a
pipe round trip per request. (:mod:`bench.instructions` may use separate processes because
instruction counts do not depend on layout the way wall time does.)
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any, Dict, List, Tuple

from bench import apps
from bench.common import BASELINE, Goal, Timings, log, md_table, summarize_turns, turns

VARIANTS = ("otel", "otel_b", "perfmon_default")
ROUTES = ("fast", "calls")
PHASES = ("django", "celery")
GOAL_RATIO = 1.03


# ---------------------------------------------------------------------------- variants
class Variant:
    """A variant's provider, perfmon handle (perfmon_default) and, per framework, its tracer."""

    def __init__(self, name: str, report_dir: str) -> None:
        self.name = name
        self.provider, _ = apps._provider(name, "frameworks", record_slow=False)
        self.perfmon = apps._instrument(name, "frameworks", self.provider,
                                        report_dir if name in apps.PERFMON_VARIANTS else None, None)
        self.tracers: Dict[str, Any] = {}

    def flush(self) -> None:
        if self.perfmon is not None:
            self.perfmon.force_flush(timeout_seconds=10.0)
        self.provider.force_flush(10000)

    def shutdown(self) -> None:
        if self.perfmon is not None:
            self.perfmon.shutdown(timeout_seconds=5.0)
        self.provider.shutdown()


def _check_provider() -> Tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


# ---------------------------------------------------------------------------- Django
class DjangoTarget:
    """The Django WSGI handler with DjangoInstrumentor; :meth:`use` puts a variant's tracer in place."""

    name = "django"

    def __init__(self, variants: Dict[str, Variant], check_provider: Any) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.django_settings")
        import django
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware

        from bench.inprocess import WsgiDriver

        django.setup()
        self._middleware = _DjangoMiddleware
        instrumentor = DjangoInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        providers = [(v.name, v.provider, v.tracers) for v in variants.values()]
        self.check_tracer: Any = None
        for name, provider, tracers in providers + [("check", check_provider, None)]:
            instrumentor.instrument(tracer_provider=provider)
            if tracers is not None:
                tracers[self.name] = _DjangoMiddleware._tracer
            else:
                self.check_tracer = _DjangoMiddleware._tracer
            if name != "check":
                instrumentor.uninstrument()
        from django.core.handlers.wsgi import WSGIHandler

        self.handler = WSGIHandler()  # loads settings.MIDDLEWARE, with the instrumentor's middleware
        self.driver = WsgiDriver(ROUTES + ("health",))

    def use(self, tracer: Any) -> None:
        self._middleware._tracer = tracer

    def run(self, route: str, count: int) -> List[int]:
        return self.driver.run(self.handler, route, count)


# ---------------------------------------------------------------------------- Celery
class CeleryTarget:
    """Celery tasks run by ``apply()`` with CeleryInstrumentor; :meth:`use` puts a tracer in place."""

    name = "celery"

    def __init__(self, variants: Dict[str, Variant], check_provider: Any) -> None:
        from celery import Celery
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        app = Celery("otel-perfmon-bench", set_as_current=False)
        app.conf.update(broker_url="memory://", result_backend=None, task_store_eager_result=False)

        @app.task(name="bench.fast")
        def fast() -> int:
            return apps.fast_work()

        @app.task(name="bench.calls")
        def calls() -> int:
            return apps.call_heavy_work()

        self.tasks = {"fast": fast, "calls": calls}
        self.instrumentor = CeleryInstrumentor()
        if self.instrumentor.is_instrumented_by_opentelemetry:
            self.instrumentor.uninstrument()
        self.check_tracer: Any = None
        for variant in variants.values():
            self.instrumentor.instrument(tracer_provider=variant.provider)
            variant.tracers[self.name] = self.instrumentor._tracer
            self.instrumentor.uninstrument()
        self.instrumentor.instrument(tracer_provider=check_provider)
        self.check_tracer = self.instrumentor._tracer

    def use(self, tracer: Any) -> None:
        self.instrumentor._tracer = tracer

    def run(self, route: str, count: int) -> List[int]:
        task = self.tasks[route]
        clock = time.perf_counter_ns
        times = []
        for _ in range(count):
            started = clock()
            result = task.apply()
            times.append(clock() - started)
        if not result.successful():
            raise RuntimeError(f"celery task {route} failed: {result.traceback}")
        return times


# ---------------------------------------------------------------------------- measure
def check_spans(target: Any, exporter: Any) -> Dict[str, Any]:
    """One request / task per route on the check provider: the spans it produced (kind, name)."""
    target.use(target.check_tracer)
    found = {}
    for route in ROUTES:
        exporter.clear()
        target.run(route, 1)
        found[route] = [(span.kind.name, span.name) for span in exporter.get_finished_spans()]
    return found


def measure(target: Any, variants: Dict[str, Variant], rounds: int, requests: int, warmup: int) -> Timings:
    """Interleaved rounds, as :func:`bench.inprocess.measure`: per route, ``requests`` turns in
    which every variant serves one request in a fresh random order."""
    names = list(variants)
    timings: Timings = {(v, r): [] for v in names for r in ROUTES}
    def run(variant: str, route: str, count: int = 1) -> List[int]:
        target.use(variants[variant].tracers[target.name])
        return target.run(route, count)

    for variant in names:
        for route in ROUTES:
            run(variant, route, warmup)
        variants[variant].flush()
    for round_index in range(rounds):
        gc.collect()
        for route in ROUTES:
            batches: Dict[str, List[int]] = {v: [] for v in names}
            for variant in turns(names, requests, seed=1000 + round_index):
                batches[variant].extend(run(variant, route))
            for variant in names:
                timings[(variant, route)].append(batches[variant])
        for variant in names:
            variants[variant].flush()
    return timings


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """Django, then Celery: fills ``results["frameworks"]`` ({phase: summary, "spans": …})."""
    section: Dict[str, Any] = {"spans": {}, "rounds": args.rounds, "requests": args.requests,
                               "warmup": args.warmup}
    results["frameworks"] = section
    for phase, target_class in (("django", DjangoTarget), ("celery", CeleryTarget)):
        variants = {name: Variant(name, os.path.join(tmp_root, f"frameworks-{phase}-{name}")) for name in VARIANTS}
        check_provider, exporter = _check_provider()
        target = target_class(variants, check_provider)
        section["spans"][phase] = check_spans(target, exporter)
        started = time.monotonic()
        timings = measure(target, variants, args.rounds, args.requests, args.warmup)
        log(f"frameworks {phase}: {args.rounds} rounds in {time.monotonic() - started:.1f} s")
        section[phase] = summarize_turns(timings)
        perfmon = variants["perfmon_default"].perfmon
        results["perfmon stats"].append((f"frameworks {phase} perfmon_default", "default", perfmon.stats()))
        for variant in variants.values():
            variant.shutdown()
        check_provider.shutdown()


# ---------------------------------------------------------------------------- output
def _cell(entry: Dict[str, float], variant: str) -> str:
    if variant == BASELINE or entry.get("ratio") is None:
        return f"{entry['median_us']:.0f} µs"
    return f"{entry['median_us']:.0f} µs · {entry['ratio']:.3f} ({entry['ratio_q1']:.2f}–{entry['ratio_q3']:.2f})"


def setup_line(section: Dict[str, Any]) -> str:
    return (f"- Frameworks (Django request, Celery task): in-process, {section['rounds']} rounds of "
            f"{section['requests']} shuffled turns per route after {section['warmup']} warm-up requests; "
            "variants otel, otel_b (A/A), perfmon_default (package defaults: threshold 1 s, temp report_dir); "
            "Django's WSGI handler called directly (no database), Celery tasks by `task.apply()`; one process, "
            "each variant's own TracerProvider, its tracer put in the instrumentor before each request "
            "(bench/frameworks.py says why). Cells as in-process.")


def markdown(section: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    titles = {"django": "Django request (WSGI handler, in-process)", "celery": "Celery task (`apply()`, in-process)"}
    for phase in PHASES:
        summary = section.get(phase)
        if not summary:
            continue
        rows = [[route] + [_cell(summary[(v, route)], v) for v in VARIANTS] for route in ROUTES]
        spans = "; ".join(f"{route}: {', '.join(f'{k} {n!r}' for k, n in found) or 'none'}"
                          for route, found in section["spans"].get(phase, {}).items())
        out += [f"## Frameworks: {titles[phase]} (median latency, ratio against otel)", "",
                md_table(["route"] + list(VARIANTS), rows), "", f"- spans per call (check provider): {spans}", ""]
    return out


def goals(section: Dict[str, Any]) -> List[Goal]:
    lines: List[Goal] = []
    for phase in PHASES:
        summary = section.get(phase)
        if not summary:
            continue
        found = section["spans"].get(phase, {})
        ok = bool(found) and all(len(spans) >= 1 for spans in found.values())
        lines.append((f"{phase}: every call produces an OTel span",
                      ", ".join(f"{route} {len(spans)}" for route, spans in found.items()), ok))
        for route in ROUTES:
            for variant, limit in (("perfmon_default", GOAL_RATIO), ("otel_b", None)):
                e = summary[(variant, route)]
                label = (f"default ≤ {GOAL_RATIO} × otel, {phase}, {route}" if limit else
                         f"A/A control: otel_b ÷ otel, {phase}, {route}")
                lines.append((label, f"{e['ratio']:.3f} (quartiles over rounds {e['ratio_q1']:.3f}–"
                                     f"{e['ratio_q3']:.3f})", None if limit is None else e["ratio"] <= limit))
    return lines
